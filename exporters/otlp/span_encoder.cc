#include "exporters/otlp/span_encoder.h"

#include <google/protobuf/io/coded_stream.h>
#include <opentelemetry/proto/trace/v1/trace.pb.h>

#include <algorithm>
#include <bit>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "agent/text/utf8.h"

namespace flowtracer::exporters::otlp {
namespace {

namespace trace = opentelemetry::proto::trace::v1;
using google::protobuf::io::CodedOutputStream;

// Protobuf wire types used by OTLP's messages.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2 };

void PutVarint(uint64_t value, std::string* out) {
  if (value < 0x80) {  // tags and most lengths
    out->push_back(static_cast<char>(value));
    return;
  }
  uint8_t buffer[10];
  uint8_t* end = CodedOutputStream::WriteVarint64ToArray(value, buffer);
  out->append(reinterpret_cast<const char*>(buffer), end - buffer);
}

void PutTag(uint32_t field, WireType type, std::string* out) { PutVarint((field << 3) | type, out); }

void PutBytes(uint32_t field, std::string_view bytes, std::string* out) {
  PutTag(field, kLengthDelimited, out);
  PutVarint(bytes.size(), out);
  out->append(bytes);
}

void PutFixed64(uint32_t field, uint64_t value, std::string* out) {
  PutTag(field, kFixed64, out);
  uint8_t buffer[8];
  CodedOutputStream::WriteLittleEndian64ToArray(value, buffer);
  out->append(reinterpret_cast<const char*>(buffer), sizeof(buffer));
}

// Size of a length-delimited field holding `length` bytes.
size_t BytesFieldSize(uint32_t field, size_t length) {
  return CodedOutputStream::VarintSize32(field << 3) + CodedOutputStream::VarintSize64(length) + length;
}

// OTLP strings must be UTF-8 (receivers reject the whole request otherwise), and paths,
// headers and names come from network bytes and process memory. `value` itself when it
// is valid (the common case), else a repaired copy in `repaired`.
std::string_view Utf8(std::string_view value, std::string* repaired) {
  if (text::IsValidUtf8(value)) return value;
  *repaired = text::ValidUtf8(value);
  return *repaired;
}

// Per-thread buffers, so encoding a span allocates only until their sizes settle.
struct Scratch {
  std::string any_value;
  std::string repaired_key;
  std::string repaired_value;
};
thread_local Scratch scratch;

// common.proto AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4.
void PutAnyValue(const spans::AttributeValue& value, std::string* out) {
  std::visit(
      [out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          PutBytes(1, Utf8(v, &scratch.repaired_value), out);
        } else if constexpr (std::is_same_v<T, bool>) {
          PutTag(2, kVarint, out);
          PutVarint(v ? 1 : 0, out);
        } else if constexpr (std::is_same_v<T, int64_t>) {
          PutTag(3, kVarint, out);
          PutVarint(static_cast<uint64_t>(v), out);  // int64: negative values take 10 bytes
        } else {
          PutFixed64(4, std::bit_cast<uint64_t>(v), out);
        }
      },
      value);
}

// A KeyValue (key 1, value 2) as field `field` of the enclosing message.
void PutKeyValue(uint32_t field, std::string_view key, std::string_view any_value, std::string* out) {
  key = Utf8(key, &scratch.repaired_key);
  PutTag(field, kLengthDelimited, out);
  PutVarint(BytesFieldSize(1, key.size()) + BytesFieldSize(2, any_value.size()), out);
  PutBytes(1, key, out);
  PutBytes(2, any_value, out);
}

void PutAttribute(uint32_t field, const spans::Attribute& attribute, std::string* out) {
  scratch.any_value.clear();
  PutAnyValue(attribute.value, &scratch.any_value);
  PutKeyValue(field, attribute.key, scratch.any_value, out);
}

trace::Span::SpanKind Kind(spans::SpanKind kind) {
  switch (kind) {
    case spans::SpanKind::kServer: return trace::Span::SPAN_KIND_SERVER;
    case spans::SpanKind::kClient: return trace::Span::SPAN_KIND_CLIENT;
    case spans::SpanKind::kProducer: return trace::Span::SPAN_KIND_PRODUCER;
    case spans::SpanKind::kConsumer: return trace::Span::SPAN_KIND_CONSUMER;
  }
  return trace::Span::SPAN_KIND_UNSPECIFIED;
}

trace::Status::StatusCode Status(spans::StatusCode code) {
  switch (code) {
    case spans::StatusCode::kUnset: return trace::Status::STATUS_CODE_UNSET;
    case spans::StatusCode::kOk: return trace::Status::STATUS_CODE_OK;
    case spans::StatusCode::kError: return trace::Status::STATUS_CODE_ERROR;
  }
  return trace::Status::STATUS_CODE_UNSET;
}

// InstrumentationScope: name 1, version 2.
const std::string& ScopeMessage() {
  static const std::string message = [] {
    std::string out;
    PutBytes(1, "flowtracer", &out);
    PutBytes(2, FLOWTRACER_VERSION, &out);
    return out;
  }();
  return message;
}

}  // namespace

uint64_t ProcessStartTicks(uint32_t pid, const std::string& proc_root) {
  std::ifstream file(proc_root + "/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  // comm (field 2) may hold spaces and parentheses: count fields after the last ')'.
  size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 1));
  std::string field;
  for (int index = 3; rest >> field; ++index) {
    if (index == 22) return strtoull(field.c_str(), nullptr, 10);
  }
  return 0;
}

