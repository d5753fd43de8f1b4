// Subcommands of the `flowtracer` binary; each registers its flags and returns the
// process exit status when run.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace flowtracer::cli {

using Runner = std::function<int()>;

Runner AddCheckCommand(CLI::App& app);
Runner AddCaptureCommand(CLI::App& app);
Runner AddSocketsCommand(CLI::App& app);
Runner AddAgentCommand(CLI::App& app);

// Set by SIGINT/SIGTERM; long-running commands stop when it is.
bool StopRequested();
void InstallStopHandlers();

}  // namespace flowtracer::cli
