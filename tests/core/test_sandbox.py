"""The sandbox against what an attacker would try: each technique below is written to *succeed* (its asserts hold only
if it escaped), so a pass, or any trace of it outside, is an escape. The whole list runs twice: as this process's user
(root in CI) and, in a forked child, as an unprivileged service user (uid 12345) — the identity a service normally has.
The summary line `sandbox escapes: N of M techniques` goes to the test report."""

import json
import os
import socket
import sys
import textwrap

import pytest

from core import sandbox
from core.errors import SandboxUnavailable
from core.sandbox import isolation, probe, run_tests
from core.settings import REPO_ROOT, ModelSettings

TESTS = "assert double(2) == 4\nassert double(-1) == -2"
GOOD = "def double(x):\n    return 2 * x"
SERVICE_UID = 12345
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"

needs_bubblewrap = pytest.mark.skipif(probe().level != "bubblewrap", reason=f"no full isolation here: {probe().reason}")


def _syscall(name: str, *args: int) -> str:
    """Code calling a raw syscall by number on this architecture (asserting it succeeded)."""
    numbers = {"x86_64": {"keyctl": 250, "bpf": 321, "perf_event_open": 298, "open_by_handle_at": 304, "init_module": 175}}
    number = numbers.get(os.uname().machine, {}).get(name)
    if number is None:
        pytest.skip(f"syscall numbers for {os.uname().machine} not listed")
    return LIBC + f"assert libc.syscall({number}, {', '.join(map(str, args))}) >= 0, 'refused'\n"


