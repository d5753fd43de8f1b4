#include "agent/spans/call_summary.h"

#include <algorithm>
#include <bit>
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

namespace {
// Fibonacci hashing: the top bits of the product (`slots` is a power of two).
size_t SlotOf(uint64_t hash, size_t slots) { return (hash * 0x9e3779b97f4a7c15ull) >> (64 - std::countr_zero(slots)); }
}  // namespace

const CallSummary::ServiceId* CallSummary::ClientAt(const EndpointKey& endpoint) const {
  if (client_by_endpoint_.empty()) return nullptr;
  const ClientEndpointSlot& slot = client_by_endpoint_[SlotOf(EndpointHash()(endpoint), kClientEndpointSlots)];
  return slot.endpoint.port != 0 && slot.endpoint == endpoint ? &slot.service : nullptr;
}

void CallSummary::AddByCaller(ServiceId service, const EndpointKey& peer, uint64_t duration_ns, bool error) {
  if (const ServiceId* caller = ClientAt(peer)) return AddNamed(*caller, service, duration_ns, error);
  EndpointKey host = peer;
  host.port = 0;  // ephemeral: one edge per caller address
  AddByEndpoint(service, true, host, duration_ns, error);
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
  if (!server) {
    if (client_by_span_id_.empty()) {
      client_by_span_id_.resize(kClientSpanSlots);
      client_by_endpoint_.resize(kClientEndpointSlots);
    }
    if (local.port != 0) client_by_endpoint_[SlotOf(EndpointHash()(local), kClientEndpointSlots)] = {local, service};
    uint64_t id = SpanKey(span.span_id);
    if (id != 0) client_by_span_id_[SlotOf(id, kClientSpanSlots)] = {id, service};
    AddByEndpoint(service, false, peer, duration_ns, error);
    // Server spans that finished before their caller's span came in.
    if (auto waiting = servers_waiting_for_parent_.find(id); waiting != servers_waiting_for_parent_.end()) {
      for (const WaitingServerSpan& w : waiting->second) AddNamed(service, w.service, w.duration_ns, w.error);
      waiting_server_spans_ -= waiting->second.size();
      servers_waiting_for_parent_.erase(waiting);
    }
    return;
  }
  if (server_by_endpoint_.size() < kMaxEdges) server_by_endpoint_.try_emplace(local, service);
  uint64_t parent = SpanKey(span.parent_span_id);
  if (parent != 0) {
    if (!client_by_span_id_.empty()) {
      const ClientSpanSlot& caller = client_by_span_id_[SlotOf(parent, kClientSpanSlots)];
      if (caller.span_key == parent) return AddNamed(caller.service, service, duration_ns, error);
    }
    if (waiting_server_spans_ < kMaxWaitingServerSpans) {
      // The parent may be a client span still to come, or one on another host (then this
      // waits kMaxWaitTicks and is named by its caller's address).
      servers_waiting_for_parent_[parent].push_back({service, peer, duration_ns, ticks_, error});
      ++waiting_server_spans_;
      return;
    }
  }
  AddByCaller(service, peer, duration_ns, error);
}

void CallSummary::Tick() {
  ++ticks_;
  for (auto it = servers_waiting_for_parent_.begin(); it != servers_waiting_for_parent_.end();) {
    // Spans waiting for one parent came at about one time: all leave at once.
    if (ticks_ - it->second.front().since_tick < kMaxWaitTicks) {
      ++it;
      continue;
    }
    for (const WaitingServerSpan& w : it->second) AddByCaller(w.service, w.caller, w.duration_ns, w.error);
    waiting_server_spans_ -= it->second.size();
    it = servers_waiting_for_parent_.erase(it);
  }
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
  for (const auto& [parent, waiting] : servers_waiting_for_parent_) {
    for (const WaitingServerSpan& w : waiting) {
      // As AddByCaller would count it.
      Edge single;
      single.count = 1;
      single.errors = w.error;
      single.durations_ns.push_back(w.duration_ns);
      if (const ServiceId* caller = ClientAt(w.caller)) {
        merge(service_names_[*caller], service_names_[w.service], single);
        continue;
      }
      EndpointKey host = w.caller;
      host.port = 0;
      merge(HostText(host.address), service_names_[w.service], single);
    }
  }
  for (const auto& [key, edge] : edges_) {
    const bool overflow = key.service == kOtherService && key.peer == EndpointKey{};
    std::string caller, callee;
    if (key.server) {
      caller = overflow ? "(other)" : HostText(key.peer.address);
      callee = service_names_[key.service];
    } else {
      if (!overflow && server_by_endpoint_.contains(key.peer)) continue;  // the traced server's spans count this call
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