Resource ProcessResource(const process::ProcessInfo& info, const std::string& host_name,
                         uint64_t start_ticks, const KeyValues& agent_attributes) {
  Resource resource;
  auto& a = resource.attributes;
  a.push_back({"service.name", info.service_name});
  // Unique per process incarnation: the same pid after a restart is a new instance.
  a.push_back({"service.instance.id",
               host_name + "/" + std::to_string(info.pid) + "/" + std::to_string(start_ticks)});
  a.push_back({"process.pid", static_cast<int64_t>(info.pid)});
  if (!info.executable_name.empty()) a.push_back({"process.executable.name", info.executable_name});
  if (!info.executable_path.empty()) a.push_back({"process.executable.path", info.executable_path});
  a.push_back({"host.name", host_name});
  a.push_back({"telemetry.distro.name", std::string("flowtracer")});
  a.push_back({"telemetry.distro.version", std::string(FLOWTRACER_VERSION)});
  for (const auto& [key, value] : agent_attributes) {
    bool taken = key == "process.command_args";
    for (const spans::Attribute& existing : a) taken = taken || existing.key == key;
    if (!taken) a.push_back({key, value});
  }
  resource.command_args = info.command_args;
  resource.message = EncodeResource(resource);
  return resource;
}

std::string EncodeResource(const Resource& resource) {
  std::string out;
  for (const spans::Attribute& attribute : resource.attributes) PutAttribute(1, attribute, &out);
  if (!resource.command_args.empty()) {
    // AnyValue.array_value (5) of ArrayValue.values (1), each an AnyValue.string_value.
    std::string array, item;
    for (const std::string& arg : resource.command_args) {
      item.clear();
      PutBytes(1, Utf8(arg, &scratch.repaired_value), &item);
      PutBytes(1, item, &array);
    }
    std::string any_value;
    PutBytes(5, array, &any_value);
    PutKeyValue(1, "process.command_args", any_value, &out);
  }
  return out;
}

// trace.proto Span: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5,
// kind 6, start_time_unix_nano 7, end_time_unix_nano 8, attributes 9, status 15.
void EncodeSpan(const spans::Span& span, std::string* out) {
  out->clear();
  auto bytes_of = [](const auto& id) {
    return std::string_view(reinterpret_cast<const char*>(id.data()), id.size());
  };
  PutBytes(1, bytes_of(span.trace_id), out);
  PutBytes(2, bytes_of(span.span_id), out);
  if (!span.trace_state.empty()) PutBytes(3, Utf8(span.trace_state, &scratch.repaired_value), out);
  bool root = std::all_of(span.parent_span_id.begin(), span.parent_span_id.end(), [](uint8_t b) { return b == 0; });
  if (!root) PutBytes(4, bytes_of(span.parent_span_id), out);
  PutBytes(5, Utf8(span.name, &scratch.repaired_value), out);
  PutTag(6, kVarint, out);
  PutVarint(Kind(span.kind), out);
  PutFixed64(7, span.start_unix_ns, out);
  PutFixed64(8, span.end_unix_ns, out);
  for (const spans::Attribute& attribute : span.attributes) PutAttribute(9, attribute, out);
  if (span.status != spans::StatusCode::kUnset) {
    // Status: code 3.
    const uint64_t code = Status(span.status);
    PutTag(15, kLengthDelimited, out);
    PutVarint(1 + CodedOutputStream::VarintSize64(code), out);
    PutTag(3, kVarint, out);
    PutVarint(code, out);
  }
}

void TraceRequestEncoder::Add(const Resource* resource, std::string_view span_message) {
  auto [it, inserted] = group_of_.try_emplace(resource, used_groups_);
  if (inserted) {
    if (used_groups_ == groups_.size()) groups_.emplace_back();
    groups_[used_groups_].resource = resource;
    ++used_groups_;
  }
  PutBytes(2, span_message, &groups_[it->second].span_fields);  // ScopeSpans.spans
  ++spans_;
}

void TraceRequestEncoder::Finish(std::string* out) {
  // A group keeps its buffer for the next request unless it grew unusually large.
  constexpr size_t kKeptBufferBytes = 256 * 1024;
  out->clear();
  const std::string& scope = ScopeMessage();
  for (size_t i = 0; i < used_groups_; ++i) {
    Group& group = groups_[i];
    // ExportTraceServiceRequest.resource_spans 1 { ResourceSpans.resource 1,
    //   ResourceSpans.scope_spans 2 { ScopeSpans.scope 1, ScopeSpans.spans 2... } }
    const bool has_resource = group.resource && !group.resource->message.empty();
    const size_t scope_spans_size = BytesFieldSize(1, scope.size()) + group.span_fields.size();
    const size_t resource_spans_size =
        (has_resource ? BytesFieldSize(1, group.resource->message.size()) : 0) + BytesFieldSize(2, scope_spans_size);
    PutTag(1, kLengthDelimited, out);
    PutVarint(resource_spans_size, out);
    if (has_resource) PutBytes(1, group.resource->message, out);
    PutTag(2, kLengthDelimited, out);
    PutVarint(scope_spans_size, out);
    PutBytes(1, scope, out);
    out->append(group.span_fields);
    group.span_fields.clear();
    if (group.span_fields.capacity() > kKeptBufferBytes) std::string().swap(group.span_fields);
    group.resource = nullptr;
  }
  used_groups_ = 0;
  group_of_.clear();
  spans_ = 0;
}

}  // namespace flowtracer::exporters::otlp
