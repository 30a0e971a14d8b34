"""Task generators for `distill-slm bench generalize`: tasks nobody tuned the defaults to.

Two halves, fixed before any default was tuned (the held-out half's first commit says so in its
message) and never to be tuned on:

* `DEVELOPMENT`: defaults (steps, learning rate, LoRA rank and placement, when to stop) may be chosen
  on these. `development.py`.
* `HELD_OUT`: only measured. A default is right when it wins here too. `held_out.py`, and `real.py`: real labeled
  text nobody here wrote (UCI's review sentences, shipped by a pinned npm package), added after the defaults were
  chosen and measured only.

Each generator is a `demos.Demo`: its task type, labels (classification) or JSON Schema (idp),
instruction, and `generate(n, seed)` returning rows in the task type's file format, exactly what a
user's JSONL would hold; `pool(n, seed)` drops the answers. The shapes vary on purpose: domains;
labels decided by thresholds over numbers written in digits and in words, negation, conjunctions of
facts, time spans; 2 to 8 labels, some sharing prefixes (one label a prefix of another); imbalance;
short and long inputs; label noise; extraction.

    from bench.generators import HELD_OUT
    rows = HELD_OUT["claims"].generate(480, seed=1)
"""

from __future__ import annotations

from bench.generators import development, held_out, real
from demos import Demo

DEVELOPMENT: dict[str, Demo] = {demo.name: demo for demo in development.GENERATORS}
HELD_OUT: dict[str, Demo] = {demo.name: demo for demo in held_out.GENERATORS + real.GENERATORS}
GENERATORS: dict[str, Demo] = DEVELOPMENT | HELD_OUT
