"""Continuous batching for greedy, grammar-constrained decoding: rows join a running batch between decode steps and
leave it as soon as they end, instead of a batch running until its longest row ends.

The running batch keeps one key/value cache for all its rows, left-padded to a common length. Rows that join are
prefilled together and their cache is merged in (the shorter side padded on the left, the padding masked out); rows
that end are dropped from the cache, and padding columns no row needs any more are cut off. Each row keeps its own
grammar (`GrammarMask` of one row: a request's own schema and its own token budget), its own position ids and its own
`on_token` (streaming). Models whose cache is not one plain tensor per layer (sliding-window layers, e.g. Gemma 3)
are not supported: `supported(model)` says so and the caller batches statically.

A row whose prompt begins with a `Prefix` (the tokens every prompt of a task begins with: chat markup and the
instruction, prefilled once per adapter) is prefilled from its own tokens on, so its time to the first token is its
document's prefill, not the whole prompt's.

    batch = RunningBatch(model, eos_token_id, pad_token_id)
    batch.add(encoded_prompts, [Row(handle, mask, budget), ...])     # between steps
    prefix = batch.prefill_prefix(shared_prefix(tokenizer, decoder.prompt))
    batch.add(encoded_rests, rows, prefix)                            # prompts that begin with the prefix, less it
    for row in batch.step():                                          # one token for every row
        ...  # row.tokens (end-of-sequence excluded) of each row that ended
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, LogitsProcessor, PreTrainedModel, PreTrainedTokenizerBase

from core.model.fast_decode import fast_steps


def supported(model: PreTrainedModel) -> bool:
    """Whether the model's cache is one plain key/value tensor per layer (no sliding window), which merging needs."""
    config = model.config
    types = getattr(config, "layer_types", None) or ()
    return getattr(config, "sliding_window", None) is None and all(t == "full_attention" for t in types)


