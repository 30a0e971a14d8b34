"""The sandbox against the escapes a model's code could try: each is stopped and counted as a failure, never a pass."""

import os
import socket
import sys

import pytest

from core.sandbox import isolation, run_tests

TESTS = "assert double(2) == 4\nassert double(-1) == -2"
GOOD = "def double(x):\n    return 2 * x"

needs_namespaces = pytest.mark.skipif(
    isolation() != "namespaces", reason="this machine has no user namespaces: the sandbox runs with limits only (README)"
)


def test_a_correct_candidate_passes_and_failures_are_grouped_by_cause():
    assert run_tests(GOOD, TESTS).passed
    assert run_tests("def double(x):\n    return x + 2", TESTS).cause == "assertion"
    assert run_tests("def double(x) return 2 * x", TESTS).cause == "syntax"
    assert run_tests("def triple(x):\n    return 3 * x", TESTS).cause == "crash"  # NameError


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"])
def test_exiting_before_the_tests_is_not_a_pass(exit_call):
    result = run_tests(f"{GOOD}\n{exit_call}", "assert double(2) == 5")
    assert not result.passed and result.cause in ("incomplete", "crash"), result


def test_the_pass_token_is_not_in_the_candidates_command_line():
    forge = (  # print whatever looks like a 32-hex-digit token among its arguments, last, and leave before the tests
        "import os, re, sys\n"
        "args = open('/proc/self/cmdline').read().split('\\0')\n"
        "print('\\n'.join(a for a in args if re.fullmatch('[0-9a-f]{32}', a)))\n"
        "sys.stdout.flush()\nos._exit(0)"
    )
    result = run_tests(f"{GOOD}\n{forge}", "assert double(2) == 5")
    assert not result.passed and result.cause == "incomplete", result


def test_an_endless_loop_is_stopped_at_the_time_limit():
    result = run_tests("def double(x):\n    while True:\n        pass", TESTS, timeout_s=1)
    assert not result.passed and result.cause == "timeout"


def test_a_flood_of_output_is_cut_and_failed():
    result = run_tests(f"{GOOD}\nprint('x' * 100_000_000)", TESTS)
    assert not result.passed and result.cause in ("output", "crash"), result  # the 1 MB file limit, or memory for the string


@needs_namespaces
def test_a_fork_bomb_is_contained():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run_tests(f"{bomb}\n{GOOD}", TESTS, timeout_s=3)
    assert not result.passed and result.cause == "timeout"
    assert os.fork  # and this process can still start others:
    assert run_tests(GOOD, TESTS).passed


@needs_namespaces
def test_nothing_outside_its_folder_can_be_written(tmp_path):
    targets = [tmp_path / "written", "/tmp/distill-slm-sandbox-escape", os.path.expanduser("~/distill-slm-sandbox-escape")]
    os.chmod(tmp_path, 0o777)  # even a world-writable folder
    for target in targets:
        code = f"{GOOD}\nopen({str(target)!r}, 'w').write('escaped')"
        result = run_tests(code, TESTS)
        assert not result.passed and not os.path.exists(target), (target, result)


@needs_namespaces
def test_the_parents_environment_cannot_be_read(monkeypatch):
    monkeypatch.setenv("DISTILL_SLM_SANDBOX_SECRET", "s3cret-value")
    code = (
        "import os, glob\n"
        "seen = str(dict(os.environ))\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        seen += open(path, 'rb').read().decode(errors='replace')\n"
        "    except OSError:\n"
        "        pass\n"
        f"assert 's3cret-value' in seen or str({os.getppid()}) == ''\n"
    )
    assert os.environ["DISTILL_SLM_SANDBOX_SECRET"] == "s3cret-value"
    result = run_tests(code, "")
    assert not result.passed and result.cause == "assertion", result


@needs_namespaces
def test_no_connection_reaches_a_loopback_port_of_the_host():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hello')"
        result = run_tests(code, "")
        assert not result.passed and result.cause == "crash", result
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected


def test_the_isolation_in_force_is_stated():
    assert isolation() in ("namespaces", "limits")
    if sys.platform == "linux" and os.path.exists("/proc/self/ns/user"):
        assert isolation() == "namespaces", "user namespaces exist here but the sandbox could not use them"
