// An OTLP receiver for the end-to-end tests, independent of flowtracer's own .proto files:
// requests are decoded with the generated types shipped in @opentelemetry/otlp-transformer
// (package alias otlp-generated-types). It listens for OTLP/HTTP (protobuf, gzip) and/or
// OTLP/gRPC and appends one JSON line per request to --out:
//   {"transport": "http"|"grpc", "encoding": "gzip"|"identity", "signal": "traces"|"metrics",
//    "request": <the decoded Export*ServiceRequest, ids as lowercase hex>}
// and {"transport": ..., "answered": 503} for each request it refused on purpose.
// Fault modes, set with GET /control?mode=ok|unavailable|slow&retry_after=S&delay_ms=MS on the
// HTTP port: "unavailable" answers 503 (HTTP, with Retry-After) or UNAVAILABLE (gRPC);
// "slow" answers after delay_ms.
// --grpc-tls-cert FILE --grpc-tls-key FILE serve gRPC over TLS; with --grpc-client-ca FILE it
// also requires a client certificate that FILE's authorities signed (mutual TLS).
'use strict';
const http = require('http');
const zlib = require('zlib');
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const root = require('otlp-generated-types/build/src/generated/root.js');

const collector = root.opentelemetry.proto.collector;
const types = {
  traces: {request: collector.trace.v1.ExportTraceServiceRequest, response: collector.trace.v1.ExportTraceServiceResponse},
  metrics: {request: collector.metrics.v1.ExportMetricsServiceRequest, response: collector.metrics.v1.ExportMetricsServiceResponse},
};

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const out = args.out;
let mode = {mode: 'ok', retry_after: '1', delay_ms: 0};
let listening = (args['http-port'] ? 1 : 0) + (args['grpc-port'] ? 1 : 0) + (args['grpc-frames-port'] ? 1 : 0);
function listened() {
  if (--listening === 0) console.log('ready');
}

function toHex(object) {
  // toObject gives bytes as base64; ids read better (and compare with the capture JSON) as hex.
  if (Array.isArray(object)) return object.map(toHex);
  if (object && typeof object === 'object') {
    const result = {};
    for (const [key, value] of Object.entries(object)) {
      result[key] = /^(traceId|spanId|parentSpanId)$/.test(key) && typeof value === 'string'
          ? Buffer.from(value, 'base64').toString('hex') : toHex(value);
    }
    return result;
  }
  return object;
}

// google.rpc.Status{code: UNAVAILABLE, details: [Any(google.rpc.RetryInfo{retry_delay: seconds})]},
// the gRPC form of Retry-After, encoded by hand (a few fields, written from the message definitions).
function retryInfoStatus(seconds) {
  const varint = (n) => { const out = []; do { out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0)); n >>>= 7; } while (n); return out; };
  const field = (number, bytes) => [(number << 3) | 2, ...varint(bytes.length), ...bytes];
  const duration = [0x08, ...varint(seconds)];
  const any = [...field(1, [...Buffer.from('type.googleapis.com/google.rpc.RetryInfo')]), ...field(2, field(1, duration))];
  return Buffer.from([0x08, grpc.status.UNAVAILABLE, ...field(3, any)]);
}

function record(line) {
  line.at_ms = Date.now();
  fs.appendFileSync(out, JSON.stringify(line) + '\n');
}

function decode(signal, bytes) {
  const message = types[signal].request.decode(bytes);
  return toHex(types[signal].request.toObject(message, {longs: String, enums: String, bytes: String, defaults: false, arrays: true}));
}

function later(fn) {
  if (mode.mode === 'slow') setTimeout(fn, Number(mode.delay_ms));
  else fn();
}

