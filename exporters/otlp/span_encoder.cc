#include "exporters/otlp/span_encoder.h"

#include <google/protobuf/io/coded_stream.h>
#include <opentelemetry/proto/trace/v1/trace.pb.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cstring>
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

// ScopeSpans.spans: an encoded span is queued as this field, ready to be sent as it is.
constexpr uint32_t kScopeSpansSpansField = 2;

// Most a field's tag and length prefix take (field numbers below 2048: 2 + 10 bytes).
constexpr size_t kMaxFieldPrefixBytes = 12;
// Repairing invalid UTF-8 makes a string at most 3 times longer (a byte becomes U+FFFD).
constexpr size_t kMaxRepairGrowth = 3;

// Attribute keys and values are mostly 4 to 32 bytes: two overlapping fixed-size copies
// instead of a call to memcpy (with its dispatch on size) for each.
[[gnu::always_inline]] inline void CopyBytes(uint8_t* out, const char* in, size_t size) {
  if (size >= 8 && size <= 32) {
    if (size >= 16) {
      memcpy(out, in, 16);
      memcpy(out + size - 16, in + size - 16, 16);
    } else {
      memcpy(out, in, 8);
      memcpy(out + size - 8, in + size - 8, 8);
    }
  } else if (size >= 4 && size < 8) {
    memcpy(out, in, 4);
    memcpy(out + size - 4, in + size - 4, 4);
  } else {
    memcpy(out, in, size);
  }
}

// A varint at `p`; returns the byte after it. Used by WireWriter and by the fast path's
// Put* functions below.
[[gnu::always_inline]] inline uint8_t* PutVarint(uint8_t* p, uint64_t value) {
  if (value < 0x80) {  // most tags and lengths: one byte, no loop
    *p = static_cast<uint8_t>(value);
    return p + 1;
  }
  return CodedOutputStream::WriteVarint64ToArray(value, p);
}

// A length prefix and the bytes it counts.
[[gnu::always_inline]] inline size_t LengthPrefixedSize(size_t length) {
  return (length < 0x80 ? 1 : CodedOutputStream::VarintSize64(length)) + length;
}

// Writes protobuf wire format at the end of a buffer through a raw pointer, into room
// sized beforehand from an upper bound: appending field by field was most of the
// encoder's cost. The buffer is cut to what was written when the writer goes.
class WireWriter {
 public:
  WireWriter(WireBuffer* out, size_t max_bytes) : out_(out), p_(out->Extend(max_bytes)) {
#ifndef NDEBUG
    limit_ = p_ + max_bytes;
#endif
  }
  ~WireWriter() {
    assert(p_ <= limit_);
    out_->Commit(p_);
  }
  WireWriter(const WireWriter&) = delete;
  WireWriter& operator=(const WireWriter&) = delete;

  void Varint(uint64_t value) { p_ = PutVarint(p_, value); }
  void Tag(uint32_t field, WireType type) { Varint((field << 3) | type); }
  void Raw(std::string_view bytes) {
    CopyBytes(p_, bytes.data(), bytes.size());
    p_ += bytes.size();
  }
  void Bytes(uint32_t field, std::string_view bytes) {
    Tag(field, kLengthDelimited);
    Varint(bytes.size());
    Raw(bytes);
  }
  void Fixed64(uint32_t field, uint64_t value) {
    Tag(field, kFixed64);
    p_ = CodedOutputStream::WriteLittleEndian64ToArray(value, p_);
  }

 private:
  WireBuffer* out_;
  uint8_t* p_;
#ifndef NDEBUG
  uint8_t* limit_;
#endif
};

// Size of a length-delimited field holding `length` bytes.
size_t BytesFieldSize(uint32_t field, size_t length) {
  return CodedOutputStream::VarintSize32(field << 3) + LengthPrefixedSize(length);
}

// OTLP strings must be UTF-8 (receivers reject the whole request otherwise), and paths,
// headers and names come from network bytes and process memory. `value` itself when it
// is valid (the common case), else a repaired copy in `repaired`.
[[gnu::always_inline]] inline std::string_view Utf8(std::string_view value, std::string* repaired) {
  if (text::IsValidUtf8(value)) return value;
  *repaired = text::ValidUtf8(value);
  return *repaired;
}

