"""The sandbox model-written code runs in: never in this process, and on Linux in namespaces of its own.

`run_tests` executes a candidate and its tests in a fresh interpreter and passes it only if every
test ran to the end: the runner prints a per-run random token after the last test, and the parent
checks for it, so `sys.exit(0)` or `os._exit(0)` before the tests is a failure, not a pass.

What confines the candidate (Linux, where unprivileged user namespaces work: `isolation()`):
  * new user, mount, PID, network, IPC and UTS namespaces; the user namespace maps the candidate's
    root to `nobody` outside (written by this process, which needs no helper binary), so outside
    the sandbox it owns nothing and can signal or read nothing of ours (`/proc/<ppid>/environ`);
  * every mount read-only except its own temporary folder, and a fresh `/proc` that shows only
    the sandbox's processes; no network at all (not even the host's loopback);
  * limits on CPU time, address space, processes (`RLIMIT_NPROC`, counted for `nobody`), file
    size, open files; captured output is a file bounded by the file-size limit;
  * an empty environment; the whole process group (and with it the PID namespace) killed at the
    wall-clock limit.
Where namespaces are not available (not Linux, or they are disabled), the candidate runs with the
limits and the empty environment only, a warning is logged once, and `isolation()` says "limits".
What remains (stated in the README): the kernel is shared (a kernel exploit escapes any
namespace), CPU and memory bandwidth are shared, and a candidate that searches its own process
for the pass token on purpose could forge a pass.

    result = run_tests("def f(x):\\n    return x + 1", "assert f(1) == 2")
    result.passed, result.cause, result.error        # True, "", ""
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NOBODY = 65534
OUTPUT_LIMIT = 1 << 20  # bytes of stdout + stderr kept (and the largest file the candidate may write)

# Runs in the child (`python -I -S -c RUNNER folder isolate cpu_s memory nproc`, the token on stdin): trusted code, before the
# candidate. With isolation it unshares its namespaces, maps its own uid to root inside, forks into the new PID
# namespace, mounts a fresh /proc, makes every mount but its folder read-only, sets its
# limits, and runs the candidate; after the last test it prints the token.
RUNNER = r"""
import ctypes, os, resource, sys
folder, isolate, cpu_s, memory, nproc = sys.argv[1], sys.argv[2] == "1", *map(int, sys.argv[3:6])
token = sys.stdin.readline().strip()  # not in argv, where /proc/self/cmdline would show it to the candidate
sys.stdin.close()
if isolate:
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    # CLONE_NEWUSER | NEWNS | NEWPID | NEWNET | NEWIPC | NEWUTS
    if libc.unshare(0x10000000 | 0x00020000 | 0x20000000 | 0x40000000 | 0x08000000 | 0x04000000) != 0:
        sys.exit(f"sandbox: unshare failed: {os.strerror(ctypes.get_errno())}")
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    def relay(pid):  # wait for a child and end as it ended (a signal as 128 + its number, as a shell says it)
        _, status = os.waitpid(pid, 0)
        os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    pid = os.fork()
    if pid:  # outside the new PID namespace
        relay(pid)
    def mount(source, target, fstype, flags):
        if libc.mount(source, target.encode(), fstype, flags, None) != 0:
            raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")
    mount(None, "/", None, 16384 | (1 << 18))  # MS_REC | MS_PRIVATE: nothing done here reaches the host's mounts
    mount(folder.encode(), folder, None, 4096)  # MS_BIND: the folder is a mount of its own, left writable
    mounts = [line.split() for line in open("/proc/self/mountinfo")]
    try:
        mount(b"proc", "/proc", b"proc", 2 | 4 | 8)  # a /proc of this PID namespace only
    except OSError:
        pass  # refused where the host's /proc is partly masked (containers): the host's stays, read-only below
    kept = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
    for fields in mounts:
        target = fields[4].replace("\\040", " ")
        if target != folder:
            flags = 32 | 4096 | 1  # MS_REMOUNT | MS_BIND | MS_RDONLY, keeping the flags this namespace may not drop
            flags |= sum(kept.get(option, 0) for option in fields[5].split(","))
            try:
                mount(None, target, None, flags)
            except OSError:
                pass  # a mount gone (under one remounted before) or one this namespace may not change
    # PID 1 of a namespace ignores signals it has no handler for (the file-size and CPU limits' among them): the
    # candidate runs as PID 2, and when PID 1 ends, the kernel ends every process left in the namespace.
    pid = os.fork()
    if pid:
        relay(pid)
