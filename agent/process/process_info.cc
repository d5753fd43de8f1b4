#include "agent/process/process_info.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <system_error>
#include <utility>

namespace flowtracer::process {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kServiceNameVariable = "OTEL_SERVICE_NAME=";
// environ and cmdline can reach megabytes; the variables and the script that name a
// service sit near the start, and every traced pid pays for this read once.
constexpr size_t kMaxProcFileBytes = 64 * 1024;
// TASK_COMM_LEN is 16; a little slack covers kernels that allow longer names.
constexpr size_t kMaxCommBytes = 64;
// readlink(/proc/PID/exe) appends this once the binary was replaced (e.g. a package upgrade).
constexpr std::string_view kDeletedSuffix = " (deleted)";
constexpr std::string_view kScriptExtensions[] = {".py",  ".js", ".mjs", ".cjs",
                                                  ".ts",  ".rb", ".pl",  ".php"};

enum class Interpreter { kNone, kPython, kNode, kBun, kDeno, kRuby, kPerl, kPhp, kJava };

// How an interpreter treats one of its own options.
enum class OptionKind {
  kFlag,           // stands alone (attached values, "--opt=value", included)
  kTakesValue,     // consumes the next argument
  kInlineCode,     // the program is given inline ("-e code"): there is no script
  kScriptFollows,  // the next argument is the script ("php -f app.php")
};

std::string_view Basename(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool IsIn(std::string_view value, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), value) != names.end();
}

Interpreter InterpreterOf(std::string_view path) {
  std::string_view name = Basename(path);
  // Distributions install versioned binaries (python3.11, ruby3.1, php8.2) and
  // /proc/PID/exe resolves to them.
  while (!name.empty() && ((name.back() >= '0' && name.back() <= '9') || name.back() == '.')) {
    name.remove_suffix(1);
  }
  if (name == "python") return Interpreter::kPython;
  if (name == "node" || name == "nodejs") return Interpreter::kNode;
  if (name == "bun") return Interpreter::kBun;
  if (name == "deno") return Interpreter::kDeno;
  if (name == "ruby") return Interpreter::kRuby;
  if (name == "perl") return Interpreter::kPerl;
  if (name == "php") return Interpreter::kPhp;
  if (name == "java") return Interpreter::kJava;
  return Interpreter::kNone;
}

// "/srv/billing/app.py" -> "app"; unknown extensions stay ("gunicorn", "app.pyc").
std::string ScriptName(std::string_view path) {
  std::string_view name = Basename(path);
  for (std::string_view extension : kScriptExtensions) {
    if (name.ends_with(extension)) {
      name.remove_suffix(extension.size());
      break;
    }
  }
  return std::string(name);
}

// Python's short options group ("-uB", "-Wignore", "-um mod"), so they are read per
// character; -c, -m, -W and -X take a value, attached or in the next argument.
std::string PythonScriptName(const std::vector<std::string>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--") return i + 1 < args.size() ? ScriptName(args[i + 1]) : std::string();
    if (arg == "-") return {};  // program from stdin
    if (arg.starts_with("--")) {
      if (arg == "--check-hash-based-pycs") ++i;
      continue;
    }
    if (!arg.starts_with('-')) return ScriptName(arg);
    for (size_t j = 1; j < arg.size(); ++j) {
      const char option = arg[j];
      if (option != 'c' && option != 'm' && option != 'W' && option != 'X') continue;
      std::string_view value = arg.substr(j + 1);
      if (value.empty() && i + 1 < args.size()) value = args[++i];
      if (option == 'c') return {};
      if (option == 'm') return std::string(value);
      break;
    }
  }
  return {};
}

// "app/com.acme.Main" -> "com.acme.Main"; a module without a main class names itself.
std::string JavaModuleMain(std::string_view module) {
  const size_t slash = module.find('/');
  return std::string(slash == std::string_view::npos ? module : module.substr(slash + 1));
}

std::string JavaMainName(const std::vector<std::string>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "-jar") {
      if (i + 1 == args.size()) return {};
      std::string_view jar = Basename(args[i + 1]);
      if (jar.ends_with(".jar")) jar.remove_suffix(4);
      return std::string(jar);
    }
    if (arg == "-m" || arg == "--module") {
      return i + 1 < args.size() ? JavaModuleMain(args[i + 1]) : std::string();
    }
    if (arg.starts_with("--module=")) return JavaModuleMain(arg.substr(9));
    if (IsIn(arg, {"-cp", "-classpath", "--class-path", "-p", "--module-path",
                   "--upgrade-module-path", "--add-modules", "--add-opens", "--add-exports",
                   "--add-reads", "--patch-module", "--limit-modules", "--enable-native-access",
                   "--source"})) {
      ++i;
      continue;
    }
    // "-Xmx1g", "-Dk=v", "--add-opens=...", and "@argfiles" (which we cannot see into).
    if (arg.starts_with('-') || arg.starts_with('@')) continue;
    return std::string(arg);  // the main class
  }
  return {};
}

