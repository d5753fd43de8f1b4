#include "agent/spans/route.h"

#include <algorithm>
#include <cstring>

namespace flowtracer::spans {
namespace {

constexpr std::string_view kIdPlaceholder = "{id}";

// Services beyond this many get only the overflow route: service names come from the
// traced processes, so an unbounded map would let a host with many short-lived,
// differently named services grow memory without limit.
constexpr size_t kMaxServices = 10000;

// Shorter hex runs are too often words or short codes ("cafe", "facade", "c0ffee").
constexpr size_t kMinHexIdChars = 16;
// Shorter mixed tokens are too often names ("v1", "2fa", "h2c", "oauth2").
constexpr size_t kMinTokenIdChars = 20;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// A template, so the test is inlined: through a function pointer, std::all_of made an
// indirect call per character.
template <typename Predicate>
bool AllOf(std::string_view s, Predicate pred) {
  return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}

// 8-4-4-4-12 hex digits.
bool IsUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_position ? s[i] != '-' : !IsHex(s[i])) return false;
  }
  return true;
}

// Long base64url-alphabet tokens with both letters and digits: opaque ids, not words.
bool IsOpaqueToken(std::string_view s) {
  if (s.size() < kMinTokenIdChars) return false;
  bool has_alpha = false;
  bool has_digit = false;
  for (char c : s) {
    if (IsAlpha(c)) {
      has_alpha = true;
    } else if (IsDigit(c)) {
      has_digit = true;
    } else if (c != '-' && c != '_') {
      return false;
    }
  }
  return has_alpha && has_digit;
}

bool IsIdSegment(std::string_view s) {
  return AllOf(s, [](char c) { return IsDigit(c); }) || IsUuid(s) ||
         (s.size() >= kMinHexIdChars && AllOf(s, [](char c) { return IsHex(c); })) ||
         IsOpaqueToken(s);
}

// RFC 3986 scheme ":" "//": ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). Returns the
// offset just past "://", or 0 when `target` is not absolute-form.
size_t AuthorityStart(std::string_view target) {
  if (target.empty() || !IsAlpha(target[0])) return 0;
  for (size_t i = 1; i < target.size(); ++i) {
    const char c = target[i];
    if (c == ':') return target.substr(i).starts_with("://") ? i + 3 : 0;
    if (!IsAlpha(c) && !IsDigit(c) && c != '+' && c != '-' && c != '.') return 0;
  }
  return 0;
}

}  // namespace

std::string_view PathOf(std::string_view target) {
  if (target == "*") return target;
  if (const size_t authority = AuthorityStart(target); authority != 0) {
    const size_t path = target.find_first_of("/?#", authority);
    if (path == std::string_view::npos || target[path] != '/') return "/";
    target.remove_prefix(path);
  }
  // Origin-form; authority-form ("host:443") has no '?' or '#' and comes back unchanged.
  // A plain loop: find_first_of calls memchr once per character.
  size_t end = 0;
  while (end < target.size() && target[end] != '?' && target[end] != '#') ++end;
  return target.substr(0, end);
}

std::string TemplatePath(std::string_view target) {
  std::string templated;
  TemplatePathOf(PathOf(target), &templated);
  return templated;
}

void TemplatePathOf(std::string_view path, std::string* out) {
  if (path.empty()) {
    out->assign(1, '/');
    return;
  }
  // Written in place into room for the longest result (every segment one byte, each
  // becoming the placeholder), then cut: no capacity test per segment.
  out->resize(path.size() * kIdPlaceholder.size() + 1);
  char* const start = out->data();
  char* p = start;
  size_t segment_start = 0;
  while (true) {
    size_t end = segment_start;
    while (end < path.size() && path[end] != '/') ++end;
    const std::string_view segment = path.substr(segment_start, end - segment_start);
    const std::string_view written = IsIdSegment(segment) ? kIdPlaceholder : segment;
    memcpy(p, written.data(), written.size());
    p += written.size();
    if (end == path.size()) break;
    *p++ = '/';
    segment_start = end + 1;
  }
  out->resize(p - start);
}

std::string_view RouteLimiter::Admit(std::string_view service, std::string_view route) {
  RecentService* recent = nullptr;
  for (RecentService& entry : recent_) {
    if (entry.routes && entry.service == service) {
      recent = &entry;
      break;
    }
  }
  if (!recent) {
    auto service_it = routes_by_service_.find(service);
    if (service_it == routes_by_service_.end()) {
      if (routes_by_service_.size() >= kMaxServices) {
        ++overflow_count_;
        return kOverflowRoute;
      }
      service_it = routes_by_service_.emplace(std::string(service), RouteSet{}).first;
    }
    recent = &recent_[next_recent_];
    next_recent_ = (next_recent_ + 1) % kRecentServices;
    recent->service.assign(service);
    recent->routes = &service_it->second;
    recent->route = {};
  }
  if (recent->route.data() && route == recent->route) return recent->route;
  RouteSet& routes = *recent->routes;
  if (auto known = routes.find(route); known != routes.end()) return recent->route = *known;
  if (routes.size() >= max_routes_per_service_) {
    ++overflow_count_;
    return kOverflowRoute;
  }
  return recent->route = *routes.emplace(route).first;
}

}  // namespace flowtracer::spans
