"""Error paths a user meets: clear one-line messages and non-zero exits, never a crash."""
import socket
import subprocess
import unittest

from harness import FLOWTRACER


def run(*args, user=None):
    command = [FLOWTRACER, *args]
    if user:
        command = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


class CliErrorsTest(unittest.TestCase):
    def test_not_root(self):
        for command in (["capture", "--duration", "1s"], ["sockets", "--duration", "1s"], ["check"]):
            result = run(*command, user="65534")
            self.assertNotEqual(result.returncode, 0, command)
            self.assertIn("root", result.stderr + result.stdout, command)
            self.assertNotIn("Segmentation", result.stderr)

    def test_not_root_with_its_port_taken(self):
        # The missing privilege is reported, not the Prometheus port it would have bound.
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen()
            port = held.getsockname()[1]
            result = run("capture", "--duration", "1s", "--prometheus-address", "127.0.0.1",
                         "--prometheus-port", str(port), user="65534")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("root", result.stderr)
        self.assertNotIn(str(port), result.stderr)

    def test_bad_flags(self):
        cases = [
            (["capture", "--format", "xml"], "format"),
            (["capture", "--duration", "soon"], "duration"),
            (["capture", "--hooks", "kprobe"], "hooks"),
            (["capture", "--max-payload-bytes", "999999"], "max-payload-bytes"),
            (["capture", "--ring-buffer-mb", "3"], "power of two"),
            (["sockets", "--ring-buffer-mb", "2048"], "ring-buffer-mb"),
            (["capture", "--service", "no-equals-sign"], "--service"),
            (["capture", "--pid", "abc"], "pid"),
            (["nonsense"], "subcommand"),
            ([], "subcommand"),
        ]
        for args, mentioned in cases:
            result = run(*args)
            self.assertNotEqual(result.returncode, 0, args)
            self.assertIn(mentioned, result.stderr + result.stdout, args)
            self.assertLess(result.returncode, 128, f"{args}: killed by a signal")

    def test_check_explains_this_machine(self):
        result = run("check")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        table = result.stdout
        self.assertRegex(table, r"syscall tracepoints.*\byes\s+yes\b")
        self.assertRegex(table, r"uprobes\s+yes\s+yes\b")
        self.assertRegex(table, r"socket tracepoints.*\byes\s+yes\b")
        for module in ("flowtracer-otlp-http.so", "flowtracer-otlp-grpc.so", "flowtracer-http.so"):
            self.assertRegex(table, module.replace(".", r"\.") + r"\s+yes\s")
        # This kind of machine: no kprobes, fentry refused at load.
        self.assertRegex(table, r"kprobes.*\bno\b.*CONFIG_KPROBES")
        self.assertRegex(table, r"fentry.*\bno\s+no\s+refused at load")
        self.assertIn("capture works", table)


if __name__ == "__main__":
    unittest.main()
