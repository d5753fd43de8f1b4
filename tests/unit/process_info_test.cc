#include "agent/process/process_info.h"

#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

namespace flowtracer::process {
namespace {

namespace fs = std::filesystem;

using Args = std::vector<std::string>;

std::string ServiceOf(const Args& args, std::string_view executable_path,
                      std::string_view comm = "comm") {
  return ServiceNameFrom({}, args, executable_path, comm);
}

TEST(ServiceNameFromTest, OtelServiceNameWins) {
  EXPECT_EQ(ServiceNameFrom({"PATH=/usr/bin", "OTEL_SERVICE_NAME=billing", "HOME=/"},
                            {"python3", "/srv/app.py"}, "/usr/bin/python3.11", "python3"),
            "billing");
  EXPECT_EQ(ServiceNameFrom({"OTEL_SERVICE_NAME=a=b c"}, {}, "", ""), "a=b c");
}

TEST(ServiceNameFromTest, EmptyOrSimilarVariablesDoNotCount) {
  EXPECT_EQ(ServiceNameFrom({"OTEL_SERVICE_NAME="}, {"nginx: master process"}, "/usr/sbin/nginx",
                            "nginx"),
            "nginx");
  EXPECT_EQ(ServiceNameFrom({"OTEL_SERVICE_NAMESPACE=shop", "XOTEL_SERVICE_NAME=x",
                             "otel_service_name=y"},
                            {}, "/usr/sbin/nginx", "nginx"),
            "nginx");
}

TEST(ServiceNameFromTest, FirstDefinitionCounts) {
  EXPECT_EQ(ServiceNameFrom({"OTEL_SERVICE_NAME=first", "OTEL_SERVICE_NAME=second"}, {}, "", ""),
            "first");
  EXPECT_EQ(ServiceNameFrom({"OTEL_SERVICE_NAME=", "OTEL_SERVICE_NAME=second"}, {},
                            "/usr/sbin/nginx", ""),
            "nginx");
}

TEST(ServiceNameFromTest, PythonScript) {
  EXPECT_EQ(ServiceOf({"python3", "/srv/billing/app.py"}, "/usr/bin/python3.11"), "app");
  EXPECT_EQ(ServiceOf({"/usr/bin/python3.11", "worker.py", "--queue", "x.py"}, ""), "worker");
  EXPECT_EQ(ServiceOf({"python", "manage"}, "/usr/bin/python2.7"), "manage");
  // Only known script extensions are dropped.
  EXPECT_EQ(ServiceOf({"python3", "app.pyc"}, "/usr/bin/python3"), "app.pyc");
}

TEST(ServiceNameFromTest, PythonModule) {
  EXPECT_EQ(ServiceOf({"python3", "-m", "billing.server"}, "/usr/bin/python3.11"),
            "billing.server");
  EXPECT_EQ(ServiceOf({"python3", "-mbilling.server", "--port", "1"}, "/usr/bin/python3.11"),
            "billing.server");
  EXPECT_EQ(ServiceOf({"python3", "-um", "uvicorn", "main:app"}, "/usr/bin/python3.11"),
            "uvicorn");
}

TEST(ServiceNameFromTest, PythonSkipsInterpreterOptions) {
  EXPECT_EQ(ServiceOf({"python3", "-u", "-B", "-O", "-X", "dev", "-W", "ignore", "/srv/app.py"},
                      "/usr/bin/python3.11"),
            "app");
  EXPECT_EQ(ServiceOf({"python3", "-uBO", "-Xfrozen_modules=off", "-Wdefault", "app.py"},
                      "/usr/bin/python3.11"),
            "app");
  EXPECT_EQ(ServiceOf({"python3", "-OO", "--check-hash-based-pycs", "never", "app.py"},
                      "/usr/bin/python3.11"),
            "app");
  EXPECT_EQ(ServiceOf({"python3", "-E", "--", "-odd-name.py"}, "/usr/bin/python3.11"),
            "-odd-name");
}

TEST(ServiceNameFromTest, PythonShebangScript) {
  // The kernel runs "#!/srv/venv/bin/python3" scripts as interpreter + script path.
  EXPECT_EQ(ServiceOf({"/srv/venv/bin/python3", "/srv/venv/bin/gunicorn", "-w", "4", "app:app"},
                      "/usr/bin/python3.11"),
            "gunicorn");
}

TEST(ServiceNameFromTest, InterpreterWithoutScriptIsTheInterpreter) {
  EXPECT_EQ(ServiceOf({"python3"}, "/usr/bin/python3.11"), "python3.11");
  EXPECT_EQ(ServiceOf({"python3", "-c", "import app; app.main()"}, "/usr/bin/python3.11"),
            "python3.11");
  EXPECT_EQ(ServiceOf({"python3", "-uc", "print(1)"}, "/usr/bin/python3.11"), "python3.11");
  EXPECT_EQ(ServiceOf({"python3", "-"}, "/usr/bin/python3.11"), "python3.11");
  EXPECT_EQ(ServiceOf({"python3", "-V"}, "/usr/bin/python3.11"), "python3.11");
  EXPECT_EQ(ServiceOf({"python3", "-m"}, "/usr/bin/python3.11"), "python3.11");
  // Without the executable, argv[0] names the interpreter.
  EXPECT_EQ(ServiceOf({"/usr/local/bin/python3", "-i"}, ""), "python3");
  EXPECT_EQ(ServiceOf({"node", "-e", "1"}, ""), "node");
}

TEST(ServiceNameFromTest, InterpreterFoundByExecutable) {
  EXPECT_EQ(ServiceOf({"/opt/py", "/srv/app.py"}, "/usr/bin/python3.12"), "app");
  // A rewritten process title leaves no script to find.
  EXPECT_EQ(ServiceOf({"gunicorn: master [billing]"}, "/usr/bin/python3.11"), "python3.11");
}

TEST(ServiceNameFromTest, Node) {
  EXPECT_EQ(ServiceOf({"node", "gateway.js"}, "/usr/bin/node"), "gateway");
  EXPECT_EQ(ServiceOf({"nodejs", "/srv/app.cjs"}, "/usr/bin/nodejs"), "app");
  EXPECT_EQ(ServiceOf({"node", "--inspect=0.0.0.0:9229", "--max-old-space-size=4096", "-r",
                       "dotenv/config", "dist/server.mjs"},
                      "/usr/local/bin/node"),
            "server");
  EXPECT_EQ(ServiceOf({"node", "--require", "ts-node/register", "src/main.ts"}, "/usr/bin/node"),
            "main");
  EXPECT_EQ(ServiceOf({"node", "--eval", "require('./app')"}, "/usr/bin/node"), "node");
  EXPECT_EQ(ServiceOf({"node"}, "/usr/bin/node"), "node");
}

TEST(ServiceNameFromTest, BunAndDeno) {
  EXPECT_EQ(ServiceOf({"bun", "run", "src/index.ts"}, "/usr/local/bin/bun"), "index");
  EXPECT_EQ(ServiceOf({"bun", "--preload", "./setup.ts", "server.ts"}, "/usr/local/bin/bun"),
            "server");
  EXPECT_EQ(ServiceOf({"deno", "run", "--allow-net", "-c", "deno.json", "main.ts"},
                      "/usr/bin/deno"),
            "main");
  EXPECT_EQ(ServiceOf({"deno", "serve", "-A", "api.ts"}, "/usr/bin/deno"), "api");
  EXPECT_EQ(ServiceOf({"deno", "eval", "console.log(1)"}, "/usr/bin/deno"), "deno");
  EXPECT_EQ(ServiceOf({"deno", "repl"}, "/usr/bin/deno"), "deno");
}

TEST(ServiceNameFromTest, RubyPerlPhp) {
  EXPECT_EQ(ServiceOf({"ruby", "-Ilib", "-r", "bundler/setup", "app.rb"}, "/usr/bin/ruby3.1"),
            "app");
  EXPECT_EQ(ServiceOf({"ruby", "-e", "puts 1"}, "/usr/bin/ruby3.1"), "ruby3.1");
  EXPECT_EQ(ServiceOf({"perl", "-w", "/usr/local/bin/worker.pl"}, "/usr/bin/perl"), "worker");
  EXPECT_EQ(ServiceOf({"perl", "-E", "say 1"}, "/usr/bin/perl"), "perl");
  EXPECT_EQ(ServiceOf({"php", "-d", "memory_limit=1G", "artisan", "queue:work"},
                      "/usr/bin/php8.2"),
            "artisan");
  EXPECT_EQ(ServiceOf({"php", "-f", "public/index.php"}, "/usr/bin/php8.2"), "index");
  EXPECT_EQ(ServiceOf({"php", "-r", "echo 1;"}, "/usr/bin/php8.2"), "php8.2");
  EXPECT_EQ(ServiceOf({"php", "-S", "0.0.0.0:8000", "-t", "public"}, "/usr/bin/php8.2"),
            "php8.2");
}

TEST(ServiceNameFromTest, Java) {
  EXPECT_EQ(ServiceOf({"java", "-jar", "ledger-1.2.jar"}, "/usr/lib/jvm/java-17/bin/java"),
            "ledger-1.2");
  EXPECT_EQ(ServiceOf({"java", "-Xmx1g", "-Dspring.profiles.active=prod", "-jar",
                       "/opt/ledger/ledger-1.2.jar", "--server.port=8080"},
                      "/usr/lib/jvm/java-17/bin/java"),
            "ledger-1.2");
  EXPECT_EQ(ServiceOf({"java", "-cp", "lib/a.jar:lib/b.jar", "com.acme.Main", "serve"},
                      "/usr/lib/jvm/java-17/bin/java"),
            "com.acme.Main");
  EXPECT_EQ(ServiceOf({"java", "--add-opens", "java.base/java.lang=ALL-UNNAMED", "-m",
                       "ledger/com.acme.ledger.Main"},
                      "/usr/lib/jvm/java-17/bin/java"),
            "com.acme.ledger.Main");
  EXPECT_EQ(ServiceOf({"java", "--module=ledger"}, "/usr/lib/jvm/java-17/bin/java"), "ledger");
  EXPECT_EQ(ServiceOf({"java", "@jvm.options", "com.acme.Main"}, "/usr/lib/jvm/java-17/bin/java"),
            "com.acme.Main");
  EXPECT_EQ(ServiceOf({"java", "-version"}, "/usr/lib/jvm/java-17/bin/java"), "java");
}

TEST(ServiceNameFromTest, OtherExecutablesUseTheirBasename) {
  EXPECT_EQ(ServiceOf({"nginx: master process /usr/sbin/nginx"}, "/usr/sbin/nginx"), "nginx");
  EXPECT_EQ(ServiceOf({"php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"},
                      "/usr/sbin/php-fpm8.2"),
            "php-fpm8.2");
  EXPECT_EQ(ServiceOf({"/usr/bin/node_exporter", "app.js"}, "/usr/bin/node_exporter"),
            "node_exporter");
  EXPECT_EQ(ServiceOf({"pythonista", "app.py"}, "/opt/pythonista"), "pythonista");
}

TEST(ServiceNameFromTest, CommIsTheLastResort) {
  EXPECT_EQ(ServiceNameFrom({}, {}, "", "kworker/0:1"), "kworker/0:1");
  EXPECT_EQ(ServiceNameFrom({}, {"/usr/bin/redis-server", "*:6379"}, "", "redis-server"),
            "redis-server");
  EXPECT_EQ(ServiceNameFrom({}, {}, "", ""), "");
}

// Entries as /proc writes them: each one NUL-terminated.
std::string NulTerminated(const std::vector<std::string>& entries) {
  std::string bytes;
  for (const std::string& entry : entries) {
    bytes += entry;
    bytes += '\0';
  }
  return bytes;
}

class ProcessRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char root_template[] = "/tmp/flowtracer_proc_test_XXXXXX";
    ASSERT_NE(::mkdtemp(root_template), nullptr) << "errno " << errno;
    root_ = root_template;
  }

