"""The schema decoder: document in, JSON out that validates against the task's JSON Schema.

Generation runs through the shared greedy loop (`core.model.fast_decode`, the same answers as
transformers' `generate`, with its fast path on a CPU) with an XGrammar logits processor: at every step
the grammar compiled from the schema masks the tokens that cannot continue a valid document, so
the output parses and has the schema's shape by construction. XGrammar was chosen over llguidance
and Outlines because it runs on the CPU, plugs into `generate` as a `LogitsProcessor`, caches
compiled grammars itself, and measured at parity with unconstrained decoding here (see
`distill-slm bench schema`, which runs llguidance beside it on the same prompts).

What a grammar engine cannot enforce is found by measurement, not from a list: a keyword whose
removal leaves XGrammar's grammar unchanged is one it ignores (`uniqueItems`, `contains`, ...).
Those are reported when the schema is loaded, and every output is validated with `jsonschema`
after decoding, so nothing the grammar let through goes unnoticed.

    schema = TaskSchema.load("invoice.schema.json", 64 * 1024)  # SchemaError names the JSON pointer
    schema.unenforced                                      # ['/properties/items/uniqueItems', ...]
    decoder = SchemaDecoder(model, tokenizer, schema, "Extract the invoice as JSON.")
    [result] = decoder.extract(["INVOICE INV-0042 ..."])
    result.output, result.valid, result.errors
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import torch
import xgrammar as xgr
from transformers import LogitsProcessor, PreTrainedModel, PreTrainedTokenizerBase

from core.common.json_schema import SEPARATORS, JsonSchema, json_pointer
from core.common.prompts import render_prompt
from core.errors import AnswerBudgetTooSmall, ConfigError, DocumentTooLong, SchemaError
from core.model.closing import JsonPrefix
from core.model.fast_decode import greedy_decode, output_vocab_size

# Keywords that describe rather than constrain: never reported as unenforced.
ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "$schema", "$id", "deprecated", "readOnly", "writeOnly"}


def _walk(node, parts=()):
    """Every (path, dict) of a schema, depth first."""
    if isinstance(node, dict):
        yield parts, node
        for key, value in node.items():
            yield from _walk(value, parts + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, parts + (i,))


def _grammar_text(schema: dict) -> str:
    return str(xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, separators=SEPARATORS, strict_mode=True))


@dataclass
class TaskSchema(JsonSchema):
    """A checked JSON Schema: its canonical text, its validator, and what the grammar cannot enforce."""

    unenforced: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path, max_bytes: int) -> "TaskSchema":
        """A task file's schema, refused past `max_bytes` (the operator's `max_schema_bytes`)."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise SchemaError("", f"cannot read: {exc}", str(path)) from None
        if len(raw) > max_bytes:
            raise SchemaError("", f"schema is {len(raw)} bytes, over the limit of {max_bytes}", str(path))
        try:
            schema = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SchemaError("", f"not JSON: {exc}", str(path)) from None
        return cls.from_dict(schema, str(path), max_bytes)

    @classmethod
    def from_dict(cls, schema: dict, source: str = "<schema>", max_bytes: int | None = None, budget_s: float | None = None) -> "TaskSchema":
        """Check a schema and build it; cached by content, so a schema seen before costs nothing.

        Finding the keywords the grammar cannot enforce converts the schema once per keyword, which for some schemas
        (nested counted repetition in a pattern) takes seconds: with `budget_s` (a request's schema) that runs on the
        compile threads and is refused past the budget, finishing in the background so a retry is answered. `max_bytes`:
        the operator's limit for a schema from outside (a task file, a request); None for the project's own schemas."""
        if budget_s is not None:
            job = _compile_pool.submit(cls.from_dict, schema, source, max_bytes)
            try:
                return job.result(timeout=budget_s)
            except FutureTimeout:
                raise SchemaError(
                    "",
                    f"took longer than {budget_s:g} s to check (schema_compile_s); the same schema sent again is accepted once its check has finished",
                    source,
                ) from None
        if not isinstance(schema, dict):
            raise SchemaError("", "a JSON Schema must be an object", source)
        size = len(json.dumps(schema).encode())
        if max_bytes is not None and size > max_bytes:
            raise SchemaError("", f"schema is {size} bytes, over the limit of {max_bytes}", source)
        key = json.dumps(schema)
        with _cache_lock:
            cached = _schemas.get(key)
        if cached is not None:
            return cached
        check_schema(schema, source)
        built = cls(copy.deepcopy(schema), source, unenforced_keywords(schema))
        with _cache_lock:
            _schemas[key] = built
            while len(_schemas) > 256:  # requests may each bring a schema: keep the recent ones, not all
                _schemas.popitem(last=False)
        return built


