"""The sandbox model-written code runs in: never in this process.

`run_tests` executes code + tests in a fresh interpreter (isolated mode, an empty temporary
folder, no inherited environment, CPU-time, memory and wall-clock limits) and says whether every
assert held. It isolates a candidate from this process; it is not a security sandbox: run code
from untrusted models inside a container as well.

    result = run_tests("def f(x):\n    return x + 1", "assert f(1) == 2")
    result.passed, result.error
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# The child sets its own limits before it runs the candidate: no preexec_fn (unsafe in a threaded parent).
_RUNNER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_CPU, ({cpu_s}, {cpu_s}))
resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
source = open(sys.argv[1]).read()
exec(compile(source, "candidate.py", "exec"), {{"__name__": "__main__"}})
"""


@dataclass
class TestResult:
    __test__ = False  # not a pytest class
    passed: bool
    error: str = ""  # why not: the exception's last line, or the timeout


def run_tests(code: str, tests: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> TestResult:
    """Run `code` then `tests` in a fresh interpreter; passed = it exited cleanly (every assert held)."""
    with tempfile.TemporaryDirectory(prefix="codegen-") as folder:
        path = Path(folder) / "candidate.py"
        path.write_text(f"{code}\n\n{tests}\n")
        runner = _RUNNER.format(cpu_s=max(1, int(timeout_s)), memory=memory_mb << 20)
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-B", "-c", runner, str(path)],
                cwd=folder,
                env={},
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return TestResult(False, f"timed out after {timeout_s:g} s")
    if proc.returncode == 0:
        return TestResult(True)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return TestResult(False, lines[-1] if lines else f"exit code {proc.returncode}")


def run_all(checks: list[tuple[str, str]], timeout_s: float = 10.0) -> list[TestResult]:
    """`run_tests` over (code, tests) pairs, eight at a time: each is a subprocess, the threads only wait."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda check: run_tests(*check, timeout_s=timeout_s), checks))
