#include "exporters/module_loader.h"

#include <dlfcn.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

namespace flowtracer::exporters {
namespace {

constexpr const char* kModuleBuildId = FLOWTRACER_BUILD_ID;

}  // namespace

void* LoadModuleSymbol(const char* file_name, const char* symbol, const char* purpose, std::string* error) {
  struct Loaded {
    void* address = nullptr;
    std::string why_not;  // where it was looked for and what went wrong
  };
  static std::mutex mutex;
  static std::map<std::string, Loaded> loaded;  // by file and symbol: a few entries at most
  std::lock_guard lock(mutex);
  const std::string key = std::string(file_name) + ':' + symbol;
  auto found = loaded.find(key);
  if (found == loaded.end()) {
    Loaded result;
    std::error_code ec;
    const std::filesystem::path directory = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
    for (const std::filesystem::path& candidate :
         {directory / file_name, directory / ".." / "lib" / "flowtracer" / file_name}) {
      const std::string at = candidate.lexically_normal().string();
      if (!result.why_not.empty()) result.why_not += "; ";
      // Found but not loadable: dlerror names the missing library, not the module.
      void* module = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!module) {
        result.why_not += std::filesystem::exists(candidate, ec) ? at + ": " + dlerror() : at + ": not there";
        continue;
      }
      // A module from another build (a partial upgrade) would share C++ types whose layout
      // may differ: refused rather than loaded.
      auto build_id = reinterpret_cast<const char* (*)()>(dlsym(module, kModuleBuildIdSymbol));
      if (!build_id || std::strcmp(build_id(), kModuleBuildId) != 0) {
        result.why_not += at + " is from another flowtracer build (" + (build_id ? build_id() : "unknown") +
                          ", this one is " + kModuleBuildId + ")";
        continue;
      }
      result.address = dlsym(module, symbol);
      if (result.address) break;
      result.why_not += at + " has no " + symbol;
    }
    found = loaded.emplace(key, std::move(result)).first;
  }
  if (!found->second.address) {
    *error = std::string(purpose) + " needs " + file_name + " from this build, beside the flowtracer executable or in " +
             "../lib/flowtracer (" + found->second.why_not + ")";
  }
  return found->second.address;
}

}  // namespace flowtracer::exporters
