"""Teacher traces: each distinct input asked once, written as it arrives, resumed after a crash."""

import json

import pytest

from core.common.rows import Example, text_sha256
from core.kinds import make_teacher
from core.settings import ModelSettings
from core.teachers.traces import TraceStore, generate_traces
from tests.core.teachers.conftest import openai_cfg


def test_traces_dedupe_resume_and_record_failures(faulty, tmp_path):
    faults = faulty["faults"]
    cfg = openai_cfg(faulty["url"], max_retries=0)
    texts = [f"Interest_Rate: {i}; Num_of_Loan: {i % 7}" for i in range(10)]
    rows = [Example(f"r{i}", t) for i, t in enumerate(texts)] + [Example("dup", texts[0])]
    loads = []

    def load():
        loads.append(1)
        return make_teacher(cfg, ModelSettings())

    store = TraceStore(tmp_path / "traces.jsonl")
    faults.plan.extend(["empty", "outside", "garbage"])
    before = faults.seen
    summary = generate_traces(rows, store, load, progress=False)
    store.close()
    assert faults.seen - before == 10  # 11 rows, one a duplicate: each distinct input asked once
    assert summary["traces"] == 10 and summary["duplicates_skipped"] == 1
    assert summary["failed"] == 3 and summary["usable"] == 7
    reasons = {t["error"] for t in store.traces.values() if t.get("error")}
    assert any(r.startswith("empty answer") for r in reasons)
    assert any(r.startswith("answer outside the label set") for r in reasons)
    assert any(r.startswith("unparsable response") for r in reasons)
    assert len(store.usable()) == 7

    # A crash mid-write leaves a torn last line: that input is asked again, nothing else is.
    lines = (tmp_path / "traces.jsonl").read_text().splitlines()
    torn = json.loads(lines[-1])
    (tmp_path / "traces.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])
    store = TraceStore(tmp_path / "traces.jsonl")
    before = faults.seen
    summary = generate_traces(rows, store, load, progress=False)
    store.close()
    assert faults.seen - before == 1 and summary["asked"] == 1 and summary["cached"] == 9
    assert text_sha256(torn["prompt"]) in store

    # Everything cached: the teacher is not even loaded.
    store = TraceStore(tmp_path / "traces.jsonl")
    n_loads = len(loads)
    summary = generate_traces(rows, store, load, progress=False)
    assert summary["asked"] == 0 and len(loads) == n_loads
    parsed = [
        json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines() if line.startswith("{") and line.endswith("}")
    ]
    required = {"id", "input_sha256", "prompt", "output", "label_probs", "teacher", "latency_s", "prompt_tokens", "completion_tokens"}
    assert all(required <= set(t) for t in parsed)


GENERATE = """
import sys
from core.common.rows import Example
from core.teachers.base import TeacherAnswer, TeacherTask
from core.settings import ModelSettings
from core.teachers.openai import OpenAITeacher
from core.teachers.traces import TraceStore, generate_traces
from tests.core.teachers.conftest import openai_cfg


class Labels(TeacherTask):  # the reply as the answer: this child imports only the endpoint path (no model: ~1 s, not ~12)
    def request(self):
        return {}

    def read_reply(self, content, top, latency_s, prompt_tokens, completion_tokens):
        return TeacherAnswer(content.strip(), None, top or None, latency_s, prompt_tokens, completion_tokens)

    attach = answer = deliberate = None


cfg = openai_cfg(sys.argv[1], concurrency=4)
rows = [Example(f"r{i}", f"Interest_Rate: {i}; Num_of_Loan: {i % 9}; Delay_from_due_date: {i * 7 % 60}") for i in range(400)]
store = TraceStore(sys.argv[2])
teacher = OpenAITeacher(cfg, ModelSettings(), Labels())
teacher.check()
print("ready", flush=True)
generate_traces(rows, store, lambda: teacher, progress=False)
"""


def test_trace_generation_killed_at_random_moments_asks_no_input_twice_but_those_in_flight(faulty, tmp_path):
    """5 SIGKILLs of a real trace-generating process (concurrency 4) at seeded random moments. The server counts every
    request: after each kill, requests beyond the new traces on disk are at most the 4 in flight; every line but a torn
    last one parses; no input is on disk twice; a last run completes the 400 inputs."""
    import os
    import random
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import kill_at_random_moment

    faults = faulty["faults"]
    rng = random.Random(3)
    script, path = tmp_path / "generate.py", tmp_path / "traces.jsonl"
    script.write_text(GENERATE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    args = [str(script), faulty["url"], str(path)]

    def on_disk() -> tuple[list[dict], int]:
        """The traces in the file, and how many lines a kill tore (a rerun ends a torn line and starts afresh)."""
        if not path.exists():
            return [], 0
        traces, torn = [], 0
        for line in path.read_text().splitlines():
            try:
                traces.append(json.loads(line))
            except json.JSONDecodeError:
                torn += 1
        return traces, torn

    for kill in range(1, 6):  # five kills (CI's 15 minutes)
        before_requests, before_traces = faults.seen, len({t["input_sha256"] for t in on_disk()[0]})
        kill_at_random_moment(args, "ready", rng, 1.0, "teacher traces", env)
        traces, torn = on_disk()
        hashes = [t["input_sha256"] for t in traces]
        asked, written = faults.seen - before_requests, len(set(hashes)) - before_traces
        assert asked - written <= 4, f"{asked} requests for {written} new traces: more than the 4 in flight were lost"
        assert len(hashes) == len(set(hashes)), "an input is on disk twice"
        assert torn <= kill  # at most the line being written when each kill landed
    before, remaining = faults.seen, 400 - len(on_disk()[0])
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    final, _ = on_disk()
    assert len({t["input_sha256"] for t in final}) == 400 == len(final)
    assert faults.seen - before == remaining  # the last run asked exactly what was missing


def test_an_interrupt_cancels_the_calls_not_yet_sent(faulty, tmp_path):
    """KeyboardInterrupt while traces are gathered: the calls still queued are dropped, not sent (and paid for)."""
    from core.common.rows import Example
    from core.teachers.traces import TraceStore, generate_traces

    faults = faulty["faults"]
    cfg = openai_cfg(faulty["url"], concurrency=2, max_retries=0)
    real = make_teacher(cfg, ModelSettings())
    calls = []

    class Interrupted(type(real)):  # the real backend; its third answer is where the user presses Ctrl-C
        def answer_one(self, text):
            calls.append(text)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return super().answer_one(text)

    teacher = Interrupted(cfg, ModelSettings(), real.task)
    rows = [Example(id=str(i), text=f"Num_Bank_Accounts: {i}", label=None) for i in range(40)]
    before = faults.seen
    with pytest.raises(KeyboardInterrupt):
        generate_traces(rows, TraceStore(tmp_path / "traces.jsonl"), lambda: teacher, progress=False)
    # the two workers finish what they hold; nothing queued behind them is sent (40 rows were queued)
    assert len(calls) <= 3 + 2 * cfg.teacher.concurrency and faults.seen - before < len(calls), (len(calls), faults.seen - before)


def test_a_rerun_asks_again_what_failed_in_transit_but_not_what_failed_for_its_content(faulty, tmp_path):
    """Input 1: three 500s (retries run out: a transport fault). Input 2: an answer outside the label set (its content).
    The rerun asks input 1 again, once, and its new answer replaces the failed line; input 2 is not paid for twice."""
    faults = faulty["faults"]
    cfg = openai_cfg(faulty["url"], max_retries=2, concurrency=1)
    rows = [Example("a", "Interest_Rate: 3"), Example("b", "Interest_Rate: 30")]
    store = TraceStore(tmp_path / "traces.jsonl")

    def teacher():
        t = make_teacher(cfg, ModelSettings())
        t.retry_cap_s = 0.05
        return t

    faults.plan.extend(["500", "500", "500", "outside"])
    first = generate_traces(rows, store, teacher, progress=False)
    store.close()
    assert first["failed"] == 2 and first["failed_in_transit"] == 1
    before = faults.seen
    store = TraceStore(tmp_path / "traces.jsonl")
    again = generate_traces(rows, store, teacher, progress=False)
    store.close()
    assert faults.seen - before == 1 and again["asked"] == 1  # only the transport's failure
    assert again["failed"] == 1 and again["failed_in_transit"] == 0
    final = TraceStore.read(tmp_path / "traces.jsonl").traces
    assert final[text_sha256("Interest_Rate: 3")]["output"] in ("Good", "Standard", "Bad")
    assert final[text_sha256("Interest_Rate: 30")]["error"].startswith("answer outside the label set")