def techniques(ctx: dict) -> dict[str, str]:
    """name -> candidate code that escapes if it passes. `ctx` holds host paths and ports the attacks aim at."""
    return {
        "remount / read-write": LIBC + "assert libc.mount(None, b'/', None, 32 | 4096, None) == 0\nopen('/escaped', 'w')",
        "remount the stdlib mount read-write": LIBC
        + "d = os.path.dirname(os.__file__).encode()\nassert libc.mount(None, d, None, 32 | 4096, None) == 0\n"
        "open(os.path.join(os.path.dirname(os.__file__), 'escaped'), 'w')",
        "a new mount": LIBC + "os.mkdir('m')\nassert libc.mount(b'none', b'm', b'tmpfs', 0, None) == 0",
        "a bind mount of /": LIBC + "os.mkdir('m')\nassert libc.mount(b'/', b'm', None, 4096 | 16384, None) == 0",
        "unshare a user namespace": LIBC + "assert libc.unshare(0x10000000) == 0",
        "unshare a mount namespace": LIBC + "assert libc.unshare(0x00020000) == 0",
        "clone into a new user namespace": LIBC + "import signal\n"
        "stack = ctypes.create_string_buffer(65536)\ncb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(lambda _: 0)\n"
        "top = ctypes.c_void_p(ctypes.addressof(stack) + 65536)\n"
        "assert libc.clone(cb, top, 0x10000000 | signal.SIGCHLD, None) > 0",
        "setns into PID 1's mount namespace": LIBC + "fd = os.open('/proc/1/ns/mnt', os.O_RDONLY)\nassert libc.setns(fd, 0) == 0",
        "ptrace PID 1": LIBC + "assert libc.ptrace(16, 1, None, None) == 0",  # PTRACE_ATTACH
        "ptrace the service": LIBC + f"assert libc.ptrace(16, {ctx['pid']}, None, None) == 0",
        "keyctl": _syscall("keyctl", 0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring
        "bpf": _syscall("bpf", 0, 0, 0),
        "perf_event_open": _syscall("perf_event_open", 0, 0, -1, -1, 0),
        "open_by_handle_at": _syscall("open_by_handle_at", 3, 0, 0),
        "chroot": LIBC + "os.mkdir('r')\nassert libc.chroot(b'r') == 0",
        "read a 0600 file of the service's user": f"assert {ctx['secret']!r} in open({ctx['secret_path']!r}).read()",
        "read the service's environment": "import glob, os\nseen = str(dict(os.environ))\n"
        "for p in glob.glob('/proc/*/environ'):\n    try:\n        seen += open(p, 'rb').read().decode(errors='replace')\n"
        "    except OSError:\n        pass\n"
        f"assert {ctx['env_secret']!r} in seen",
        "see the host's processes": f"import os\nassert os.path.exists('/proc/{ctx['pid']}') or len(os.listdir('/proc')) > 200",
        "signal the service": f"import os, signal\nos.kill({ctx['pid']}, 0)\nos.kill({ctx['pid']}, signal.SIGCONT)",
        "connect to a loopback port of the host": f"import socket\nsocket.create_connection(('127.0.0.1', {ctx['port']}), timeout=2).sendall(b'x')",
        "connect to an outside address": "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)",
        "write into the checkout": f"open({str(REPO_ROOT / 'ESCAPED-sandbox')!r}, 'w').write('x')",
        "write into the registry": f"open({ctx['registry'] + '/ESCAPED'!r}, 'w').write('x')",
        "write into the host's /tmp": "open('/tmp/ESCAPED-distill-slm', 'w').write('x')",
        "write into the interpreter's folder": "import os\nopen(os.path.join(os.path.dirname(os.__file__), 'ESCAPED'), 'w').write('x')",
        "exit 0 before the tests (sys.exit)": f"{GOOD}\nimport sys\nsys.exit(0)\n" + "assert double(2) == 5",
        "exit 0 before the tests (os._exit)": f"{GOOD}\nimport os\nos._exit(0)\n" + "assert double(2) == 5",
        "forge the token from argv and /proc": "import os, re\nseen = ''\n"
        "for p in ['/proc/self/cmdline', '/proc/1/cmdline', '/proc/self/environ', '/proc/1/environ']:\n"
        "    try:\n        seen += open(p, 'rb').read().decode(errors='replace').replace('\\0', ' ')\n    except OSError:\n        pass\n"
        "print('\\n'.join(re.findall('[0-9a-f]{32}', seen)), flush=True)\nos._exit(0)\nassert False",
        "forge the token from stdin": "import os, sys\n"
        "for fd in range(64):\n    try:\n        os.lseek(fd, 0, 0)\n        print(os.read(fd, 33).decode().strip(), flush=True)\n"
        "    except OSError:\n        pass\nos._exit(0)\nassert False",
    }


def _escaped(ctx: dict) -> list[str]:
    """Side effects outside the sandbox (the same for every technique)."""
    traces = [REPO_ROOT / "ESCAPED-sandbox", "/tmp/ESCAPED-distill-slm", os.path.join(ctx["registry"], "ESCAPED"), "/escaped"]
    return [str(t) for t in traces if os.path.exists(t)]


def _attack_all(ctx: dict) -> dict[str, dict]:
    results = {}
    for name, code in techniques(ctx).items():
        result = run_tests(code, "", ModelSettings(), timeout_s=5)
        results[name] = {"passed": result.passed, "cause": result.cause, "error": result.error, "isolation": result.isolation}
    return results


def _as_unprivileged_user(ctx: dict) -> dict[str, dict]:
    """Run every technique from a forked child that became uid 12345 (a service user that is not root)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the service user, probe afresh, attack, report, leave
        try:
            os.close(read)
            os.setgroups([])
            os.setresgid(SERVICE_UID, SERVICE_UID, SERVICE_UID)
            os.setresuid(SERVICE_UID, SERVICE_UID, SERVICE_UID)
            sandbox.probe.cache_clear()
            out = {"probe": probe().level, "reason": probe().reason, "results": _attack_all(ctx)}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = {"error": repr(exc)}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks))
    assert "error" not in report, report
    assert report["probe"] == "bubblewrap", report["reason"]
    return report["results"]


@pytest.fixture
def target(tmp_path, monkeypatch):
    """What the attacks aim at: a 0600 secret, a registry folder, the environment, a loopback listener."""
    registry = tmp_path / "runs"
    registry.mkdir(mode=0o777)
    os.chmod(registry, 0o777)
    secret_path = tmp_path / "service-secret"
    secret_path.write_text("s3cret-file-value")
    os.chmod(secret_path, 0o600)
    os.chmod(tmp_path, 0o755)
    monkeypatch.setenv("DISTILL_SLM_TEST_SECRET", "s3cret-env-value")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.2)
        ctx = {
            "pid": os.getpid(),
            "secret": "s3cret-file-value",
            "secret_path": str(secret_path),
            "env_secret": "s3cret-env-value",
            "registry": str(registry),
            "port": listener.getsockname()[1],
            "listener": listener,
            "chown": lambda uid: [os.chown(p, uid, uid) for p in (secret_path,)],
        }
        yield ctx
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected


@needs_bubblewrap
@pytest.mark.skipif(os.geteuid() != 0, reason="the second identity needs root to become another user")
def test_no_technique_escapes_as_root_or_as_a_service_user(target, record_property, capsys):
    as_root = _attack_all(target)
    target["chown"](SERVICE_UID)
    as_service_user = _as_unprivileged_user(target)
    escapes = []
    for identity, results in (("root", as_root), ("service user", as_service_user)):
        for name, result in results.items():
            assert result["isolation"] == "bubblewrap"
            if result["passed"]:
                escapes.append(f"{identity}: {name}")
    escapes += _escaped(target)
    total = len(as_root) + len(as_service_user)
    record_property("sandbox_escapes", f"{len(escapes)} of {total}")
    with capsys.disabled():
        print(f"\nsandbox escapes: {len(escapes)} of {total} attempts ({len(as_root)} techniques, as root and as uid {SERVICE_UID})")
    assert len(as_root) >= 15
    assert not escapes, escapes


def test_a_correct_candidate_passes_and_failures_are_grouped_by_cause():
    assert run_tests(GOOD, TESTS, ModelSettings()).passed
    assert run_tests("def double(x):\n    return x + 2", TESTS, ModelSettings()).cause == "assertion"
    assert run_tests("def double(x) return 2 * x", TESTS, ModelSettings()).cause == "syntax"
    assert run_tests("def triple(x):\n    return 3 * x", TESTS, ModelSettings()).cause == "crash"  # NameError


def test_an_error_line_is_short_whatever_the_candidate_prints():
    result = run_tests("", "assert False, 'x' * 100_000", ModelSettings())
    assert result.cause == "assertion" and len(result.error) <= sandbox.ERROR_CHARS + 10, len(result.error)


def test_an_endless_loop_is_stopped_at_the_time_limit():
    result = run_tests("def double(x):\n    while True:\n        pass", TESTS, ModelSettings(), timeout_s=1)
    assert not result.passed and result.cause == "timeout"


def test_a_flood_of_output_is_cut_and_failed():
    result = run_tests(f"{GOOD}\nprint('x' * 100_000_000)", TESTS, ModelSettings())
    assert not result.passed and result.cause in ("output", "crash"), result  # the 1 MB file limit, or memory for the string


@needs_bubblewrap
def test_a_fork_bomb_is_contained():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run_tests(f"{bomb}\n{GOOD}", TESTS, ModelSettings(), timeout_s=3)
    assert not result.passed and result.cause == "timeout"
    assert run_tests(GOOD, TESTS, ModelSettings()).passed  # and this process can still start others


@needs_bubblewrap
def test_the_working_folder_is_small_and_gone_afterwards():
    fill = textwrap.dedent("""
        import os
        with open('big', 'wb') as f:
            for _ in range(64):
                f.write(b'x' * (1 << 20))
    """)
    result = run_tests(fill, "", ModelSettings())
    assert not result.passed and result.cause in ("output", "crash"), result  # file-size limit or the 16 MB folder
    assert run_tests("import os\nassert os.listdir('.') == []", "", ModelSettings()).passed  # each run starts empty


def test_without_full_isolation_code_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setattr(sandbox, "probe", lambda: sandbox.Isolation("none", "bwrap not found"))
    monkeypatch.delenv(sandbox.ALLOW_WEAKER, raising=False)
    assert isolation(ModelSettings()) == "none"
    with pytest.raises(SandboxUnavailable, match=f"bwrap not found.*{sandbox.ALLOW_WEAKER}=1"):
        run_tests(GOOD, TESTS, ModelSettings())
    monkeypatch.setenv(sandbox.ALLOW_WEAKER, "1")  # the operator accepts less: it runs, and says how it ran
    result = run_tests(GOOD, TESTS, ModelSettings())
    assert result.passed and result.isolation == "limits"


def test_the_isolation_in_force_is_stated():
    if sys.platform == "linux" and os.path.exists("/usr/bin/bwrap"):
        assert isolation(ModelSettings()) == "bubblewrap", probe().reason
