import json

import pytest

from core.common.ports import free_port
from core.serving.audit import AuditLog, read_audit


def test_audit_rotates_by_size_and_never_rewrites(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=300, backups=50)
    for i in range(30):
        log.write({"request_id": i, "input": "x" * 20})
    log.close()
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert len(files) > 3
    assert [r["request_id"] for r in read_audit(tmp_path / "audit.jsonl")] == list(range(30))
    # a rotated file is only ever renamed: appending more leaves its lines as they were
    oldest = max(files, key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    before = oldest.read_text()
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=10_000)
    log.write({"request_id": 30})
    log.close()
    assert oldest.read_text() == before


def test_closing_one_log_leaves_another_on_the_same_file_writing(tmp_path):
    first, second = AuditLog(tmp_path / "a.jsonl"), AuditLog(tmp_path / "a.jsonl")
    first.write({"n": 1})
    first.close()
    second.write({"n": 2})
    assert [r["n"] for r in read_audit(tmp_path / "a.jsonl")] == [1, 2]


def test_a_torn_last_line_is_left_out_and_a_damaged_one_elsewhere_raises(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps({"n": 1}) + "\n" + '{"n": 2, "inp')
    assert read_audit(path) == [{"n": 1}]
    log = AuditLog(path)  # a service restarted after the crash: the torn line goes, the next record starts clean
    log.write({"n": 3})
    log.close()
    assert read_audit(path) == [{"n": 1}, {"n": 3}]
    path.write_text('{"n": 1, "inp\n' + json.dumps({"n": 2}) + "\n")
    with pytest.raises(json.JSONDecodeError):
        read_audit(path)


def test_the_service_killed_while_it_writes_the_audit_log_leaves_every_earlier_line_whole(server, tmp_path):
    """3 SIGKILLs of the real service (`distill-slm serve`) under 4 concurrent clients, at seeded random moments:
    afterwards every line of the audit log but a torn last one parses, and each kill cut at most that one line."""
    import os
    import random
    import threading

    import httpx

    from tests.conftest import kill_at_random_moment

    rng = random.Random(11)
    audit = tmp_path / "audit.jsonl"
    env = {**os.environ, "DISTILL_SLM_AUDIT_LOG": str(audit)}
    body = {"task": "creditmix", "input": "Num_Bank_Accounts: 3; Interest_Rate: 25"}
    answered = 0
    for _ in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"

        def ready(url=url) -> bool:
            try:
                return httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        stop = threading.Event()

        def client(url=url, stop=stop) -> None:
            nonlocal answered
            with httpx.Client() as http:
                while not stop.is_set():
                    try:
                        answered += http.post(url + "/infer/sft", json=body, timeout=10).status_code == 200
                    except httpx.HTTPError:
                        pass  # the service is being killed, or not up yet

        args = ["-m", "distill_slm.cli", "serve", "--port", str(port), "--runs-dir", str(server["settings"].runs_dir)]
        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        try:
            kill_at_random_moment(args, ready, rng, 1.5, "service audit log", env)
        finally:
            stop.set()
            for thread in clients:
                thread.join(15)
        text = audit.read_text()
        whole = text.splitlines()[:-1] if not text.endswith("\n") else text.splitlines()
        for line in whole:
            json.loads(line)  # every line before the kill parses
    assert answered > 3 and len(read_audit(audit)) >= answered - 3  # at most the line in flight per kill is lost


WRITER = """
import sys
from core.serving.audit import AuditLog
log = AuditLog(sys.argv[1], max_bytes=4000, backups=1000)
for i in range(300):
    log.write({"at": float(i), "writer": sys.argv[2], "i": i, "input": "x" * 40})
log.close()
"""


def test_several_processes_writing_and_rotating_lose_and_split_nothing(tmp_path):
    """Four real processes write the same small log at once: it rotates dozens of times, and every record comes back
    exactly once, whole."""
    import subprocess
    import sys

    path = tmp_path / "audit.jsonl"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w)]) for w in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in writers)
    assert len(list(tmp_path.glob("audit.jsonl.*"))) > 20
    records = read_audit(path)
    assert sorted((r["writer"], r["i"]) for r in records) == [(str(w), i) for w in range(4) for i in range(300)]


def test_iter_audit_streams_a_window_and_counts_what_it_skips(tmp_path):
    from collections import Counter

    from core.serving.audit import iter_audit

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=500)
    for i in range(20):
        log.write({"at": 100.0 + i, "i": i})
    log.close()
    with open(path, "a") as f:
        f.write("{broken\n" + json.dumps({"no": "timestamp"}) + "\n" + '{"at": 1')
    skipped = Counter()
    assert [r["i"] for r in iter_audit(path, since=105, until=110, skipped=skipped)] == list(range(5, 10))
    assert skipped == Counter({"unparsable line": 1, "no timestamp": 1, "torn last line": 1})


def test_redaction_keeps_inputs_out_of_the_log(tmp_path):
    for mode in ("hash", "drop"):
        path = tmp_path / f"{mode}.jsonl"
        log = AuditLog(path, redact=mode)
        log.write({"at": 1.0, "input": "Jane Doe, account 1234", "output": "Good"})
        log.close()
        [record] = read_audit(path)
        assert "Jane" not in path.read_text() and "input" not in record
        assert record["input_chars"] == 22 and record["output"] == "Good" and ("input_sha256" in record) == (mode == "hash")


def test_a_rotation_during_a_read_neither_skips_nor_repeats_a_record(tmp_path):
    from core.serving.audit import iter_audit

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=300, backups=100)
    for i in range(10):
        log.write({"at": float(i), "i": i})
    reading = iter_audit(path)
    first = next(reading)  # the files are open now
    for i in range(10, 40):  # rotates many times under the reader
        log.write({"at": float(i), "i": i})
    log.close()
    seen = [first["i"], *(r["i"] for r in reading)]
    # what was there when the read began (and what reached the file it had open before that rotated), each once, in order
    assert len(seen) >= 10 and seen == list(range(len(seen)))