  void TearDown() override {
    std::error_code error;
    fs::remove_all(root_, error);
  }

  std::string PidDir(uint32_t pid) {
    const std::string dir = root_ + "/" + std::to_string(pid);
    std::error_code error;
    fs::create_directories(dir, error);
    EXPECT_FALSE(error) << error.message();
    return dir;
  }

  void WriteProcFile(uint32_t pid, const std::string& name, const std::string& bytes) {
    std::ofstream file(PidDir(pid) + "/" + name, std::ios::binary | std::ios::trunc);
    file << bytes;
    EXPECT_TRUE(file.good()) << name;
  }

  void LinkExe(uint32_t pid, const std::string& target) {
    std::error_code error;
    fs::create_symlink(target, PidDir(pid) + "/exe", error);
    EXPECT_FALSE(error) << error.message();
  }

  void AddProcess(uint32_t pid, const std::vector<std::string>& environ_entries,
                  const std::vector<std::string>& args, const std::string& exe,
                  const std::string& comm) {
    WriteProcFile(pid, "environ", NulTerminated(environ_entries));
    WriteProcFile(pid, "cmdline", NulTerminated(args));
    LinkExe(pid, exe);
    WriteProcFile(pid, "comm", comm + "\n");
  }

  std::string root_;
};

TEST_F(ProcessRegistryTest, ReadsTheProcTree) {
  AddProcess(100, {"PATH=/usr/bin", "OTEL_SERVICE_NAME=billing"},
             {"python3", "/srv/billing/app.py", "--port", "8080"}, "/usr/bin/python3.11",
             "python3");
  ProcessRegistry registry(root_);
  const ProcessInfo& info = registry.Get(100, "ignored");
  EXPECT_EQ(info.pid, 100u);
  EXPECT_EQ(info.service_name, "billing");
  EXPECT_EQ(info.executable_name, "python3.11");
  EXPECT_EQ(info.executable_path, "/usr/bin/python3.11");
  EXPECT_EQ(info.command_args, (Args{"python3", "/srv/billing/app.py", "--port", "8080"}));
  EXPECT_FALSE(info.exited);
  EXPECT_EQ(registry.size(), 1u);
}

