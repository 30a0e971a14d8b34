"""OpenAI fine-tuning files in: chat files (`{"messages": [...]}` per line) and preference files (`input`,
`preferred_output`, `non_preferred_output`) checked line by line and turned into this product's rows and a task file.

What a chat line becomes: its **last assistant message** (with a `weight` other than 0) is the answer; the **last user
message before it** is the input; a system message is the instruction (the most common one, where the task file gives
none). Earlier turns of a multi-turn conversation are not used — the product's students answer one input — and are
counted in the report. The answers decide the task's type: all JSON objects -> document extraction (`idp`; a draft
JSON Schema inferred for review), else a closed set of answers -> classification (the labels counted and shown), else
free-text replies (a chat assistant's file, SQL answers) -> `type: text` (`core.kinds.text`: scored by chrF).
A function-calling file (an assistant turn of `tool_calls`, or the older `function_call`) is extraction too: the
answer is `{"name": <function>, "arguments": {...}}`, and the draft schema's `name` is the functions the lines'
`tools` (or `functions`) offer, so a student can only call one of them. One call per answer: a turn of parallel calls,
or arguments that are not a JSON object, is a bad line naming the field.

Checks per line, as OpenAI's own format checker did: not JSON, no `messages`, a message without `role` or `content`,
an unknown role, empty content, no assistant answer, no user input, over the context (when a token counter is given).
Each bad line is reported with file, line and reason; nothing is silently dropped. Past `max_bad_share` of bad lines
the import stops before anything is written.

    report = import_openai_files([Path("train.jsonl")], out=Path("imported"), name="tickets")
    print(report.summary())        # kind, labels or schema draft, counts, duplicates, token statistics
    # imported/task.yaml runs as it is: distill-slm run imported/task.yaml
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.common.config import TrainingConfig
from core.common.files import atomic_write_text, write_jsonl
from core.errors import DataError

ROLES = ("system", "user", "assistant", "tool", "function", "developer")
MAX_LABELS = 50  # more distinct answers than this (and not JSON): free text, not a label set
CHAT_MARKUP_TOKENS = 32  # the chat template's role markers around system, user and assistant turns (SmolLM2's: 15)


@dataclass
class Example:
    input: str
    answer: str
    system: str | None
    where: str  # file:line
    turns: int
    conflict: str | None = None  # the earlier "file:line" that answered its input otherwise (both are kept)
    tools: tuple[str, ...] | None = None  # a function call's answer: the functions the line offered (None: not a call)
    encoded_twice: bool = False  # a function call's arguments were a JSON string of the object (decoded)


@dataclass
class ImportReport:
    """What the files hold, gathered in one pass that keeps no example (`examples` and `preferences` read them again)."""

    paths: list[Path] = field(default_factory=list)
    kind: str | None = None  # classification | idp | text | None (no usable example)
    usable: int = 0  # examples a task gets: not bad, not a repeat, within the context
    preference_pairs: int = 0
    bad: list[str] = field(default_factory=list)  # "file:line: reason"
    lines: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    schema: dict | None = None
    instruction: str | None = None
    duplicates: int = 0  # inputs seen before with the same answer
    conflicts: list[str] = field(default_factory=list)  # inputs seen before with another answer
    multi_turn: int = 0
    encoded_twice: int = 0  # function calls whose arguments were a JSON string of the object, decoded
    tokens: dict | None = None  # input tokens: min, mean, max (with a token counter)
    why_not: str | None = None
    why_text: str | None = None  # type text: why the replies are not a label set
    from_preferences: bool = False  # no chat lines: the preference lines' preferred replies are the training rows
    over_context: set[str] = field(default_factory=set)  # "file:line" of examples dropped as over the context

    def examples(self) -> Iterator[Example]:
        """The usable examples, in file order, read from the files again (the report holds none of them); for files of
        preference lines alone, each pair's preferred reply (SFT learns it before DPO compares the two)."""
        if self.from_preferences:
            for number, pair in enumerate(self.preferences(), start=1):
                if f"preference pair {number}" not in self.over_context:
                    yield Example(pair["prompt"], pair["chosen"], None, f"preference pair {number}", 1)
            return
        for item in _lines(self.paths, repeats=_Repeats()):
            if isinstance(item, Example) and item.where not in self.over_context:
                yield item

    def preferences(self) -> Iterator[dict]:
        """The preference lines as {prompt, chosen, rejected}, read from the files again."""
        for item in _lines(self.paths, repeats=None):
            if isinstance(item, dict):
                yield item

    def summary(self) -> str:
        head = f"{self.lines} lines: {self.usable} examples, {self.preference_pairs} preference pairs, {len(self.bad)} bad"
        parts = [head]
        if self.from_preferences:
            parts.append("no chat lines: the preference pairs' preferred replies are the training rows")
        if self.kind == "classification":
            parts.append(f"classification, {len(self.labels)} labels: " + ", ".join(f"{k} ({v})" for k, v in self.labels.items()))
        elif self.kind == "idp":
            parts.append(f"document extraction; draft schema (review it): {json.dumps(self.schema)}")
        elif self.kind == "text":
            parts.append(f"free-text replies ({self.why_text}); scored by chrF against the file's replies")
        elif self.why_not:
            parts.append(f"not a task this product distils: {self.why_not}")
        parts.append(
            f"duplicates {self.duplicates}, conflicting answers {len(self.conflicts)}, multi-turn {self.multi_turn} (last exchange used)"
        )
        if self.encoded_twice:
            parts.append(
                f"function arguments encoded twice (a JSON string of the object) in {self.encoded_twice} examples: decoded; "
                "the student answers with the object encoded once, as the API specifies"
            )
        if self.tokens:
            parts.append(f"input tokens: min {self.tokens['min']}, mean {self.tokens['mean']}, max {self.tokens['max']}")
        parts.extend(self.bad[:20])
        if len(self.bad) > 20:
            parts.append(f"... and {len(self.bad) - 20} more bad lines")
        return "\n".join(parts)


