// `flowtracer check`: what this kernel allows, and whether capture can work here.
#include <cstdio>

#include <spdlog/fmt/fmt.h>

#include "agent/cli/commands.h"
#include "agent/loader/kernel_probe.h"
#include "exporters/http_endpoint.h"
#include "exporters/module_loader.h"
#include "exporters/otlp/transport_modules.h"

namespace flowtracer::cli {

Runner AddCheckCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "check", "Report kernel features and which eBPF hook families load and attach here");
  (void)command;
  return [] {
    loader::KernelFacts facts = loader::ReadKernelFacts();
    auto yes_no = [](bool value) { return value ? "yes" : "no"; };
    fmt::print("kernel           {}\n", facts.kernel_release);
    fmt::print("BTF              {}\n", facts.btf ? "yes (/sys/kernel/btf/vmlinux)" : "no");
    fmt::print("lockdown         {}\n", facts.lockdown);
    fmt::print("root             {}\n", yes_no(facts.root));
    fmt::print("capabilities     {}\n", facts.capabilities);
    fmt::print("cgroup v2        {}\n", facts.cgroup_v2_root.empty() ? "no" : "yes (" + facts.cgroup_v2_root + ")");
    fmt::print("tracefs          {}\n\n", facts.tracefs);

    // Exporters' modules: loaded here as they would be when chosen, so a missing file or
    // library shows now rather than when the agent starts exporting. Capture needs none.
    struct Module {
      const char* file;
      const char* symbol;
      const char* used_for;
    };
    const Module modules[] = {
        {exporters::otlp::kHttpModuleFileName, exporters::otlp::kHttpModuleFactory, "OTLP/HTTP export (agent)"},
        {exporters::otlp::kGrpcModuleFileName, exporters::otlp::kGrpcModuleFactory,
         "OTLP/gRPC export (--protocol grpc)"},
        {exporters::kHttpEndpointModuleFileName, exporters::kHttpEndpointFactory,
         "/metrics (--prometheus-port); the agent's /healthz and /readyz"},
    };
    fmt::print("{:<26} {:<6} {}\n", "EXPORTER MODULE", "LOADS", "FOR");
    for (const Module& module : modules) {
      std::string error;
      const bool loads = exporters::LoadModuleSymbol(module.file, module.symbol, module.used_for, &error) != nullptr;
      fmt::print("{:<26} {:<6} {}\n", module.file, yes_no(loads), loads ? module.used_for : error);
    }
    fmt::print("\n");

    if (!facts.root) {
      fmt::print("capture cannot work: flowtracer must run as root to load eBPF programs (try: sudo flowtracer check)\n");
      return 1;
    }
    if (!facts.btf) {
      fmt::print("capture cannot work: the kernel has no BTF (/sys/kernel/btf/vmlinux); use a kernel built with CONFIG_DEBUG_INFO_BTF=y\n");
      return 1;
    }

    std::vector<loader::HookProbe> probes = loader::ProbeHookFamilies();
    fmt::print("{:<52} {:<6} {:<8} {}\n", "HOOK FAMILY", "LOADS", "ATTACHES", "DETAIL");
    bool socket_hooks = false, syscall_hooks = false, lifecycle = false;
    for (const loader::HookProbe& probe : probes) {
      fmt::print("{:<52} {:<6} {:<8} {}\n", probe.family, yes_no(probe.loads), yes_no(probe.attaches),
                 probe.detail);
      bool works = probe.loads && probe.attaches;
      if (probe.family.starts_with("socket tracepoints")) socket_hooks = works;
      if (probe.family.starts_with("syscall tracepoints")) syscall_hooks = works;
      if (probe.family.starts_with("raw tracepoints")) lifecycle = works;
    }
    fmt::print("\n");
    if (!lifecycle || (!socket_hooks && !syscall_hooks)) {
      fmt::print("capture cannot work: neither socket nor syscall tracepoints (with raw tracepoints for connection state) load and attach here; see the details above\n");
      return 1;
    }
    fmt::print("capture works: data hooks = {}\n",
               socket_hooks ? "socket tracepoints (cheapest: fire only for socket I/O)"
                            : "syscall tracepoints (fallback: every syscall of the host takes the slow path)");
    return 0;
  };
}

}  // namespace flowtracer::cli