TEST_F(ProcessRegistryTest, AppliesTheServiceRule) {
  AddProcess(100, {"PATH=/usr/bin"}, {"python3", "/srv/billing/app.py"}, "/usr/bin/python3.11",
             "python3");
  AddProcess(101, {}, {"nginx: worker process"}, "/usr/sbin/nginx", "nginx");
  ProcessRegistry registry(root_);
  EXPECT_EQ(registry.Get(100).service_name, "app");
  EXPECT_EQ(registry.Get(101).service_name, "nginx");
}

TEST_F(ProcessRegistryTest, MissingPidDirectoryMeansExited) {
  ProcessRegistry registry(root_);
  const ProcessInfo& info = registry.Get(4242, "nginx");
  EXPECT_EQ(info.pid, 4242u);
  EXPECT_TRUE(info.exited);
  EXPECT_EQ(info.service_name, "nginx");
  EXPECT_EQ(info.executable_name, "nginx");
  EXPECT_EQ(info.executable_path, "");
  EXPECT_TRUE(info.command_args.empty());

  const ProcessInfo& unnamed = registry.Get(4243);
  EXPECT_TRUE(unnamed.exited);
  EXPECT_EQ(unnamed.service_name, "");
  EXPECT_EQ(unnamed.executable_name, "");
}

