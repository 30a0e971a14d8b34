"""Benchmarks behind `distill-slm bench NAME`: each prints its figures and the ratio it is judged by.

Targets are checked here, by measurement on the machine at hand, never by timed tests.
"""

from __future__ import annotations

import importlib

# name -> module in this package; each module has `run(quick: bool, ...) -> dict`.
BENCHMARKS = {
    "calibrated": "calibrated",
    "schema": "schema",
    "idp": "idp",
    "sft-throughput": "sft_throughput",
    "demo": "demo",
    "service": "service",
    "kd": "kd",
    "kd-strong": "kd_strong",
    "small-data": "small_data",
    "generalize": "generalize",
    "teacher-throughput": "teacher_throughput",
    "dpo": "dpo",
    "codegen": "codegen",
    "drift": "drift",
    "generate": "generate",
    "base-models": "base_models",
    "scale": "scale",
    "serving": "serving",
    "gpu": "gpu",
}


def run_benchmark(name: str, quick: bool = False, **options) -> dict:
    return importlib.import_module(f"bench.{BENCHMARKS[name]}").run(quick=quick, **options)