// Only options that take a separate value or end option parsing matter; everything else
// beginning with '-' is a flag.
OptionKind KindOf(Interpreter interpreter, std::string_view option) {
  switch (interpreter) {
    case Interpreter::kNode:
      if (IsIn(option, {"-e", "--eval", "-p", "--print"})) return OptionKind::kInlineCode;
      if (IsIn(option, {"-r", "--require", "--import", "--loader", "--experimental-loader", "-C",
                        "--conditions", "--env-file", "--title"})) {
        return OptionKind::kTakesValue;
      }
      break;
    case Interpreter::kBun:
      if (IsIn(option, {"-e", "--eval", "-p", "--print"})) return OptionKind::kInlineCode;
      if (IsIn(option, {"-r", "--preload", "--cwd", "--env-file", "-c", "--config"})) {
        return OptionKind::kTakesValue;
      }
      break;
    case Interpreter::kDeno:
      if (IsIn(option, {"-c", "--config", "--import-map", "--location", "--cert", "-L",
                        "--log-level"})) {
        return OptionKind::kTakesValue;
      }
      break;
    case Interpreter::kRuby:
      if (option == "-e") return OptionKind::kInlineCode;
      if (IsIn(option, {"-I", "-r", "-C", "-E"})) return OptionKind::kTakesValue;
      break;
    case Interpreter::kPerl:
      if (option == "-e" || option == "-E") return OptionKind::kInlineCode;
      break;
    case Interpreter::kPhp:
      if (option == "-r") return OptionKind::kInlineCode;
      if (option == "-f") return OptionKind::kScriptFollows;
      if (IsIn(option, {"-c", "-d", "-z", "-t", "-S"})) return OptionKind::kTakesValue;
      break;
    default:
      break;
  }
  return OptionKind::kFlag;
}

// node, bun, deno, ruby, perl and php: "[options] [subcommand] script [args]".
std::string ScriptNameAfterOptions(Interpreter interpreter, const std::vector<std::string>& args) {
  // "bun run app.ts", "deno run -A main.ts", "deno serve main.ts".
  bool subcommand_allowed = interpreter == Interpreter::kBun || interpreter == Interpreter::kDeno;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "-") return {};  // program from stdin
    if (arg == "--") return i + 1 < args.size() ? ScriptName(args[i + 1]) : std::string();
    if (arg.starts_with('-')) {
      switch (KindOf(interpreter, arg)) {
        case OptionKind::kFlag:
          break;
        case OptionKind::kTakesValue:
          ++i;
          break;
        case OptionKind::kInlineCode:
          return {};
        case OptionKind::kScriptFollows:
          return i + 1 < args.size() ? ScriptName(args[i + 1]) : std::string();
      }
      continue;
    }
    if (subcommand_allowed) {
      subcommand_allowed = false;
      if (arg == "run" || arg == "serve") continue;
      if (arg == "eval" || arg == "repl") return {};
    }
    return ScriptName(arg);
  }
  return {};
}

// The script, module or main class the interpreter runs; empty for a REPL or inline code.
std::string ProgramName(Interpreter interpreter, const std::vector<std::string>& args) {
  switch (interpreter) {
    case Interpreter::kPython:
      return PythonScriptName(args);
    case Interpreter::kJava:
      return JavaMainName(args);
    default:
      return ScriptNameAfterOptions(interpreter, args);
  }
}

struct FileBytes {
  std::string bytes;
  bool truncated = false;  // the file had more than the bytes read
};

// nullopt when the file cannot be read (process gone, no permission).
std::optional<FileBytes> ReadFile(const std::string& path, size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  FileBytes file;
  // One byte past the limit tells a truncated file from one of exactly max_bytes.
  file.bytes.resize(max_bytes + 1);
  size_t used_bytes = 0;
  while (used_bytes < file.bytes.size()) {
    const ssize_t read_bytes =
        ::read(fd, file.bytes.data() + used_bytes, file.bytes.size() - used_bytes);
    if (read_bytes == 0) break;
    if (read_bytes < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return std::nullopt;
    }
    used_bytes += static_cast<size_t>(read_bytes);
  }
  ::close(fd);
  file.truncated = used_bytes > max_bytes;
  file.bytes.resize(std::min(used_bytes, max_bytes));
  return file;
}

// NUL-terminated entries. A final unterminated piece is kept when it is the real end of
// the file (processes that rewrite their argv may drop the NUL) and dropped when we cut
// the file short, so a half-read "OTEL_SERVICE_NAME=bil" never names a service.
std::vector<std::string> SplitNulTerminated(const FileBytes& file) {
  std::vector<std::string> entries;
  size_t start = 0;
  for (size_t nul = file.bytes.find('\0'); nul != std::string::npos;
       nul = file.bytes.find('\0', start)) {
    entries.push_back(file.bytes.substr(start, nul - start));
    start = nul + 1;
  }
  if (start < file.bytes.size() && !file.truncated) entries.push_back(file.bytes.substr(start));
  return entries;
}

std::vector<std::string> ReadEntries(const std::string& path) {
  const std::optional<FileBytes> file = ReadFile(path, kMaxProcFileBytes);
  return file ? SplitNulTerminated(*file) : std::vector<std::string>();
}

