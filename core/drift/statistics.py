"""Drift's two-sample tests, each with a p-value whose null comes from the data themselves (permutations, or the
standard tests): embedding MMD, out-of-vocabulary share, Kolmogorov-Smirnov, category counts, proportions, and
the Wilson interval. No model, no file: numbers in, `Signal`s and p-values out."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy import stats


@dataclass
class Signal:
    name: str  # input.embedding, input.length, ...
    statistic: float | None
    p_value: float | None  # None: reported, not tested
    detail: dict = field(default_factory=dict)


WORD = re.compile(r"[^\W\d_]+")


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


# -- tests ---------------------------------------------------------------------------------------
def mmd_test(reference: np.ndarray, window: np.ndarray, permutations: int, rng: np.random.Generator) -> tuple[float, float]:
    """Squared maximum mean discrepancy (RBF kernel, bandwidth the median pairwise distance) and its permutation p-value.

    All permutations at once: with s the +1/m, -1/n membership vector, MMD^2 = s'Ks, so P permutations cost one
    (m+n) x (m+n) by (m+n) x P product."""
    pooled = np.concatenate([reference, window]).astype(np.float64)
    sq = (pooled**2).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0)
    bandwidth = np.median(d2[np.triu_indices(len(pooled), 1)]) or 1.0
    kernel = np.exp(-d2 / bandwidth)
    m, n = len(reference), len(window)
    s = np.concatenate([np.full(m, 1 / m), np.full(n, -1 / n)])
    observed = float(s @ kernel @ s)
    shuffled = np.stack([rng.permutation(s) for _ in range(permutations)], axis=1)
    null = np.einsum("ip,ip->p", shuffled, kernel @ shuffled)
    return observed, float((1 + (null >= observed).sum()) / (1 + permutations))


def oov_test(reference: list[str], window: list[str], permutations: int, rng: np.random.Generator) -> tuple[float, float]:
    """Share of the window's words that no reference input holds, and its permutation p-value (reference and window
    inputs shuffled between the two sides, the vocabulary rebuilt from each permuted reference)."""
    tokens = [words(t) for t in reference + window]
    vocab_sets = [set(t) for t in tokens]
    m = len(reference)

    def share(ref_idx, win_idx) -> float:
        vocab = set().union(*(vocab_sets[i] for i in ref_idx))
        total = sum(len(tokens[i]) for i in win_idx)
        return sum(w not in vocab for i in win_idx for w in tokens[i]) / total if total else 0.0

    everyone = np.arange(len(tokens))
    observed = share(everyone[:m], everyone[m:])
    null = []
    for _ in range(permutations):
        order = rng.permutation(everyone)
        null.append(share(order[:m], order[m:]))
    return observed, float((1 + sum(v >= observed for v in null)) / (1 + permutations))


def ks_test(reference: list[float], window: list[float]) -> tuple[float, float]:
    result = stats.ks_2samp(reference, window)
    return float(result.statistic), float(result.pvalue)


def counts_test(reference: Counter, window: Counter, categories: list) -> tuple[float, float, float]:
    """Chi-squared test of two count vectors over `categories` (categories empty on both sides dropped) and the
    Jensen-Shannon distance of the two distributions."""
    table = np.array([[reference.get(c, 0) for c in categories], [window.get(c, 0) for c in categories]], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0.0
    chi2, p, _, _ = stats.chi2_contingency(table)
    p_ref, p_win = table[0] / table[0].sum(), table[1] / table[1].sum()
    mid = (p_ref + p_win) / 2
    js = math.sqrt(max(0.5 * (stats.entropy(p_ref, mid, base=2) + stats.entropy(p_win, mid, base=2)), 0.0))
    return float(chi2), float(p), js


def proportion_test(ref_hits: int, ref_n: int, win_hits: int, win_n: int, lower_only: bool = False) -> float:
    """p-value that the window's proportion differs from the reference's (or, `lower_only`, fell below it): Fisher's exact test."""
    table = [[ref_hits, ref_n - ref_hits], [win_hits, win_n - win_hits]]
    return float(stats.fisher_exact(table, alternative="greater" if lower_only else "two-sided").pvalue)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
