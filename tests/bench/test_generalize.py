"""`bench generalize`'s own logic: the summary over generators, the stopping rule as the bench replays it, the strong
teacher it serves over the OpenAI-compatible API, and its refusal of a generator it does not have. (A generator's rows:
tests/bench/test_generators.py; the figures themselves are measurements, recorded in docs/results.)"""

import openai
import pytest

from bench.generalize import _kept_by_rule, _summary, oracle_teacher, run
from core.training.validation import stops_here


def _task(primary: str, **variants: float) -> dict:
    return {"primary_metric": primary, "variants": {name: {primary: value} for name, value in variants.items()}}


def test_the_summary_is_the_mean_with_a_students_t_interval_and_the_worst_over_the_tasks_that_ran_a_variant():
    summary = _summary(
        {
            "a": _task("macro_f1", base=0.2, sft=0.5),
            "b": _task("macro_f1", base=0.3, sft=0.6),
            "c": _task("macro_f1", base=0.4, sft=0.7, kd_strong=0.9),
            "jobs": _task("field_f1", base=0.5, sft=1.0),  # each task's own primary metric
        }
    )
    sft = summary["sft"]
    assert sft["mean"] == pytest.approx(0.7) and sft["worst"] == 0.5 and sft["tasks"] == 4
    # sd 0.216 over 4 tasks, t(0.975, 3) = 3.182: half-width 0.344 (the normal's 2 would claim 0.216)
    assert sft["mean_ci"] == pytest.approx([0.356, 1.0], abs=1e-3)  # a score: the interval stops at 1
    assert summary["kd_strong"] == {"mean": 0.9, "mean_ci": None, "worst": 0.9, "tasks": 1}  # one task: no interval


def test_the_bench_keeps_the_step_the_trainers_rule_keeps():
    curve = [{"step": s, "value": v} for s, v in [(50, 0.3), (100, 0.5), (150, 0.45), (200, 0.49), (250, 0.5), (300, 0.7)]]
    # patience 3, not before step 150: after 250 three validations have not beaten step 100 (an equal is no gain)
    assert stops_here(curve[:5], patience=3, not_before=150)
    assert _kept_by_rule(curve, patience=3, not_before=150) == 100  # the later 0.7 is never seen: the run stopped
    assert _kept_by_rule(curve, patience=4, not_before=150) == 300  # never stops: the best of the whole curve
    assert _kept_by_rule(curve, patience=3, not_before=300) == 300  # too early to stop at 250


def test_the_strong_teacher_answers_each_input_with_its_gold_answer_to_the_official_client():
    server, url = oracle_teacher({"the claim text": "pay-partial"})
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="oracle", messages=[{"role": "system", "content": "Decide."}, {"role": "user", "content": "the claim text"}]
        )
        assert reply.choices[0].message.content == "pay-partial"
        unknown = client.chat.completions.create(model="oracle", messages=[{"role": "user", "content": "never seen"}])
        assert unknown.choices[0].message.content == ""  # not a label: the trace is refused, never guessed
    finally:
        server.should_exit = True


def test_an_unknown_generator_is_refused_naming_the_choices():
    with pytest.raises(SystemExit, match=r"unknown generators \['nope'\].*'claims'.*'held-out'"):
        run(tasks="claims,nope")