// Per-thread buffers, so encoding a span allocates only until their sizes settle.
struct Scratch {
  std::string repaired_key;
  std::string repaired_value;
  WireBuffer repaired_span;
};
thread_local Scratch scratch;

// Upper bound of an attribute's KeyValue field.
size_t MaxAttributeBytes(const spans::Attribute& attribute) {
  const auto* text = std::get_if<std::string>(&attribute.value);
  return 4 * kMaxFieldPrefixBytes + kMaxRepairGrowth * (attribute.key.size() + (text ? text->size() : 10));
}

// A KeyValue (key 1, value 2) as field `field` of the enclosing message, up to the value's
// length prefix: the caller writes an AnyValue of `any_value_size` bytes next.
void WriteKeyValueUpToValue(WireWriter& out, uint32_t field, std::string_view key, size_t any_value_size) {
  key = Utf8(key, &scratch.repaired_key);
  out.Tag(field, kLengthDelimited);
  out.Varint(BytesFieldSize(1, key.size()) + BytesFieldSize(2, any_value_size));
  out.Bytes(1, key);
  out.Tag(2, kLengthDelimited);
  out.Varint(any_value_size);
}

// `any_value` is an encoded AnyValue.
void WriteKeyValue(WireWriter& out, uint32_t field, std::string_view key, std::string_view any_value) {
  WriteKeyValueUpToValue(out, field, key, any_value.size());
  out.Raw(any_value);
}

// common.proto AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4.
void WriteAttribute(WireWriter& out, uint32_t field, const spans::Attribute& attribute) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          const std::string_view text = Utf8(v, &scratch.repaired_value);
          WriteKeyValueUpToValue(out, field, attribute.key, BytesFieldSize(1, text.size()));
          out.Bytes(1, text);
        } else if constexpr (std::is_same_v<T, bool>) {
          WriteKeyValueUpToValue(out, field, attribute.key, 2);
          out.Tag(2, kVarint);
          out.Varint(v ? 1 : 0);
        } else if constexpr (std::is_same_v<T, int64_t>) {
          const uint64_t bits = static_cast<uint64_t>(v);  // int64: negative values take 10 bytes
          WriteKeyValueUpToValue(out, field, attribute.key, 1 + CodedOutputStream::VarintSize64(bits));
          out.Tag(3, kVarint);
          out.Varint(bits);
        } else {
          WriteKeyValueUpToValue(out, field, attribute.key, 1 + 8);
          out.Fixed64(4, std::bit_cast<uint64_t>(v));
        }
      },
      attribute.value);
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
    WireBuffer out;
    constexpr std::string_view kName = "flowtracer", kVersion = FLOWTRACER_VERSION;
    {
      WireWriter writer(&out, 2 * kMaxFieldPrefixBytes + kName.size() + kVersion.size());
      writer.Bytes(1, kName);
      writer.Bytes(2, kVersion);
    }
    return std::string(out.view());
  }();
  return message;
}

}  // namespace

uint8_t* WireBuffer::Extend(size_t max_bytes, bool tight) {
  if (capacity_ - size_ < max_bytes) {
    const size_t needed = size_ + max_bytes;
    const size_t capacity = tight ? needed + needed / 8 : std::max(needed, 2 * capacity_);
    auto data = std::make_unique_for_overwrite<uint8_t[]>(capacity);
    if (size_) memcpy(data.get(), data_.get(), size_);
    data_ = std::move(data);
    capacity_ = capacity;
  }
  return data_.get() + size_;
}

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
  WireBuffer out;
  {
    size_t max_bytes = 0;
    for (const spans::Attribute& attribute : resource.attributes) max_bytes += MaxAttributeBytes(attribute);
    WireWriter writer(&out, max_bytes);
    for (const spans::Attribute& attribute : resource.attributes) WriteAttribute(writer, 1, attribute);
  }
  if (!resource.command_args.empty()) {
    // AnyValue.array_value (5) of ArrayValue.values (1), each an AnyValue.string_value.
    WireBuffer array, any_value;
    for (const std::string& arg : resource.command_args) {
      const std::string_view text = Utf8(arg, &scratch.repaired_value);
      WireWriter item(&array, 2 * kMaxFieldPrefixBytes + text.size());
      item.Tag(1, kLengthDelimited);
      item.Varint(BytesFieldSize(1, text.size()));
      item.Bytes(1, text);
    }
    {
      WireWriter value(&any_value, kMaxFieldPrefixBytes + array.view().size());
      value.Bytes(5, array.view());
    }
    constexpr std::string_view kKey = "process.command_args";
    WireWriter writer(&out, 3 * kMaxFieldPrefixBytes + kKey.size() + any_value.view().size());
    WriteKeyValue(writer, 1, kKey, any_value.view());
  }
  return std::string(out.view());
}

