"""The training recipe that adapts to the data: how many passes, and when to stop.

The rule (every value overridable in the task file's `training` section):

* **Steps.** A LoRA adapter on a ~100M-parameter model needs a few hundred optimizer steps
  whatever the data size; a fixed number of epochs gives 2,400 demo rows 300 steps but 300 rows
  only 37 (too few to learn anything: macro-F1 0.17 on creditmix). So unless `training.epochs` is
  set, the number of passes is the one that reaches `training.min_steps` optimizer steps (at least
  one pass, at most `training.max_epochs`): a large split gets about one pass, a small one several.
  The default, 500, comes from the learning curves measured here: the student sits near chance and
  then learns fast somewhere between step ~150 and ~300 (later on some data orders: the demo once
  reached only 0.52 macro-F1 at step 300 while still climbing), so 300 steps stopped some runs at
  the knee; early stopping ends a run that has plateaued, so a larger plan costs time only when it
  buys quality.
* **Stopping.** Where a method has validation rows (KD's held-out traces; labeled rows where
  self-training needs them or the task file asks: `core.kinds.data.validation_per_class`), it
  scores them with the task's primary metric every `eval_steps` steps (default: a tenth of the
  planned steps), keeps the best adapter seen, and, once half the planned steps have run, stops
  after `patience` evaluations without improvement (a student often sits at chance for the first
  third of its steps). Plain SFT on a small labeled file holds none back: the rows train better
  than ~20 a class can pick a step (below, "every labeled row").
* Learning rate, warm-up and LoRA placement stay as configured (their defaults were measured on
  the demo at 2,400 rows and held at 450: see docs/benchmarks.md's small-data figures).

Measured on the development half of the generalisation protocol (`bench/generators/`, never the
held-out half; `docs/results/generalize-development-*.json`), SFT on ~120 labeled rows per class:
the defaults (learning rate 2e-3, LoRA dropout 0) 0.478 on `loans`, 0.547 on `shipping`; a
regularised candidate (1e-3, dropout 0.1) 0.470 and 0.610 — intervals overlapping on both, losing on
one, and ~1.5x the steps before stopping: not adopted on two tasks. Both curves peak by step 100-300
of the 500 planned, so the plan is long enough; validation on 20 rows per class is what stops it.
LoRA on all 30 layers instead of the top 10 (`lora.top_layers: None`), on `loans`: 4.6 s a step against 2.1 (the
backward pass runs through every layer), and a validation curve no better than the default's (0.19, 0.47, 0.50, 0.42,
0.46, 0.51, 0.52 at steps 50-350, against 0.28, 0.51, 0.42, 0.42, 0.48 for the top 10; the run was stopped at step
391 of 500, before its test rows): at 2.2x the time for no visible gain, the default stays the top 10 layers.

When to stop, measured on the development half (`bench generalize` variant `sft_stopping`: one run through the whole
plan, its adapter saved at every validation, three rules read off the same trajectory;
`docs/results/generalize-development-stopping.json`). Macro-F1 on fresh test rows, the default rule (early stop,
best kept) / the best validation step of the whole plan / the last step: `loans` 0.492 / 0.492 / 0.441 (the rule
stopped at step 400 and kept 250; the last step's worst class recall 0.05), `shipping` 0.599 / 0.599 / 0.598 (still
rising: nothing stopped), `reviews` 0.884 / 0.884 / 0.894 (kept 350 of 500). Training to the end never won by more than
run-to-run noise (~0.05 between two runs of the same settings) and lost 0.05 once: the rule stays, and so does keeping
the best step rather than the last.

Every labeled row, measured next (`docs/results/generalize-development-every-row.json`, 2026-12-05, CPU, the same day,
the rule fixed before the last two tasks were read: adopt on a mean gain >= 0.02 with no task losing more than 0.05): the validation split and
its early stop, against the same labeled rows all trained through the whole plan — `loans` 0.500 -> 0.476, `shipping`
0.579 -> 0.634, `alerts` 0.789 -> 0.840, `reviews` 0.917 -> 0.944; mean 0.696 -> **0.724**. The 20 rows a class the
split takes are a fifth of what trains, and they cannot tell steps apart (+/-0.11 on 75 rows), so SFT on labeled rows
alone now trains on all of them; a split is held out only where self-training needs one.

The step plan, learning rate and rank against one change each, on all four development classification tasks at once
(`python -m bench.generalize_parallel`, ten jobs side by side on a lent H200, fp32; SFT on the labeled rows; macro-F1 on
fresh test rows, `docs/results/generalize-development-candidates-gpu.json`), loans / shipping / alerts / reviews, mean:
the defaults 0.485 / 0.634 / 0.766 / 0.917, **0.700**; twice the steps (`min_steps: 1000`, `max_epochs: 16`) 0.455 /
0.558 / 0.769 / 0.911, 0.673 (early stopping kept steps 300-500 of 500-800 run: the extra steps overfit the same rows);
learning rate 1e-3 0.434 / 0.624 / 0.690 / 0.917, 0.666; rank 64 (alpha 128) 0.456 / 0.637 / 0.750 on the first three
(0.614 against the defaults' 0.628 there). No change wins on the development half, so none was carried to the held-out
half: the defaults stay. With ~120 rows per class the student is short of rows, not of steps or capacity; the pool is
where the held-out figures rise (SFT 0.690 -> KD 0.885 mean, `docs/results/generalize-held-out-gpu.json`).

KD from a strong teacher over a pool (`kd.min_steps`, default 1,250: ~5 passes over a 1,500-input pool, against SFT's
500 steps). Measured on `loans` (development half; the oracle teacher of `bench generalize`, 1,992 balanced answers,
`docs/results/generalize-development-kd-plan.json`): the 500-step plan's validation curve sat at 0.35-0.45, early
stopping ended it at step 250 keeping step 50, and the held-out test rows scored **0.366** macro-F1 (0.31-0.42, worst
class recall 0.12); 5 passes (1,245 steps) sat at 0.32-0.35 until step ~500, then climbed (0.46, 0.55, 0.57, 0.57,
0.62, 0.62 at steps 620-1,240) and scored **0.695** (0.64-0.75, worst class recall 0.55) — the student learns late, once
the learning rate has come down; the issue that asked for this measure saw the same on its own task (still rising at
step 500). The cheaper alternative, the 500-step plan at half the learning rate (1e-3), scored 0.524
(0.47-0.58; validation still at 0.43 at step 500): the passes, not the rate alone, are what the student needed.
On the 500-step plan without the label-distribution term (`kd.kl_weight: 0`) KD scored 0.483 (0.43-0.53), SFT's
level: that term slows early learning on this task; with the long plan it reached 0.695 (kl_weight 0 on the long plan
not measured).
Cost: 2.5x KD's steps (~40 minutes on 2 CPU cores for a 1,500-input pool before KD trained from the frozen layers'
cache; 1,485 s with it, `loans`, 2026-12-04). Measured on one development task.
A longer plan, its validation curve at its highest when the 1,250 steps ended (0.723 at step 1,250, after 0.697 /
0.662 / 0.679), was tried on the same task: `kd.min_steps: 2000` (8 passes, the max_epochs cap) scored **0.590**
(0.53-0.65; validation peaked at 0.621 at step 1,791) against the default's **0.648** (0.59-0.70) in the run beside it
(`docs/results/generalize-development-kd-steps.json`; 2,089 s against 1,485). The longer plan's validation never
rose above 0.621 and fresh rows scored lower: the climb did not continue, and the default stays. KD's run-to-run spread
on `loans` is ~0.05 (0.695 and 0.648 for the default in two records); `python -m bench.generalize_parallel --plan
kd-steps` asks the same of all four development tasks at once where a GPU is lent.
KD's student has 1,500 rows where SFT's has ~300, so more adapter capacity might pay there: LoRA rank 64 (alpha 128) on
KD's default plan, same task, fell to chance on validation (0.10) after step 250 at the default learning rate and
scored 0.445 (0.40-0.49; same file): rank 16 stays for KD too.

    plan = plan_steps(cfg.training, n_rows=450)      # Plan(epochs=8.0, steps=456, eval_steps=45)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.common.config import TrainingConfig


@dataclass
class Plan:
    epochs: float
    steps: int  # optimizer steps the plan runs (before any early stop)
    eval_steps: int  # validation every this many steps


def plan_steps(t: TrainingConfig, n_rows: int, epochs: float | None = None) -> Plan:
    """The number of passes and steps for `n_rows` training rows (`epochs` overrides the rule, as `training.epochs` does)."""
    per_step = t.batch_size * t.grad_accum
    steps_per_epoch = max(1, math.ceil(n_rows / per_step))
    epochs = epochs or t.epochs or min(t.max_epochs, max(1.0, t.min_steps / steps_per_epoch))
    steps = t.max_steps if t.max_steps > 0 else math.ceil(steps_per_epoch * epochs)
    return Plan(epochs=float(epochs), steps=steps, eval_steps=t.eval_steps or max(1, steps // 10))
