// Who a traced process is: the service name and the process facts spans and resources carry.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace flowtracer::process {

struct ProcessInfo {
  uint32_t pid = 0;
  std::string service_name;     // see ServiceNameFrom()
  std::string executable_name;  // basename of /proc/PID/exe (or comm when unreadable)
  std::string executable_path;
  std::vector<std::string> command_args;
  bool exited = false;  // /proc/PID was gone; fields hold what the kernel event told us
};

// The service name rule, as pure logic over what /proc gave:
//  1. OTEL_SERVICE_NAME from the process environment, when set and non-empty;
//  2. for interpreters (python*, node, nodejs, ruby, perl, php, java -jar, bun, deno),
//     the script or module name: "python3 /srv/billing/app.py" -> "app",
//     "python3 -m billing.server" -> "billing.server", "node gateway.js" -> "gateway",
//     "java -jar ledger-1.2.jar" -> "ledger-1.2";
//  3. else the executable's basename ("nginx");
//  4. else `comm`.
std::string ServiceNameFrom(const std::vector<std::string>& environ_entries,
                            const std::vector<std::string>& command_args,
                            std::string_view executable_path, std::string_view comm);

// Reads /proc (or another root, for tests) and caches per pid, bounded.
class ProcessRegistry {
 public:
  explicit ProcessRegistry(std::string proc_root = "/proc", size_t max_entries = 4096);

  // Service names fixed by configuration (--service NAME=PID/EXE) win over the rule above.
  // Keys are either a pid in decimal or an executable basename.
  void SetOverride(std::string key, std::string service_name);

  // Looks the pid up once and caches it; `comm` is used when /proc has nothing.
  const ProcessInfo& Get(uint32_t pid, std::string_view comm = {});

  // Drops a pid from the cache (process exit, pid reuse).
  void Forget(uint32_t pid);

  size_t size() const { return cache_.size(); }

 private:
  std::string proc_root_;
  size_t max_entries_;
  std::unordered_map<std::string, std::string> overrides_;
  // LRU: most recently used at the front.
  std::list<ProcessInfo> lru_;
  std::unordered_map<uint32_t, std::list<ProcessInfo>::iterator> cache_;
};

}  // namespace flowtracer::process