for limit, value in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_AS, memory), (resource.RLIMIT_NPROC, nproc),
                     (resource.RLIMIT_FSIZE, OUTPUT), (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
os.chdir(folder)
path = os.path.join(folder, "candidate.py")
source = open(path).read()
os.remove(path)
exec(compile(source, "candidate.py", "exec"), {"__name__": "__main__"})
sys.stdout.flush()
os.write(1, ("\n" + token + "\n").encode())
""".replace("OUTPUT", str(OUTPUT_LIMIT))


def _interpreter_for_others() -> str | None:
    """A Python interpreter any user may run: this one's real binary, else the system's python3 (stdlib is all a candidate
    gets: the runner starts it with -I -S)."""
    for candidate in (os.path.realpath(sys.executable), shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if candidate and all(_others_may(p) for p in [*Path(candidate).resolve().parents, Path(candidate).resolve()]):
            return str(Path(candidate).resolve())
    return None


def _others_may(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXOTH)


@dataclass
class TestResult:
    __test__ = False  # not a pytest class
    passed: bool
    error: str = ""  # why not: the exception's last line, the timeout, the limit it hit
    cause: str = ""  # "" (passed) | syntax | assertion | timeout | crash | output | incomplete


@functools.cache
def isolation() -> str:
    """'namespaces' where candidates run in their own user/mount/PID/network namespaces here, else 'limits'."""
    if sys.platform != "linux":
        log.warning("sandbox: not Linux, so candidates run with resource limits only (no namespaces)")
        return "limits"
    result = _run("pass", "", 10.0, 256, isolate=True)
    if result.passed:
        return "namespaces"
    log.warning("sandbox: user namespaces are not available here (%s): candidates run with resource limits only", result.error)
    return "limits"


@functools.cache
def _identity() -> tuple[str, dict]:
    """The interpreter and the user a candidate runs as: as root, `nobody` (then nothing of ours is its own)."""
    if os.geteuid() != 0:
        return sys.executable, {}
    interpreter = _interpreter_for_others()
    if interpreter is None:
        log.warning("sandbox: no Python interpreter that `nobody` may run; candidates run as root inside their namespaces")
        return sys.executable, {}
    return interpreter, {"user": NOBODY, "group": NOBODY, "extra_groups": []}


def run_tests(code: str, tests: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> TestResult:
    """Run `code` then `tests` in the sandbox; passed = every test ran to the end without an error."""
    return _run(code, tests, timeout_s, memory_mb, isolate=isolation() == "namespaces")


def _run(code: str, tests: str, timeout_s: float, memory_mb: int, isolate: bool) -> TestResult:
    token = secrets.token_hex(16)
    interpreter, identity = _identity()
    with tempfile.TemporaryDirectory(prefix="codegen-") as folder, tempfile.TemporaryFile() as output:
        Path(folder, "candidate.py").write_text(f"{code}\n\n{tests}\n")
        if identity:
            os.chown(folder, NOBODY, NOBODY)
        args = [folder, "1" if isolate else "0", str(max(1, int(timeout_s))), str(memory_mb << 20), "64"]
        proc = subprocess.Popen(
            [interpreter, "-I", "-S", "-B", "-c", RUNNER, *args],
            cwd=folder,
            env={},
            stdin=subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole at the limit
            **identity,
        )
        proc.stdin.write(f"{token}\n".encode())
        proc.stdin.close()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return TestResult(False, f"timed out after {timeout_s:g} s", "timeout")
        finally:
            _kill(proc)  # nothing it started outlives it
        output.seek(0)
        text = output.read(OUTPUT_LIMIT + 1).decode("utf-8", "replace")
    return _verdict(proc.returncode, text, token)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _verdict(returncode: int, text: str, token: str) -> TestResult:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if returncode == 0 and lines and lines[-1] == token:
        return TestResult(True)
    if len(text) > OUTPUT_LIMIT or returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        return TestResult(False, f"output over the limit of {OUTPUT_LIMIT} bytes", "output")
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGKILL):
        return TestResult(False, "CPU time limit reached", "timeout")
    last = next((line for line in reversed(lines) if token not in line), "")
    if returncode == 0:
        return TestResult(False, "exited before its tests finished", "incomplete")
    if last.startswith(("SyntaxError", "IndentationError", "TabError")):
        return TestResult(False, last, "syntax")
    if last.startswith("AssertionError"):
        return TestResult(False, last, "assertion")
    return TestResult(False, last or f"exit code {returncode}", "crash")


def run_all(checks: list[tuple[str, str]], timeout_s: float = 10.0) -> list[TestResult]:
    """`run_tests` over (code, tests) pairs, eight at a time: each is a subprocess, the threads only wait."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda check: run_tests(*check, timeout_s=timeout_s), checks))
