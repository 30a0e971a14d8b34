"""Early stopping on the task's primary metric, keeping the best adapter seen (a transformers callback).

Every `every` optimizer steps the callback scores the validation rows with the model as it is
(`score(model) -> float`, higher is better), appends the figure to the learning curve, saves the
adapter when it is the best so far, and stops training after `patience` validations without
improvement — but not before step `not_before`: a LoRA student often sits at chance for the first
third of its steps and then learns fast, so an early plateau is no reason to stop. The curve and the best adapter live in the checkpoint folder, so a resumed run
continues where the crashed one stopped.

    callback = BestOnValidation(score, every=30, patience=3, folder=checkpoint_dir)
    trainer.add_callback(callback); trainer.train()
    callback.best_dir   # the adapter to keep; callback.curve: [{"step": 30, "value": 0.71, "seconds": 4.2}, ...]
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback

from core.common.files import atomic_write_text, fsync_folder
from core.training.data_parallel import main_process


class BestOnValidation(TrainerCallback):
    def __init__(
        self, score: Callable[[torch.nn.Module], float], every: int, patience: int, folder: str | Path, not_before: int = 0
    ) -> None:
        self.score, self.every, self.patience, self.not_before = score, every, patience, not_before
        self.best_dir = Path(folder) / "best"
        self._state_path = Path(folder) / "validation.json"
        if main_process():
            _recover(self.best_dir)
        saved = json.loads(self._state_path.read_text()) if self._state_path.exists() else {}
        self.curve: list[dict] = saved.get("curve", [])

    @property
    def best(self) -> dict | None:
        return best_point(self.curve)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.global_step >= state.max_steps
        if state.global_step % self.every and not last:
            return control
        if any(point["step"] == state.global_step for point in self.curve):
            return control  # validated before a crash and resume
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        try:
            value = _from_rank_zero(float(self.score(model)))
        finally:
            model.train(was_training)
        best = self.best
        # seconds: what this validation cost, beside the training it interrupts (the report shows both)
        self.curve.append({"step": state.global_step, "value": value, "seconds": round(time.perf_counter() - started, 2)})
        if best is None or value > best["value"]:
            if main_process():
                self._save_best(model)
        elif stops_here(self.curve, self.patience, self.not_before):
            control.should_training_stop = True
        if main_process():  # every rank keeps the same curve (identical weights, identical scores); one writes it
            atomic_write_text(self._state_path, json.dumps({"curve": self.curve}))
        return control

    def _save_best(self, model) -> None:
        """Replace the best adapter whole: written beside it, then swapped in by renames, so a kill at any moment leaves
        the old best or the new one (`_recover` finishes an interrupted swap)."""
        fresh, old = self.best_dir.with_name("best.incoming"), self.best_dir.with_name("best.old")
        shutil.rmtree(fresh, ignore_errors=True)
        model.save_pretrained(str(fresh), selected_adapters=["default"])
        fsync_folder(fresh)
        if self.best_dir.exists():
            os.rename(self.best_dir, old)
        os.rename(fresh, self.best_dir)
        shutil.rmtree(old, ignore_errors=True)


def best_point(curve: list[dict]) -> dict | None:
    """The best validation point of `curve` (the earliest of equal ones), None before the first."""
    return max(curve, key=lambda point: (point["value"], -point["step"])) if curve else None


def stops_here(curve: list[dict], patience: int, not_before: int) -> bool:
    """The stopping rule, after the last point of `curve`: at or past step `not_before`, `patience` validations since
    the best one. (`bench generalize` replays it on a curve run to the end: the same function.)"""
    best = best_point(curve)
    return curve[-1]["step"] >= not_before and sum(point["step"] > best["step"] for point in curve) >= patience


def _from_rank_zero(value: float) -> float:
    """Rank 0's figure on every rank of a data-parallel run, so all stop at the same step whatever rounding did."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return float(box[0])


def _recover(best_dir: Path) -> None:
    """After a kill mid-swap: a half-written `best.incoming` is dropped; a `best.old` without a `best` is put back."""
    shutil.rmtree(best_dir.with_name("best.incoming"), ignore_errors=True)
    old = best_dir.with_name("best.old")
    if old.exists():
        if best_dir.exists():
            shutil.rmtree(old)
        else:
            os.rename(old, best_dir)