TEST_F(ProcessRegistryTest, MissingProcRootMeansExited) {
  ProcessRegistry registry(root_ + "/does-not-exist");
  const ProcessInfo& info = registry.Get(1, "init");
  EXPECT_TRUE(info.exited);
  EXPECT_EQ(info.service_name, "init");
}

TEST_F(ProcessRegistryTest, UnreadableFilesFallBackToCallersComm) {
  PidDir(7);
  ProcessRegistry registry(root_);
  const ProcessInfo& info = registry.Get(7, "worker");
  EXPECT_FALSE(info.exited);
  EXPECT_EQ(info.service_name, "worker");
  EXPECT_EQ(info.executable_name, "worker");
  EXPECT_EQ(info.executable_path, "");
  EXPECT_TRUE(info.command_args.empty());
}

TEST_F(ProcessRegistryTest, CommFileWinsOverCallersComm) {
  WriteProcFile(2, "comm", "kworker/0:1\n");
  ProcessRegistry registry(root_);
  const ProcessInfo& info = registry.Get(2, "stale");
  EXPECT_EQ(info.service_name, "kworker/0:1");
  EXPECT_EQ(info.executable_name, "kworker/0:1");
}

TEST_F(ProcessRegistryTest, ExeThatIsNotASymlinkIsUnreadable) {
  WriteProcFile(8, "exe", "not a link");
  WriteProcFile(8, "comm", "daemon\n");
  ProcessRegistry registry(root_);
  const ProcessInfo& info = registry.Get(8);
  EXPECT_EQ(info.executable_path, "");
  EXPECT_EQ(info.executable_name, "daemon");
  EXPECT_EQ(info.service_name, "daemon");
}

TEST_F(ProcessRegistryTest, DeletedExecutableKeepsItsName) {
  AddProcess(9, {}, {"/usr/sbin/nginx"}, "/usr/sbin/nginx (deleted)", "nginx");
  ProcessRegistry registry(root_);
  const ProcessInfo& info = registry.Get(9);
  EXPECT_EQ(info.executable_path, "/usr/sbin/nginx");
  EXPECT_EQ(info.executable_name, "nginx");
  EXPECT_EQ(info.service_name, "nginx");
}

