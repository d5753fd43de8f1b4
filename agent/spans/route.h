// Low-cardinality routes: ids in URL paths become placeholders, and each service keeps
// a bounded set of distinct routes (the rest share one overflow value).
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace flowtracer::spans {

// "/users/123/orders/9f1c...?x=1" -> "/users/{id}/orders/{id}". The query string and
// fragment are dropped. Segments that look like ids (all digits, UUIDs, long hex, and
// other long mixed alphanumeric tokens) become "{id}". An empty path becomes "/".
std::string TemplatePath(std::string_view target);
// The same from `path` (what PathOf returns), written over `out` (its storage reused: no
// allocation per call).
void TemplatePathOf(std::string_view path, std::string* out);

// The path part of a request-target: "/a/b?x" -> "/a/b"; absolute-form
// "http://h:1/a?x" -> "/a"; "*" stays "*".
std::string_view PathOf(std::string_view target);

class RouteLimiter {
 public:
  static constexpr std::string_view kOverflowRoute = "{overflow}";

  explicit RouteLimiter(size_t max_routes_per_service = 200)
      : max_routes_per_service_(max_routes_per_service) {}
  RouteLimiter(const RouteLimiter&) = delete;  // recent_ points into routes_by_service_
  RouteLimiter& operator=(const RouteLimiter&) = delete;

  // Returns `route` while the service has fewer than the cap of distinct routes (or the
  // route is already known), else kOverflowRoute. Counts overflows. The view stays valid
  // as long as the limiter (admitted routes are kept, never removed).
  std::string_view Admit(std::string_view service, std::string_view route);

  size_t overflow_count() const { return overflow_count_; }

 private:
  // Looked up by string_view: a known service and route cost no string copies.
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };
  using RouteSet = std::unordered_set<std::string, StringHash, std::equal_to<>>;

  size_t max_routes_per_service_;
  size_t overflow_count_ = 0;
  std::unordered_map<std::string, RouteSet, StringHash, std::equal_to<>> routes_by_service_;
  // The last few services seen, each with its routes and the route it admitted last
  // (entries are never removed, so pointer and view stay valid): a host's spans come
  // from a few services with a few hot routes, and comparing is cheaper than hashing.
  struct RecentService {
    std::string service;
    RouteSet* routes = nullptr;
    std::string_view route;
  };
  static constexpr size_t kRecentServices = 4;
  std::array<RecentService, kRecentServices> recent_;
  size_t next_recent_ = 0;  // the entry replaced next
};

}  // namespace flowtracer::spans