std::string ReadExecutablePath(const std::string& pid_dir) {
  std::error_code error;
  std::string path = fs::read_symlink(pid_dir + "/exe", error).string();
  if (error) return {};
  if (std::string_view(path).ends_with(kDeletedSuffix)) {
    path.resize(path.size() - kDeletedSuffix.size());
  }
  return path;
}

ProcessInfo ReadProcess(const std::string& proc_root, uint32_t pid, std::string_view caller_comm) {
  ProcessInfo info;
  info.pid = pid;
  std::string comm(caller_comm);
  std::vector<std::string> environ_entries;
  const std::string pid_dir = proc_root + "/" + std::to_string(pid);
  std::error_code error;
  if (fs::status(pid_dir, error).type() == fs::file_type::not_found) {
    info.exited = true;
  } else {
    environ_entries = ReadEntries(pid_dir + "/environ");
    info.command_args = ReadEntries(pid_dir + "/cmdline");
    // A process that rewrites its title (nginx, postgres) pads the rest of the old
    // argument area with NULs: that padding is not arguments. A real trailing empty
    // argument cannot be told from it and goes too.
    while (info.command_args.size() > 1 && info.command_args.back().empty()) {
      info.command_args.pop_back();
    }
    info.executable_path = ReadExecutablePath(pid_dir);
    if (std::optional<FileBytes> file = ReadFile(pid_dir + "/comm", kMaxCommBytes)) {
      std::string_view proc_comm = file->bytes;
      if (proc_comm.ends_with('\n')) proc_comm.remove_suffix(1);
      if (!proc_comm.empty()) comm = proc_comm;
    }
  }
  const std::string_view executable_basename = Basename(info.executable_path);
  info.executable_name = executable_basename.empty() ? comm : std::string(executable_basename);
  info.service_name =
      ServiceNameFrom(environ_entries, info.command_args, info.executable_path, comm);
  return info;
}

}  // namespace

std::string ServiceNameFrom(const std::vector<std::string>& environ_entries,
                            const std::vector<std::string>& command_args,
                            std::string_view executable_path, std::string_view comm) {
  for (const std::string& entry : environ_entries) {
    if (!entry.starts_with(kServiceNameVariable)) continue;
    if (entry.size() > kServiceNameVariable.size()) {
      return entry.substr(kServiceNameVariable.size());
    }
    break;  // set but empty; like getenv(), only the first definition counts
  }

  Interpreter interpreter =
      command_args.empty() ? Interpreter::kNone : InterpreterOf(command_args.front());
  if (interpreter == Interpreter::kNone) interpreter = InterpreterOf(executable_path);
  if (interpreter != Interpreter::kNone) {
    std::string program = ProgramName(interpreter, command_args);
    if (!program.empty()) return program;
    // A REPL or inline code: the interpreter names the service, through the rules below,
    // or through argv[0] when the executable is unknown.
    if (executable_path.empty() && !command_args.empty()) {
      return std::string(Basename(command_args.front()));
    }
  }

  const std::string_view executable_basename = Basename(executable_path);
  return std::string(executable_basename.empty() ? comm : executable_basename);
}

ProcessRegistry::ProcessRegistry(std::string proc_root, size_t max_entries)
    : proc_root_(std::move(proc_root)),
      // The entry Get() returns must survive its own insertion.
      max_entries_(std::max<size_t>(max_entries, 1)) {}

void ProcessRegistry::SetOverride(std::string key, std::string service_name) {
  // Cached entries take the override now; a pid override keeps precedence over a later
  // executable one.
  for (ProcessInfo& info : lru_) {
    const std::string pid_key = std::to_string(info.pid);
    if (pid_key == key || (info.executable_name == key && !overrides_.contains(pid_key))) {
      info.service_name = service_name;
    }
  }
  overrides_.insert_or_assign(std::move(key), std::move(service_name));
}

const ProcessInfo& ProcessRegistry::Get(uint32_t pid, std::string_view comm) {
  if (const auto cached = cache_.find(pid); cached != cache_.end()) {
    lru_.splice(lru_.begin(), lru_, cached->second);
    return lru_.front();
  }
  if (cache_.size() >= max_entries_) {
    cache_.erase(lru_.back().pid);
    lru_.pop_back();
  }
  ProcessInfo info = ReadProcess(proc_root_, pid, comm);
  if (const auto by_pid = overrides_.find(std::to_string(pid)); by_pid != overrides_.end()) {
    info.service_name = by_pid->second;
  } else if (const auto by_executable = overrides_.find(info.executable_name);
             by_executable != overrides_.end()) {
    info.service_name = by_executable->second;
  }
  lru_.push_front(std::move(info));
  cache_.emplace(pid, lru_.begin());
  return lru_.front();
}

void ProcessRegistry::Forget(uint32_t pid) {
  if (const auto cached = cache_.find(pid); cached != cache_.end()) {
    lru_.erase(cached->second);
    cache_.erase(cached);
  }
}

}  // namespace flowtracer::process