_schemas: OrderedDict[str, TaskSchema] = OrderedDict()
_cache_lock = threading.Lock()


def check_schema(schema: dict, source: str = "<schema>") -> None:
    """Refuse invalid schemas, references outside the document, and schemas the grammar engine rejects."""
    problem = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA).iter_errors(schema)
    )
    if problem is not None:
        raise SchemaError(json_pointer(problem.absolute_path), problem.message, source)
    if schema.get("type") != "object":
        raise SchemaError("/type", 'extraction needs an object at the top level ("type": "object")', source)
    for parts, node in _walk(schema):
        ref = node.get("$ref")
        if isinstance(ref, str):
            here = json_pointer(parts + ("$ref",))
            if not ref.startswith("#"):
                raise SchemaError(here, f"$ref {ref!r} points outside the document; inline it under $defs", source)
            target = schema
            for token in [t.replace("~1", "/").replace("~0", "~") for t in ref[1:].split("/") if t]:
                if not isinstance(target, dict) or token not in target:
                    raise SchemaError(here, f"$ref {ref!r} does not resolve inside the document", source)
                target = target[token]
    try:
        _grammar_text(schema)
    except Exception as exc:  # XGrammar raises RuntimeError/ValueError with its own text
        raise SchemaError("", f"the grammar engine cannot compile it: {exc}", source) from None


def unenforced_keywords(schema: dict) -> list[str]:
    """JSON pointers of the keywords XGrammar ignores: removing one leaves the compiled grammar unchanged."""
    reference = _grammar_text(schema)
    found = []
    for parts, node in list(_walk(schema)):
        if parts and parts[-1] in ("properties", "$defs", "definitions"):
            continue  # a mapping of names, not a schema
        for keyword in list(node):
            if keyword in ANNOTATIONS or keyword.startswith("x-"):
                continue
            if keyword == "type" and node.keys() & {"properties", "items", "prefixItems", "enum", "const"}:
                continue  # implied by its siblings: enforced through them
            trimmed = copy.deepcopy(schema)
            target = trimmed
            for p in parts:
                target = target[p]
            del target[keyword]
            try:
                same = _grammar_text(trimmed) == reference
            except Exception:
                same = False
            if same:
                found.append(json_pointer(parts + (keyword,)))
    return found


_compilers: dict[tuple, xgr.GrammarCompiler] = {}
_vocabs: dict[tuple, list[bytes]] = {}


def grammar_compiler(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> xgr.GrammarCompiler:
    """One XGrammar compiler per tokenizer (by where it came from and its size); it caches every grammar it compiles."""
    key = (tokenizer.name_or_path, len(tokenizer), vocab_size)
    with _cache_lock:
        if key not in _compilers:
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=[tokenizer.eos_token_id])
            # one thread: a request's schema compiling must leave the other cores to the model (2 cores here)
            _compilers[key] = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=True)
        return _compilers[key]


def decoded_vocab(tokenizer: PreTrainedTokenizerBase, compiled: xgr.CompiledGrammar) -> list[bytes]:
    """Each token's bytes, read once per tokenizer: XGrammar's `decoded_vocab` builds a new list of the whole vocabulary
    at every read (50 ms for 49k tokens, and its garbage a ~400 ms collection every few requests, measured on a row's
    time to first token)."""
    key = (tokenizer.name_or_path, len(tokenizer), compiled.tokenizer_info.vocab_size)
    with _cache_lock:
        if key not in _vocabs:
            _vocabs[key] = compiled.tokenizer_info.decoded_vocab
        return _vocabs[key]


# A request's schema is compiled off the request path, on at most two threads (XGrammar releases the GIL while it
# compiles, so the service keeps answering); what they compiled is kept by schema, so a schema refused for its
# compile time is served once its compile, which cannot be interrupted, has finished in the background.
_compile_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="schema-compile")
_compiled: OrderedDict[tuple, xgr.CompiledGrammar] = OrderedDict()
_COMPILED_KEPT = 64


