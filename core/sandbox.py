"""The sandbox that model-written and caller-written code runs in: bubblewrap plus a seccomp filter, never this process.

`run_tests` executes a candidate and its tests in a fresh interpreter under `bwrap` (the sandbox tool Flatpak
and others ship; Debian's `bubblewrap` package) and passes it only if every test ran to the end: the runner
prints a per-run random token after the last test, and the parent checks for it, so `sys.exit(0)` or
`os._exit(0)` before the tests is a failure, not a pass.

What confines the candidate (`isolation(settings)` says "bubblewrap"):
  * new user, mount, PID, network, IPC, UTS and cgroup namespaces; no further user namespaces inside
    (`--disable-userns`); every capability dropped; `no_new_privs`; a new session (no terminal to inject into);
  * a seccomp filter built with libseccomp (the library systemd, Docker and Flatpak use) that refuses mount,
    umount2, unshare, setns, ptrace, keyctl, bpf, perf_event_open, namespace flags to clone and the rest of
    `DENIED_SYSCALLS` with EPERM;
  * a filesystem of the interpreter, its standard library and the C libraries it loads, all read-only; a
    fresh `/proc` of its own PID namespace, a minimal `/dev`; its working folder an empty tmpfs capped at
    `FOLDER_BYTES`; no home, nothing of the host's `/tmp`, the checkout or the registry; no network at all;
  * run as `nobody` when this process is root (so outside the sandbox it owns nothing), else as this user
    (whose files it cannot see: none of them is mounted);
  * limits on CPU time, address space, processes, file size, open files; an empty environment; the code and
    the token arrive on stdin (not in argv or the environment, where `/proc` would show them); the whole
    sandbox is killed at the wall-clock limit and when this process dies.
Isolation is probed once per process. Without it (no `bwrap`, no libseccomp, user namespaces refused), running
code raises `SandboxUnavailable`, whose message says why and names the setting, `DISTILL_SLM_SANDBOX_ALLOW_WEAKER=1`,
that accepts the weaker fallback (a plain subprocess with the limits and an empty environment; `isolation()`
then says "limits", and so does every verdict).
What remains: the kernel is shared (a kernel exploit escapes any sandbox), CPU and memory bandwidth are shared,
and code that searches its own interpreter's memory for the pass token could forge a pass (it gains nothing
outside the sandbox: the verdict is the only thing it can change).

    result = run_tests("def f(x):\\n    return x + 1", "assert f(1) == 2", ModelSettings())
    result.passed, result.cause, result.error        # True, "", ""
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.errors import SandboxBusy, SandboxUnavailable
from core.settings import ModelSettings

log = logging.getLogger(__name__)

NOBODY = 65534
OUTPUT_LIMIT = 1 << 20  # bytes of stdout + stderr kept (and the largest file the candidate may write)
FOLDER_BYTES = 16 << 20  # the candidate's working folder (a tmpfs)
ERROR_CHARS = 300  # the longest error line a verdict carries (a caller must not read files out through it)
ALLOW_WEAKER = "DISTILL_SLM_SANDBOX_ALLOW_WEAKER"

# Refused with EPERM inside the sandbox: what changes mounts or namespaces, inspects other processes, reaches the
# kernel's keyring, BPF or performance counters, loads modules, or opens files by handle (a known container escape).
DENIED_SYSCALLS = (
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "ptrace", "process_vm_readv", "process_vm_writev",
    "kcmp", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "open_by_handle_at", "name_to_handle_at", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "iopl", "ioperm", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "syslog", "personality", "lookup_dcookie", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "io_uring_setup",
)  # fmt: skip
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)

# Runs in the sandbox (`python -I -S -B -u -c RUNNER cpu_s memory nproc`; the token, then the code, on stdin): sets its
# limits and runs the candidate; after the last test it prints the token.
RUNNER = r"""
import os, resource, sys
cpu_s, memory, nproc = map(int, sys.argv[1:4])
token, source = sys.stdin.buffer.read().decode().split("\n", 1)
os.close(0)  # sys.stdin.close() leaves the descriptor open: the candidate could seek back to the token
for limit, value in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_AS, memory), (resource.RLIMIT_NPROC, nproc),
                     (resource.RLIMIT_FSIZE, OUTPUT), (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
code = compile(source, "candidate.py", "exec")
del source
exec(code, {"__name__": "__main__"})
sys.stdout.flush()
os.write(1, ("\n" + token + "\n").encode())
""".replace("OUTPUT", str(OUTPUT_LIMIT))


@dataclass
class TestResult:
    __test__ = False  # not a pytest class
    passed: bool
    error: str = ""  # why not: the exception's last line (cut to ERROR_CHARS), the timeout, the limit it hit
    cause: str = ""  # "" (passed) | syntax | assertion | timeout | crash | output | incomplete
    isolation: str = ""  # "bubblewrap" | "limits": what confined this run


@dataclass(frozen=True)
class Isolation:
    level: str  # "bubblewrap" (full) | "none" (not available here)
    reason: str  # why not full isolation ("" when it is)
    interpreter: str = ""  # the Python the candidate runs (one the sandbox user may read)
    binds: tuple[str, ...] = ()  # read-only folders and files it sees


@functools.cache
def probe() -> Isolation:
    """Find out once whether full isolation works here: bwrap, libseccomp, user namespaces, an interpreter the
    sandbox user may run, and a probe run that passes while a mount inside it is refused."""
    if sys.platform != "linux":
        return Isolation("none", "not Linux: bubblewrap and seccomp are Linux tools")
    if shutil.which("bwrap") is None:
        return Isolation("none", "bwrap not found (install Debian's bubblewrap package: apt-get install bubblewrap)")
    try:
        _seccomp_filter()
    except OSError as exc:
        return Isolation("none", f"no seccomp filter: {exc}")
    reasons = []
    for interpreter in _interpreters():
        try:
            found = Isolation("bubblewrap", "", interpreter, _binds(interpreter))
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            reasons.append(f"{interpreter}: {exc}")
            continue
        token = secrets.token_hex(16)
        returncode, text = _spawn(
            found, "import ctypes\nassert ctypes.CDLL(None).mount(b'none', b'/', b'tmpfs', 0, None) != 0", token, 10.0, 256
        )
        result = _verdict(returncode, text, token)
        if result.passed:
            return found
        reasons.append(f"{interpreter}: probe run failed: {result.error or text.strip()[-300:]}")
    return Isolation("none", "; ".join(reasons) or "no Python interpreter the sandbox user may run")


def isolation(settings: ModelSettings) -> str:
    """What confines a candidate here: 'bubblewrap' (full), 'limits' (the operator accepted the weaker fallback:
    `settings.sandbox_allow_weaker`) or 'none' (code would not run: `run_tests` raises SandboxUnavailable)."""
    if probe().level == "bubblewrap":
        return "bubblewrap"
    return "limits" if settings.sandbox_allow_weaker else "none"


def require_isolation(settings: ModelSettings) -> str:
    """The isolation code will run under; SandboxUnavailable (saying why and what to set) when there is none."""
    level = isolation(settings)
    if level == "none":
        raise SandboxUnavailable(
            f"model- and caller-written code is not run without full isolation, and this machine has none: {probe().reason}. "
            f"Fix that, or set {ALLOW_WEAKER}=1 to accept a plain subprocess with resource limits only (no namespaces, "
            "no seccomp: the code then shares this service's user, processes and network)"
        )
    return level


_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


def _slot(limit: int) -> threading.BoundedSemaphore:
    with _slots_lock:
        return _slots.setdefault(limit, threading.BoundedSemaphore(limit))


def run_tests(
    code: str, tests: str, settings: ModelSettings, timeout_s: float = 10.0, memory_mb: int = 1024, wait_s: float | None = None
) -> TestResult:
    """Run `code` then `tests` in the sandbox; passed = every test ran to the end without an error.

    At most `settings.sandbox_max_concurrent` runs at a time in this process; a run that cannot start within `wait_s`
    seconds (None: waits as long as it takes) raises SandboxBusy."""
    level = require_isolation(settings)
    slots = settings.sandbox_max_concurrent
    slot = _slot(slots)
    if not slot.acquire(timeout=-1 if wait_s is None else wait_s):
        raise SandboxBusy(f"all {slots} sandbox slots are busy (sandbox_max_concurrent)")
    try:
        token = secrets.token_hex(16)
        box = probe() if level == "bubblewrap" else None
        returncode, text = _spawn(box, f"{code}\n\n{tests}\n", token, timeout_s, memory_mb)
    finally:
        slot.release()
    result = _verdict(returncode, text, token)
    result.isolation = level
    return result


def run_all(checks: list[tuple[str, str]], settings: ModelSettings, timeout_s: float = 10.0) -> list[TestResult]:
    """`run_tests` over (code, tests) pairs, as many at a time as the sandbox allows: each is a subprocess."""
    require_isolation(settings)  # once, before any thread starts
    with ThreadPoolExecutor(max_workers=settings.sandbox_max_concurrent) as pool:
        return list(pool.map(lambda check: run_tests(check[0], check[1], settings, timeout_s=timeout_s), checks))


def run_grouped(groups: list[list[tuple[str, str]]], settings: ModelSettings, timeout_s: float = 10.0) -> list[list[TestResult]]:
    """`run_all` over groups of (code, tests) checks (say, a task's samples) in one parallel pass, results regrouped."""
    flat = iter(run_all([check for group in groups for check in group], settings, timeout_s))
    return [[next(flat) for _ in group] for group in groups]


# -- running one candidate -------------------------------------------------------------------
def _spawn(box: Isolation | None, source: str, token: str, timeout_s: float, memory_mb: int) -> tuple[int | None, str]:
    """Start the runner (in bwrap when `box` is given), feed it the token and the code, wait; (exit code, output).
    Exit code None: killed at the wall-clock limit."""
    limits = [str(max(1, int(timeout_s))), str(memory_mb << 20), str(_nproc_limit())]
    identity = _sandbox_user()
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as stdin:
        stdin.write(f"{token}\n{source}".encode())
        stdin.seek(0)
        if box is not None:
            seccomp = _seccomp_fd()
            command = [*_bwrap_args(box, seccomp), box.interpreter, "-I", "-S", "-B", "-u", "-c", RUNNER, *limits]
            pass_fds: tuple[int, ...] = (seccomp,)
            cwd = "/"
        else:
            seccomp, pass_fds = None, ()
            cwd = tempfile.mkdtemp(prefix="codegen-")
            if identity:
                os.chown(cwd, NOBODY, NOBODY)
            interpreter = next((i for i in _interpreters() if not identity or _others_may_run(i)), sys.executable)
            command = [interpreter, "-I", "-S", "-B", "-u", "-c", RUNNER, *limits]
        try:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env={},
                stdin=stdin,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=pass_fds,
                start_new_session=True,  # its own process group: killed whole at the limit
                **identity,
            )
        finally:
            if seccomp is not None:
                os.close(seccomp)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            _kill(proc)  # nothing it started outlives it (bwrap's own init dies with it, and the PID namespace with that)
            if box is None:
                shutil.rmtree(cwd, ignore_errors=True)
        output.seek(0)
        text = output.read(OUTPUT_LIMIT + 1).decode("utf-8", "replace")
    return returncode, text


def _bwrap_args(box: Isolation, seccomp_fd: int) -> list[str]:
    args = ["bwrap", "--unshare-user", "--unshare-all", "--disable-userns", "--die-with-parent", "--new-session"]
    args += ["--cap-drop", "ALL", "--clearenv", "--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox"]
    for path in box.binds:
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(FOLDER_BYTES), "--tmpfs", "/work", "--chdir", "/work"]
    args += ["--setenv", "TMPDIR", "/work", "--remount-ro", "/", "--seccomp", str(seccomp_fd)]
    return args


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _nproc_limit() -> int:
    """RLIMIT_NPROC counts every process and thread of the user outside: as `nobody`, 64; as this service's own user,
    64 more than it runs already (its own threads would otherwise leave the candidate none)."""
    if os.geteuid() == 0:
        return 64
    uid, count = os.getuid(), 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            count += int(fields.get("Threads", "1"))
    return count + 64


