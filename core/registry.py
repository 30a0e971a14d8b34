"""The adapter registry on disk: versions, aliases, a promotion gate, rollback.

Layout (`runs/` by default):

    runs/<task>/<method>/<version>/   adapter_model.safetensors, adapter_config.json,
                                      metrics.json, config.yaml, data_fingerprint.json, README.md
    runs/<task>/aliases.json          {"stacks": {"production": ["sft/v0001", "sft/v0002"]}, "history": [...]}
    runs/GENERATION                   a number raised by every alias move: replicas of the service poll it and reload

A version folder is assembled under a temporary name and renamed into place, so it either exists
complete or not at all; the alias file is replaced atomically. The list of versions is the list
of folders, so an interrupted write can never leave the index and the folders disagreeing.

    reg = Registry("runs")
    ref = reg.register("creditmix", "sft", adapter_dir, metrics, config_yaml, fingerprint)
    decision = reg.promote("creditmix", ref, cfg.promotion)   # moves `production` only if the gate passes
    reg.rollback("creditmix")                             # production back to what it was before
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from core.common.config import PromotionPolicy, TaskConfig
from core.common.files import atomic_write_text, fsync_folder
from core.errors import RegistryError
from core.evaluation.paired import paired_note, within_noise

ALIASES = ("production", "staging")


@dataclass
class GateDecision:
    passed: bool
    candidate: str
    incumbent: str | None
    reasons: list[str] = field(default_factory=list)
    metric: str = ""  # the primary metric compared
    candidate_value: float | None = None
    incumbent_value: float | None = None  # the incumbent's figure on the candidate's evaluation rows
    eval_sha256: str | None = None  # those rows' fingerprint
    forced: bool = False  # passed only because the caller forced it
    promoted: bool = False  # the alias moved to this candidate


class Registry:
    def __init__(self, root: str | Path = "runs") -> None:
        self.root = Path(root)

    # -- reading ---------------------------------------------------------------------------
    def tasks(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")) if self.root.exists() else []

    def generation(self) -> int:
        """How many alias moves the registry has seen (0 before the first): a service replica that last loaded at a
        lower number has aliases to catch up with (`core.serving.runtime`, `registry_poll_s`)."""
        path = self.root / "GENERATION"
        return int(path.read_text() or 0) if path.exists() else 0

    def versions(self, task: str, method: str) -> list[str]:
        folder = self.root / task / method
        if not folder.exists():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("v"))

    def methods(self, task: str) -> list[str]:
        folder = self.root / task
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and self.versions(task, p.name)) if folder.exists() else []

    def _alias_state(self, task: str) -> dict:
        """{"stacks": {alias: [oldest, ..., current]}, "history": [moves]}."""
        path = self.root / task / "aliases.json"
        return json.loads(path.read_text()) if path.exists() else {"stacks": {}, "history": []}

    def aliases(self, task: str) -> dict[str, str]:
        return {alias: stack[-1] for alias, stack in self._alias_state(task)["stacks"].items() if stack}

    def resolve(self, task: str, ref: str) -> str:
        """'production' | 'staging' | 'sft' (latest sft) | 'sft/v0002' -> 'method/version'."""
        if ref in ALIASES:
            target = self.aliases(task).get(ref)
            if target is None:
                raise RegistryError(f"task {task!r} has no {ref!r} adapter yet")
            return target
        method, _, version = ref.partition("/")
        versions = self.versions(task, method)
        if not versions:
            raise RegistryError(f"task {task!r} has no {method!r} adapters in {self.root}")
        if not version:
            return f"{method}/{versions[-1]}"
        if version not in versions:
            raise RegistryError(f"{task}/{method} has no version {version!r}; it has {versions}")
        return f"{method}/{version}"

    def fingerprint(self, task: str, ref: str) -> dict:
        """The data fingerprint the version was registered with (`eval_sha256`: its evaluation rows)."""
        path = self.path(task, ref) / "data_fingerprint.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def gate_record(self, task: str, ref: str) -> list[dict]:
        """Every gate decision taken on this version (`gate.json` in its folder), oldest first."""
        path = self.path(task, ref) / "gate.json"
        return json.loads(path.read_text()) if path.exists() else []

    def verdict(self, task: str, ref: str) -> str | None:
        """'passed' if a gate ever passed this version, 'forced' if it was only ever promoted by force, else None."""
        record = self.gate_record(task, ref)
        if any(d["passed"] and not d.get("forced") for d in record):
            return "passed"
        return "forced" if any(d.get("forced") for d in record) else None

    def newest_servable(self, task: str, method: str) -> str | None:
        """The newest version of `method` that passed its gate or was promoted by force (None: no such version)."""
        for version in reversed(self.versions(task, method)):
            if self.verdict(task, f"{method}/{version}"):
                return f"{method}/{version}"
        return None

    def path(self, task: str, ref: str) -> Path:
        return self.root / _checked_name(task, "task") / self.resolve(task, ref)

    def task_config(self, task: str, ref: str | None = None) -> TaskConfig:
        """The config an adapter was trained with: `ref`'s, else production's, else the first method's newest."""
        if ref is None:
            methods = self.methods(task)
            if not methods:
                raise RegistryError(f"task {task!r} has nothing registered under {self.root}")
            ref = self.aliases(task).get("production") or methods[0]
        return TaskConfig.from_yaml(self.path(task, ref) / "config.yaml")

    def metrics(self, task: str, ref: str) -> dict:
        return json.loads((self.path(task, ref) / "metrics.json").read_text())

    def describe(self, task: str) -> dict:
        """Every method's versions with their headline metrics, and the aliases (for `registry show`)."""
        out: dict = {"task": task, "aliases": self.aliases(task), "methods": {}}
        for method in self.methods(task):
            rows = []
            for version in self.versions(task, method):
                metrics_path = self.root / task / method / version / "metrics.json"
                metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
                rows.append({"version": version, "metrics": {k: v for k, v in metrics.items() if not isinstance(v, dict | list)}})
            out["methods"][method] = rows
        out["history"] = self._alias_state(task)["history"]
        return out

    # -- writing ---------------------------------------------------------------------------
    @contextmanager
    def _lock(self, task: str):
        (self.root / task).mkdir(parents=True, exist_ok=True)
        with open(self.root / task / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def register(
        self,
        task: str,
        method: str,
        adapter_dir: str | Path,
        metrics: dict,
        config_yaml: str,
        fingerprint: dict,
        model_card: str = "",
    ) -> str:
        """Copy an adapter and its records in as the next version of `task/method`; return 'method/vNNNN'."""
        with self._lock(task):
            folder = self.root / task / method
            folder.mkdir(parents=True, exist_ok=True)
            existing = self.versions(task, method)
            version = f"v{int(existing[-1][1:]) + 1 if existing else 1:04d}"
            staging = Path(tempfile.mkdtemp(dir=folder, prefix=".incoming-"))
            try:
                for item in Path(adapter_dir).iterdir():
                    if item.is_file():
                        shutil.copy2(item, staging / item.name)
                (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
                (staging / "config.yaml").write_text(config_yaml)
                (staging / "data_fingerprint.json").write_text(json.dumps(fingerprint, indent=2))
                (staging / "README.md").write_text(model_card or f"# {task} {method} {version}\n")
                fsync_folder(staging)  # on disk before the rename publishes it: a power cut cannot publish empty files
                os.rename(staging, folder / version)  # the version appears complete or not at all
                fsync_folder(folder, files=False)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return f"{method}/{version}"

    def _move_alias(self, task: str, alias: str, target: str | None, reason: str, details: dict | None = None) -> None:
        """Push `target` on the alias's stack (None pops it: a rollback), recording the move."""
        state = self._alias_state(task)
        stack = state["stacks"].setdefault(alias, [])
        previous = stack[-1] if stack else None
        if target is None:
            stack.pop()
        else:
            stack.append(target)
        state["history"].append(
            {
                "alias": alias,
                "from": previous,
                "to": stack[-1] if stack else None,
                "reason": reason,
                **(details or {}),
                "at": datetime.now(UTC).isoformat(),
            }
        )
        atomic_write_text(self.root / task / "aliases.json", json.dumps(state, indent=2))
        with open(self.root / ".generation.lock", "w") as handle:  # registry-wide: tasks move their aliases concurrently
            fcntl.flock(handle, fcntl.LOCK_EX)
            atomic_write_text(self.root / "GENERATION", str(self.generation() + 1))  # after the alias: a poller sees both

    def gate(
        self, task: str, candidate: str, policy: PromotionPolicy, alias: str = "production", incumbent_metrics: dict | None = None
    ) -> GateDecision:
        """Would `candidate` be promoted to `alias`? Compares against the alias's current adapter on the same rows.

        The incumbent's stored metrics count only when it was evaluated on the candidate's evaluation rows (same
        fingerprint); otherwise `incumbent_metrics` must be its figures measured on those rows (the `distill` flow
        measures them), or the gate refuses to compare and says why.
        """
        target = self.resolve(task, candidate)
        metrics = self.metrics(task, target)
        incumbent = self.aliases(task).get(alias)
        primary = policy.primary_metric
        rows = self.fingerprint(task, target).get("eval_sha256")
        decision = GateDecision(True, target, incumbent, metric=primary, candidate_value=metrics.get(primary), eval_sha256=rows)
        if primary not in metrics:
            decision.passed = False
            decision.reasons.append(f"candidate has no metric {primary!r}")
            return decision
        for name, floor in policy.guard_min.items():
            if metrics.get(name, float("-inf")) < floor:
                decision.passed = False
                decision.reasons.append(f"guard {name}={metrics.get(name)} is below {floor}")
        for name, ceiling in policy.guard_max.items():
            if metrics.get(name, float("inf")) > ceiling:
                decision.passed = False
                decision.reasons.append(f"guard {name}={metrics.get(name)} is above {ceiling}")
        if incumbent and incumbent != target:
            if incumbent_metrics is None:
                theirs_rows = self.fingerprint(task, incumbent).get("eval_sha256")
                if rows is None or theirs_rows != rows:
                    decision.passed = False
                    decision.reasons.append(
                        f"{alias} {incumbent} was evaluated on other rows (eval {theirs_rows} vs the candidate's {rows}): "
                        "evaluate it on the candidate's rows (the distill flow does) or promote with force"
                    )
                    return decision
                incumbent_metrics = self.metrics(task, incumbent)
            ours, theirs = metrics[primary], incumbent_metrics.get(primary, float("-inf"))
            decision.incumbent_value = theirs
            if ours < theirs + policy.min_gain:
                decision.passed = False
                decision.reasons.append(f"{primary} {ours:.4f} does not beat {alias} {incumbent} ({theirs:.4f}) by {policy.min_gain}")
            else:
                decision.reasons.append(f"{primary} {ours:.4f} vs {alias} {incumbent} {theirs:.4f} on the same rows")
        elif not incumbent:
            decision.reasons.append(f"no {alias} adapter yet")
        return decision

    def promote(
        self,
        task: str,
        candidate: str,
        policy: PromotionPolicy | None = None,
        alias: str = "production",
        force: bool = False,
        incumbent_metrics: dict | None = None,
    ) -> GateDecision:
        """Move `alias` to `candidate` if it passes the gate of `policy` (None: no guards, no minimum gain) or `force`;
        `incumbent_metrics`: the alias's current adapter measured on the candidate's evaluation rows (see `gate`)."""
        return self.promote_best(task, [candidate], policy, alias, force, incumbent_metrics)[0]

    def promote_best(
        self,
        task: str,
        candidates: list[str],
        policy: PromotionPolicy | None = None,
        alias: str = "production",
        force: bool = False,
        incumbent_metrics: dict | None = None,
    ) -> list[GateDecision]:
        """Gate every candidate (one run's adapters, evaluated on the same rows) and move `alias` at most once: to the
        passing candidate with the best primary metric. One move per run means one rollback undoes the run.

        Every decision is recorded in its version's `gate.json`; the service serves only versions that passed
        (or were forced)."""
        if alias not in ALIASES:
            raise RegistryError(f"alias must be one of {ALIASES}, got {alias!r}")
        policy = policy or PromotionPolicy(guard_min={})
        with self._lock(task):
            decisions = [self.gate(task, candidate, policy, alias, incumbent_metrics) for candidate in candidates]
            for decision in decisions:
                if force and not decision.passed:
                    decision.reasons.append("forced")
                    decision.passed, decision.forced = True, True
            passing = [d for d in decisions if d.passed]
            best = max(passing, key=lambda d: d.candidate_value if d.candidate_value is not None else float("-inf"), default=None)
            best = self._clear_of_noise(task, best, passing)
            for decision in decisions:
                decision.promoted = decision is best
                if decision.passed and not decision.promoted:
                    decision.reasons.append(f"passed, but {best.candidate} was promoted in the same run")
                self._record_gate(task, decision, alias)
            if best is not None:
                figures = {k: getattr(best, k) for k in ("metric", "candidate_value", "incumbent_value", "eval_sha256")}
                self._move_alias(task, alias, best.candidate, "; ".join(best.reasons), {"gate": figures})
        return decisions

    def _clear_of_noise(self, task: str, best: GateDecision | None, passing: list[GateDecision]) -> GateDecision | None:
        """`best`, unless its lead over this run's passing reference adapter (SFT, trained on the gold labels alone) is
        within the draw of the eval rows (`core.evaluation.paired`): then the reference."""
        metrics = self.metrics(task, best.candidate) if best is not None else {}
        if not within_noise(metrics):
            return best
        reference = next((d for d in passing if d.candidate.split("/")[0] == metrics["paired"]["reference"]), None)
        if reference is None:
            return best
        note = paired_note(best.candidate, metrics)
        best.reasons.append(f"its lead is not clear: {note}")
        reference.reasons.append(f"kept over {best.candidate}: {note}")
        return reference

    def _record_gate(self, task: str, decision: GateDecision, alias: str) -> None:
        path = self.path(task, decision.candidate) / "gate.json"
        record = json.loads(path.read_text()) if path.exists() else []
        record.append(asdict(decision) | {"alias": alias, "at": datetime.now(UTC).isoformat()})
        atomic_write_text(path, json.dumps(record, indent=2))

    def rollback(self, task: str, alias: str = "production") -> str | None:
        """Point `alias` back at what it held before its last promotion; return the new target."""
        with self._lock(task):
            if not self._alias_state(task)["stacks"].get(alias):
                raise RegistryError(f"{task}: nothing to roll back for {alias!r}")
            self._move_alias(task, alias, None, "rollback")
            return self.aliases(task).get(alias)


def _checked_name(name: str, what: str) -> str:
    """A task name that is one folder name: no separators, no '.', '..' or hidden folders (names come from requests)."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise RegistryError(f"{what} {name!r} is not a valid name (letters, digits, _ . -; not starting with a dot)")
    return name