namespace {

// The most attributes a span may have for the fast path below (sizes kept on the stack).
constexpr size_t kMaxFastPathAttributes = 64;

bool IsAllZero(const spans::SpanId& id) {
  return std::all_of(id.begin(), id.end(), [](uint8_t b) { return b == 0; });
}

std::string_view BytesOf(const auto& id) { return {reinterpret_cast<const char*>(id.data()), id.size()}; }

// The AnyValue message of an attribute whose strings are valid UTF-8: its size.
size_t AnyValueSize(const spans::AttributeValue& value) {
  switch (value.index()) {
    case 0: return BytesFieldSize(1, std::get_if<std::string>(&value)->size());
    case 1: return 1 + CodedOutputStream::VarintSize64(static_cast<uint64_t>(*std::get_if<int64_t>(&value)));
    case 2: return 2;
    default: return 1 + 8;
  }
}

// The fast path's Put* functions write through a local pointer, not WireWriter's member:
// a byte store may alias anything, so the member would be reloaded and stored after each
// byte.

// A tag of a field below 16: one byte.
[[gnu::always_inline]] inline uint8_t* PutTag(uint8_t* p, uint32_t field, WireType type) {
  *p = static_cast<uint8_t>((field << 3) | type);
  return p + 1;
}
[[gnu::always_inline]] inline uint8_t* PutBytes(uint8_t* p, uint32_t field, std::string_view bytes) {
  const char* data = bytes.data();
  const size_t size = bytes.size();
  p = PutVarint(PutTag(p, field, kLengthDelimited), size);
  CopyBytes(p, data, size);
  return p + size;
}
[[gnu::always_inline]] inline uint8_t* PutFixed64(uint8_t* p, uint32_t field, uint64_t value) {
  return CodedOutputStream::WriteLittleEndian64ToArray(value, PutTag(p, field, kFixed64));
}

// Every string of `span` is valid UTF-8 (asked only when some are not ASCII).
bool AllValidUtf8(const spans::Span& span) {
  if (!text::IsValidUtf8(span.trace_state) || !text::IsValidUtf8(span.name)) return false;
  for (const spans::Attribute& attribute : span.attributes) {
    const auto* string_value = std::get_if<std::string>(&attribute.value);
    if (!text::IsValidUtf8(attribute.key) || (string_value && !text::IsValidUtf8(*string_value))) return false;
  }
  return true;
}

// The span's fields when every string is valid UTF-8 (the common case), with the sizes
// of each attribute's KeyValue and AnyValue from the size pass: nothing is checked or
// measured twice, and the message is written at its exact size.
void WriteValidSpan(const spans::Span& span, const uint32_t* key_value_sizes, const uint32_t* any_value_sizes,
                    WireBuffer* out, size_t size) {
  uint8_t* p = out->Extend(1 + LengthPrefixedSize(size), /*tight=*/true);
  p = PutVarint(PutTag(p, kScopeSpansSpansField, kLengthDelimited), size);
  [[maybe_unused]] uint8_t* const start = p;  // for the assert below
  p = PutBytes(p, 1, BytesOf(span.trace_id));
  p = PutBytes(p, 2, BytesOf(span.span_id));
  if (!span.trace_state.empty()) p = PutBytes(p, 3, span.trace_state);
  if (!IsAllZero(span.parent_span_id)) p = PutBytes(p, 4, BytesOf(span.parent_span_id));
  p = PutBytes(p, 5, span.name);
  p = PutVarint(PutTag(p, 6, kVarint), Kind(span.kind));
  p = PutFixed64(p, 7, span.start_unix_ns);
  p = PutFixed64(p, 8, span.end_unix_ns);
  const spans::Attribute* attribute = span.attributes.data();
  for (size_t i = 0, count = span.attributes.size(); i < count; ++i, ++attribute) {
    const spans::AttributeValue& value = attribute->value;
    const size_t index = value.index();
    // attributes 9: KeyValue { key 1, value 2: AnyValue }
    p = PutVarint(PutTag(p, 9, kLengthDelimited), key_value_sizes[i]);
    p = PutBytes(p, 1, attribute->key);
    p = PutVarint(PutTag(p, 2, kLengthDelimited), any_value_sizes[i]);
    // AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4.
    if (index == 0) {
      p = PutBytes(p, 1, *std::get_if<std::string>(&value));
    } else if (index == 1) {
      p = PutVarint(PutTag(p, 3, kVarint), static_cast<uint64_t>(*std::get_if<int64_t>(&value)));
    } else if (index == 2) {
      p = PutVarint(PutTag(p, 2, kVarint), *std::get_if<bool>(&value) ? 1 : 0);
    } else {
      p = PutFixed64(p, 4, std::bit_cast<uint64_t>(*std::get_if<double>(&value)));
    }
  }
  if (span.status != spans::StatusCode::kUnset) {
    // Status { code 3 }
    const uint64_t code = Status(span.status);
    p = PutVarint(PutTag(p, 15, kLengthDelimited), 1 + CodedOutputStream::VarintSize64(code));
    p = PutVarint(PutTag(p, 3, kVarint), code);
  }
  assert(static_cast<size_t>(p - start) == size);
  out->Commit(p);
}

// Any span: strings repaired to valid UTF-8, into room sized for the worst case (so its
// size is known only once written: the field's prefix goes before a copy of it).
void WriteRepairedSpan(const spans::Span& span, WireBuffer* out);
void WriteRepairedSpanField(const spans::Span& span, WireBuffer* out) {
  WireBuffer& message = scratch.repaired_span;
  message.clear();
  WriteRepairedSpan(span, &message);
  const std::string_view bytes = message.view();
  WireWriter writer(out, kMaxFieldPrefixBytes + bytes.size());
  writer.Bytes(kScopeSpansSpansField, bytes);
}

void WriteRepairedSpan(const spans::Span& span, WireBuffer* out) {
  size_t max_bytes = 10 * kMaxFieldPrefixBytes + 16 + 8 + 8 + 8 + 8 + 8 +
                     kMaxRepairGrowth * (span.trace_state.size() + span.name.size());
  for (const spans::Attribute& attribute : span.attributes) max_bytes += MaxAttributeBytes(attribute);
  WireWriter writer(out, max_bytes);
  writer.Bytes(1, BytesOf(span.trace_id));
  writer.Bytes(2, BytesOf(span.span_id));
  if (!span.trace_state.empty()) writer.Bytes(3, Utf8(span.trace_state, &scratch.repaired_value));
  if (!IsAllZero(span.parent_span_id)) writer.Bytes(4, BytesOf(span.parent_span_id));
  writer.Bytes(5, Utf8(span.name, &scratch.repaired_value));
  writer.Tag(6, kVarint);
  writer.Varint(Kind(span.kind));
  writer.Fixed64(7, span.start_unix_ns);
  writer.Fixed64(8, span.end_unix_ns);
  for (const spans::Attribute& attribute : span.attributes) WriteAttribute(writer, 9, attribute);
  if (span.status != spans::StatusCode::kUnset) {
    const uint64_t code = Status(span.status);
    writer.Tag(15, kLengthDelimited);
    writer.Varint(1 + CodedOutputStream::VarintSize64(code));
    writer.Tag(3, kVarint);
    writer.Varint(code);
  }
}

}  // namespace

