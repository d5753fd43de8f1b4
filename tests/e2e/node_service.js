// A Node.js (event loop) HTTP service for the end-to-end tests, on loopback only.
//
// usage: node node_service.js PORT [--downstream URL ...] [--sdk SPANS_FILE] [--wire FILE]
//                                  [--delay-ms MAX]
//
//   /call/<id>   waits 0..MAX ms (random), calls every --downstream URL + "/<id>" in turn,
//                then answers 200; other paths answer 200 after the same wait.
//   --sdk FILE   instruments the service with the OpenTelemetry Node SDK (HTTP
//                instrumentation, W3C propagation) and appends each finished SDK span to
//                FILE as one JSON line: what the test compares flowtracer's spans with.
//   --wire FILE  appends {"path", "traceparent"} for every request received: the header
//                exactly as it arrived on the wire.
// The service name comes from OTEL_SERVICE_NAME. Prints "ready" once listening.
'use strict';

const fs = require('fs');
const path = require('path');

const args = process.argv.slice(2);
const port = Number(args[0]);
const downstream = [];
let spansFile = null;
let wireFile = null;
let maxDelayMs = 0;
for (let i = 1; i < args.length; i += 2) {
  if (args[i] === '--downstream') downstream.push(args[i + 1]);
  else if (args[i] === '--sdk') spansFile = args[i + 1];
  else if (args[i] === '--wire') wireFile = args[i + 1];
  else if (args[i] === '--delay-ms') maxDelayMs = Number(args[i + 1]);
  else throw new Error(`unknown argument ${args[i]}`);
}

const modules = path.join(__dirname, '..', 'node', 'node_modules');
const load = (name) => require(path.join(modules, name));

let provider = null;
if (spansFile) {
  // Must run before 'http' is loaded: the instrumentation patches it on require.
  const { NodeTracerProvider } = load('@opentelemetry/sdk-trace-node');
  const { SimpleSpanProcessor } = load('@opentelemetry/sdk-trace-base');
  const { registerInstrumentations } = load('@opentelemetry/instrumentation');
  const { HttpInstrumentation } = load('@opentelemetry/instrumentation-http');
  const { resourceFromAttributes } = load('@opentelemetry/resources');

  // Writes each span synchronously: the test reads the file once the requests are done.
  const fileExporter = {
    export(spans, done) {
      const lines = spans.map((span) => {
        const parent = span.parentSpanContext ? span.parentSpanContext.spanId : '';
        return JSON.stringify({
          trace_id: span.spanContext().traceId,
          span_id: span.spanContext().spanId,
          parent_span_id: parent || '',
          kind: span.kind, // 1 SERVER, 2 CLIENT (api SpanKind)
          name: span.name,
          attributes: span.attributes,
        });
      });
      fs.appendFileSync(spansFile, lines.map((l) => l + '\n').join(''));
      done({ code: 0 });
    },
    shutdown() { return Promise.resolve(); },
    forceFlush() { return Promise.resolve(); },
  };
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': process.env.OTEL_SERVICE_NAME || 'node' }),
    spanProcessors: [new SimpleSpanProcessor(fileExporter)],
  });
  provider.register();
  registerInstrumentations({ instrumentations: [new HttpInstrumentation()] });
}

const http = require('http');

function get(url) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { timeout: 10000 }, (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode));
    });
    request.on('error', reject);
    request.on('timeout', () => request.destroy(new Error(`timeout calling ${url}`)));
  });
}

const server = http.createServer((request, response) => {
  if (wireFile) {
    fs.appendFileSync(wireFile, JSON.stringify({
      path: request.url, traceparent: request.headers.traceparent || '',
    }) + '\n');
  }
  const parts = request.url.split('?')[0].split('/').filter(Boolean);
  const delayMs = Math.floor(Math.random() * (maxDelayMs + 1));
  setTimeout(async () => {
    try {
      if (parts[0] === 'call') {
        const suffix = parts.slice(1).map((p) => '/' + p).join('');
        for (const url of downstream) await get(url + suffix);
      }
      response.writeHead(200, { 'Content-Type': 'text/plain' });
      response.end('ok\n');
    } catch (error) {
      response.writeHead(502, { 'Content-Type': 'text/plain' });
      response.end(String(error) + '\n');
    }
  }, delayMs);
});

server.listen(port, '127.0.0.1', () => console.log('ready'));
const stop = () => {
  server.close();
  Promise.resolve(provider && provider.shutdown()).finally(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
