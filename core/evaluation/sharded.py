"""Evaluation in shards on the workers of a Ray or Dask cluster, merged exactly (`scale.runner: ray | dask`).

The expensive part of scoring a variant is its decoder's batch answer to the eval rows (labels scored, JSON or code
generated); the metrics are a function of those answers. So each worker (`core.common.cluster`, with its own copy of the
base model) decodes shards of the rows, and this process scores the merged answers with the kind's own `score`, reading
them through a decoder that replays them. Shards hold whole decoder batches (a multiple of `eval_batch_size`, in the
rows' order), so every batch, its padding and its numbers are the ones a single process decodes: the merged metrics
equal the single-process ones to the last digit (timings aside).

    results = evaluate_sharded(kind, rows, {"sft": "runs/t/sft/v0001"}, connect(cfg.scale))
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from core.common.cluster import WorkerPool
from core.common.rows import Example
from core.model.loading import activate_adapter, load_model

# The decoder's batch answer, by what it answers (`Decoder.answers`): what `kind.score` calls on the eval rows' texts.
BATCH_ANSWER = {"labels": "predict", "json": "extract", "code": "answer", "text": "answer"}


class _EvalWorker:
    """One worker: the base model loaded once; each call decodes one shard under one variant."""

    def __init__(self, kind) -> None:
        self.kind = kind
        self.model, self.tokenizer = load_model(kind.cfg.model, kind.settings)  # the settings travel with the kind
        self.loaded: set[str] = set()

    def decode(self, variant: str, adapter: str | None, texts: list[str]) -> list:
        if adapter is not None and variant in self.loaded:
            self.model.set_adapter(variant)
        elif adapter is not None:
            self.model = activate_adapter(self.model, adapter, name=variant)
            self.loaded.add(variant)
        # The base variant on a model that holds adapters: with them switched off, the plain model's forward exactly.
        off = self.model.disable_adapter() if adapter is None and self.loaded else contextlib.nullcontext()
        with off:
            decoder = self.kind.decoder(self.model, self.tokenizer, adapter)
            return getattr(decoder, BATCH_ANSWER[decoder.answers])(texts)


class Replayed:
    """A decoder whose batch answer to `texts` was computed elsewhere: `kind.score` reads it as the decoder's own; every
    other attribute (labels, prior, tokenizer, calibration) is the local decoder's."""

    def __init__(self, decoder, texts: list[str], outputs: list) -> None:
        self._decoder, self._texts, self._outputs = decoder, list(texts), outputs

    def __getattr__(self, name: str):
        if name == BATCH_ANSWER[self._decoder.answers]:
            return self._replay
        return getattr(self._decoder, name)

    def _replay(self, texts, *args, **kwargs):
        if list(texts) == self._texts and not args and not kwargs:
            return self._outputs
        return getattr(self._decoder, BATCH_ANSWER[self._decoder.answers])(texts, *args, **kwargs)


def shard_bounds(n_rows: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """[begin, end) of each shard: whole batches of `batch_size`, about two shards per worker."""
    batches = math.ceil(n_rows / batch_size)
    per_shard = max(1, math.ceil(batches / (2 * workers))) * batch_size
    return [(begin, min(begin + per_shard, n_rows)) for begin in range(0, n_rows, per_shard)]


def evaluate_sharded(
    kind, rows: list[Example], adapters: dict[str, str | Path], cluster: WorkerPool, include_base: bool = True
) -> dict[str, dict]:
    """`evaluate_variants`' results, each variant's rows decoded in shards by `scale.eval_workers` workers."""
    variants = ({"base": None} if include_base else {}) | {name: str(path) for name, path in adapters.items()}
    texts = [r.text for r in rows]
    bounds = shard_bounds(len(rows), kind.cfg.eval_batch_size, cluster.scale.eval_workers)
    # Every variant's shards, each worker taking the next as it finishes one; answers kept by (variant, shard).
    calls = [((name, index), (name, variants[name], texts[begin:end])) for name in variants for index, (begin, end) in enumerate(bounds)]
    answers = dict(cluster.stream(_EvalWorker, (kind,), "decode", calls, cluster.scale.eval_workers))
    model, tokenizer = load_model(kind.cfg.model, kind.settings)
    results: dict[str, dict] = {}
    for name, adapter in variants.items():
        if adapter is not None:
            model = activate_adapter(model, adapter, name=name)
        merged = [answer for index in range(len(bounds)) for answer in answers[(name, index)]]
        results[name] = kind.score(Replayed(kind.decoder(model, tokenizer, adapter), texts, merged), rows)
    return results