TEST_F(ProcessRegistryTest, CmdlineEdgeCases) {
  // A rewritten process title without the terminating NUL.
  WriteProcFile(10, "cmdline", "gunicorn: master [billing]");
  LinkExe(10, "/usr/bin/python3.11");
  // Empty arguments are arguments, except trailing ones (below).
  WriteProcFile(11, "cmdline", std::string("echo\0\0x\0", 8));
  // nginx's title is followed by the NULs it cleared the old arguments with.
  WriteProcFile(12, "cmdline", "nginx: worker process" + std::string(40, '\0'));
  ProcessRegistry registry(root_);
  const ProcessInfo& title = registry.Get(10);
  EXPECT_EQ(title.command_args, (Args{"gunicorn: master [billing]"}));
  EXPECT_EQ(title.service_name, "python3.11");
  EXPECT_EQ(registry.Get(11).command_args, (Args{"echo", "", "x"}));
  EXPECT_EQ(registry.Get(12).command_args, (Args{"nginx: worker process"}));
}

TEST_F(ProcessRegistryTest, ReadsAtMost64KiBOfEnviron) {
  constexpr size_t kLimitBytes = 64 * 1024;
  const std::string otel = "OTEL_SERVICE_NAME=billing";
  // A filler entry that takes exactly `bytes` bytes once NUL-terminated.
  const auto filler = [](size_t bytes) { return "F=" + std::string(bytes - 3, 'x'); };
  const std::string tail = NulTerminated({filler(100 * 1024)});

  // Early: found even though the file is larger than the limit.
  WriteProcFile(20, "environ", NulTerminated({otel}) + tail);
  // Ending exactly at the limit: complete, so found.
  WriteProcFile(21, "environ", NulTerminated({filler(kLimitBytes - otel.size() - 1), otel}));
  // Cut by the limit after "OTEL_SERVICE_NAME=bil": the fragment must not count.
  WriteProcFile(22, "environ",
                NulTerminated({filler(kLimitBytes - otel.size() + 4), otel}) + tail);
  // Entirely past the limit: not seen.
  WriteProcFile(23, "environ", tail + NulTerminated({otel}));
  for (uint32_t pid = 20; pid <= 23; ++pid) LinkExe(pid, "/usr/bin/app-server");

  ProcessRegistry registry(root_);
  EXPECT_EQ(registry.Get(20).service_name, "billing");
  EXPECT_EQ(registry.Get(21).service_name, "billing");
  EXPECT_EQ(registry.Get(22).service_name, "app-server");
  EXPECT_EQ(registry.Get(23).service_name, "app-server");
}

TEST_F(ProcessRegistryTest, OverridesByPidThenExecutable) {
  AddProcess(100, {"OTEL_SERVICE_NAME=billing"}, {"billing-api"}, "/opt/bin/billing-api",
             "billing-api");
  AddProcess(101, {"OTEL_SERVICE_NAME=billing"}, {"billing-api"}, "/opt/bin/billing-api",
             "billing-api");
  AddProcess(102, {"OTEL_SERVICE_NAME=billing"}, {"other"}, "/opt/bin/other", "other");
  ProcessRegistry registry(root_);
  registry.SetOverride("100", "pinned");
  registry.SetOverride("billing-api", "api");
  EXPECT_EQ(registry.Get(100).service_name, "pinned");
  EXPECT_EQ(registry.Get(101).service_name, "api");
  EXPECT_EQ(registry.Get(102).service_name, "billing");
}

TEST_F(ProcessRegistryTest, OverrideByExecutableAppliesToExitedProcessesThroughComm) {
  ProcessRegistry registry(root_);
  registry.SetOverride("nginx", "edge");
  EXPECT_EQ(registry.Get(4242, "nginx").service_name, "edge");
}

TEST_F(ProcessRegistryTest, OverridesSetLaterUpdateCachedEntries) {
  AddProcess(100, {"OTEL_SERVICE_NAME=billing"}, {"billing-api"}, "/opt/bin/billing-api",
             "billing-api");
  AddProcess(101, {}, {"billing-api"}, "/opt/bin/billing-api", "billing-api");
  ProcessRegistry registry(root_);
  const ProcessInfo& first = registry.Get(100);
  const ProcessInfo& second = registry.Get(101);
  EXPECT_EQ(first.service_name, "billing");
  EXPECT_EQ(second.service_name, "billing-api");

  registry.SetOverride("100", "pinned");
  EXPECT_EQ(first.service_name, "pinned");
  EXPECT_EQ(second.service_name, "billing-api");

  // The pid override keeps precedence over the executable override set after it.
  registry.SetOverride("billing-api", "api");
  EXPECT_EQ(first.service_name, "pinned");
  EXPECT_EQ(second.service_name, "api");
  EXPECT_EQ(registry.Get(100).service_name, "pinned");
  EXPECT_EQ(registry.Get(101).service_name, "api");
}

