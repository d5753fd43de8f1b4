// What this kernel allows: facts and, per hook family, whether a no-op program loads
// and attaches. Used by `flowtracer check`.
#pragma once

#include <string>
#include <vector>

namespace flowtracer::loader {

struct HookProbe {
  std::string family;    // "socket tracepoints (tp_btf)", "kprobes", ...
  bool loads = false;
  bool attaches = false;
  std::string detail;    // why not, or what was attached
};

struct KernelFacts {
  std::string kernel_release;
  bool btf = false;              // /sys/kernel/btf/vmlinux
  std::string lockdown;          // "none", "integrity", "confidentiality" or why unknown
  bool root = false;
  std::string capabilities;      // the relevant effective capabilities, readable
  std::string cgroup_v2_root;    // where cgroup2 is mounted ("" when it is not)
  std::string tracefs;           // mount point, or why unavailable
};

KernelFacts ReadKernelFacts();

// Loads and attaches one no-op program per hook family, each alone, and detaches it.
std::vector<HookProbe> ProbeHookFamilies();

}  // namespace flowtracer::loader

// A function uprobes can attach to in the agent's own binary.
extern "C" void flowtracer_uprobe_probe_target();
