// Loads the no-op programs of bench/noop_hooks.bpf.c on one hook family and keeps them
// attached until SIGINT/SIGTERM (or --duration-seconds), for side-by-side measurements:
//   noop_hooks socket|syscall [--duration-seconds N]
// Prints "attached <n> programs" once they are attached.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <bpf/libbpf.h>

namespace {

volatile sig_atomic_t g_stop = 0;
void Stop(int) { g_stop = 1; }

bool Wanted(std::string_view section, std::string_view family) {
  if (family == "socket") return section.starts_with("tp_btf/") || section.starts_with("raw_tp/");
  return section.starts_with("tracepoint/syscalls/") || section.starts_with("raw_tp/");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || (std::string_view(argv[1]) != "socket" && std::string_view(argv[1]) != "syscall")) {
    std::fprintf(stderr, "usage: noop_hooks socket|syscall [--duration-seconds N]\n");
    return 2;
  }
  std::string_view family = argv[1];
  int duration_seconds = 0;
  if (argc >= 4 && std::string_view(argv[2]) == "--duration-seconds") duration_seconds = std::atoi(argv[3]);

  // The object sits next to this executable (the build puts it there).
  std::string self(4096, '\0');
  ssize_t len = readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (len <= 0) return 1;
  self.resize(len);
  std::string object_path = self.substr(0, self.rfind('/') + 1) + "noop_hooks.bpf.o";

  bpf_object* object = bpf_object__open_file(object_path.c_str(), nullptr);
  if (!object) {
    std::fprintf(stderr, "noop_hooks: cannot open %s: %s\n", object_path.c_str(), std::strerror(errno));
    return 1;
  }
  bpf_program* program;
  bpf_object__for_each_program(program, object) {
    bpf_program__set_autoload(program, Wanted(bpf_program__section_name(program), family));
  }
  if (int err = bpf_object__load(object)) {
    std::fprintf(stderr, "noop_hooks: load failed: %s\n", std::strerror(-err));
    return 1;
  }
  std::vector<bpf_link*> links;
  bpf_object__for_each_program(program, object) {
    if (!bpf_program__autoload(program)) continue;
    bpf_link* link = bpf_program__attach(program);
    if (!link) {
      std::fprintf(stderr, "noop_hooks: attach %s failed: %s\n", bpf_program__section_name(program),
                   std::strerror(errno));
      return 1;
    }
    links.push_back(link);
  }
  std::printf("attached %zu programs\n", links.size());
  std::fflush(stdout);

  signal(SIGINT, Stop);
  signal(SIGTERM, Stop);
  for (int waited = 0; !g_stop && (duration_seconds == 0 || waited < duration_seconds * 10); ++waited)
    usleep(100 * 1000);
  for (bpf_link* link : links) bpf_link__destroy(link);
  bpf_object__close(object);
  return 0;
}