def _verdict(returncode: int | None, text: str, token: str) -> TestResult:
    if returncode is None:
        return TestResult(False, "timed out", "timeout")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if returncode == 0 and lines and lines[-1] == token:
        return TestResult(True)
    if len(text) > OUTPUT_LIMIT or returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        return TestResult(False, f"output over the limit of {OUTPUT_LIMIT} bytes", "output")
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGKILL):
        return TestResult(False, "CPU time limit reached", "timeout")
    last = next((line for line in reversed(lines) if token not in line), "")
    if len(last) > ERROR_CHARS:
        last = last[:ERROR_CHARS] + " [cut]"
    if returncode == 0:
        return TestResult(False, "exited before its tests finished", "incomplete")
    if last.startswith(("SyntaxError", "IndentationError", "TabError")):
        return TestResult(False, last, "syntax")
    if last.startswith("AssertionError"):
        return TestResult(False, last, "assertion")
    return TestResult(False, last or f"exit code {returncode}", "crash")


# -- what the sandbox is built from ------------------------------------------------------------
def _interpreters() -> list[str]:
    """Pythons the sandbox user may run: this one's binary, then the system's (the candidate gets the stdlib only)."""
    found = []
    for candidate in (os.path.realpath(sys.executable), shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if candidate and (path := os.path.realpath(candidate)) not in found:
            found.append(path)
    return found


def _sandbox_user() -> dict:
    """Popen's arguments for the user code runs as: `nobody` when this process is root, else this process's user."""
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}


