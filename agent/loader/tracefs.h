#pragma once

#include <string>

namespace flowtracer::loader {

// Makes sure tracefs is reachable (syscall tracepoints attach through it), mounting it
// at /sys/kernel/tracing when missing. Returns an empty string on success, else one
// sentence the user can act on.
std::string EnsureTracefs();

// Where tracefs is, or "" when it is not mounted.
std::string TracefsPath();

}  // namespace flowtracer::loader