if (args['http-port']) {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url.startsWith('/control')) {
      const query = new URL(req.url, 'http://x').searchParams;
      mode = {mode: query.get('mode') || 'ok', retry_after: query.get('retry_after') || '1', delay_ms: query.get('delay_ms') || 0};
      res.end('ok\n');
      return;
    }
    const signal = req.url === '/v1/traces' ? 'traces' : req.url === '/v1/metrics' ? 'metrics' : null;
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      if (!signal || req.method !== 'POST') { res.statusCode = 404; res.end(); return; }
      if (mode.mode === 'unavailable') {
        record({transport: 'http', answered: 503});
        res.writeHead(503, {'Retry-After': mode.retry_after});
        res.end();
        return;
      }
      let body = Buffer.concat(chunks);
      const encoding = req.headers['content-encoding'] || 'identity';
      try {
        if (encoding === 'gzip') body = zlib.gunzipSync(body);
        record({transport: 'http', encoding, contentType: req.headers['content-type'], signal, request: decode(signal, body)});
      } catch (error) {
        record({transport: 'http', error: String(error)});
        res.statusCode = 400;
        res.end();
        return;
      }
      later(() => {
        res.writeHead(200, {'Content-Type': 'application/x-protobuf'});
        res.end(Buffer.from(types[signal].response.encode({}).finish()));
      });
    });
  });
  server.on('error', (error) => { console.error(String(error)); process.exit(1); });
  server.listen(Number(args['http-port']), '127.0.0.1', listened);
}

// gRPC read at the HTTP/2 level, frame by frame: @grpc/grpc-js hides whether a message came
// compressed, and the tests want to see that gzip was really used. Records
// {"transport": "grpc-frames", "encoding": <grpc-encoding header>, "compressed": <frame flag>}.
if (args['grpc-frames-port']) {
  const http2 = require('http2');
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      const signal = headers[':path'].includes('TraceService') ? 'traces' : 'metrics';
      const encoding = headers['grpc-encoding'] || 'identity';
      let status = 0;
      try {
        // One length-prefixed message: compressed flag (1 byte), length (4 bytes, big-endian).
        const compressed = body.readUInt8(0) === 1;
        let message = body.subarray(5, 5 + body.readUInt32BE(1));
        if (compressed) message = zlib.gunzipSync(message);
        record({transport: 'grpc-frames', encoding, compressed, signal, request: decode(signal, message)});
      } catch (error) {
        record({transport: 'grpc-frames', error: String(error)});
        status = 3;  // INVALID_ARGUMENT
      }
      stream.respond({':status': 200, 'content-type': 'application/grpc'}, {waitForTrailers: true});
      stream.on('wantTrailers', () => stream.sendTrailers({'grpc-status': String(status)}));
      const response = Buffer.from(types[signal].response.encode({}).finish());
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(response.length, 1);
      stream.end(status ? undefined : Buffer.concat([prefix, response]));
    });
  });
  server.on('error', (error) => { console.error(String(error)); process.exit(1); });
  server.listen(Number(args['grpc-frames-port']), '127.0.0.1', listened);
}

if (args['grpc-port']) {
  const identity = (x) => x;
  const server = new grpc.Server();
  for (const [signal, path] of [['traces', '/opentelemetry.proto.collector.trace.v1.TraceService/Export'],
                                ['metrics', '/opentelemetry.proto.collector.metrics.v1.MetricsService/Export']]) {
    server.addService({export: {path, requestStream: false, responseStream: false, requestSerialize: identity,
                                requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity}},
    {export: (call, callback) => {
      if (mode.mode === 'unavailable') {
        record({transport: 'grpc', answered: 'UNAVAILABLE'});
        const metadata = new grpc.Metadata();
        metadata.set('grpc-status-details-bin', retryInfoStatus(Number(mode.retry_after)));
        callback({code: grpc.status.UNAVAILABLE, details: 'test receiver is unavailable', metadata});
        return;
      }
      const encoding = (call.metadata.get('grpc-encoding')[0] || 'identity').toString();
      try {
        record({transport: 'grpc', encoding, signal, request: decode(signal, call.request)});
      } catch (error) {
        record({transport: 'grpc', error: String(error)});
        callback({code: grpc.status.INVALID_ARGUMENT, details: String(error)});
        return;
      }
      later(() => callback(null, Buffer.from(types[signal].response.encode({}).finish())));
    }});
  }
  const credentials = args['grpc-tls-cert']
    ? grpc.ServerCredentials.createSsl(
        args['grpc-client-ca'] ? fs.readFileSync(args['grpc-client-ca']) : null,
        [{cert_chain: fs.readFileSync(args['grpc-tls-cert']), private_key: fs.readFileSync(args['grpc-tls-key'])}],
        Boolean(args['grpc-client-ca']))
    : grpc.ServerCredentials.createInsecure();
  server.bindAsync(`127.0.0.1:${args['grpc-port']}`, credentials, (error) => {
    if (error) { console.error(String(error)); process.exit(1); }
    listened();
  });
}