def _others_may_run(path: str) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [*Path(path).parents, Path(path)])


def _binds(interpreter: str) -> tuple[str, ...]:
    """The interpreter, its standard library and the C library folders, read-only; asked of the interpreter itself,
    run as the sandbox user (so a Python under a folder that user may not enter is refused here)."""
    ask = "import json, sys, sysconfig as s; p = s.get_paths(); print(json.dumps([p['stdlib'], p['platstdlib'], s.get_config_var('LIBDIR') or '', s.get_config_var('MULTIARCH') or '']))"
    identity = _sandbox_user()
    done = subprocess.run([interpreter, "-I", "-S", "-c", ask], capture_output=True, text=True, timeout=30, env={}, cwd="/", **identity)
    if done.returncode != 0:
        raise ValueError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}")
    stdlib, platstdlib, libdir, multiarch = json.loads(done.stdout)
    folders = [stdlib, platstdlib, libdir, "/lib64", "/usr/lib64"]
    if multiarch:
        folders += [f"/lib/{multiarch}", f"/usr/lib/{multiarch}"]
    binds = [interpreter]
    for folder in folders:
        if folder and os.path.isdir(folder) and folder not in binds:
            binds.append(folder)
    return tuple(binds)


@functools.cache
def _seccomp_filter() -> bytes:
    """The BPF program of the seccomp filter, built once with libseccomp: every syscall allowed but the denied ones."""
    name = ctypes.util.find_library("seccomp")
    if name is None:
        raise OSError("libseccomp not found (Debian: libseccomp2)")
    lib = ctypes.CDLL(name, use_errno=True)

    class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SCMP_ACT_ALLOW, SCMP_ACT_ERRNO(EPERM)
    enosys = 0x00050000 | 38  # clone3 takes its flags in memory a filter cannot read: ENOSYS makes libc fall back to clone
    context = lib.seccomp_init(allow)
    if not context:
        raise OSError("seccomp_init failed")
    try:

        def add(action: int, syscall: str, *compares: ArgCmp) -> None:
            number = lib.seccomp_syscall_resolve_name(syscall.encode())
            if number < 0:
                return  # not a syscall on this architecture
            array = (ArgCmp * max(1, len(compares)))(*compares)
            if lib.seccomp_rule_add_array(context, action, number, len(compares), array) != 0:
                raise OSError(f"seccomp rule for {syscall} refused")

        for syscall in DENIED_SYSCALLS:
            add(deny, syscall)
        add(enosys, "clone3")
        masked_eq = 7  # SCMP_CMP_MASKED_EQ: (arg & datum_a) == datum_b
        for flag in CLONE_NAMESPACE_FLAGS:  # clone(flags, ...) asking for any new namespace
            add(deny, "clone", ArgCmp(0, masked_eq, flag, flag))
        with tempfile.TemporaryFile() as out:
            if lib.seccomp_export_bpf(context, out.fileno()) != 0:
                raise OSError("seccomp_export_bpf failed")
            out.seek(0)
            return out.read()
    finally:
        lib.seccomp_release(context)


def _seccomp_fd() -> int:
    """A fresh descriptor holding the filter, for bwrap's --seccomp (bwrap reads it to the end)."""
    fd = os.memfd_create("distill-slm-seccomp", 0)
    os.write(fd, _seccomp_filter())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def describe(settings: ModelSettings) -> dict:
    """What `/readyz`, `bench` and the audit log say of the sandbox."""
    box = probe()
    return {"isolation": isolation(settings), "full": box.level == "bubblewrap", "reason": box.reason or None}
