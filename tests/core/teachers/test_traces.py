"""Teacher traces: each distinct input asked once, written as it arrives, resumed after a crash."""

import json

from core.common.records import Example, text_sha256
from core.kinds import make_teacher
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
        return make_teacher(cfg)

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
