"""The drift report: the JSON, the markdown a person reads and the plot, each published whole."""

import json

from core.drift.report import write_report


def night(verdict: str, mmd: float, teacher: bool) -> dict:
    quality = {"confidence_based_accuracy_window": 0.71, "confidence_based_accuracy_reference": 0.83}
    if teacher:
        quality |= {"teacher_agreement": 0.8, "teacher_agreement_ci95": [0.62, 0.91], "teacher_sample": 30}
    else:
        quality |= {"teacher_agreement": None, "teacher_note": "teacher unavailable: connection refused"}
    return {
        "task": "tickets",
        "verdict": verdict,
        "reasons": ["output.labels: corrected p 0.001 < p_drift 0.01"] if verdict == "drift" else [],
        "production": "sft/v3",
        "window": {"requests": 412, "answered_by_production": 400, "refused_requests": 2, "skipped": {}},
        "reference": {"inputs": 200, "source": "eval split of sft/v3"},
        "signals": [
            {"name": "input.embedding_mmd", "statistic": mmd, "p_value": 0.0004, "p_corrected": 0.0016},
            {"name": "output.labels", "statistic": 0.3, "p_value": None, "reference": {"a": 0.5, "b": 0.5}, "window": {"a": 0.9, "b": 0.1}},
            {
                "name": "confidence.distribution",
                "statistic": 0.2,
                "p_value": 0.2,
                "histogram_reference": [1] * 10,
                "histogram_window": [0] * 9 + [5],
            },
        ],
        "quality": quality,
        "notes": ["1 redacted input"],
    }


def test_the_report_states_verdict_reasons_signals_and_quality(tmp_path):
    history = [night("ok", 0.01, True), night("ok", 0.02, True)]
    paths = write_report(night("drift", 0.2, teacher=True), history, tmp_path / "drift", "2026-12-03")
    assert json.loads(open(paths["json"]).read())["verdict"] == "drift"
    markdown = open(paths["markdown"]).read()
    assert markdown.startswith("# Drift of tickets — 2026-12-03: **drift**")
    assert "- output.labels: corrected p 0.001 < p_drift 0.01" in markdown
    assert "| input.embedding_mmd | 0.2 | 0.0004 | 0.0016 |" in markdown and "| output.labels | 0.3 | - | - |" in markdown
    assert "Window: 412 requests (400 answered by production sft/v3), 2 refused; skipped: none." in markdown
    assert "agreement with the teacher 0.800 (95% CI 0.620-0.910, 30 inputs)" in markdown
    assert "confidence-based accuracy 0.710 now, 0.830 on the reference" in markdown and "- 1 redacted input" in markdown
    with open(paths["plot"], "rb") as plot:
        assert plot.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "![drift](2026-12-03.png)" in markdown
    assert sorted(p.name for p in (tmp_path / "drift").iterdir()) == ["2026-12-03.json", "2026-12-03.md", "2026-12-03.png"]


def test_a_quiet_night_without_a_teacher_says_so(tmp_path):
    paths = write_report(night("ok", 0.01, teacher=False), [], tmp_path, "n1")
    markdown = open(paths["markdown"]).read()
    assert "**ok**" in markdown and "- every test within its threshold" in markdown
    assert "- agreement with the teacher: unknown (teacher unavailable: connection refused)" in markdown
