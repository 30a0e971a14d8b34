"""OpenAI fine-tuning files in: chat files (`{"messages": [...]}` per line) and preference files (`input`,
`preferred_output`, `non_preferred_output`) checked line by line and turned into this product's rows and a task file.

What a chat line becomes: its **last assistant message** (with a `weight` other than 0) is the answer; the **last user
message before it** is the input; a system message is the instruction (the most common one, where the task file gives
none). Earlier turns of a multi-turn conversation are not used — the product's students answer one input — and are
counted in the report. The answers decide the task's type: all JSON objects -> document extraction (`idp`; a draft
JSON Schema inferred for review), else a closed set of answers -> classification (the labels counted and shown).
Anything else (free-text replies, as in a chat assistant's file) is not a task this product distils, and says so.

Checks per line, as OpenAI's own format checker did: not JSON, no `messages`, a message without `role` or `content`,
an unknown role, empty content, no assistant answer, no user input, over the context (when a token counter is given).
Each bad line is reported with file, line and reason; nothing is silently dropped. Past `max_bad_share` of bad lines
the import stops before anything is written.

    report = import_openai_files([Path("train.jsonl")], out=Path("imported"), name="tickets")
    print(report.summary())        # kind, labels or schema draft, counts, duplicates, token statistics
    # imported/task.yaml runs as it is: distill-slm run imported/task.yaml
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.common.files import atomic_write_text
from core.errors import DataError

ROLES = ("system", "user", "assistant", "tool", "function", "developer")
MAX_LABELS = 50  # more distinct answers than this (and not JSON): free text, not a label set


@dataclass
class Example:
    input: str
    answer: str
    system: str | None
    where: str  # file:line
    turns: int


@dataclass
class ImportReport:
    kind: str | None = None  # classification | idp | None (nothing this product distils)
    examples: list[Example] = field(default_factory=list)
    preferences: list[dict] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # "file:line: reason"
    lines: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    schema: dict | None = None
    instruction: str | None = None
    duplicates: int = 0  # inputs seen before with the same answer
    conflicts: list[str] = field(default_factory=list)  # inputs seen before with another answer
    multi_turn: int = 0
    tokens: dict | None = None  # input tokens: min, mean, max (with a token counter)
    why_not: str | None = None

    def summary(self) -> str:
        head = f"{self.lines} lines: {len(self.examples)} examples, {len(self.preferences)} preference pairs, {len(self.bad)} bad"
        parts = [head]
        if self.kind == "classification":
            parts.append(f"classification, {len(self.labels)} labels: " + ", ".join(f"{k} ({v})" for k, v in self.labels.items()))
        elif self.kind == "idp":
            parts.append(f"document extraction; draft schema (review it): {json.dumps(self.schema)}")
        elif self.why_not:
            parts.append(f"not a task this product distils: {self.why_not}")
        parts.append(
            f"duplicates {self.duplicates}, conflicting answers {len(self.conflicts)}, multi-turn {self.multi_turn} (last exchange used)"
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


def parse_chat_line(record: dict) -> Example | str:
    """One chat line -> an Example, or the reason it cannot be used."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return "field 'messages': missing or not a non-empty list"
    system, last_user, answer, turns = None, None, None, 0
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
            if text is None or not text.strip():
                return f"field 'messages[{i}].content': empty assistant answer"
            answer = (last_user, text)
    if answer is None:
        return "field 'messages': no assistant answer (with a weight other than 0)"
    if answer[0] is None:
        return "field 'messages': no user message before the assistant's answer"
    return Example(answer[0], answer[1], system, "", turns)


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


