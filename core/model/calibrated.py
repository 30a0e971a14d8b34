"""The calibrated decoder: classification by label likelihood, with contextual calibration.

Instead of letting the model generate free text and parsing a label out of it, every label is
scored by the log-likelihood of its whole token sequence right after the prompt: the sum of its
tokens' log-probabilities, a proper distribution over the label set whatever their lengths
(`label_sequences`: when one label's tokens begin another's, as "pay" and "pay-partial" do, every
sequence ends with the answer's end token, or the shorter label would always win). Prompts are
scored in batches with one forward each; when every label is a single token (the usual case) that
forward is all it costs. Multi-token labels reuse the prompt's KV cache: the cache is repeated once
per label along the batch axis and all label continuations run in one more forward. KD trains the
student on this same distribution (`core.training.kd_trainer`).

Small models prefer some labels whatever the input ("Good" for everything, for SmolLM2). Zhao et
al. (2021, "Calibrate before use") measure that prior on content-free inputs ("N/A", "", "[MASK]")
put in the same prompt and divide it out: calibrated log p(y|x) = log p(y|x) - log p_cf(y), where
p_cf is the average of the label distributions on the content-free inputs. Optional per-label
offsets are added in that calibrated log space, then everything is renormalised.

A prior can also be measured on real in-domain inputs and given to the decoder (Zhou et al. 2024,
"Batch Calibration"): KD adapters carry one measured on the unlabeled pool (`label_prior.json`).

Usage:
    decoder = CalibratedDecoder(model, tokenizer, ["Good", "Standard", "Bad"], instruction)
    [pred] = decoder.predict(["Num_Bank_Accounts: 3; ..."])
    pred.label, pred.confidence, pred.margin, pred.probs
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from core.common.prompts import answer_end_ids, parse_label, render_prompt
from core.errors import ConfigError


@dataclass
class Prediction:
    label: str
    probs: dict[str, float]
    confidence: float
    margin: float  # top-1 minus top-2 calibrated probability
    raw_probs: dict[str, float] = field(default_factory=dict)  # before calibration
    latency_ms: float = 0.0  # share of its batch's wall time


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def label_sequences(tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> list[list[int]]:
    """The token sequence each label is scored by: its own tokens, followed by the answer's end token when one label's
    tokens begin another's (else "pay" would outscore "pay-partial" on every input: a prefix is never less likely).

    Refuses, naming them, a label that tokenizes to nothing and two labels the tokenizer cannot tell apart.
    """
    ids = [tokenizer(label, add_special_tokens=False).input_ids for label in labels]
    for label, tokens in zip(labels, ids):
        if not tokens:
            raise ConfigError(f"labels: {label!r} tokenizes to nothing")
    seen: dict[tuple[int, ...], str] = {}
    for label, tokens in zip(labels, ids):
        if tuple(tokens) in seen:
            raise ConfigError(f"labels: {seen[tuple(tokens)]!r} and {label!r} are the same tokens {tokens} to this tokenizer; rename one")
        seen[tuple(tokens)] = label
    prefix = any(a != b and b[: len(a)] == a for a in ids for b in ids)
    end = answer_end_ids(tokenizer) if prefix else []
    return [tokens + end for tokens in ids]


class CalibratedDecoder:
    """Scores a fixed label set for each input and returns calibrated probabilities."""

    answers = "labels"  # what every decoder says it answers with (labels | json | code): the engine routes by it

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        labels: list[str],
        instruction: str,
        content_free_inputs: list[str] | tuple[str, ...] = ("N/A", "", "[MASK]"),
        calibrate: bool = True,
        label_bias: dict[str, float] | None = None,
        batch_size: int = 16,
        prior: np.ndarray | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.instruction = instruction
        self.content_free_inputs = list(content_free_inputs)
        self.calibrate = calibrate
        self.bias = np.array([(label_bias or {}).get(label, 0.0) for label in self.labels])
        self.batch_size = batch_size
        self.label_ids = label_sequences(tokenizer, self.labels)
        self._prior: np.ndarray | None = None if prior is None else np.asarray(prior, dtype=float)
        self._prefix: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _shared_prefix(self) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]:
        """Tokens every prompt starts with (system message, chat markup) and their KV cache, computed once.

        The prefix is about a quarter of a classification prompt; running it once per decoder
        instead of once per request is that much less work on every request.
        """
        if self._prefix is None:
            a, b = (render_prompt(self.tokenizer, self.instruction, t) for t in ("\x00a", "\x00b"))
            ids_a = self.tokenizer(a, add_special_tokens=False).input_ids
            ids_b = self.tokenizer(b, add_special_tokens=False).input_ids
            n = 0
            while n < min(len(ids_a), len(ids_b)) and ids_a[n] == ids_b[n]:
                n += 1
            prefix = ids_a[: max(n - 1, 0)]  # leave the boundary token to the suffix: BPE may merge across it
            cache = []
            if prefix:
                out = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
                cache = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            self._prefix = (prefix, cache)
        return self._prefix

    def _encode(self, prompts: list[str]) -> tuple[list[int], list[list[int]]]:
        """Split each rendered prompt's tokens into the shared prefix and the rest."""
        prefix, _ = self._shared_prefix()
        rows = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        if not prefix or any(row[: len(prefix)] != prefix for row in rows):
            return [], rows
        return prefix, [row[len(prefix) :] for row in rows]

    def label_log_likelihoods(self, texts: list[str]) -> np.ndarray:
        """[len(texts), n_labels] log-likelihood of each label's token sequence after each input's prompt."""
        return self.prompt_log_likelihoods([render_prompt(self.tokenizer, self.instruction, t) for t in texts])

    @torch.inference_mode()
    def prompt_log_likelihoods(self, prompts: list[str]) -> np.ndarray:
        """Like `label_log_likelihoods`, for prompts already rendered (e.g. with k-shot turns)."""
        prefix, rows = self._encode(prompts)
        return self._score_rows(rows, len(prefix), self._shared_prefix()[1] if prefix else [])

    @torch.inference_mode()
    def chunked_log_likelihoods(self, text: str, chunk_tokens: int) -> Iterator[np.ndarray | None]:
        """`label_log_likelihoods([text])` one forward of at most `chunk_tokens` tokens per step (None until the last).

        A long input's prefill, run in steps, lets a server answer short requests between the steps instead of
        after the whole prefill (chunked prefill): the KV cache carries over, so the scores are the same.
        """
        prefix, [row] = self._encode([render_prompt(self.tokenizer, self.instruction, text)])
        done, layers = len(prefix), self._shared_prefix()[1] if prefix else []
        cache = DynamicCache(ddp_cache_data=layers) if layers else DynamicCache()
        while len(row) > chunk_tokens:
            piece, row = row[:chunk_tokens], row[chunk_tokens:]
            positions = torch.arange(done, done + len(piece), device=self.device).unsqueeze(0)
            self.model(input_ids=torch.tensor([piece], device=self.device), position_ids=positions, past_key_values=cache, logits_to_keep=1)
            done += len(piece)
            yield None
        yield self._score_rows([row], done, [(layer.keys, layer.values) for layer in cache.layers])

    def _score_rows(self, rows: list[list[int]], done: int, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
        """Label scores after each row of tokens, every row continuing the same `done` cached tokens (`layers`)."""
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        # Left padding between the cached tokens and each prompt's own tokens; the mask hides it.
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        own = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        mask = torch.cat([torch.ones((len(rows), done), dtype=torch.long, device=self.device), own], dim=1)
        # Positions count real tokens only, or padded rows would get shifted RoPE.
        positions = done + (own.cumsum(-1) - 1).clamp(min=0)
        cache = None
        if layers:
            cache = DynamicCache(ddp_cache_data=[(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in layers])
        multi_token = max(len(x) for x in self.label_ids) > 1
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=multi_token,
            logits_to_keep=1,
        )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]
        first_ids = torch.tensor([x[0] for x in self.label_ids], device=self.device)
        scores = first[:, first_ids]  # [B, L]
        if not multi_token:
            return scores.cpu().numpy()
        return self._continue_labels(out.past_key_values, mask, positions, scores)

    def _continue_labels(self, cache, mask, positions, first_scores):
        n_prompts, n_labels = first_scores.shape
        width = max(len(x) for x in self.label_ids) - 1
        cont = torch.full((n_labels, width), self.tokenizer.pad_token_id, dtype=torch.long)
        cont_mask = torch.zeros((n_labels, width), dtype=torch.long)
        for j, ids in enumerate(self.label_ids):
            cont[j, : len(ids) - 1] = torch.tensor(ids[:-1])
            cont_mask[j, : len(ids) - 1] = 1
        cont, cont_mask = cont.to(self.device), cont_mask.to(self.device)
        # One batch row per (prompt, label): the prompt cache is shared by repetition, not re-run.
        cache.batch_repeat_interleave(n_labels)
        rows = n_prompts * n_labels
        cont_ids = cont.repeat(n_prompts, 1)
        full_mask = torch.cat([mask.repeat_interleave(n_labels, dim=0), cont_mask.repeat(n_prompts, 1)], dim=1)
        start = positions[:, -1:].repeat_interleave(n_labels, dim=0) + 1
        cont_pos = start + torch.arange(width, device=self.device)
        out = self.model(input_ids=cont_ids, attention_mask=full_mask, position_ids=cont_pos, past_key_values=cache)
        logp = torch.log_softmax(out.logits.float(), dim=-1)  # [rows, width, V]
        totals = first_scores.reshape(rows).clone()
        for j, ids in enumerate(self.label_ids):
            if len(ids) == 1:
                continue
            targets = torch.tensor(ids[1:], device=self.device)
            picked = logp[j::n_labels, : len(ids) - 1].gather(-1, targets.expand(n_prompts, -1).unsqueeze(-1)).squeeze(-1)
            totals[j::n_labels] += picked.sum(-1)
        return totals.reshape(n_prompts, n_labels).cpu().numpy()

    def label_distribution(self, texts: list[str]) -> np.ndarray:
        """Uncalibrated label probabilities, normalised over the label set."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            out.append(softmax(self.label_log_likelihoods(texts[start : start + self.batch_size])))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def warm_up(self) -> None:
        self.prior()  # the content-free prior costs a forward: not on a served request's time

    def prior(self) -> np.ndarray:
        """The prior given to the decoder, else the label distribution on content-free inputs, averaged (once)."""
        if self._prior is None:
            self._prior = self.label_distribution(self.content_free_inputs).mean(axis=0)
        return self._prior

    def calibrated_log_probs(self, raw: np.ndarray, calibrate: bool | None = None) -> np.ndarray:
        """Label log-probabilities from raw ones: prior divided out (if calibrating), bias added, renormalised."""
        logits = np.log(np.clip(raw, 1e-12, None))
        if self.calibrate if calibrate is None else calibrate:
            logits = logits - np.log(np.clip(self.prior(), 1e-12, None))
        return np.log(softmax(logits + self.bias))

    def predict(self, texts: list[str]) -> list[Prediction]:
        preds: list[Prediction] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            t0 = time.perf_counter()
            scores = self.label_log_likelihoods(batch)
            preds.extend(self.predictions(scores, (time.perf_counter() - t0) * 1000 / len(batch)))
        return preds

    def predictions(self, scores: np.ndarray, latency_ms: float = 0.0) -> list[Prediction]:
        """Label log-likelihoods ([n, labels], from `label_log_likelihoods` or its chunked form) -> calibrated predictions."""
        raw = softmax(scores)
        preds = []
        for row_raw, row in zip(raw, np.exp(self.calibrated_log_probs(raw))):
            order = np.argsort(-row)
            preds.append(
                Prediction(
                    label=self.labels[order[0]],
                    probs={label: float(p) for label, p in zip(self.labels, row)},
                    confidence=float(row[order[0]]),
                    margin=float(row[order[0]] - row[order[1]]),
                    raw_probs={label: float(p) for label, p in zip(self.labels, row_raw)},
                    latency_ms=latency_ms,
                )
            )
        return preds


LABEL_PRIOR_FILE = "label_prior.json"


def save_label_prior(adapter_dir: str | Path, labels: list[str], prior: np.ndarray, inputs: int, source: str) -> Path:
    """Store an adapter's label prior measured on `inputs` real inputs, beside its weights (the registry copies it)."""
    path = Path(adapter_dir) / LABEL_PRIOR_FILE
    path.write_text(json.dumps({"labels": labels, "prior": [float(p) for p in prior], "inputs": inputs, "source": source}, indent=2))
    return path


def load_label_prior(adapter_dir: str | Path, labels: list[str]) -> np.ndarray | None:
    """The adapter's stored label prior in `labels` order, or None if it has none (or one for other labels)."""
    path = Path(adapter_dir) / LABEL_PRIOR_FILE
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    if sorted(stored["labels"]) != sorted(labels):
        raise ConfigError(f"{path}: prior for labels {stored['labels']}, but the task's labels are {labels}")
    return np.array([stored["prior"][stored["labels"].index(label)] for label in labels])


@torch.inference_mode()
def generate_and_parse(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    labels: list[str],
    instruction: str,
    text: str,
    max_new_tokens: int = 8,
) -> str | None:
    """The baseline the calibrated decoder replaces: greedy generation, then the first label named."""
    prompt = render_prompt(tokenizer, instruction, text)
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return parse_label(tokenizer.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True), labels)
