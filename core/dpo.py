"""Preference optimisation (DPO) of a LoRA adapter with TRL's DPOTrainer.

Pairs come from the user (`prompt`, `chosen`, `rejected` JSONL; for classification `prompt` is the
input text and the sides are labels) or are built here on-policy: chosen = the gold label (or the
teacher's), rejected = the wrong label the student itself finds most likely.

The reference model costs no second copy of the weights: from scratch, it is the base with the
adapter disabled; from an SFT adapter (SFT -> DPO), TRL adds a frozen copy of that adapter named
"ref" beside the trainable one (a few MB of LoRA weights).

    pairs, counts = classification_pairs(cfg, train_rows, decoder)
    adapter_dir, stats = train_dpo(cfg, pairs, checkpoint_dir, out_dir, start_adapter="runs/.../sft/v0001")
"""

from __future__ import annotations

import copy
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import trl.trainer.utils
from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer

from core.calibrated import CalibratedDecoder, task_messages
from core.config import TaskConfig
from core.data import DataError, Example, read_records
from core.metrics import field_diff
from core.sft import TrainStats, run_training, trainer_args


class CompletionDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer, projecting to the vocabulary only at completion positions on every device.

    TRL's fused LM head scores only the positions that carry a label on CUDA/XPU, but on other
    devices it scores every position (to keep tile shapes fixed for compilers such as Neuron's).
    On CPU that means the 49k-token vocabulary projection over whole prompts, for chosen, rejected
    and the reference pass: 2.3x the memory of an SFT run and twice the time, for one to three
    label tokens a row. Scoring only the labelled positions gives the same loss (tested), halves
    the step time and cut the demo's peak from 2.3x to 1.4x an SFT run's (`distill-slm bench dpo`;
    `dpo_config` took it to 1.04x).

    TRL decides this with a private helper; patching it fails loudly if a TRL upgrade renames it.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with mock.patch.object(trl.trainer.utils, "_use_triton", lambda device: True):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


@dataclass
class Pair:
    prompt: str  # the input text; the chat around it is the task's
    chosen: str
    rejected: str
    source: str  # 'user', 'gold', 'teacher', 'student_wrong' or 'perturbed_gold'
    line: int | None = None


def load_pairs(path: str | Path, labels: list[str] | None = None) -> list[Pair]:
    """Read user pairs; refuse empty or identical sides (and, for classification, sides outside the labels)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "no such file")
    pairs = []
    for number, record in read_records(path):
        sides = {}
        for field in ("prompt", "chosen", "rejected"):
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise DataError(path, number, field, "missing or empty")
            if labels is not None and field != "prompt" and value not in labels:
                raise DataError(path, number, field, f"{value!r} is not one of the labels {labels}")
            sides[field] = value
        if sides["chosen"].strip() == sides["rejected"].strip():
            raise DataError(path, number, "rejected", "identical to chosen: the pair prefers nothing")
        pairs.append(Pair(sides["prompt"], sides["chosen"], sides["rejected"], "user", number))
    return pairs


def classification_pairs(
    cfg: TaskConfig, rows: list[Example], decoder: CalibratedDecoder, teacher_traces: list[dict] | None = None
) -> tuple[list[Pair], dict]:
    """On-policy pairs: chosen = gold label (rows) or teacher label (traces), rejected = the student's likeliest
    wrong label; kept in balance (`label_balanced`) so that DPO moves no label's prior."""
    sources = [(r.text, r.label, "gold") for r in rows] + [(t["prompt"], t["output"], "teacher") for t in teacher_traces or []]
    sources = sources[: cfg.dpo.max_pairs]
    preds = decoder.predict([text for text, _, _ in sources])
    wrong_side, right_side, dropped_identical = [], [], 0
    for (text, chosen, source), pred in zip(sources, preds):
        wrong = sorted(((p, label) for label, p in pred.probs.items() if label != chosen), reverse=True)
        if not wrong:
            dropped_identical += 1
            continue
        (wrong_side if pred.label != chosen else right_side).append(Pair(text, chosen, wrong[0][1], source))
    # The student's own mistakes are the most informative pairs: offer them first.
    kept = label_balanced(wrong_side + right_side)
    student_wrong = {id(p) for p in wrong_side}
    counts = {
        "gold": sum(p.source == "gold" for p in kept),
        "teacher": sum(p.source == "teacher" for p in kept),
        "student_was_wrong": sum(id(p) in student_wrong for p in kept),
        "dropped_identical": dropped_identical,
        "dropped_to_balance": len(wrong_side) + len(right_side) - len(kept),
    }
    return kept, counts


def label_balanced(pairs: list[Pair]) -> list[Pair]:
    """The pairs, keeping each label chosen exactly as often as it is rejected (earlier pairs first).

    The likeliest wrong label is not spread evenly: on an ordinal scale the middle class is the
    runner-up for both ends, so unbalanced pairs push it down everywhere (on the creditmix demo DPO
    cost "Standard" 0.43 recall). A set in which every label is chosen as often as rejected is a
    union of cycles (a>b, b>c with c>a; a>b with b>a); it sharpens contrasts and shifts no prior.
    3-cycles go first since each keeps three pairs for the two a 2-cycle keeps.
    """
    by_edge: dict[tuple[str, str], list[Pair]] = {}
    for pair in pairs:
        by_edge.setdefault((pair.chosen, pair.rejected), []).append(pair)
    labels = sorted({label for edge in by_edge for label in edge})
    cycles = list(itertools.permutations(labels, 3)) + list(itertools.combinations(labels, 2))
    kept = []
    for cycle in cycles:
        edges = [(cycle[i], cycle[(i + 1) % len(cycle)]) for i in range(len(cycle))]
        if n := min(len(by_edge.get(edge, [])) for edge in edges):
            for edge in edges:
                kept += by_edge[edge][:n]
                del by_edge[edge][:n]
    order = {id(p): i for i, p in enumerate(pairs)}
    return sorted(kept, key=lambda p: order[id(p)])


def _perturbed(target: dict, schema, rng) -> dict | None:
    """A copy of `target` with one leaf changed so that it still validates: a plausible, valid, wrong answer."""
    leaves = []

    def walk(node, parent, key):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, node, k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, node, i)
        else:
            leaves.append((parent, key))

    wrong = copy.deepcopy(target)
    walk(wrong, None, None)
    rng.shuffle(leaves)
    for parent, key in leaves:
        value = parent[key]
        if isinstance(value, bool):
            candidates = [not value]
        elif isinstance(value, (int, float)):
            candidates = [value + 1, round(value * 10, 2), type(value)(max(value - 1, 0))]
        elif isinstance(value, str) and len(value) == 10 and value[4] == "-":  # an ISO date: move the day
            day = int(value[8:]) % 28 + 1
            candidates = [f"{value[:8]}{day:02d}"]
        elif isinstance(value, str):
            candidates = [value[:-1] or "x", value.upper() if value.upper() != value else value.lower()]
        else:
            continue
        for candidate in candidates:
            parent[key] = candidate
            if candidate != value and not schema.errors(wrong):
                return wrong
        parent[key] = value
    return None