// trace.proto Span: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5,
// kind 6, start_time_unix_nano 7, end_time_unix_nano 8, attributes 9, status 15.
void EncodeSpan(const spans::Span& span, WireBuffer* out) {
  out->clear();
  // Size pass: the exact size when every string is valid UTF-8, so the buffer (a queue
  // slot's, handed over) holds no more than the span needs. The strings' bytes are ORed
  // together and tested once at the end: almost always all ASCII.
  const size_t attribute_count = span.attributes.size();
  if (attribute_count > kMaxFastPathAttributes) return WriteRepairedSpanField(span, out);
  uint64_t high_bits = text::OrOfBytes(span.trace_state) | text::OrOfBytes(span.name);
  std::array<uint32_t, kMaxFastPathAttributes> key_value_sizes, any_value_sizes;
  size_t size = 2 * 2 + span.trace_id.size() + span.span_id.size() +
                (span.trace_state.empty() ? 0 : 1 + LengthPrefixedSize(span.trace_state.size())) +
                (IsAllZero(span.parent_span_id) ? 0 : 2 + span.parent_span_id.size()) +
                1 + LengthPrefixedSize(span.name.size()) + 1 + CodedOutputStream::VarintSize32(Kind(span.kind)) +
                2 * (1 + 8);
  for (size_t i = 0; i < attribute_count; ++i) {
    const spans::Attribute& attribute = span.attributes[i];
    size_t any_value_size;
    if (const auto* string_value = std::get_if<std::string>(&attribute.value)) {
      high_bits |= text::OrOfBytes(*string_value);
      any_value_size = 1 + LengthPrefixedSize(string_value->size());
    } else {
      any_value_size = AnyValueSize(attribute.value);
    }
    high_bits |= text::OrOfBytes(attribute.key);
    // Tags of fields below 16 take one byte.
    const size_t key_value_size = 1 + LengthPrefixedSize(attribute.key.size()) + 1 + LengthPrefixedSize(any_value_size);
    any_value_sizes[i] = static_cast<uint32_t>(any_value_size);
    key_value_sizes[i] = static_cast<uint32_t>(key_value_size);
    size += 1 + LengthPrefixedSize(key_value_size);
  }
  if ((high_bits & text::kHighBitOfEachByte) != 0 && !AllValidUtf8(span)) return WriteRepairedSpanField(span, out);
  if (span.status != spans::StatusCode::kUnset) size += 3 + CodedOutputStream::VarintSize64(Status(span.status));
  WriteValidSpan(span, key_value_sizes.data(), any_value_sizes.data(), out, size);
}

