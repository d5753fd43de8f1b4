#include "agent/loader/tracefs.h"

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace flowtracer::loader {
namespace {
constexpr const char* kTracefs = "/sys/kernel/tracing";
constexpr const char* kDebugfsTracing = "/sys/kernel/debug/tracing";

bool HasEvents(const std::string& root) { return access((root + "/events").c_str(), F_OK) == 0; }
}  // namespace

std::string TracefsPath() {
  if (HasEvents(kTracefs)) return kTracefs;
  if (HasEvents(kDebugfsTracing)) return kDebugfsTracing;
  return "";
}

std::string EnsureTracefs() {
  if (!TracefsPath().empty()) return "";
  if (mount("tracefs", kTracefs, "tracefs", 0, nullptr) != 0) {
    return std::string("tracefs is not mounted and could not be mounted at ") + kTracefs + " (" +
           std::strerror(errno) + "): run as root or mount it with 'mount -t tracefs tracefs " +
           kTracefs + "'";
  }
  spdlog::info("mounted tracefs at {}", kTracefs);
  return "";
}

}  // namespace flowtracer::loader