def extraction_pairs(cfg: TaskConfig, rows: list[Example], decoder, seed: int = 0) -> tuple[list[Pair], dict]:
    """Pairs for idp: chosen = the gold JSON, rejected = the student's own valid-but-wrong output on the same
    document, or (where the student was right) the gold with one field changed so that it still validates."""
    rng = random.Random(seed)
    rows = rows[: cfg.dpo.max_pairs]
    outputs = decoder.extract([r.text for r in rows])
    pairs, counts = [], {"student_wrong": 0, "perturbed_gold": 0, "dropped_identical": 0}
    for row, out in zip(rows, outputs):
        gold = json.loads(row.label)
        diff = field_diff(gold, out.output)
        if out.valid and (diff["wrong"] or diff["missing"] or diff["extra"]):
            pairs.append(Pair(row.text, row.label, out.text, "student_wrong"))
            counts["student_wrong"] += 1
            continue
        wrong = _perturbed(gold, decoder.schema, rng)
        if wrong is None:
            counts["dropped_identical"] += 1
            continue
        pairs.append(Pair(row.text, row.label, decoder.schema.dumps(wrong), "perturbed_gold"))
        counts["perturbed_gold"] += 1
    return pairs, counts


def check_pairs(pairs: list[Pair], cfg: TaskConfig, tokenizer: PreTrainedTokenizerBase, source: str) -> int:
    """Refuse pairs whose prompt + longer side is over `training.max_length`, and too few pairs; return the tokens."""
    if len(pairs) < cfg.dpo.min_pairs:
        raise DataError(source, None, None, f"{len(pairs)} usable preference pairs, fewer than dpo.min_pairs={cfg.dpo.min_pairs}")
    total = 0
    for number, pair in enumerate(pairs, start=1):
        prompt = tokenizer.apply_chat_template(task_messages(cfg.instruction, pair.prompt), tokenize=False, add_generation_prompt=True)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
        n_side = max(len(tokenizer(side, add_special_tokens=False).input_ids) for side in (pair.chosen, pair.rejected)) + 2
        if n_prompt + n_side > cfg.training.max_length:
            raise DataError(source, pair.line or number, "prompt", f"{n_prompt + n_side} tokens, over training.max_length={cfg.training.max_length}")
        total += 2 * (n_prompt + n_side)
    return total


def dpo_dataset(pairs: list[Pair], instruction: str) -> Dataset:
    return Dataset.from_list([
        {
            "prompt": task_messages(instruction, p.prompt),
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ])


def dpo_config(cfg: TaskConfig, checkpoint_dir: str | Path, progress: bool = True) -> DPOConfig:
    d = cfg.dpo
    shared = trainer_args(cfg, checkpoint_dir, progress) | {"learning_rate": d.learning_rate, "num_train_epochs": d.epochs}
    # A pair is two sequences. Half as many pairs per forward and twice the accumulation keep an optimizer step at
    # `batch_size` pairs (the loss is a mean over pairs, so the gradient is the same) and a forward at `batch_size`
    # sequences, as an SFT step: the demo's peak went from 1.40x to 1.04x an SFT run's (`distill-slm bench dpo`).
    if cfg.training.batch_size % 2 == 0:
        shared |= {"per_device_train_batch_size": cfg.training.batch_size // 2, "gradient_accumulation_steps": cfg.training.grad_accum * 2}
    # The reference's log-probs are computed once, in a pass before training, instead of a no-grad forward inside
    # every step: a DPO step on the demo 6.2 s -> 3.7 s (the peak barely moved: `distill-slm bench dpo`).
    return DPOConfig(**shared, beta=d.beta, loss_type=[d.loss_type], precompute_ref_log_probs=True)


def train_dpo(
    cfg: TaskConfig,
    pairs: list[Pair],
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    start_adapter: str | Path | None = None,
    progress: bool = True,
    source: str = "<pairs>",
) -> tuple[Path, TrainStats]:
    """Train (or resume) a DPO adapter, from `start_adapter` (SFT -> DPO) or a fresh LoRA; save it to `out_dir`."""
    return run_training(
        cfg, dpo_dataset(pairs, cfg.instruction), checkpoint_dir, out_dir, progress,
        check=lambda tokenizer: check_pairs(pairs, cfg, tokenizer, source),
        make_trainer=CompletionDPOTrainer, args=dpo_config(cfg, checkpoint_dir, progress), start_adapter=start_adapter,
    )