def _text(content) -> str | None:
    """A message's text: a string, or OpenAI's content parts (their text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "".join(t for t in texts if isinstance(t, str)) if texts else None
    return None


def _tool_call(message: dict, i: int) -> tuple[str, bool]:
    """An assistant turn's one function call as the answer's JSON text, and whether its arguments were a JSON string of
    the JSON object (encoded twice, as in the cookbook's `drone_training.jsonl`: decoded, and counted in the report);
    ValueError naming the field when it is not one call with JSON-object arguments."""
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list) or len(calls) != 1:
            raise ValueError(
                f"field 'messages[{i}].tool_calls': {len(calls) if isinstance(calls, list) else 'not a list of'} calls; one call per answer"
            )
        call, field_name = calls[0].get("function") if isinstance(calls[0], dict) else None, f"messages[{i}].tool_calls[0].function"
    else:
        call, field_name = message.get("function_call"), f"messages[{i}].function_call"
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        raise ValueError(f"field '{field_name}.name': missing")
    try:
        arguments = json.loads(call.get("arguments") or "{}")
        twice = isinstance(arguments, str)
        if twice:
            arguments = json.loads(arguments)
    except (TypeError, json.JSONDecodeError):
        arguments = None
    if not isinstance(arguments, dict):
        raise ValueError(f"field '{field_name}.arguments': not a JSON object")
    return json.dumps({"name": call["name"], "arguments": arguments}, ensure_ascii=False), twice


def _offered(record: dict) -> tuple[str, ...]:
    """The function names a line offers: `tools` of type function, or the older `functions`."""
    names = [t.get("function", {}).get("name") for t in record.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    names += [f.get("name") for f in record.get("functions") or [] if isinstance(f, dict)]
    return tuple(n for n in names if isinstance(n, str) and n)


def parse_chat_line(record: dict) -> Example | str:
    """One chat line -> an Example, or the reason it cannot be used."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return "field 'messages': missing or not a non-empty list"
    system, last_user, answer, turns, called, twice = None, None, None, 0, False, False
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"field 'messages[{i}]': not an object"
        role = message.get("role")
        if role not in ROLES:
            return f"field 'messages[{i}].role': unknown role {role!r} (one of {', '.join(ROLES)})"
        if "content" not in message and not message.get("tool_calls") and not message.get("function_call"):
            return f"field 'messages[{i}].content': missing"
        text = _text(message.get("content"))
        if role in ("system", "developer") and text:
            system = text
        elif role == "user":
            if not text or not text.strip():
                return f"field 'messages[{i}].content': empty"
            last_user, turns = text, turns + 1
        elif role == "assistant" and message.get("weight", 1) != 0:
            called = bool(message.get("tool_calls") or message.get("function_call"))
            if called:
                try:
                    text, twice = _tool_call(message, i)
                except ValueError as exc:
                    return str(exc)
            if text is None or not text.strip():
                return f"field 'messages[{i}].content': empty assistant answer"
            answer = (last_user, text)
    if answer is None:
        return "field 'messages': no assistant answer (with a weight other than 0)"
    if answer[0] is None:
        return "field 'messages': no user message before the assistant's answer"
    return Example(answer[0], answer[1], system, "", turns, tools=_offered(record) if called else None, encoded_twice=called and twice)


def parse_preference_line(record: dict) -> dict | str:
    """One preference line (OpenAI's DPO format) -> {prompt, chosen, rejected}, or the reason it cannot be used."""
    source = record.get("input")
    if not isinstance(source, dict):
        return "field 'input': missing or not an object"
    users = [_text(m.get("content")) for m in source.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
    if not users or not users[-1]:
        return "field 'input.messages': no user message"
    pair = {}
    for side, key in (("chosen", "preferred_output"), ("rejected", "non_preferred_output")):
        outputs = record.get(key)
        texts = [_text(m.get("content")) for m in outputs or [] if isinstance(m, dict) and m.get("role") == "assistant"]
        if not texts or not texts[-1]:
            return f"field {key!r}: no assistant message"
        pair[side] = texts[-1]
    return {"prompt": users[-1], **pair}


class _Schema:
    """A draft JSON Schema for the answers, built one answer at a time: each key's type(s), required when every answer
    has it; objects nested in the answers (a function call's `arguments`, an address) and the items of arrays drafted
    the same way, so the draft names every member a student may write (a free-form object would let a decode ramble
    with no closing the budget-aware closer can find)."""

    NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object", type(None): "null"}

    def __init__(self) -> None:
        self.objects, self.types, self.counts = 0, {}, Counter()
        self.children: dict[str, _Schema] = {}  # key -> the draft of its object values
        self.items: dict[str, _Values] = {}  # key -> the draft of its array values' items

    def add(self, obj: dict) -> None:
        self.objects += 1
        for key, value in obj.items():
            self.types.setdefault(key, set()).add(self.NAMES[type(value)])
            self.counts[key] += 1
            if isinstance(value, dict):
                self.children.setdefault(key, _Schema()).add(value)
            elif isinstance(value, list):
                for item in value:
                    self.items.setdefault(key, _Values()).add(item)

    def draft(self) -> dict:
        properties = {key: self._property(key, types) for key, types in self.types.items()}
        required = [k for k in self.types if self.counts[k] == self.objects]
        return {"type": "object", "properties": properties, "required": required}

    def _property(self, key: str, types: set[str]) -> dict:
        if types == {"object"}:
            return self.children[key].draft()
        if types == {"array"}:
            return {"type": "array", "items": self.items[key].draft()} if key in self.items else {"type": "array"}
        return _typed(types)


class _Values:
    """The draft of an array's items: their types, objects among them drafted as `_Schema` does."""

    def __init__(self) -> None:
        self.types: set[str] = set()
        self.objects = _Schema()

    def add(self, value) -> None:
        self.types.add(_Schema.NAMES[type(value)])
        if isinstance(value, dict):
            self.objects.add(value)

    def draft(self) -> dict:
        return self.objects.draft() if self.types == {"object"} else _typed(self.types)


def _typed(types: set[str]) -> dict:
    """`{"type": ...}` for values seen with `types` (integers among numbers are numbers)."""
    types = {"number"} if types == {"integer", "number"} else types
    return {"type": sorted(types)[0] if len(types) == 1 else sorted(types)}


class _Repeats:
    """Inputs seen before, as digests with the line that answered them first (~170 bytes an input in all, whatever its
    length): a repeat with the same answer is a duplicate, with another answer a conflict (both kept)."""

    def __init__(self) -> None:
        self.answers: dict[bytes, bytes] = {}  # input digest -> answer digest (12 bytes) + the line's `where`, encoded

    def seen(self, example: Example) -> str | None:
        """None for a new input, 'duplicate' for a repeat of an input and its answer, else the "file:line" that answered
        the input otherwise first (a conflict: kept)."""
        key = hashlib.blake2b(example.input.encode(), digest_size=12).digest()
        answer = hashlib.blake2b(example.answer.encode(), digest_size=12).digest()
        previous = self.answers.get(key)
        if previous is None:
            self.answers[key] = answer + example.where.encode()
            return None
        return "duplicate" if previous[:12] == answer else previous[12:].decode()


def _lines(paths: list[Path], repeats: _Repeats | None) -> Iterator[Example | dict | str | None]:
    """Each non-empty line of `paths`, parsed: an Example (`where` set; `conflict`: the line that answered its input
    otherwise first, as `repeats` saw), a preference dict, the reason a line is bad ("file:line: reason"), or None for
    a repeat of an earlier input and answer (with `repeats`; not to be used again)."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{where}: not JSON ({exc.msg})"
                    continue
                if not isinstance(record, dict):
                    yield f"{where}: not a JSON object"
                    continue
                parsed = parse_preference_line(record) if "preferred_output" in record else parse_chat_line(record)
                if isinstance(parsed, str):
                    yield f"{where}: {parsed}"
                elif isinstance(parsed, dict):
                    yield parsed
                else:
                    parsed.where = where
                    verdict = repeats.seen(parsed) if repeats is not None else None
                    if verdict == "duplicate":
                        yield None
                        continue
                    parsed.conflict = verdict
                    yield parsed


def read_files(
    paths: list[Path], count_tokens: Callable[[list[str]], list[int]] | None = None, max_tokens: int | None = None
) -> ImportReport:
    """Check every line of `paths` (chat and preference lines may be mixed) and gather what they hold, in one pass whose
    memory does not grow with the file's text: examples are counted, not kept (inputs are remembered as 12-byte digests,
    to find repeats: `_Repeats`), and counted for tokens 1,000 at a time."""
    report = ImportReport(paths=list(paths))
    state = _Gather()
    waiting: list[Example] = []
    for item in _lines(paths, repeats=_Repeats()):
        report.lines += 1  # one item a non-empty line
        if item is None:
            report.duplicates += 1
        elif isinstance(item, str):
            report.bad.append(item)
        elif isinstance(item, dict):
            report.preference_pairs += 1
        else:
            if item.conflict:
                report.conflicts.append(f"{item.where}: the same input was answered otherwise at {item.conflict}, {item.answer!r} here")
            waiting.append(item)
            if len(waiting) == 1000:
                _take(report, state, waiting, count_tokens, max_tokens)
    _take(report, state, waiting, count_tokens, max_tokens)
    if not report.usable and report.preference_pairs:  # a DPO file alone, as OpenAI's preference jobs take one
        report.from_preferences = True
        for example in report.examples():
            waiting.append(example)
            if len(waiting) == 1000:
                _take(report, state, waiting, count_tokens, max_tokens)
        _take(report, state, waiting, count_tokens, max_tokens)
    _decide_kind(report, state)
    if state.token_counts:
        report.tokens = {"min": state.token_min, "mean": round(state.token_sum / state.token_counts, 1), "max": state.token_max}
        # What the written task's training.max_length must hold: the longest example, its instruction and the chat markup.
        instruction = count_tokens([report.instruction])[0] if report.instruction else 0
        report.tokens["longest_example"] = state.longest + instruction + CHAT_MARKUP_TOKENS
    return report


@dataclass
class _Gather:
    """The running figures of `read_files`' pass."""

    systems: Counter = field(default_factory=Counter)
    answers: Counter = field(default_factory=Counter)  # at most MAX_LABELS + 1 distinct: past that, not a label set
    all_objects: bool = True
    schema: _Schema = field(default_factory=_Schema)
    calls: int = 0  # answers that are function calls
    functions: set[str] = field(default_factory=set)  # the functions those lines offered, and those they called
    token_counts: int = 0
    token_sum: int = 0
    token_min: int = 0
    token_max: int = 0
    longest: int = 0  # input + answer tokens of the longest usable example


def _take(report: ImportReport, state: _Gather, waiting: list[Example], count_tokens, max_tokens: int | None) -> None:
    """Count `waiting`'s tokens, drop those over the context (bad lines), fold the rest into the figures; empty it."""
    if count_tokens is not None and waiting:
        counted = count_tokens([e.input for e in waiting] + [e.answer for e in waiting])
        counts, answer_counts = counted[: len(waiting)], counted[len(waiting) :]
    else:
        counts = answer_counts = [None] * len(waiting)
    for example, n, n_answer in zip(waiting, counts, answer_counts):
        if n is not None and max_tokens is not None and n + n_answer > max_tokens:
            report.bad.append(f"{example.where}: over the context ({n} input + {n_answer} answer tokens, over {max_tokens})")
            report.over_context.add(example.where)
            continue
        if n is not None:
            state.longest = max(state.longest, n + n_answer)
        report.usable += 1
        report.multi_turn += example.turns > 1
        report.encoded_twice += example.encoded_twice
        if example.system:
            state.systems[example.system] += 1
        if example.tools is not None:
            state.calls += 1
            state.functions.update(example.tools)
        answer = example.answer.strip()
        if answer in state.answers or len(state.answers) <= MAX_LABELS:
            state.answers[answer] += 1
        if state.all_objects:
            try:
                value = json.loads(example.answer)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                state.schema.add(value)
                if example.tools is not None:  # a call names a function its line may not have offered
                    state.functions.add(value["name"])
            else:
                state.all_objects = False
        if n is not None:
            state.token_min = n if not state.token_counts else min(state.token_min, n)
            state.token_max = max(state.token_max, n)
            state.token_sum, state.token_counts = state.token_sum + n, state.token_counts + 1
    waiting.clear()


def _decide_kind(report: ImportReport, state: _Gather) -> None:
    if not report.usable:
        report.why_not = "no usable chat examples"
        return
    systems = state.systems
    report.instruction = systems.most_common(1)[0][0] if systems else None
    if state.all_objects:
        report.kind, report.schema = "idp", state.schema.draft()
        if state.calls == report.usable:  # a function-calling file: the student may call only the functions offered
            report.schema["properties"]["name"] = {"type": "string", "enum": sorted(state.functions)}
        return
    labels = state.answers
    if len(labels) <= MAX_LABELS and len(labels) >= 2 and len(labels) <= report.usable / 2:
        report.kind, report.labels = "classification", dict(labels.most_common())
        return
    distinct = f"over {MAX_LABELS}" if len(labels) > MAX_LABELS else str(len(labels))
    report.kind = "text"
    report.why_text = (
        f"{distinct} distinct assistant answers in {report.usable} examples: neither a label set "
        f"(at most {MAX_LABELS} answers, each repeated) nor JSON objects"
    )


def write_task(report: ImportReport, out: Path, name: str, max_bad_share: float = 0.05) -> Path:
    """Write the rows, the schema draft or labels, the preference pairs and `task.yaml` into `out`; DataError (naming
    the first bad lines) when the import cannot make a task or too many lines were bad."""
    share = len(report.bad) / max(1, report.lines)
    if share > max_bad_share:
        first = "; ".join(report.bad[:5])
        raise DataError(
            first.split(": ")[0],
            None,
            None,
            f"{len(report.bad)} of {report.lines} lines cannot be used (over {max_bad_share:.0%}): {first}",
        )
    if report.kind is None:
        raise DataError("<import>", None, None, report.why_not or "no task")
    out.mkdir(parents=True, exist_ok=True)
    task: dict = {"name": name, "type": report.kind}
    if report.kind == "classification":
        rows = ({"text": e.input, "label": e.answer.strip()} for e in report.examples())
        task["labels"] = list(report.labels)
    elif report.kind == "text":
        rows = ({"text": e.input, "answer": e.answer} for e in report.examples())
    else:
        rows = ({"document": e.input, "target": json.loads(e.answer)} for e in report.examples())
        atomic_write_text(out / "schema.json", json.dumps(report.schema, indent=2))
        task["schema_file"] = "schema.json"
    write_jsonl(out / "train.jsonl", rows)  # streamed from the files again, a line at a time
    task["data"] = {"train": "train.jsonl"}
    if report.preference_pairs:
        write_jsonl(out / "preferences.jsonl", report.preferences())
        task["data"]["preferences"] = "preferences.jsonl"
    if report.instruction:
        task["instruction"] = report.instruction
    task["methods"] = ["sft", "dpo"] if report.preference_pairs else ["sft"]
    longest = (report.tokens or {}).get("longest_example", 0)
    if longest > TrainingConfig().max_length:  # training refuses longer rows; the file's own longest example decides
        task["training"] = {"max_length": -(-longest // 64) * 64}
    header = "# Imported from OpenAI fine-tuning files by `distill-slm import openai` (review the labels or the schema draft).\n"
    atomic_write_text(out / "task.yaml", header + yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
    return out / "task.yaml"


def read_stored_completions(paths: list[Path], metadata: dict[str, str] | None = None) -> tuple[list[dict], list[str]]:
    """Stored completions (what OpenAI's `GET /v1/chat/completions` listing returns — `{"object": "list", "data": [...]}`
    — or a compatible gateway's log, one completion per line) -> `[{id, input, output, model, prompt_tokens,
    completion_tokens}]` and the reasons others were skipped. A completion's input is its last user message: inline
    (`messages`, as gateways log the request) or from a `GET /v1/chat/completions/{id}/messages` listing among `paths`
    (its message ids are `<completion id>-<n>`). `metadata`: only completions whose metadata has every key=value."""
    completions, messages, bad = [], {}, []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        try:
            documents = [json.loads(text)]
        except json.JSONDecodeError:
            documents = []
            for number, line in enumerate(text.splitlines(), start=1):
                try:
                    documents.append(json.loads(line)) if line.strip() else None
                except json.JSONDecodeError as exc:
                    bad.append(f"{path}:{number}: not JSON ({exc.msg})")
        for document in documents:
            items = document.get("data", [document]) if isinstance(document, dict) else []
            for item in items:
                if not isinstance(item, dict):
                    continue
                if item.get("object") == "chat.completion" or "choices" in item:
                    completions.append(item)
                elif "role" in item and isinstance(item.get("id"), str):  # a /messages listing's message
                    messages.setdefault(item["id"].rsplit("-", 1)[0], []).append(item)
    found = []
    for completion in completions:
        ident = completion.get("id", "?")
        tags = completion.get("metadata") or {}
        if metadata and any(tags.get(k) != v for k, v in metadata.items()):
            continue
        conversation = completion.get("messages") or messages.get(ident, [])
        users = [_text(m.get("content")) for m in conversation if m.get("role") == "user"]
        choices = completion.get("choices") or [{}]
        output = _text((choices[0].get("message") or {}).get("content"))
        if not users or not users[-1]:
            bad.append(f"completion {ident}: no user message (include its /messages listing)")
            continue
        if not output:
            bad.append(f"completion {ident}: no answer in choices[0].message.content")
            continue
        usage = completion.get("usage") or {}
        found.append(
            {
                "id": ident,
                "input": users[-1],
                "output": output,
                "model": completion.get("model", "unknown"),
                "prompt_tokens": usage.get("prompt_tokens", 0),
                "completion_tokens": usage.get("completion_tokens", 0),
            }
        )
    return found, bad
