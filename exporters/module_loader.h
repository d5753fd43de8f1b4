// Optional parts of flowtracer built as modules (shared objects built from this tree by the
// same compiler): each exporter whose library costs resident memory just by being linked
// (cpp-httplib's OpenSSL set-up, gRPC) is loaded only when it is
// chosen, so `flowtracer capture` and agents that do not use it never map it.
#pragma once

#include <string>

namespace flowtracer::exporters {

// Modules and the executable must agree on the C++ types that cross between them: each
// module answers this function (module_build_id.cc) with the build id it was compiled with
// (the version and a hash of the boundary headers, CMakeLists.txt), and the loader refuses
// one that differs from its own.
inline constexpr const char* kModuleBuildIdSymbol = "flowtracer_module_build_id";

// The address of `symbol` in the module `file_name`, looked for beside the flowtracer
// executable and then in ../lib/flowtracer relative to it (where `cmake --install` puts
// it). Each module is loaded once and never unloaded: what it builds lives until exit.
// nullptr with `error` naming `purpose` ("OTLP/gRPC") and, for each place tried, what
// went wrong there (not there, a library it needs is missing, from another build).
void* LoadModuleSymbol(const char* file_name, const char* symbol, const char* purpose, std::string* error);

}  // namespace flowtracer::exporters
