#include "agent/spans/call_summary.h"

#include <algorithm>
#include <cmath>

#include "agent/spans/span_assembler.h"

namespace flowtracer::spans {
namespace {

// "10.0.0.7" or "[fe80::1]".
std::string HostText(const std::array<uint8_t, 16>& address) {
  std::string text = FormatAddress(address.data());
  return text.find(':') != std::string::npos ? "[" + text + "]" : text;
}

// Nearest-rank percentile: the smallest sample with at least `quantile` of samples at or below it.
double PercentileMs(std::vector<uint64_t> samples, double quantile) {
  if (samples.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(quantile * samples.size()));
  size_t index = std::clamp<size_t>(rank, 1, samples.size()) - 1;
  std::nth_element(samples.begin(), samples.begin() + index, samples.end());
  return samples[index] / 1e6;
}

}  // namespace

void CallSummary::AddSample(Edge& edge, uint64_t duration_ns, bool error) {
  ++edge.count;
  if (error) ++edge.errors;
  const size_t edges = std::max<size_t>(1, edges_.size() + named_edges_.size());
  const size_t cap = std::clamp(kSampleBudget / edges, kMinSamplesPerEdge, kMaxSamplesPerEdge);
  if (edge.durations_ns.size() < cap) {
    edge.durations_ns.push_back(duration_ns);
  } else {
    // Reservoir sampling keeps a uniform sample of every call seen.
    std::uniform_int_distribution<uint64_t> pick(0, edge.count - 1);
    uint64_t slot = pick(random_);
    if (slot < edge.durations_ns.size()) edge.durations_ns[slot] = duration_ns;
  }
}

size_t CallSummary::samples() const {
  size_t total = 0;
  for (const auto& [key, edge] : edges_) total += edge.durations_ns.size();
  for (const auto& [key, edge] : named_edges_) total += edge.durations_ns.size();
  return total;
}

namespace {
uint64_t SpanKey(const SpanId& id) {
  uint64_t key = 0;
  for (uint8_t byte : id) key = key << 8 | byte;
  return key;
}
}  // namespace

CallSummary::ServiceId CallSummary::IdOf(const std::string& service) {
  if (auto it = service_ids_.find(service); it != service_ids_.end()) return it->second;
  if (service_names_.size() >= kMaxServices) return kOtherService;
  const auto id = static_cast<ServiceId>(service_names_.size());
  service_names_.push_back(service);
  service_ids_.emplace(service, id);
  return id;
}

void CallSummary::AddByEndpoint(ServiceId service, bool server, const EndpointKey& peer, uint64_t duration_ns,
                                bool error) {
  EdgeKey key{service, server, peer};
  auto it = edges_.find(key);
  if (it == edges_.end()) {
    // The overflow edge: "(other)" with an all-zero endpoint.
    if (edges_.size() >= kMaxEdges) key = EdgeKey{kOtherService, server, EndpointKey{}};
    it = edges_.try_emplace(key).first;
  }
  AddSample(it->second, duration_ns, error);
}

void CallSummary::AddNamed(ServiceId caller, ServiceId callee, uint64_t duration_ns, bool error) {
  uint64_t key = uint64_t{caller} << 32 | callee;
  auto it = named_edges_.find(key);
  if (it == named_edges_.end()) {
    if (named_edges_.size() >= kMaxEdges) key = uint64_t{kOtherService} << 32 | kOtherService;
    it = named_edges_.try_emplace(key).first;
  }
  AddSample(it->second, duration_ns, error);
}

void CallSummary::Add(const Span& span) {
  // Messaging spans count through AddMessageHop: their peer is the broker, not the callee.
  if (span.kind == SpanKind::kProducer || span.kind == SpanKind::kConsumer) return;
  bool server = span.kind == SpanKind::kServer;
  bool error = span.status == StatusCode::kError;
  uint64_t duration_ns = span.end_unix_ns - span.start_unix_ns;
  const ServiceId service = IdOf(span.service);
  const EndpointKey local = EndpointOf(span.tuple.local_addr, span.tuple.local_port);
  const EndpointKey peer = EndpointOf(span.tuple.remote_addr, span.tuple.remote_port);
  if (service_by_endpoint_.size() < 4 * kMaxEdges) service_by_endpoint_[local] = service;
  if (!server) {
    if (client_service_by_span_id_.size() >= kMaxKnownClientSpans) client_service_by_span_id_.clear();
    uint64_t id = SpanKey(span.span_id);
    client_service_by_span_id_[id] = service;
    AddByEndpoint(service, false, peer, duration_ns, error);
    // Server spans that finished before their caller's span came in.
    if (auto waiting = servers_waiting_for_parent_.find(id); waiting != servers_waiting_for_parent_.end()) {
      for (const WaitingServerSpan& w : waiting->second) AddNamed(service, w.service, w.duration_ns, w.error);
      waiting_server_spans_ -= waiting->second.size();
      servers_waiting_for_parent_.erase(waiting);
    }
    return;
  }
  uint64_t parent = SpanKey(span.parent_span_id);
  if (parent != 0) {
    if (auto caller = client_service_by_span_id_.find(parent); caller != client_service_by_span_id_.end()) {
      AddNamed(caller->second, service, duration_ns, error);
      return;
    }
    if (waiting_server_spans_ < kMaxWaitingServerSpans) {
      // The parent may be a client span still to come, or one on another host (then this
      // waits until Rows() and is named by its endpoint).
      servers_waiting_for_parent_[parent].push_back({service, peer, duration_ns, error});
      ++waiting_server_spans_;
      return;
    }
  }
  AddByEndpoint(service, true, peer, duration_ns, error);
}

void CallSummary::AddMessageHop(const std::string& producer_service, const Span& consumer) {
  std::string subject;
  if (const AttributeValue* value = consumer.Find("messaging.destination.name"))
    subject = std::get<std::string>(*value);
  AddNamed(IdOf(producer_service), IdOf(consumer.service + " via " + subject),
           consumer.end_unix_ns - consumer.start_unix_ns, consumer.status == StatusCode::kError);
}

std::vector<CallSummaryRow> CallSummary::Rows() const {
  std::map<std::pair<std::string, std::string>, Edge> merged;
  auto merge = [&](const std::string& caller, const std::string& callee, const Edge& edge) {
    Edge& target = merged[{caller, callee}];
    target.count += edge.count;
    target.errors += edge.errors;
    target.durations_ns.insert(target.durations_ns.end(), edge.durations_ns.begin(), edge.durations_ns.end());
  };
  for (const auto& [key, edge] : named_edges_) merge(service_names_[key >> 32], service_names_[key & 0xffffffff], edge);
  std::unordered_map<EdgeKey, Edge, EdgeHash> by_endpoint = edges_;
  for (const auto& [parent, waiting] : servers_waiting_for_parent_) {
    for (const WaitingServerSpan& w : waiting) {
      Edge& edge = by_endpoint[EdgeKey{w.service, true, w.caller}];
      ++edge.count;
      if (w.error) ++edge.errors;
      edge.durations_ns.push_back(w.duration_ns);
    }
  }
  for (const auto& [key, edge] : by_endpoint) {
    const bool overflow = key.service == kOtherService && key.peer == EndpointKey{};
    auto peer = service_by_endpoint_.find(key.peer);
    bool peer_traced = !overflow && peer != service_by_endpoint_.end();
    std::string caller, callee;
    if (key.server) {
      // A remote caller is named by its address: its port is ephemeral.
      caller = peer_traced ? service_names_[peer->second] : overflow ? "(other)" : HostText(key.peer.address);
      callee = service_names_[key.service];
    } else {
      if (peer_traced) continue;  // the traced server's spans count this call
      caller = service_names_[key.service];
      callee = overflow ? "(other)" : FormatEndpoint(key.peer.address.data(), key.peer.port);
    }
    merge(caller, callee, edge);
  }
  std::vector<CallSummaryRow> rows;
  for (auto& [names, edge] : merged) {
    rows.push_back({names.first, names.second, edge.count, edge.errors,
                    PercentileMs(edge.durations_ns, 0.50), PercentileMs(edge.durations_ns, 0.99)});
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.count > b.count; });
  return rows;
}

}  // namespace flowtracer::spans