def compile_grammar(
    tokenizer: PreTrainedTokenizerBase, vocab_size: int, schema: TaskSchema, budget_s: float | None = None
) -> xgr.CompiledGrammar:
    """`schema` compiled to a token-level grammar; with `budget_s`, refused (SchemaError) if that takes longer.

    Some real-world schemas take XGrammar seconds (p95 3.3 s measured on JSONSchemaBench's GitHub subsets); the
    budget keeps one from holding a request, and the compile then finishes in the background for a later retry.
    """
    compiler = grammar_compiler(tokenizer, vocab_size)
    key = (id(compiler), schema.sha256)
    with _cache_lock:
        if key in _compiled:
            _compiled.move_to_end(key)
            return _compiled[key]

    def compile_now() -> xgr.CompiledGrammar:
        grammar = compiler.compile_json_schema(schema.text, any_whitespace=False, separators=SEPARATORS, strict_mode=True)
        with _cache_lock:
            _compiled[key] = grammar
            while len(_compiled) > _COMPILED_KEPT:
                _compiled.popitem(last=False)
        return grammar

    if budget_s is None:
        return compile_now()
    job = _compile_pool.submit(compile_now)
    try:
        return job.result(timeout=budget_s)
    except FutureTimeout:
        job.cancel()  # not started yet (both threads busy): never started; started: finishes and is kept
        raise SchemaError(
            "",
            f"took longer than {budget_s:g} s to compile into a grammar (schema_compile_s); long strings, patterns and "
            "wide unions cost most; the same schema sent again is accepted once its compile has finished",
            schema.source,
        ) from None


