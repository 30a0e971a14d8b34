"""Benchmark pages from the benchmarks' own JSON: what `distill-slm bench NAME --record` wrote, never hand-typed.

`--record` writes `docs/results/<name>.json` (the figures, the command, the date, the machine); the docs
site's build (mkdocs, this module is its hook: `mkdocs.yml` `hooks:`) replaces the `<!-- results -->` marker
of a page with one table per recorded file, so the published figures are the measured ones.

    path = record("sft-throughput", figures, "distill-slm bench sft-throughput")
    markdown = results_markdown(Path("docs/results"))
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

from core.common.files import atomic_write_text

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
MARKER = "<!-- results -->"


def record(name: str, figures: dict, command: str, folder: Path = RESULTS) -> Path:
    """Write one benchmark's figures with what produced them, fsynced and renamed into place."""
    entry = {
        "benchmark": name,
        "command": command,
        "recorded": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "figures": figures,
    }
    path = folder / f"{name}.json"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(entry, indent=1, allow_nan=False) + "\n")
    return path


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [pair for key, inner in value.items() for pair in _flatten(inner, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        return [(prefix, ", ".join(str(v) for v in value))]
    return [(prefix, json.dumps(value) if isinstance(value, (list, dict)) else str(value))]


def _generalize_table(figures: dict) -> list[str]:
    """Per task, each variant's primary metric with its interval and training seconds; then the summary."""
    per_task = figures["per_task"]
    variants = [v for v in ("base", "sft", "selftrain", "kd_strong", "promoted") if any(v in t["variants"] for t in per_task.values())]
    lines = ["| task | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for task, result in per_task.items():
        cells = []
        for variant in variants:
            got = result["variants"].get(variant)
            if got is None:
                cells.append("—")
                continue
            text = f"{got[result['primary_metric']]:.3f}"
            if got.get("ci"):
                text += f" ({got['ci'][0]:.2f}-{got['ci'][1]:.2f})"
            if "train_s" in got:
                text += f", {got['train_s']:.0f} s"
            if "variant" in got:
                text += f" [{got['variant']}]"
            cells.append(text)
        lines.append(f"| `{task}` | " + " | ".join(cells) + " |")
    return lines


def results_markdown(folder: Path = RESULTS) -> str:
    """One section per recorded benchmark, newest first."""
    entries = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    out = []
    for entry in sorted(entries, key=lambda e: e["recorded"], reverse=True):
        out += [f"### {entry['benchmark']}", "", f"`{entry['command']}` — {entry['recorded']}, {entry['machine']}", ""]
        if entry["benchmark"].startswith("generalize"):
            out += _generalize_table(entry["figures"]) + [""]
        else:
            out += ["| figure | value |", "|---|---|"] + [f"| {key} | {value} |" for key, value in _flatten(entry["figures"])] + [""]
    return "\n".join(out) if out else "No benchmark has been recorded yet (`distill-slm bench NAME --record`)."


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    return markdown.replace(MARKER, results_markdown(Path(config["docs_dir"]) / "results")) if MARKER in markdown else markdown
