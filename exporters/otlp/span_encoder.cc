#include "exporters/otlp/span_encoder.h"

#include <fstream>
#include <sstream>
#include <unordered_map>

#include "agent/text/utf8.h"

namespace flowtracer::exporters::otlp {
namespace {

namespace common = opentelemetry::proto::common::v1;
namespace trace = opentelemetry::proto::trace::v1;

// OTLP strings must be UTF-8 (receivers reject the whole request otherwise), and paths,
// headers and names come from network bytes and process memory.
void SetString(std::string_view value, std::string* out) {
  if (text::IsValidUtf8(value)) out->assign(value);
  else *out = text::ValidUtf8(value);
}

void SetValue(const spans::AttributeValue& value, common::AnyValue* out) {
  std::visit(
      [out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) SetString(v, out->mutable_string_value());
        else if constexpr (std::is_same_v<T, int64_t>) out->set_int_value(v);
        else if constexpr (std::is_same_v<T, bool>) out->set_bool_value(v);
        else out->set_double_value(v);
      },
      value);
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
  return resource;
}

void EncodeSpans(const std::vector<ResourcedSpan>& batch,
                 opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest* request) {
  std::unordered_map<const Resource*, trace::ScopeSpans*> scopes;
  for (const ResourcedSpan& item : batch) {
    trace::ScopeSpans*& scope = scopes[item.resource.get()];
    if (!scope) {
      trace::ResourceSpans* resource_spans = request->add_resource_spans();
      if (item.resource) {
        for (const spans::Attribute& attribute : item.resource->attributes) {
          common::KeyValue* kv = resource_spans->mutable_resource()->add_attributes();
          kv->set_key(attribute.key);
          SetValue(attribute.value, kv->mutable_value());
        }
        if (!item.resource->command_args.empty()) {
          common::KeyValue* kv = resource_spans->mutable_resource()->add_attributes();
          kv->set_key("process.command_args");
          common::ArrayValue* array = kv->mutable_value()->mutable_array_value();
          for (const std::string& arg : item.resource->command_args)
            SetString(arg, array->add_values()->mutable_string_value());
        }
      }
      scope = resource_spans->add_scope_spans();
      scope->mutable_scope()->set_name("flowtracer");
      scope->mutable_scope()->set_version(FLOWTRACER_VERSION);
    }
    const spans::Span& span = item.span;
    trace::Span* out = scope->add_spans();
    out->set_trace_id(span.trace_id.data(), span.trace_id.size());
    out->set_span_id(span.span_id.data(), span.span_id.size());
    bool root = std::all_of(span.parent_span_id.begin(), span.parent_span_id.end(), [](uint8_t b) { return b == 0; });
    if (!root) out->set_parent_span_id(span.parent_span_id.data(), span.parent_span_id.size());
    if (!span.trace_state.empty()) SetString(span.trace_state, out->mutable_trace_state());
    SetString(span.name, out->mutable_name());
    out->set_kind(Kind(span.kind));
    out->set_start_time_unix_nano(span.start_unix_ns);
    out->set_end_time_unix_nano(span.end_unix_ns);
    for (const spans::Attribute& attribute : span.attributes) {
      common::KeyValue* kv = out->add_attributes();
      kv->set_key(attribute.key);
      SetValue(attribute.value, kv->mutable_value());
    }
    if (span.status != spans::StatusCode::kUnset) out->mutable_status()->set_code(Status(span.status));
  }
}

}  // namespace flowtracer::exporters::otlp
