#include "exporters/service_map.h"

#include <gtest/gtest.h>

namespace flowtracer::exporters {
namespace {

TEST(MermaidServiceMapTest, NodesInNameOrderEdgesWithRateErrorsAndP99) {
  std::vector<spans::CallSummaryRow> rows = {
      {"gateway", "billing", 40, 4, 1.5, 12.3456},
      {"10.0.0.7", "gateway", 40, 0, 2.0, 20.0},
      {"billing", "say \"db\"", 2, 0, 0.1, 0.2},
  };
  EXPECT_EQ(MermaidServiceMap(rows, 20),
            "flowchart LR\n"
            "  n0[\"10.0.0.7\"]\n"
            "  n1[\"billing\"]\n"
            "  n2[\"gateway\"]\n"
            "  n3[\"say #quot;db#quot;\"]\n"
            "  n2 -->|\"2.0 req/s, 4 errors (10.0%), p99 12.35 ms\"| n1\n"
            "  n0 -->|\"2.0 req/s, 0 errors, p99 20.00 ms\"| n2\n"
            "  n1 -->|\"0.1 req/s, 0 errors, p99 0.20 ms\"| n3\n");
}

TEST(MermaidServiceMapTest, NoTrafficIsAnEmptyChart) {
  EXPECT_EQ(MermaidServiceMap({}, 10), "flowchart LR\n");
}

}  // namespace
}  // namespace flowtracer::exporters