@dataclass
class Prefix:
    """The key/value cache of the tokens that many prompts begin with, computed once under one adapter."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values, [1, kv heads, len(ids), head dim]


def shared_prefix(tokenizer: PreTrainedTokenizerBase, prompt: Callable[[str], str]) -> list[int]:
    """The tokens that every prompt `prompt(document)` begins with, whatever the document (the template's leading part).
    A prompt whose own tokens do not begin with them (a document that merged with the template's last token) is
    prefilled whole: the caller compares tokens, never text."""
    first, second = (tokenizer(prompt(document), add_special_tokens=False).input_ids for document in ("A", "B"))
    length = 0
    while length < min(len(first), len(second)) and first[length] == second[length]:
        length += 1
    return first[:length]


@dataclass
class Row:
    handle: object  # the caller's: which request this row answers
    mask: LogitsProcessor | None  # the row's grammar (one row), or None: unconstrained
    budget: int  # most new tokens, end-of-sequence included
    on_token: Callable[[int], bool] | None = None  # sees each token; False ends the row there
    prompt_tokens: int = 0
    tokens: list[int] = field(default_factory=list)  # decoded so far, end-of-sequence excluded
    ended_by_reader: bool = False


class RunningBatch:
    def __init__(self, model: PreTrainedModel, eos_token_id: int, pad_token_id: int) -> None:
        self.model, self.eos, self.pad = model, eos_token_id, pad_token_id
        self.device = next(model.parameters()).device  # the prompts come tokenized on the CPU; a GPU model needs them moved
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.attention: torch.Tensor | None = None  # [rows, cache length]: 0 over each row's left padding
        self.positions: torch.Tensor | None = None  # [rows, 1]: each row's last position id
        self.logits: torch.Tensor | None = None  # [rows, vocab]: each row's next-token logits

    def __len__(self) -> int:
        return len(self.rows)

    @torch.inference_mode()
    def prefill_prefix(self, ids: list[int]) -> Prefix:
        """The key/value cache of `ids` under the model as it is now (its active adapter)."""
        cache = DynamicCache()
        self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True, logits_to_keep=1)
        return Prefix(list(ids), [(layer.keys, layer.values) for layer in cache.layers])

    @torch.inference_mode()
    def add(self, encoded: dict[str, torch.Tensor], rows: list[Row], prefix: Prefix | None = None) -> None:
        """Prefill left-padded prompts (`encoded`: input_ids, attention_mask) and merge them into the running batch;
        with `prefix`, `encoded` holds what follows it in each prompt, and the prefix's cache is not computed again."""
        ids, attention = encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)
        cache, start = DynamicCache(), 0
        if prefix is not None:  # each row: [prefix][its padding][the rest of its prompt], positions counting on
            start = len(prefix.ids)
            for index, (keys, values) in enumerate(prefix.layers):
                cache.update(keys.expand(len(rows), -1, -1, -1), values.expand(len(rows), -1, -1, -1), index)
            attention = torch.cat([torch.ones((len(rows), start), dtype=attention.dtype, device=self.device), attention], dim=-1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, start:]
        out = self.model(
            input_ids=ids, attention_mask=attention, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        for row, length in zip(rows, attention.sum(-1).tolist()):
            row.prompt_tokens = int(length)
        logits = out.logits[:, -1].float()
        if not self.rows:
            self.cache, self.attention, self.positions, self.logits = cache, attention, positions[:, -1:], logits
        else:
            width = max(self.attention.shape[1], attention.shape[1])
            self.attention = torch.cat([_left_pad(self.attention, width, dim=1), _left_pad(attention, width, dim=1)])
            for old, new in zip(self.cache.layers, cache.layers):
                old.keys = torch.cat([_left_pad(old.keys, width, dim=2), _left_pad(new.keys, width, dim=2)])
                old.values = torch.cat([_left_pad(old.values, width, dim=2), _left_pad(new.values, width, dim=2)])
            self.positions = torch.cat([self.positions, positions[:, -1:]])
            self.logits = torch.cat([self.logits, logits])
        self.rows.extend(rows)

    @torch.inference_mode()
    def step(self) -> list[Row]:
        """One greedy token for every row (under its grammar); the rows that ended leave the batch and are returned."""
        chosen, ended = [], []
        for i, row in enumerate(self.rows):
            logits = self.logits[i : i + 1]
            if row.mask is not None:
                last = torch.tensor([[row.tokens[-1] if row.tokens else self.pad]], device=self.device)
                logits = row.mask(last, logits.clone())
            token = int(logits.argmax(-1))
            chosen.append(token)
            if token == self.eos:
                ended.append(True)
                continue
            row.tokens.append(token)
            if row.on_token is not None and not row.on_token(token):
                row.ended_by_reader = True
            ended.append(row.ended_by_reader or len(row.tokens) >= row.budget)
        done = [row for row, end in zip(self.rows, ended) if end]
        keep = [i for i, end in enumerate(ended) if not end]
        if done:
            self._keep(keep)
        if self.rows:
            tokens = torch.tensor([[chosen[i]] for i in keep], device=self.device)
            self.attention = torch.cat([self.attention, torch.ones((len(keep), 1), dtype=self.attention.dtype, device=self.device)], dim=-1)
            self.positions = self.positions + 1
            with fast_steps(self.model, len(self.rows)):
                out = self.model(
                    input_ids=tokens,
                    attention_mask=self.attention,
                    position_ids=self.positions,
                    past_key_values=self.cache,
                    use_cache=True,
                )
            self.logits = out.logits[:, -1].float()
        return done

    def _keep(self, keep: list[int]) -> None:
        """Drop the rows not in `keep`, and the padding columns no remaining row needs."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.attention = self.positions = self.logits = None
            return
        index = torch.tensor(keep, device=self.device)
        self.attention, self.positions, self.logits = self.attention[index], self.positions[index], self.logits[index]
        used = self.attention.any(dim=0).nonzero()
        cut = int(used[0]) if len(used) else 0
        self.attention = self.attention[:, cut:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, cut:], layer.values[index, :, cut:]


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=tensor.dtype, device=tensor.device), tensor], dim=dim)
