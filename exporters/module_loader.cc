#include "exporters/module_loader.h"

#include <dlfcn.h>

#include <filesystem>
#include <map>
#include <mutex>

namespace flowtracer::exporters {

void* LoadModuleSymbol(const char* file_name, const char* symbol, const char* purpose, std::string* error) {
  struct Loaded {
    void* address = nullptr;
    std::string error;
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
    std::string tried;
    for (const std::filesystem::path& candidate :
         {directory / file_name, directory / ".." / "lib" / "flowtracer" / file_name}) {
      void* module = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!module) {
        tried += std::string(tried.empty() ? "" : "; ") + dlerror();
        continue;
      }
      result.address = dlsym(module, symbol);
      if (result.address) break;
      tried += "; " + candidate.string() + " has no " + symbol;
    }
    if (!result.address) {
      result.error = std::string(purpose) + " needs " + file_name +
                     " beside the flowtracer executable or in ../lib/flowtracer (" + tried + ")";
    }
    found = loaded.emplace(key, std::move(result)).first;
  }
  if (!found->second.address) *error = found->second.error;
  return found->second.address;
}

}  // namespace flowtracer::exporters
