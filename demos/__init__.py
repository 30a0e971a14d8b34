"""Demo data: seeded generators that stand in for a user's files, apart from the model layer.

Each demo is one `Demo` (below) in `DEMOS`: its task type, labels or JSON Schema, instruction, and
`generate(n, seed)`, which returns rows in the task type's file format (exactly what a user's
JSONL would hold), plus `pool(n, seed)`, the same rows with their answers dropped (an unlabeled
pool for a teacher). The rest of the code reaches a demo only through `for_type` and `get`.

    demo = for_type("classification")
    rows = demo.generate(4000, seed=7)       # [{"id", "text", "label"}, ...]
    pool = demo.pool(600, seed=8)            # [{"id", "text"}, ...]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from demos import creditmix, invoices, pyfuncs, tickets


@dataclass(frozen=True)
class Demo:
    name: str
    type: str  # the task type whose file format `generate` writes
    instruction: str
    generate: Callable[[int, int], list[dict]]  # (n, seed) -> rows
    answer_fields: tuple[str, ...]  # dropped by `pool`
    labels: list[str] | None = None
    schema: dict | None = None

    def pool(self, n: int, seed: int) -> list[dict]:
        """`n` fresh rows without their answers, ids prefixed `pool-`."""
        rows = []
        for row in self.generate(n, seed):
            unlabeled = {k: v for k, v in row.items() if k not in self.answer_fields}
            unlabeled["id"] = "pool-" + row["id"].split("-", 1)[1]
            rows.append(unlabeled)
        return rows


DEMOS: dict[str, Demo] = {
    "creditmix": Demo("creditmix", "classification", creditmix.INSTRUCTION, creditmix.generate, ("label",), labels=creditmix.LABELS),
    "invoices": Demo("invoices", "idp", invoices.INSTRUCTION, invoices.generate, ("target",), schema=invoices.SCHEMA),
    "tickets": Demo("tickets", "classification", tickets.INSTRUCTION, tickets.generate, ("label",), labels=tickets.LABELS),
    "pyfuncs": Demo("pyfuncs", "codegen", pyfuncs.INSTRUCTION, pyfuncs.generate, ("solution", "plan")),
}


def get(name: str) -> Demo:
    if name not in DEMOS:
        raise KeyError(f"unknown demo {name!r}; demos: {sorted(DEMOS)}")
    return DEMOS[name]


def find(task_type: str) -> Demo | None:
    """The demo a task type runs when its task file names no data (the first registered for it), or None."""
    return next((demo for demo in DEMOS.values() if demo.type == task_type), None)


def for_type(task_type: str) -> Demo:
    """`find`, refusing a task type without a demo."""
    demo = find(task_type)
    if demo is None:
        raise KeyError(f"no demo for task type {task_type!r}")
    return demo