class GrammarMask(LogitsProcessor):
    """XGrammar's HF logits processor, tolerant of rows that already finished (they are padding now).

    With `budget` (the decode's `max_new_tokens`) and `schema`, it also keeps every row closable inside the budget
    (`core.model.closing`): a token is taken only if what it leaves can still be closed validly, end-of-sequence
    included, in the tokens left; otherwise the shortest closing is forced, once XGrammar has accepted it.
    """

    def __init__(
        self, compiled: xgr.CompiledGrammar, batch_size: int, budget: int | None = None, schema: dict | None = None, tokenizer=None
    ) -> None:
        self.compiled = compiled  # a remote model decodes under the same grammar (`core.model.fast_decode.RemoteModel`)
        self.matchers = [xgr.GrammarMatcher(compiled) for _ in range(batch_size)]
        self.bitmask = xgr.allocate_token_bitmask(batch_size, compiled.tokenizer_info.vocab_size)
        self.started = False
        self.budget, self.tokenizer, self.steps = budget, tokenizer, 0
        if budget is not None:
            self.vocab = decoded_vocab(tokenizer, compiled)  # each token's bytes
            self.eos = compiled.tokenizer_info.stop_token_ids[0]
            self.prefixes = [JsonPrefix(schema) for _ in range(batch_size)]
            self.pending = [b""] * batch_size  # bytes of a character split across tokens
            self.forced: list[list[int]] = [[] for _ in range(batch_size)]
            self.closed_early = [False] * batch_size
            self.unclosable = [False] * batch_size  # the closer had no verified closing for this row
            self.ahead: list[tuple] = [(None, None)] * batch_size  # (token, state after it) from the last look-ahead

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for i, matcher in enumerate(self.matchers):
            if self.started and not matcher.is_terminated():
                token = int(input_ids[i, -1])
                matcher.accept_token(token)
                if self.budget is not None:  # the state the look-ahead computed for this token, if it was the one taken
                    seen, state = self.ahead[i]
                    self.prefixes[i], self.pending[i] = state if seen == token else self._fed(i, token)
                    self.ahead[i] = (None, None)
            if not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, i)
        self.started = True
        device = scores.device
        # XGrammar's kernel runs on CUDA tensors or on the CPU; anything else goes through the CPU.
        scores = scores if scores.is_cuda or scores.is_cpu else scores.to("cpu")
        xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        if self.budget is not None:
            self._keep_closable(scores)
            self.steps += 1
        return scores.to(device)

    def _fed(self, row: int, token: int) -> tuple[JsonPrefix, bytes]:
        """Row `row`'s answer state after `token` (a copy; bytes of an unfinished character are held back)."""
        data = self.pending[row] + (self.vocab[token] if token != self.eos else b"")
        for cut in range(len(data), max(len(data) - 4, -1), -1):
            try:
                text = data[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            return self.prefixes[row].clone().feed(text), data[cut:]
        return self.prefixes[row].clone().feed(data.decode("utf-8", "replace")), b""

    def _tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _keep_closable(self, scores: torch.FloatTensor) -> None:
        left = self.budget - self.steps  # tokens this row may still write, this one included
        for i, matcher in enumerate(self.matchers):
            if matcher.is_terminated():
                continue
            if not self.forced[i]:
                choice = int(scores[i].argmax())
                if choice == self.eos or self.unclosable[i]:
                    continue
                self.ahead[i] = (choice, self._fed(i, choice))
                closing = self.ahead[i][1][0].closing()
                if closing is None:
                    continue  # the closer cannot follow this answer: it decodes as without a budget
                # this token, the closing, end-of-sequence; a token spans at least one byte (the bound saves a tokenizer call)
                if 1 + len(closing.encode()) + 1 + 1 <= left or 1 + self._tokens(closing) + 1 <= left:
                    continue
                self.forced[i] = self._verified_closing(i)
                if not self.forced[i]:
                    self.unclosable[i] = True
                    continue
                self.closed_early[i] = True
            token = self.forced[i].pop(0)
            scores[i] = -math.inf
            scores[i, token] = 0.0

    def _verified_closing(self, row: int) -> list[int]:
        """The tokens of row `row`'s shortest closing and end-of-sequence, if XGrammar accepts them; else []."""
        closing = self.prefixes[row].closing()
        if closing is None:
            return []
        tokens = self.tokenizer(closing, add_special_tokens=False).input_ids + [self.eos]
        trial = self.matchers[row].fork()
        return tokens if all(trial.accept_token(t) for t in tokens) and trial.is_terminated() else []


@dataclass
class Extraction:
    output: dict | None  # the parsed JSON; None when it did not parse
    text: str
    valid: bool
    errors: list[str]
    latency_ms: float = 0.0  # share of its batch's wall time
    prompt_tokens: int = 0
    completion_tokens: int = 0
    top_logprobs: list | None = None  # per completion token: [[token, logprob], ...] (teacher traces)
    closed_early: bool = False  # the token budget ran short: the answer was closed with its shortest valid ending


class SchemaDecoder:
    """Greedy, schema-constrained extraction with a causal LM (base or with an adapter active)."""

    answers = "json"

    def warm_up(self) -> None:
        """Nothing to do: the task's grammar is compiled when the decoder is built."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        schema: TaskSchema,
        instruction: str,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        constrained: bool = True,
    ) -> None:
        self.model, self.tokenizer, self.schema = model, tokenizer, schema
        self.instruction, self.max_new_tokens, self.batch_size = instruction, max_new_tokens, batch_size
        self.constrained = constrained
        self.vocab_size = output_vocab_size(model)
        self.compile_s = 0.0
        if constrained:
            start = time.perf_counter()
            self.grammar = compile_grammar(tokenizer, self.vocab_size, schema)
            self.compile_s = time.perf_counter() - start
            shortest = JsonPrefix(schema.schema).closing()
            # the fewest tokens a valid answer takes, end-of-sequence included (None: the closer cannot model the schema)
            self.min_answer_tokens = None if shortest is None else len(tokenizer(shortest, add_special_tokens=False).input_ids) + 1
            if self.min_answer_tokens is not None and self.min_answer_tokens > max_new_tokens:
                raise ConfigError(
                    f"max_new_tokens={max_new_tokens} cannot hold the shortest answer {schema.source} allows "
                    f"({self.min_answer_tokens} tokens with end-of-sequence): raise max_new_tokens"
                )

    def prompt(self, document: str, shots: list[tuple[str, str]] = ()) -> str:
        return render_prompt(self.tokenizer, self.instruction, document, shots)

    @torch.no_grad()
    def extract(
        self,
        documents: list[str],
        shots: list[list[tuple[str, str]]] | None = None,
        top_k: int = 0,
        max_new_tokens: int | None = None,
        batch_size: int | None = None,
        on_token: Callable[[int, int], bool] | None = None,
    ) -> list[Extraction]:
        """Extract every document; `shots` gives each document its own demonstrations; `top_k` > 0 keeps per-token
        alternatives; `max_new_tokens` (a served request's, clamped to the task's) is a smaller budget, within which answers still validate;
        `batch_size` overrides the decoder's rows per decode; `on_token(document index, token)` sees the tokens as they are
        decoded (`greedy_decode`: streaming)."""
        budget = self.budget(max_new_tokens)
        rows = batch_size or self.batch_size
        results: list[Extraction] = []
        for begin in range(0, len(documents), rows):
            chunk = documents[begin : begin + rows]
            chunk_shots = shots[begin : begin + rows] if shots else [()] * len(chunk)
            seen = None if on_token is None else (lambda row, token, begin=begin: on_token(begin + row, token))
            results.extend(self._extract_batch([self.prompt(d, s) for d, s in zip(chunk, chunk_shots)], top_k, budget, seen))
        return results

    def _extract_batch(
        self, prompts: list[str], top_k: int, budget: int, on_token: Callable[[int, int], bool] | None = None
    ) -> list[Extraction]:
        start = time.perf_counter()
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        self.check_fits(int(enc["attention_mask"].sum(dim=1).max()), budget)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        mask = GrammarMask(self.grammar, len(prompts), budget, self.schema.schema, self.tokenizer) if self.constrained else None
        new, scores = greedy_decode(
            self.model,
            enc,
            budget,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            processors=[mask] if mask else [],
            keep_scores=top_k > 0,
            on_token=on_token,
        )
        elapsed_ms = (time.perf_counter() - start) * 1000 / len(prompts)
        results = []
        for row, ids in enumerate(new.tolist()):
            n = next((i for i, t in enumerate(ids) if t == self.tokenizer.eos_token_id), len(ids))
            text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
            top = self._top_logprobs(scores, row, n, top_k) if top_k > 0 else None
            result = self._parse(text, elapsed_ms, int(enc["attention_mask"][row].sum()), n, top, budget)
            result.closed_early = bool(mask and mask.closed_early[row])
            results.append(result)
        return results

    def _top_logprobs(self, scores, row: int, n: int, k: int) -> list:
        steps = []
        for step in range(n):
            logprobs = torch.log_softmax(scores[step][row].float(), dim=-1)
            values, ids = logprobs.topk(k)
            steps.append(
                [[tok, round(float(v), 4)] for tok, v in zip(self.tokenizer.convert_ids_to_tokens(ids.tolist()), values) if v > -1e9]
            )
        return steps

    def budget(self, max_new_tokens: int | None) -> int:
        """The token budget of a decode asked for `max_new_tokens` (None: the task's; a served request's comes clamped,
        `core.serving.answers`); AnswerBudgetTooSmall when not even the shortest valid answer fits."""
        budget = max_new_tokens or self.max_new_tokens
        if self.constrained and self.min_answer_tokens is not None and budget < self.min_answer_tokens:
            raise AnswerBudgetTooSmall(budget, self.min_answer_tokens)
        return budget

    def check_fits(self, prompt_tokens: int, budget: int) -> None:
        """DocumentTooLong when a prompt of `prompt_tokens` and `budget` new tokens are over the model's context."""
        context = getattr(self.model.config, "max_position_embeddings", None)
        if context and prompt_tokens + budget > context:
            raise DocumentTooLong(
                f"the prompt is {prompt_tokens} tokens; with max_new_tokens={budget} that is over the model's context of {context}"
            )

    def answer_of(self, tokens: list[int], prompt_tokens: int, latency_ms: float, budget: int, mask: GrammarMask | None) -> Extraction:
        """The extraction a row decoded elsewhere (`core.model.continuous`) makes: its tokens (end-of-sequence excluded)
        under this decoder's schema, closed early if its one-row `mask` had to."""
        result = self._parse(self.tokenizer.decode(tokens, skip_special_tokens=True), latency_ms, prompt_tokens, len(tokens), None, budget)
        result.closed_early = bool(mask is not None and mask.closed_early[0])
        return result

    def row_mask(self, budget: int) -> GrammarMask | None:
        """A one-row grammar mask for a row decoded elsewhere, under this decoder's schema and `budget`."""
        return GrammarMask(self.grammar, 1, budget, self.schema.schema, self.tokenizer) if self.constrained else None

    def _parse(self, text: str, latency_ms: float, prompt_tokens: int, completion_tokens: int, top, budget: int) -> Extraction:
        output, errors = self.schema.parse(text)
        if completion_tokens >= budget:
            errors.append(f"stopped at max_new_tokens={budget}")
        return Extraction(output, text, not errors, errors, latency_ms, prompt_tokens, completion_tokens, top)