void TraceRequestEncoder::Add(const Resource* resource, std::string_view span_field) {
  auto [it, inserted] = group_of_.try_emplace(resource, used_groups_);
  if (inserted) {
    if (used_groups_ == groups_.size()) groups_.emplace_back();
    groups_[used_groups_].resource = resource;
    ++used_groups_;
  }
  Group& group = groups_[it->second];
  group.span_fields.push_back(span_field);
  group.span_fields_bytes += span_field.size();
}

RequestPieces TraceRequestEncoder::Finish() {
  const std::string& scope = ScopeMessage();
  size_t max_header_bytes = 0;
  for (size_t i = 0; i < used_groups_; ++i) {
    const Group& group = groups_[i];
    max_header_bytes += 4 * kMaxFieldPrefixBytes + scope.size() + (group.resource ? group.resource->message.size() : 0);
  }
  // Each group's fields up to its spans are written here, in room made once, so the
  // pieces that point into it stay valid; the spans themselves are pieces of their own.
  headers_.clear();
  pieces_.clear();
  uint8_t* const headers_start = headers_.Extend(max_header_bytes);
  uint8_t* header_end = headers_start;
  for (size_t i = 0; i < used_groups_; ++i) {
    Group& group = groups_[i];
    // ExportTraceServiceRequest.resource_spans 1 { ResourceSpans.resource 1,
    //   ResourceSpans.scope_spans 2 { ScopeSpans.scope 1, ScopeSpans.spans 2... } }
    const bool has_resource = group.resource && !group.resource->message.empty();
    const size_t scope_spans_size = BytesFieldSize(1, scope.size()) + group.span_fields_bytes;
    const size_t resource_spans_size = (has_resource ? BytesFieldSize(1, group.resource->message.size()) : 0) +
                                       BytesFieldSize(2, scope_spans_size);
    uint8_t* p = header_end;
    p = PutVarint(PutTag(p, 1, kLengthDelimited), resource_spans_size);
    if (has_resource) p = PutBytes(p, 1, group.resource->message);
    p = PutVarint(PutTag(p, 2, kLengthDelimited), scope_spans_size);
    p = PutBytes(p, 1, scope);
    pieces_.emplace_back(reinterpret_cast<const char*>(header_end), p - header_end);
    header_end = p;
    pieces_.insert(pieces_.end(), group.span_fields.begin(), group.span_fields.end());
    group.span_fields.clear();
    group.span_fields_bytes = 0;
    group.resource = nullptr;
  }
  headers_.Commit(header_end);
  used_groups_ = 0;
  group_of_.clear();
  return pieces_;
}

}  // namespace flowtracer::exporters::otlp
