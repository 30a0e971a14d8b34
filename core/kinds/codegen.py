"""Code generation (`type: codegen`): a spec in, a one-line plan and a Python function out, checked by running tests.

Rows are `{"id"?, "prompt", "tests", "entry_point"?, "solution"?, "plan"?}` (`core.common.rows.CodeTask`). The gold answer is the
solution in the task's answer format (`plan: true`: the row's plan line, then the code block; `plan: false`: the code
block alone), which is what SFT trains on. A variant is scored by executing its answers against the rows' tests in the
sandbox (`core.sandbox`): pass@1 of the greedy answers, pass@k of samples (`codegen.samples`), syntax and lint pass
rates, failures by cause.

The teacher (any backend) writes `teacher.candidates` answers per task, the first greedy and the rest sampled
(the deliberate backend: each with its own retrieved k-shot examples); `CodeTeaching.check` runs every candidate
against the task's tests and keeps the first that passes: execution-verified rejection sampling. A task no candidate
solved becomes a failed trace (counted, never trained on), so KD learns only from code that works.

    kind = for_config(cfg, ModelSettings())  # cfg.type: codegen
    rows = load_rows(kind, "code.jsonl")            # bad rows stop here; solutions run against their tests
    metrics = kind.score(kind.decoder(model, tokenizer), rows)
    metrics["pass_at_1"], metrics["failures"]
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import numpy as np

from core.common.config import TaskConfig
from core.common.files import read_records
from core.common.prompts import CODE_ONLY_INSTRUCTION, CODEGEN_INSTRUCTION, extract_code, format_answer
from core.common.rows import CodeTask, Example, Pair
from core.drift.statistics import Signal, proportion_test
from core.errors import ConfigError, DataError
from core.evaluation.code_metrics import code_metrics, lint_ok, pass_at_k, syntax_ok
from core.evaluation.report import write_codegen_report
from core.kinds.base import TaskKind, trace_costs, traces_for_rows
from core.model.code_decoder import CodeAnswer, CodeDecoder
from core.model.loading import load_tokenizer
from core.sandbox import run_all, run_grouped
from core.settings import ModelSettings
from core.teachers.asking.codegen import CodeAsking
from core.teachers.base import EndpointTask, TeacherAnswer, TeacherTask
from core.training.kd_rows import generation_kd_rows


def parse_code_record(record: dict, path: Path, line: int, require_solution: bool = False, require_tests: bool = True) -> CodeTask:
    """One codegen row, checked without running anything: fields present and typed, tests that parse and assert
    something, a solution (where there is one) that defines `entry_point`. Raises DataError naming file, line and field.
    `require_tests=False`: a spec alone (a drift window's traffic) is a row too, with `tests` None."""
    for field in ("prompt", "tests") if require_tests or record.get("tests") is not None else ("prompt",):
        if not isinstance(record.get(field), str) or not record[field].strip():
            raise DataError(path, line, field, "missing or empty")
    for field in ("entry_point", "solution", "plan"):
        if record.get(field) is not None and not isinstance(record[field], str):
            raise DataError(path, line, field, f"must be a string, got {type(record[field]).__name__}")
    tests_problem = check_tests(record["tests"]) if record.get("tests") is not None else None
    if tests_problem:
        raise DataError(path, line, "tests", tests_problem)
    solution = record.get("solution")
    if solution is None and require_solution:
        raise DataError(path, line, "solution", "missing (this split trains on solutions)")
    entry = record.get("entry_point")
    if solution is not None and entry:
        defined = {node.name for node in ast.walk(_parse(path, line, "solution", solution)) if isinstance(node, ast.FunctionDef)}
        if entry not in defined:
            raise DataError(path, line, "entry_point", f"{entry!r} is not defined by the solution")
    task_id = str(record.get("id") or f"{path.stem}-{line}")
    return CodeTask(task_id, record["prompt"], record.get("tests"), entry, solution, record.get("plan"))


def check_tests(tests: str) -> str | None:
    """Why `tests` cannot check an answer (not Python, or no assert: tests that check nothing pass every answer), or None."""
    try:
        tree = ast.parse(tests)
    except SyntaxError as exc:
        return f"not valid Python: {exc.msg} (line {exc.lineno})"
    except (MemoryError, RecursionError, ValueError) as exc:  # 15,000 unary minus signs, deep nesting, NUL bytes
        return f"not valid Python: too deeply nested or malformed ({type(exc).__name__})"
    if not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
        return "no assert: tests that check nothing pass every answer"
    return None


def check_solutions(path: Path, numbered: list[tuple[int, CodeTask]], settings: ModelSettings, timeout_s: float = 10.0) -> None:
    """Run every solution against its own tests (in the sandbox, in parallel); the first that fails stops the read."""
    with_solution = [(line, task) for line, task in numbered if task.solution is not None]
    results = run_all([(task.solution, task.tests) for _, task in with_solution], settings, timeout_s)
    for (line, _), result in zip(with_solution, results):
        if not result.passed:
            raise DataError(path, line, "solution", f"fails its own tests: {result.error}")


def load_codegen(path: str | Path, settings: ModelSettings, require_solutions: bool = False, timeout_s: float = 10.0) -> list[CodeTask]:
    """Read codegen rows; refuse unparsable tests, tests without an assert, and solutions that fail their own tests."""
    path = Path(path)
    numbered = [(line, parse_code_record(record, path, line, require_solutions)) for line, record in read_records(path)]
    check_solutions(path, numbered, settings, timeout_s)
    return [task for _, task in numbered]


def _parse(path: Path, number: int, field: str, source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise DataError(path, number, field, f"not valid Python: {exc.msg} (line {exc.lineno})") from None


def code_pairs(
    tasks: list[CodeTask], samples: list[list[str]], settings: ModelSettings, timeout_s: float = 10.0
) -> tuple[list[Pair], dict]:
    """DPO pairs: chosen = code that passes (the student's own passing sample, else the task's solution),
    rejected = one of the student's samples that fails; and how many pairs each source gave."""
    pairs: list[Pair] = []
    counts = {"tasks": len(tasks), "student_passing": 0, "gold": 0, "all_samples_pass": 0, "no_passing_code": 0, "identical": 0}
    grouped = run_grouped(
        [[(extract_code(answer), task.tests) for answer in answers] for task, answers in zip(tasks, samples)], settings, timeout_s
    )
    for task, answers, checked in zip(tasks, samples, grouped):
        failing = [a for a, r in zip(answers, checked) if not r.passed]
        passing = [a for a, r in zip(answers, checked) if r.passed]
        if not failing:
            counts["all_samples_pass"] += 1
            continue
        if passing:
            chosen, source = passing[0], "student_passing"
        elif task.solution is not None:
            chosen, source = format_answer(task.solution, task.plan), "gold"
        else:
            counts["no_passing_code"] += 1
            continue
        if chosen.strip() == failing[0].strip():
            counts["identical"] += 1
            continue
        pairs.append(Pair(task.prompt, chosen, failing[0], source))
        counts[source] += 1
    counts["pairs"] = len(pairs)
    return pairs, counts


def split_answer(answer: str) -> tuple[str | None, str]:
    """(plan, code) of an answer in the task's format: the text after 'Plan:' on the first line (None without one)."""
    first = answer.lstrip().split("\n", 1)[0]
    plan = first[len("Plan:") :].strip() if first.startswith("Plan:") else None
    return plan or None, extract_code(answer)


# Hashes of (solution, tests) this process has already run: a split read again (each Prefect task reads the file the
# flow passes it) is not run again. Process-wide, as kinds are bound per use.
_VERIFIED: set[int] = set()


class CodeGeneration(TaskKind):
    generates = True
    accepts = frozenset({"tests"})  # a request may have the answer run against its own tests (verify)
    type = "codegen"
    summary_keys = ("pass_at_1", "syntax_rate", "lint_pass_rate", "latency_ms_p50", "cost_per_1k_usd")
    card_keys = ("pass_at_1", "syntax_rate", "lint_pass_rate")
    card_note = "a spec in, code out (after a one-line plan where `plan` is on); scored by running each task's tests in a sandbox"
    defaults = {
        "instruction": CODEGEN_INSTRUCTION,
        "instruction_without_plan": CODE_ONLY_INSTRUCTION,  # `plan: false`
        "promotion": {"primary_metric": "pass_at_1", "guard_min": {"syntax_rate": 0.9}},
        # Scoring a validation split means decoding and running tests: none by default (as idp).
        "training": {"max_length": 384, "validation_per_class": 0},
        # Every row's solution runs against its tests when it is read: a demo of thousands would take minutes.
        "data": {"train_per_class": 240, "eval_per_class": 40},
        "demo": {"n_rows": 400},
    }

    # -- data --------------------------------------------------------------------------------
    def parse_records(self, records: list[tuple[int, dict]], path: Path, require_answers: bool) -> list[Example]:
        """Each row checked without running anything, then every solution run against its own tests (in the sandbox, in
        parallel); the first that fails stops the read."""
        rows = [self._parse(record, path, line, require_answers) for line, record in records]
        todo = [
            (line, row) for (line, _), row in zip(records, rows) if row.label is not None and hash((row.label, row.tests)) not in _VERIFIED
        ]
        tasks = [(line, CodeTask(row.id, row.text, row.tests, solution=extract_code(row.label))) for line, row in todo]
        check_solutions(path, tasks, self.settings, self.cfg.codegen.timeout_s)
        _VERIFIED.update(hash((row.label, row.tests)) for _, row in todo)
        return rows

    def _parse(self, record: dict, path: Path, line: int, require_answer: bool) -> Example:
        # Unlabeled rows may come without tests (a drift window's specs): the teacher's answers to them cannot be verified
        # and are dropped, so only rows with tests teach anything.
        task = parse_code_record(record, path, line, require_solution=require_answer, require_tests=require_answer)
        label = format_answer(task.solution, task.plan if self.cfg.plan else None) if task.solution is not None else None
        return Example(task.id, task.prompt, label, task.tests)

    def to_record(self, row: Example) -> dict:
        record = {"id": row.id, "prompt": row.text} | ({"tests": row.tests} if row.tests is not None else {})
        if row.label is not None:
            plan, code = split_answer(row.label)
            record |= {"solution": code} | ({"plan": plan} if plan else {})
        return record

    def check_task(self) -> list[str]:
        warnings = super().check_task()
        if self.cfg.codegen.samples and self.cfg.codegen.k > self.cfg.codegen.samples:
            raise ConfigError(
                f"codegen.k: pass@{self.cfg.codegen.k} needs at least that many samples per task (codegen.samples is {self.cfg.codegen.samples})"
            )
        return warnings

    # -- model and evaluation ----------------------------------------------------------------
    def decoder(self, model, tokenizer, adapter: str | Path | None = None) -> CodeDecoder:
        return CodeDecoder(
            model, tokenizer, self.cfg.instruction, self.cfg.max_new_tokens, self.cfg.eval_batch_size, self.cfg.codegen.temperature
        )

    def score(self, decoder: CodeDecoder, rows: list[Example]) -> dict:
        prompts = [r.text for r in rows]
        greedy = decoder.answer(prompts)
        samples = decoder.sample(prompts, self.cfg.codegen.samples) if self.cfg.codegen.samples else None
        metrics = code_metrics([r.tests for r in rows], greedy, self.settings, samples, self.cfg.codegen.k, self.cfg.codegen.timeout_s)
        metrics["latency_note"] = f"per task, greedy, amortised over batches of {decoder.batch_size}"
        for row, prediction in zip(rows, metrics["predictions"]):
            prediction["id"] = row.id
        return metrics

    def resampled_primary(self, rows: list[Example], metrics: dict, picks: np.ndarray) -> np.ndarray | None:
        if self.cfg.promotion.primary_metric != "pass_at_1":
            return None
        return np.array([p["passed"] for p in metrics["predictions"]], dtype=float)[picks].mean(axis=1)

    def teacher_metrics(self, rows: list[Example], traces: dict[str, dict]) -> dict:
        """The teacher's first (greedy) candidate as its pass@1, all its candidates for pass@k, and how many tasks any
        candidate solved (`verified_rate`: the share of tasks KD can learn from)."""
        found = traces_for_rows(rows, traces)
        candidates = [t.get("candidates") or [] for t in found]
        first = [c[0] if c else {"answer": "", "passed": False, "cause": "failed"} for c in candidates]
        codes = [extract_code(c.get("answer") or "") for c in first]
        n = max(len(rows), 1)
        metrics = {
            "pass_at_1": sum(c["passed"] for c in first) / n,
            "verified_rate": sum(any(x["passed"] for x in c) for c in candidates) / n,
            "candidates_per_task": float(np.mean([len(c) for c in candidates])),
            "syntax_rate": sum(map(syntax_ok, codes)) / n,
            "lint_pass_rate": sum(lint_ok(code) for code in codes if code) / n,
            "n": len(rows),
            "latency_ms_p50": float(np.percentile([t["latency_s"] * 1000 for t in found], 50)),
            "latency_ms_p95": float(np.percentile([t["latency_s"] * 1000 for t in found], 95)),
        }
        k = self.cfg.codegen.k
        if all(len(c) >= k for c in candidates):
            metrics[f"pass_at_{k}"] = float(np.mean([pass_at_k(len(c), sum(x["passed"] for x in c), k) for c in candidates]))
        metrics["failures"] = dict(Counter(c.get("cause") or "failed" for c in first if not c["passed"]).most_common())
        metrics |= trace_costs(found, failed=sum(bool(t.get("error")) for t in found), note="per task, every candidate")
        metrics["predictions"] = [
            {"id": r.id, "passed": c["passed"], "cause": c.get("cause"), "answer": c.get("answer")} for r, c in zip(rows, first)
        ]
        return metrics

    def teacher_task(self) -> TeacherTask:
        return CodeTeaching(self.cfg, self.settings)

    def write_report(self, results: dict[str, dict], out_dir: Path) -> Path:
        return write_codegen_report(self.cfg.name, results, out_dir)

    # -- training ----------------------------------------------------------------------------
    def kd_rows(self, traces: list[dict]) -> tuple[list[dict], dict]:
        """Sequence-level KD on verified answers only (a trace without a passing candidate is a failed trace, never here)."""
        verified = [t for t in traces if any(c["passed"] for c in t.get("candidates") or [{"passed": True}])]
        rows, counts = generation_kd_rows(verified, self.cfg, load_tokenizer(self.cfg.model, self.settings))
        return rows, counts | {"verified_traces": len(verified)}

    def preference_pairs(self, rows: list[Example], decoder: CodeDecoder, teacher_traces: list[dict] | None):
        """chosen = code that passes (the student's own passing sample, else the gold solution, else the teacher's verified
        answer), rejected = one of the student's own samples that fails (`codegen.dpo_samples` per task)."""
        rows = rows[: self.cfg.dpo.max_pairs]
        verified = {t["prompt"]: t["output"] for t in teacher_traces or [] if t.get("output")}
        tasks = []
        for row in rows:
            gold = row.label or verified.get(row.text)
            plan, code = split_answer(gold) if gold else (None, None)
            tasks.append(CodeTask(row.id, row.text, row.tests, solution=code, plan=plan))
        samples = [[a.text for a in answers] for answers in decoder.sample([r.text for r in rows], self.cfg.codegen.dpo_samples)]
        return code_pairs(tasks, samples, self.settings, self.cfg.codegen.timeout_s)

    # -- drift -------------------------------------------------------------------------------
    def reference_answers(self, decoder: CodeDecoder, texts: list[str]) -> list[dict]:
        return [{"output": a.text} for a in decoder.answer(texts)]

    def drift_view(self, record: dict) -> dict | None:
        if not isinstance(record.get("output"), str):
            return None
        code = extract_code(record["output"])
        return {"syntax_ok": syntax_ok(code), "code": code}

    def agrees(self, view: dict, teacher_output: str) -> bool:
        """The same program as the teacher's, up to formatting and comments (equal syntax trees)."""
        try:
            return ast.dump(ast.parse(view["code"])) == ast.dump(ast.parse(extract_code(teacher_output)))
        except (SyntaxError, ValueError):
            return False

    def output_signals(self, reference: list[dict], window: list[dict]) -> list[Signal]:
        ok = lambda views: sum(v["syntax_ok"] for v in views)  # noqa: E731
        p = proportion_test(ok(reference), len(reference), ok(window), len(window))
        rates = {"reference": ok(reference) / len(reference), "window": ok(window) / len(window)}
        return [Signal("output.syntax_rate", rates["window"], p, rates)]


class CodeTeaching(CodeAsking, TeacherTask):
    """Candidates from an endpoint (`CodeAsking`, which also checks them) or the local decoder, greedy then sampled."""

    def __init__(self, cfg: TaskConfig, settings: ModelSettings) -> None:
        super().__init__(cfg.teacher.candidates, cfg.codegen.temperature, cfg.max_new_tokens, settings, cfg.codegen.timeout_s)
        self.cfg = cfg
        self.batch_size = cfg.eval_batch_size
        self.decoder: CodeDecoder | None = None

    def endpoint(self) -> EndpointTask:
        return CodeAsking(self.candidates, self.temperature, self.max_new_tokens, self.settings, self.timeout_s)

    def attach(self, model, tokenizer, calibrated: bool, adapter: Path | None = None) -> None:
        self.decoder = CodeDecoder(model, tokenizer, self.cfg.instruction, self.cfg.max_new_tokens, self.batch_size, self.temperature)

    def _candidates(self, greedy: list[CodeAnswer], sampled: list[list[CodeAnswer]]) -> list[TeacherAnswer]:
        as_answer = lambda a: TeacherAnswer(
            a.text, latency_s=a.latency_ms / 1000, prompt_tokens=a.prompt_tokens, completion_tokens=a.completion_tokens
        )  # noqa: E731
        return [self.combine([as_answer(g), *map(as_answer, s)]) for g, s in zip(greedy, sampled)]

    def answer(self, texts: list[str], top_k: int) -> list[TeacherAnswer]:
        greedy = self.decoder.answer(texts)
        sampled = self.decoder.sample(texts, self.candidates - 1) if self.candidates > 1 else [[] for _ in texts]
        return self._candidates(greedy, sampled)

    def deliberate(self, texts, shot_sets, neighbours, top_k) -> list[TeacherAnswer]:
        """Candidate c of a spec answers after retrieved shot set c (mod the sets): the nearest solved tasks as examples."""
        n_sets = len(shot_sets[0]) if shot_sets else 1
        greedy = self.decoder.answer(texts, shots=[s[0] for s in shot_sets])
        sampled = [
            [self.decoder.sample([text], 1, shots=[sets[c % n_sets]])[0][0] for c in range(1, self.candidates)]
            for text, sets in zip(texts, shot_sets)
        ]
        return self._candidates(greedy, sampled)
