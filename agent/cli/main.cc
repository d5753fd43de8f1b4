// flowtracer: traces requests between services from the kernel, with no SDK.
#include <csignal>
#include <atomic>
#include <map>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "agent/cli/commands.h"
#include "agent/loader/socket_tracer.h"

namespace flowtracer::cli {
namespace {
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }
}  // namespace

bool StopRequested() { return g_stop; }

void InstallStopHandlers() {
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

}  // namespace flowtracer::cli

int main(int argc, char** argv) {
  using namespace flowtracer;
  // Logs go to stderr: stdout carries spans (JSON lines) that users pipe.
  spdlog::set_default_logger(spdlog::stderr_color_mt("flowtracer"));
  spdlog::set_pattern("%^%l%$: %v");

  CLI::App app{"flowtracer: traces requests between services from the kernel, with no SDK", "flowtracer"};
  app.set_version_flag("--version", std::string(FLOWTRACER_VERSION));
  app.require_subcommand(1);
  int verbosity = 0;
  app.add_flag("-v,--verbose", verbosity, "Debug output (twice: also libbpf's own messages)");

  std::map<CLI::App*, cli::Runner> runners;
  auto add = [&](cli::Runner (*adder)(CLI::App&)) { return adder(app); };
  cli::Runner check = add(cli::AddCheckCommand);
  cli::Runner capture = add(cli::AddCaptureCommand);
  cli::Runner sockets = add(cli::AddSocketsCommand);
  cli::Runner agent = add(cli::AddAgentCommand);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  if (verbosity > 0) spdlog::set_level(spdlog::level::debug);
  if (verbosity > 1) spdlog::set_level(spdlog::level::trace);
  loader::InstallLibbpfLogger(verbosity > 1);

  cli::InstallStopHandlers();
  if (app.got_subcommand("check")) return check();
  if (app.got_subcommand("capture")) return capture();
  if (app.got_subcommand("sockets")) return sockets();
  if (app.got_subcommand("agent")) return agent();
  return 2;
}
