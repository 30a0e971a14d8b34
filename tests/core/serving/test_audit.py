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
