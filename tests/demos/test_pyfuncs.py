"""The code-generation demo's data: every family's reference solution passes its asserts in the sandbox (held-out
families included), a wrong body fails them, and no held-out family is a training family under other constants."""

import re

from core.sandbox import run_all
from core.settings import ModelSettings
from demos import pyfuncs


def _shape(row: dict) -> str:
    """A row's spec with its function name and constants taken out: what identifies its family."""
    spec = row["prompt"].split("` that ", 1)[1]
    return re.sub(r"-?\d+", "N", spec)


def test_every_held_out_solution_passes_its_asserts_and_a_wrong_body_does_not():
    rows = pyfuncs.generate(40, seed=5, families=pyfuncs.HELD_OUT)
    results = run_all([(row["solution"], row["tests"]) for row in rows], ModelSettings())
    assert all(r.passed for r in results), [(row["id"], r.error) for row, r in zip(rows, results) if not r.passed][:3]
    wrong = [(row["solution"].split(":\n", 1)[0] + ":\n    return None", row["tests"]) for row in rows[:5]]
    assert not any(r.passed for r in run_all(wrong, ModelSettings()))


def test_held_out_families_are_not_training_families_and_generation_is_seeded():
    training = {_shape(row) for row in pyfuncs.generate(400, seed=0)}
    held_out = {_shape(row) for row in pyfuncs.generate(200, seed=1, families=pyfuncs.HELD_OUT)}
    assert len(training) >= len(pyfuncs.TRAIN) and len(held_out) >= len(pyfuncs.HELD_OUT)
    assert not training & held_out
    assert pyfuncs.generate(20, seed=9) == pyfuncs.generate(20, seed=9) != pyfuncs.generate(20, seed=10)
    names = [row["entry_point"] for row in pyfuncs.generate(50, seed=9)]
    assert len(set(names)) == 50 and all(row["tests"].count(row["entry_point"]) >= 3 for row in pyfuncs.generate(50, seed=9))