def infer_schema(objects: list[dict]) -> dict:
    """A draft JSON Schema for the answers: each key's type(s), required when every answer has it."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object", type(None): "null"}
    seen: dict[str, set] = {}
    for obj in objects:
        for key, value in obj.items():
            seen.setdefault(key, set()).add(names[type(value)])
    properties = {}
    for key, types in seen.items():
        if types == {"integer", "number"}:
            types = {"number"}
        properties[key] = {"type": sorted(types)[0] if len(types) == 1 else sorted(types)}
    required = [k for k in seen if all(k in obj for obj in objects)]
    return {"type": "object", "properties": properties, "required": required}


def read_files(
    paths: list[Path], count_tokens: Callable[[list[str]], list[int]] | None = None, max_tokens: int | None = None
) -> ImportReport:
    """Check every line of `paths` (chat and preference lines may be mixed) and gather what they hold."""
    report = ImportReport()
    answers_by_input: dict[str, str] = {}
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                report.lines += 1
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    report.bad.append(f"{where}: not JSON ({exc.msg})")
                    continue
                if not isinstance(record, dict):
                    report.bad.append(f"{where}: not a JSON object")
                    continue
                parsed = parse_preference_line(record) if "preferred_output" in record else parse_chat_line(record)
                if isinstance(parsed, str):
                    report.bad.append(f"{where}: {parsed}")
                elif isinstance(parsed, dict):
                    report.preferences.append(parsed)
                else:
                    parsed.where = where
                    report.multi_turn += parsed.turns > 1
                    previous = answers_by_input.get(parsed.input)
                    if previous is not None:
                        if previous == parsed.answer:
                            report.duplicates += 1
                            continue
                        report.conflicts.append(f"{where}: the same input was answered {previous!r} before, {parsed.answer!r} here")
                    answers_by_input[parsed.input] = parsed.answer
                    report.examples.append(parsed)
    if count_tokens is not None and report.examples:
        # In chunks: a tokenizer's encodings of a whole file at once held ~4 KB a line (50,000 lines: 330 MB).
        counts = [
            n
            for begin in range(0, len(report.examples), 1000)
            for n in count_tokens([e.input for e in report.examples[begin : begin + 1000]])
        ]
        if max_tokens is not None:
            over = [(e, n) for e, n in zip(report.examples, counts) if n > max_tokens]
            report.bad.extend(f"{e.where}: over the context ({n} input tokens, over {max_tokens})" for e, n in over)
            dropped = {id(e) for e, _ in over}
            report.examples = [e for e in report.examples if id(e) not in dropped]
            counts = [n for n in counts if n <= max_tokens]
        if counts:
            report.tokens = {"min": min(counts), "mean": round(sum(counts) / len(counts), 1), "max": max(counts)}
    _decide_kind(report)
    return report


def _decide_kind(report: ImportReport) -> None:
    if not report.examples:
        report.why_not = "no usable chat examples"
        return
    objects = []
    for example in report.examples:
        try:
            value = json.loads(example.answer)
        except json.JSONDecodeError:
            break
        if not isinstance(value, dict):
            break
        objects.append(value)
    systems = Counter(e.system for e in report.examples if e.system)
    report.instruction = systems.most_common(1)[0][0] if systems else None
    if len(objects) == len(report.examples):
        report.kind, report.schema = "idp", infer_schema(objects)
        return
    labels = Counter(e.answer.strip() for e in report.examples)
    if len(labels) <= MAX_LABELS and len(labels) >= 2 and len(labels) <= len(report.examples) / 2:
        report.kind, report.labels = "classification", dict(labels.most_common())
        return
    report.why_not = (
        f"{len(labels)} distinct assistant answers in {len(report.examples)} examples: free text, neither a label set "
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
        rows = [{"text": e.input, "label": e.answer.strip()} for e in report.examples]
        task["labels"] = list(report.labels)
    else:
        rows = [{"document": e.input, "target": json.loads(e.answer)} for e in report.examples]
        atomic_write_text(out / "schema.json", json.dumps(report.schema, indent=2))
        task["schema_file"] = "schema.json"
    atomic_write_text(out / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    task["data"] = {"train": "train.jsonl"}
    if report.preferences:
        atomic_write_text(out / "preferences.jsonl", "".join(json.dumps(p) + "\n" for p in report.preferences))
        task["data"]["preferences"] = "preferences.jsonl"
    if report.instruction:
        task["instruction"] = report.instruction
    task["methods"] = ["sft", "dpo"] if report.preferences else ["sft"]
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
