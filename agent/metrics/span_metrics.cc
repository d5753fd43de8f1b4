#include "agent/metrics/span_metrics.h"

#include "agent/text/utf8.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>

#include "agent/spans/span_assembler.h"

namespace flowtracer::metrics {
namespace {

using spans::AttributeValue;
using spans::Span;
using spans::SpanKind;

constexpr std::string_view kHttpServerDuration = "http.server.request.duration";
constexpr std::string_view kHttpClientDuration = "http.client.request.duration";
constexpr std::string_view kMessagingClientDuration = "messaging.client.operation.duration";
constexpr std::string_view kMessagingProcessDuration = "messaging.process.duration";

struct MetricInfo {
  std::string_view name;
  std::string_view description;
};
constexpr MetricInfo kRedMetrics[] = {
    {kHttpServerDuration, "Duration of HTTP server requests."},
    {kHttpClientDuration, "Duration of HTTP client requests."},
    {kMessagingClientDuration, "Duration of messaging operation initiated by a producer or consumer client."},
    {kMessagingProcessDuration, "Duration of processing operation."},
};

// The methods the HTTP semantic conventions name; anything else is "_OTHER" so a client
// sending random methods cannot create series.
std::string_view NormalMethod(std::string_view method) {
  static constexpr std::string_view kKnown[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                                "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  for (std::string_view known : kKnown)
    if (method == known) return known;
  return "_OTHER";
}

// Keys compared with literals of known length: inlined, no memcmp call.
template <size_t N>
[[gnu::always_inline]] inline bool KeyIs(const std::string& key, const char (&literal)[N]) {
  return std::memcmp(key.data(), literal, N - 1) == 0;
}

// Pairing keys are raw bytes: formatting addresses for every span would cost more than
// the rest of the aggregation. Returns where the next endpoint goes.
uint8_t* CopyEndpointBytes(uint8_t* out, const uint8_t address[16], uint16_t port) {
  memcpy(out, address, 16);
  memcpy(out + 16, &port, sizeof(port));
  return out + 16 + sizeof(port);
}

// A signature field: the bytes after their length, so no value can imitate another's.
// Written into room sized beforehand (appending field by field tested the capacity twice
// per field); returns where the next field goes.
char* PutSignatureField(char* out, std::string_view bytes) {
  const uint32_t size = bytes.size();
  memcpy(out, &size, sizeof(size));
  memcpy(out + sizeof(size), bytes.data(), bytes.size());
  return out + sizeof(size) + bytes.size();
}

bool IsMessaging(const Span& span) {
  return span.kind == SpanKind::kProducer || span.kind == SpanKind::kConsumer;
}

// The service graph's "failed": the server did not answer properly (5xx or no
// response), whichever end the span came from, so a 4xx (the client's mistake) is not a
// failure of the edge. Messaging has no status code: the span's status decides.
bool EndFailed(const Span& span, const AttributeValue* status_code) {
  if (IsMessaging(span)) return span.status == spans::StatusCode::kError;
  const int64_t* status = status_code ? std::get_if<int64_t>(status_code) : nullptr;
  return status == nullptr || *status >= 500;
}

}  // namespace

void HistogramData::Record(double value) {
  // The first bound not below the value, as lower_bound would find it, scanned from the
  // smallest: request durations mostly fall in the first buckets (a binary search took
  // four steps for every value).
  size_t bucket = 0;
  while (bucket < kDurationBucketsSeconds.size() && kDurationBucketsSeconds[bucket] < value) ++bucket;
  ++bucket_counts[bucket];
  min = count == 0 ? value : std::min(min, value);
  max = count == 0 ? value : std::max(max, value);
  ++count;
  sum += value;
}

// The attributes span metrics read, found in one pass over the span's attributes: a
// span lacking a key (error.type, mostly) then costs no search of every attribute for it,
// and the keys present cost a length switch and an inlined compare each, not a memcmp
// call. A span never has a key twice; the first is taken.
SpanMetrics::LabelAttributes SpanMetrics::FindLabelAttributes(const Span& span) {
  LabelAttributes found{};
  for (const spans::Attribute& attribute : span.attributes) {
    const std::string& key = attribute.key;
    LabelSlot slot;
    switch (key.size()) {
      case 10:
        if (KeyIs(key, "http.route")) slot = kRoute;
        else if (KeyIs(key, "error.type")) slot = kErrorType;
        else continue;
        break;
      case 11:
        if (!KeyIs(key, "server.port")) continue;
        slot = kServerPort;
        break;
      case 14:
        if (!KeyIs(key, "server.address")) continue;
        slot = kServerAddress;
        break;
      case 16:
        if (!KeyIs(key, "messaging.system")) continue;
        slot = kMessagingSystem;
        break;
      case 19:
        if (!KeyIs(key, "http.request.method")) continue;
        slot = kMethod;
        break;
      case 24:
        if (KeyIs(key, "network.protocol.version")) slot = kProtocolVersion;
        else if (KeyIs(key, "messaging.operation.name")) slot = kMessagingOperation;
        else continue;
        break;
      case 25:
        if (!KeyIs(key, "http.response.status_code")) continue;
        slot = kStatusCode;
        break;
      case 26:
        if (!KeyIs(key, "messaging.destination.name")) continue;
        slot = kMessagingDestination;
        break;
      default:
        continue;
    }
    if (!found[slot]) found[slot] = &attribute.value;
  }
  return found;
}

SpanMetrics::SpanMetrics(SpanMetricsOptions options) : options_(std::move(options)) {}

uint64_t SpanMetrics::Now() const {
  if (options_.now_unix_ns) return options_.now_unix_ns();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t SpanMetrics::CoarseNow() const {
  if (options_.now_unix_ns) return options_.now_unix_ns();
  timespec now{};
  clock_gettime(CLOCK_REALTIME_COARSE, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000000000ull + static_cast<uint64_t>(now.tv_nsec);
}

std::string SpanMetrics::Cut(std::string_view value) const {
  return text::ValidUtf8(value, options_.max_label_bytes);
}

void SpanMetrics::Add(const Span& span) {
  const uint64_t now = CoarseNow();
  std::lock_guard lock(mutex_);
  ++stats_.spans;
  const LabelAttributes found = FindLabelAttributes(span);
  RecordRed(span, found, now);
  RecordEnd(span, found, now);
  ExpireLocked(now, false);
}

void SpanMetrics::Tick() {
  const uint64_t now = Now();
  std::lock_guard lock(mutex_);
  ExpireLocked(now, false);
}

void SpanMetrics::FlushPending() {
  const uint64_t now = Now();
  std::lock_guard lock(mutex_);
  ExpireLocked(now, true);
}

void SpanMetrics::RecordRed(const Span& span, const LabelAttributes& found, uint64_t now) {
  // The attributes that become labels, as views into the span: nothing is copied unless
  // the span starts a series this aggregator has not seen.
  struct LabelView {
    std::string_view key;
    uint8_t position = 0;               // of `key` among the metric's possible labels
    const std::string* text = nullptr;  // a string label, else `number`
    std::string_view normal_text;       // a label whose value is normalised (method)
    int64_t number = 0;
  };
  std::array<LabelView, 8> views;
  size_t view_count = 0;
  uint8_t position = 0;
  auto add_string = [&](std::string_view key, LabelSlot slot) {
    ++position;
    if (const AttributeValue* found_value = found[slot])
      if (const std::string* value = std::get_if<std::string>(found_value))
        views[view_count++] = {key, position, value, {}, 0};
  };
  auto add_int = [&](std::string_view key, LabelSlot slot) {
    ++position;
    if (const AttributeValue* found_value = found[slot])
      if (const int64_t* value = std::get_if<int64_t>(found_value))
        views[view_count++] = {key, position, nullptr, {}, *value};
  };
  std::string_view metric;
  if (IsMessaging(span)) {
    metric = span.kind == SpanKind::kProducer ? kMessagingClientDuration : kMessagingProcessDuration;
    add_string("messaging.system", kMessagingSystem);
    add_string("messaging.operation.name", kMessagingOperation);
    add_string("messaging.destination.name", kMessagingDestination);
    add_string("server.address", kServerAddress);
    add_int("server.port", kServerPort);
  } else {
    metric = span.kind == SpanKind::kServer ? kHttpServerDuration : kHttpClientDuration;
    ++position;
    const std::string* method = found[kMethod] ? std::get_if<std::string>(found[kMethod]) : nullptr;
    if (method) views[view_count++] = {"http.request.method", position, nullptr, NormalMethod(*method), 0};
    add_int("http.response.status_code", kStatusCode);
    add_string("network.protocol.version", kProtocolVersion);  // "1.1", "1.0"
    if (span.kind == SpanKind::kServer) {
      add_string("http.route", kRoute);  // already templated and capped per service
    } else {
      add_string("server.address", kServerAddress);
      add_int("server.port", kServerPort);
    }
  }
  // error.type is a status code or a short reason, never free text.
  add_string("error.type", kErrorType);

  // The series this combination resolved to before, if any. The signature holds the raw
  // values, each after its length so no value can imitate another's (a value cut to
  // max_label_bytes maps to the same series either way), and names each label by its
  // position: the metric fixes which key a position is.
  auto label_bytes = [](const LabelView& view) -> std::string_view {
    if (view.text) return *view.text;
    if (!view.normal_text.empty()) return view.normal_text;
    return {reinterpret_cast<const char*>(&view.number), sizeof(view.number)};
  };
  constexpr size_t kLengthBytes = sizeof(uint32_t);
  size_t signature_size = 2 * kLengthBytes + span.service.size() + metric.size();
  for (size_t i = 0; i < view_count; ++i) signature_size += 1 + kLengthBytes + label_bytes(views[i]).size();
  std::string& signature = signature_scratch_;
  signature.resize(signature_size);
  char* out = PutSignatureField(PutSignatureField(signature.data(), span.service), metric);
  for (size_t i = 0; i < view_count; ++i) {
    *out++ = static_cast<char>(views[i].position);
    out = PutSignatureField(out, label_bytes(views[i]));
  }
  const double seconds = (span.end_unix_ns - span.start_unix_ns) / 1e9;
  if (auto known = series_by_signature_.find(signature); known != series_by_signature_.end()) {
    stats_.services_overflowed += known->second.service_overflowed;
    stats_.series_overflowed += known->second.series_overflowed;
    known->second.series->histogram.Record(seconds);
    return;
  }

  Labels labels;
  labels.reserve(view_count);
  for (size_t i = 0; i < view_count; ++i) {
    const LabelView& view = views[i];
    if (view.text) labels.push_back({std::string(view.key), Cut(*view.text)});
    else if (!view.normal_text.empty()) labels.push_back({std::string(view.key), std::string(view.normal_text)});
    else labels.push_back({std::string(view.key), view.number});
  }
  std::sort(labels.begin(), labels.end());
  ResolvedSeries resolved;
  std::string service = Cut(span.service);
  if (!services_.contains(service) && services_.size() >= options_.max_services) {
    resolved.service_overflowed = true;
    service = kOverflowName;
  }
  ServiceMetrics& service_metrics = services_[service];
  MetricSeries& metric_series = service_metrics.by_metric[std::string(metric)];
  auto series = metric_series.series.find(labels);
  if (series == metric_series.series.end()) {
    if (service_metrics.series_count >= options_.max_series_per_service ||
        series_total_ >= options_.max_series_total) {
      resolved.series_overflowed = true;
      labels = {{std::string(kOverflowAttribute), true}};
      series = metric_series.series.find(labels);
    }
    if (series == metric_series.series.end()) {
      series = metric_series.series.emplace(labels, Series{now, HistogramData{}}).first;
      ++service_metrics.series_count;
      ++series_total_;
    }
  }
  resolved.series = &series->second;  // std::map: stable, and series are never removed
  stats_.services_overflowed += resolved.service_overflowed;
  stats_.series_overflowed += resolved.series_overflowed;
  resolved.series->histogram.Record(seconds);
  // Bounded like the series themselves: combinations past the caps take this slow path.
  if (series_by_signature_.size() < options_.max_series_total + options_.max_services)
    series_by_signature_.emplace(signature, resolved);
}

std::string SpanMetrics::PeerNameFor(const uint8_t address[16], uint16_t port, bool with_port) const {
  const std::string endpoint = spans::FormatEndpoint(address, port);
  const std::string host = spans::FormatAddress(address);
  const PeerName* host_match = nullptr;
  for (const PeerName& peer : options_.peer_names) {
    if (peer.address == endpoint) return peer.name;
    if (peer.address == host) host_match = &peer;
  }
  if (host_match) return host_match->name;
  // A client's port is ephemeral: it would make one node per connection.
  return with_port ? endpoint : host;
}

void SpanMetrics::RecordEnd(const Span& span, const LabelAttributes& found, uint64_t now) {
  PendingEnd end;
  end.deadline_unix_ns = now + options_.pairing_wait_ns;
  end.is_server = span.kind == SpanKind::kServer || span.kind == SpanKind::kConsumer;
  end.seconds = (span.end_unix_ns - span.start_unix_ns) / 1e9;
  end.failed = EndFailed(span, found[kStatusCode]);
  const ft_tuple& t = span.tuple;
  std::copy(std::begin(t.remote_addr), std::end(t.remote_addr), end.peer_address.begin());
  end.peer_port = t.remote_port;
  end.peer_with_port = !end.is_server || IsMessaging(span);
  if (IsMessaging(span)) {
    // The broker sits between producer and consumer: the consumer's parent is the
    // producer's span (trace context travels in the message).
    end.connection_type = "messaging_system";
    const spans::SpanId& id = span.kind == SpanKind::kProducer ? span.span_id : span.parent_span_id;
    end.key.bytes[0] = 'm';
    std::copy(id.begin(), id.end(), end.key.bytes.begin() + 1);
  } else if (end.is_server) {
    end.key.bytes[0] = 'h';
    CopyEndpointBytes(CopyEndpointBytes(&end.key.bytes[1], t.remote_addr, t.remote_port), t.local_addr, t.local_port);
  } else {
    end.key.bytes[0] = 'h';
    CopyEndpointBytes(CopyEndpointBytes(&end.key.bytes[1], t.local_addr, t.local_port), t.remote_addr, t.remote_port);
  }

  auto& other_side = pending_by_key_[!end.is_server];
  if (auto waiting = other_side.find(end.key); waiting != other_side.end()) {
    std::vector<uint64_t>& others = waiting->second;
    PendingNode other = pending_.extract(others.front());
    others.erase(others.begin());
    if (others.empty()) RecycleKeyNode(other_side.extract(waiting));
    const PendingEnd& other_end = other.mapped();
    const PendingEnd& client = end.is_server ? other_end : end;
    const PendingEnd& server = end.is_server ? end : other_end;
    ++stats_.graph_pairs;
    // This end's service is read from the span: it is copied only into an end that waits.
    const std::string_view client_name = end.is_server ? std::string_view(other_end.service) : span.service;
    const std::string_view server_name = end.is_server ? span.service : std::string_view(other_end.service);
    CountEdge(client_name, server_name, end.connection_type, &client, &server, now);
    RecyclePendingNode(std::move(other));
    return;
  }
  end.service = span.service;
  auto& same_side = pending_by_key_[end.is_server];
  if (auto keyed = same_side.find(end.key); keyed != same_side.end()) {
    keyed->second.push_back(next_sequence_);
  } else if (!spare_key_nodes_.empty()) {
    KeyNode node = std::move(spare_key_nodes_.back());
    spare_key_nodes_.pop_back();
    node.key() = end.key;
    node.mapped().assign(1, next_sequence_);
    same_side.insert(std::move(node));
  } else {
    same_side[end.key].push_back(next_sequence_);
  }
  if (!spare_pending_nodes_.empty()) {
    PendingNode node = std::move(spare_pending_nodes_.back());
    spare_pending_nodes_.pop_back();
    node.key() = next_sequence_++;
    node.mapped() = std::move(end);
    pending_.insert(std::move(node));
  } else {
    pending_.emplace(next_sequence_++, std::move(end));
  }
  while (pending_.size() > options_.max_pending_spans) {
    ++stats_.pending_evicted;
    CountUnpaired(PopOldest(), now);
  }
}

SpanMetrics::PendingEnd SpanMetrics::PopOldest() {
  auto oldest = pending_.begin();
  PendingEnd end = std::move(oldest->second);
  pending_.erase(oldest);
  auto& same_side = pending_by_key_[end.is_server];
  auto keyed = same_side.find(end.key);
  keyed->second.erase(keyed->second.begin());  // the oldest overall is the oldest of its key
  if (keyed->second.empty()) RecycleKeyNode(same_side.extract(keyed));
  return end;
}

void SpanMetrics::RecyclePendingNode(PendingNode node) {
  if (spare_pending_nodes_.size() < kMaxSpareNodes) spare_pending_nodes_.push_back(std::move(node));
}

void SpanMetrics::RecycleKeyNode(KeyNode node) {
  if (spare_key_nodes_.size() < kMaxSpareNodes) spare_key_nodes_.push_back(std::move(node));
}

void SpanMetrics::ExpireLocked(uint64_t now, bool all) {
  while (!pending_.empty() && (all || pending_.begin()->second.deadline_unix_ns <= now))
    CountUnpaired(PopOldest(), now);
}

void SpanMetrics::CountUnpaired(const PendingEnd& end, uint64_t now) {
  ++stats_.graph_unpaired;
  const std::string peer = PeerNameFor(end.peer_address.data(), end.peer_port, end.peer_with_port);
  if (end.is_server) {
    CountEdge(peer, end.service, end.connection_type, nullptr, &end, now);
  } else {
    CountEdge(end.service, peer, end.connection_type, &end, nullptr, now);
  }
}

SpanMetrics::Edge SpanMetrics::NewEdge(uint64_t now) {
  Edge edge;
  edge.start_unix_ns = now;
  return edge;
}

void SpanMetrics::CountEdge(std::string_view client_name, std::string_view server_name,
                            std::string_view connection_type, const PendingEnd* client, const PendingEnd* server,
                            uint64_t now) {
  std::string& signature = signature_scratch_;
  signature.resize(3 * sizeof(uint32_t) + client_name.size() + server_name.size() + connection_type.size());
  PutSignatureField(PutSignatureField(PutSignatureField(signature.data(), client_name), server_name), connection_type);
  Edge* e = nullptr;
  if (auto known = edge_by_signature_.find(signature); known != edge_by_signature_.end()) {
    e = known->second;
  } else {
    EdgeKey key{Cut(client_name), Cut(server_name), std::string(connection_type)};
    auto edge = edges_.find(key);
    bool overflowed = false;
    if (edge == edges_.end()) {
      EdgeKey overflow{std::string(kOverflowName), std::string(kOverflowName), key.connection_type};
      if (edges_.size() >= options_.max_graph_edges) {
        ++stats_.edges_overflowed;
        overflowed = true;
        edge = edges_.find(overflow);
        if (edge == edges_.end()) edge = edges_.emplace(overflow, NewEdge(now)).first;
      } else {
        edge = edges_.emplace(key, NewEdge(now)).first;
      }
    }
    e = &edge->second;  // std::map: stable, and edges are never removed
    // Bounded like the edges themselves: combinations past the cap take this slow path.
    if (!overflowed && edge_by_signature_.size() < options_.max_graph_edges)
      edge_by_signature_.emplace(signature, e);
  }
  ++e->total;
  if ((client && client->failed) || (server && server->failed)) ++e->failed;
  if (client) e->client_seconds.Record(client->seconds);
  if (server) e->server_seconds.Record(server->seconds);
}

SpanMetricsStats SpanMetrics::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

MetricsSnapshot SpanMetrics::Collect() const {
  MetricsSnapshot snapshot;
  snapshot.time_unix_ns = Now();
  std::lock_guard lock(mutex_);
  for (const auto& [service, service_metrics] : services_) {
    ResourceMetrics resource{service, {}};
    for (const MetricInfo& info : kRedMetrics) {
      auto found = service_metrics.by_metric.find(std::string(info.name));
      if (found == service_metrics.by_metric.end()) continue;
      Metric metric{std::string(info.name), std::string(info.description), "s", MetricKind::kHistogram, {}};
      for (const auto& [labels, series] : found->second.series) {
        Point point;
        point.labels = labels;
        point.start_unix_ns = series.start_unix_ns;
        point.histogram = series.histogram;
        metric.points.push_back(std::move(point));
      }
      resource.metrics.push_back(std::move(metric));
    }
    snapshot.resources.push_back(std::move(resource));
  }

  if (!edges_.empty()) {
    ResourceMetrics graph{"", {}};
    Metric total{"traces_service_graph_request_total", "Requests between two nodes of the service graph.",
                 "{request}", MetricKind::kCounter, {}};
    Metric failed{"traces_service_graph_request_failed_total",
                  "Failed requests (5xx or no response) between two nodes of the service graph.",
                  "{request}", MetricKind::kCounter, {}};
    Metric server_seconds{"traces_service_graph_request_server_seconds",
                          "Request duration as seen by the server.", "s", MetricKind::kHistogram, {}};
    Metric client_seconds{"traces_service_graph_request_client_seconds",
                          "Request duration as seen by the client.", "s", MetricKind::kHistogram, {}};
    for (const auto& [key, edge] : edges_) {
      Point point;
      point.labels = {{"client", key.client}, {"connection_type", key.connection_type}, {"server", key.server}};
      point.start_unix_ns = edge.start_unix_ns;
      point.value = static_cast<int64_t>(edge.total);
      total.points.push_back(point);
      point.value = static_cast<int64_t>(edge.failed);
      failed.points.push_back(point);
      point.value = 0;
      if (edge.server_seconds.count) {
        point.histogram = edge.server_seconds;
        server_seconds.points.push_back(point);
      }
      if (edge.client_seconds.count) {
        point.histogram = edge.client_seconds;
        client_seconds.points.push_back(point);
      }
    }
    graph.metrics.push_back(std::move(total));
    graph.metrics.push_back(std::move(failed));
    if (!server_seconds.points.empty()) graph.metrics.push_back(std::move(server_seconds));
    if (!client_seconds.points.empty()) graph.metrics.push_back(std::move(client_seconds));
    snapshot.resources.push_back(std::move(graph));
  }
  return snapshot;
}

}  // namespace flowtracer::metrics
