#include "exporters/otlp_metrics/metric_encoder.h"

#include <algorithm>
#include <cctype>

namespace flowtracer::exporters::otlp_metrics {
namespace {

namespace pb = opentelemetry::proto;
using metrics::Metric;
using metrics::MetricKind;
using metrics::Point;

void SetValue(const metrics::LabelValue& value, pb::common::v1::AnyValue* out) {
  if (auto s = std::get_if<std::string>(&value)) out->set_string_value(*s);
  else if (auto i = std::get_if<int64_t>(&value)) out->set_int_value(*i);
  else out->set_bool_value(std::get<bool>(value));
}

void AddAttribute(const std::string& key, const std::string& value,
                  google::protobuf::RepeatedPtrField<pb::common::v1::KeyValue>* out) {
  for (const auto& existing : *out)
    if (existing.key() == key) return;  // the first setting of a key wins
  auto* kv = out->Add();
  kv->set_key(key);
  kv->mutable_value()->set_string_value(value);
}

std::string SeriesKey(const std::string& service, const Metric& metric, const Point& point) {
  std::string key = service + '\0' + metric.name + '\0';
  for (const metrics::Label& label : point.labels) {
    key += label.key + '\x01';
    if (auto s = std::get_if<std::string>(&label.value)) key += "s" + *s;
    else if (auto i = std::get_if<int64_t>(&label.value)) key += "i" + std::to_string(*i);
    else key += std::get<bool>(label.value) ? "b1" : "b0";
    key += '\x02';
  }
  return key;
}

}  // namespace

bool ParseTemporality(const std::string& text, Temporality* temporality) {
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "cumulative") *temporality = Temporality::kCumulative;
  else if (lower == "delta") *temporality = Temporality::kDelta;
  else return false;
  return true;
}

MetricsEncoder::MetricsEncoder(Temporality temporality, ResourceOptions resource)
    : temporality_(temporality), resource_(std::move(resource)) {}

size_t MetricsEncoder::Encode(const metrics::MetricsSnapshot& snapshot,
                              pb::collector::metrics::v1::ExportMetricsServiceRequest* request) {
  const bool delta = temporality_ == Temporality::kDelta;
  const auto temporality = delta ? pb::metrics::v1::AGGREGATION_TEMPORALITY_DELTA
                                 : pb::metrics::v1::AGGREGATION_TEMPORALITY_CUMULATIVE;
  const uint64_t now = snapshot.time_unix_ns;
  size_t points = 0;
  for (const metrics::ResourceMetrics& resource : snapshot.resources) {
    pb::metrics::v1::ResourceMetrics* out_resource = nullptr;
    pb::metrics::v1::ScopeMetrics* scope = nullptr;
    for (const Metric& metric : resource.metrics) {
      pb::metrics::v1::Metric* out = nullptr;
      auto start_metric = [&]() {
        if (!out_resource) {
          out_resource = request->add_resource_metrics();
          auto* attributes = out_resource->mutable_resource()->mutable_attributes();
          AddAttribute("service.name",
                       resource.service_name.empty() ? resource_.agent_service_name : resource.service_name,
                       attributes);
          AddAttribute("host.name", resource_.host_name, attributes);
          AddAttribute("telemetry.distro.name", "flowtracer", attributes);
          AddAttribute("telemetry.distro.version", resource_.version, attributes);
          for (const auto& [key, value] : resource_.agent_attributes) AddAttribute(key, value, attributes);
          scope = out_resource->add_scope_metrics();
          scope->mutable_scope()->set_name("flowtracer");
          scope->mutable_scope()->set_version(resource_.version);
        }
        out = scope->add_metrics();
        out->set_name(metric.name);
        out->set_description(metric.description);
        out->set_unit(metric.unit);
        if (metric.kind == MetricKind::kCounter) {
          out->mutable_sum()->set_is_monotonic(true);
          out->mutable_sum()->set_aggregation_temporality(temporality);
        } else if (metric.kind == MetricKind::kHistogram) {
          out->mutable_histogram()->set_aggregation_temporality(temporality);
        } else {
          out->mutable_gauge();
        }
      };
      for (const Point& point : metric.points) {
        uint64_t start = point.start_unix_ns;
        int64_t value = point.value;
        metrics::HistogramData histogram = point.histogram;
        if (delta && metric.kind != MetricKind::kGauge) {
          Previous& previous = previous_[SeriesKey(resource.service_name, metric, point)];
          const bool changed = metric.kind == MetricKind::kCounter ? point.value != previous.value
                                                                   : point.histogram.count != previous.histogram.count;
          if (previous.time_unix_ns) start = previous.time_unix_ns;
          value -= previous.value;
          for (size_t i = 0; i < histogram.bucket_counts.size(); ++i)
            histogram.bucket_counts[i] -= previous.histogram.bucket_counts[i];
          histogram.count -= previous.histogram.count;
          histogram.sum -= previous.histogram.sum;
          previous = {now, point.value, point.histogram};
          if (!changed) continue;
        }
        if (!out) start_metric();
        ++points;
        auto fill_common = [&](auto* data_point) {
          for (const metrics::Label& label : point.labels) {
            auto* kv = data_point->add_attributes();
            kv->set_key(label.key);
            SetValue(label.value, kv->mutable_value());
          }
          data_point->set_start_time_unix_nano(metric.kind == MetricKind::kGauge ? 0 : start);
          data_point->set_time_unix_nano(now);
        };
        if (metric.kind == MetricKind::kHistogram) {
          auto* data_point = out->mutable_histogram()->add_data_points();
          fill_common(data_point);
          data_point->set_count(histogram.count);
          data_point->set_sum(histogram.sum);
          for (uint64_t count : histogram.bucket_counts) data_point->add_bucket_counts(count);
          for (double bound : metrics::kDurationBucketsSeconds) data_point->add_explicit_bounds(bound);
          // Min and max of one interval cannot be recovered from two cumulative snapshots.
          if (!delta && histogram.count) {
            data_point->set_min(histogram.min);
            data_point->set_max(histogram.max);
          }
        } else {
          auto* data_point = metric.kind == MetricKind::kCounter ? out->mutable_sum()->add_data_points()
                                                                 : out->mutable_gauge()->add_data_points();
          fill_common(data_point);
          data_point->set_as_int(value);
        }
      }
    }
  }
  return points;
}

}  // namespace flowtracer::exporters::otlp_metrics