TEST_F(ProcessRegistryTest, CachesUntilForget) {
  AddProcess(100, {"OTEL_SERVICE_NAME=billing"}, {"app"}, "/opt/bin/app", "app");
  ProcessRegistry registry(root_);
  EXPECT_EQ(registry.Get(100).service_name, "billing");

  WriteProcFile(100, "environ", NulTerminated({"OTEL_SERVICE_NAME=ledger"}));
  EXPECT_EQ(registry.Get(100).service_name, "billing");

  registry.Forget(100);
  registry.Forget(555);  // unknown pids are fine
  EXPECT_EQ(registry.size(), 0u);
  EXPECT_EQ(registry.Get(100).service_name, "ledger");
  EXPECT_EQ(registry.size(), 1u);
}

TEST_F(ProcessRegistryTest, EvictsTheLeastRecentlyUsed) {
  for (uint32_t pid = 1; pid <= 3; ++pid) {
    AddProcess(pid, {"OTEL_SERVICE_NAME=old" + std::to_string(pid)}, {"app"}, "/opt/bin/app",
               "app");
  }
  ProcessRegistry registry(root_, 2);
  registry.Get(1);
  registry.Get(2);
  registry.Get(1);  // 2 is now the least recently used
  registry.Get(3);
  EXPECT_EQ(registry.size(), 2u);

  for (uint32_t pid = 1; pid <= 3; ++pid) {
    WriteProcFile(pid, "environ", NulTerminated({"OTEL_SERVICE_NAME=new"}));
  }
  EXPECT_EQ(registry.Get(1).service_name, "old1");
  EXPECT_EQ(registry.Get(3).service_name, "old3");
  EXPECT_EQ(registry.Get(2).service_name, "new");  // evicted, so read again; evicts 1
  EXPECT_EQ(registry.Get(3).service_name, "old3");
  EXPECT_EQ(registry.Get(1).service_name, "new");
  EXPECT_EQ(registry.size(), 2u);
}

TEST_F(ProcessRegistryTest, ZeroMaxEntriesStillReturnsALiveEntry) {
  AddProcess(1, {"OTEL_SERVICE_NAME=one"}, {"app"}, "/opt/bin/app", "app");
  AddProcess(2, {"OTEL_SERVICE_NAME=two"}, {"app"}, "/opt/bin/app", "app");
  ProcessRegistry registry(root_, 0);
  EXPECT_EQ(registry.Get(1).service_name, "one");
  EXPECT_EQ(registry.Get(2).service_name, "two");
  EXPECT_EQ(registry.size(), 1u);
}

TEST(ProcessRegistryRealProcTest, ReadsThisTestBinary) {
  char exe_path[PATH_MAX];
  const ssize_t exe_path_bytes = ::readlink("/proc/self/exe", exe_path, sizeof(exe_path));
  ASSERT_GT(exe_path_bytes, 0);
  const std::string expected_path(exe_path, static_cast<size_t>(exe_path_bytes));
  const std::string expected_name = expected_path.substr(expected_path.rfind('/') + 1);
  const char* otel_service_name = ::getenv("OTEL_SERVICE_NAME");
  const std::string expected_service =
      otel_service_name != nullptr && *otel_service_name != '\0' ? otel_service_name
                                                                 : expected_name;

  ProcessRegistry registry;
  const ProcessInfo& info = registry.Get(static_cast<uint32_t>(::getpid()), "unused");
  EXPECT_EQ(info.pid, static_cast<uint32_t>(::getpid()));
  EXPECT_FALSE(info.exited);
  EXPECT_EQ(info.executable_path, expected_path);
  EXPECT_EQ(info.executable_name, expected_name);
  EXPECT_EQ(info.service_name, expected_service);
  ASSERT_FALSE(info.command_args.empty());
  EXPECT_EQ(info.command_args.front(), program_invocation_name);
}

}  // namespace
}  // namespace flowtracer::process
