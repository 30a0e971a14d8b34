"""Is a variant's lead over the run's SFT adapter more than the draw of the eval rows? A paired bootstrap says.

One run trains several adapters and the gate promotes the best on the eval split. On a small split the best is often
best by chance: on the held-out `clinic` task (117 eval rows) self-training led SFT on the split and scored 0.05 below
it on fresh rows (`docs/results/generalize-clinic-selftrain.json`). The adapter trained on the gold labels alone
(`REFERENCE`) is the one the others must beat: each other adapter gets its gain over it with a paired percentile-bootstrap
interval (the same resamples of rows for both, so what the two variants share cancels), and a lead whose interval reaches
zero does not displace it (`Registry.promote_best`, `bench generalize`'s promoted variant). The rule is a statistical
one, not a figure fitted to any task: nothing in it was tuned.

    paired_gains(kind, eval_rows, results, adapters=["sft", "selftrain"])
    results["selftrain"]["paired"]  # {"reference": "sft", "gain": 0.021, "interval": [-0.03, 0.07], "level": 0.95}
    within_noise(results["selftrain"])  # True: the SFT adapter stays the one to promote
"""

from __future__ import annotations

import numpy as np

from core.common.rows import Example

REFERENCE = "sft"  # the adapter trained on the gold labels alone: a variant trained on more must beat it clearly
LEVEL = 0.95
RESAMPLES = 2000


def paired_gains(kind, rows: list[Example], results: dict[str, dict], adapters: list[str], reference: str = REFERENCE) -> None:
    """Add `paired` (gain over `reference` in the primary metric, its bootstrap interval) to each adapter's metrics in
    `results` (all scored by `kind` on `rows`). Nothing is added without the reference, or where the kind cannot
    recompute its primary metric from the predictions (`TaskKind.resampled_primary`)."""
    if reference not in results or reference not in adapters or not rows:
        return
    picks = np.random.default_rng(0).integers(0, len(rows), size=(RESAMPLES, len(rows)))  # seeded: same rows, same interval
    theirs = kind.resampled_primary(rows, results[reference], picks)
    if theirs is None:
        return
    primary = kind.cfg.promotion.primary_metric
    tail = (1 - LEVEL) / 2 * 100
    for name in adapters:
        if name == reference or "predictions" not in results.get(name, {}):
            continue
        lead = kind.resampled_primary(rows, results[name], picks) - theirs
        results[name]["paired"] = {
            "reference": reference,
            "metric": primary,
            "gain": round(results[name][primary] - results[reference][primary], 4),
            "interval": [round(float(np.percentile(lead, tail)), 4), round(float(np.percentile(lead, 100 - tail)), 4)],
            "level": LEVEL,
        }


def within_noise(metrics: dict) -> bool:
    """True when a variant's lead over its reference (`paired`) could be the draw of the rows: the interval's low end
    is not above zero. False without a paired comparison."""
    paired = metrics.get("paired")
    return bool(paired) and paired["interval"][0] <= 0


def paired_note(name: str, metrics: dict) -> str:
    """One line for reports and gate decisions: `name`'s gain over its reference and what it means."""
    paired = metrics["paired"]
    low, high = paired["interval"]
    verdict = "within the draw of the rows" if within_noise(metrics) else "clear of the draw of the rows"
    return (
        f"{name} vs {paired['reference']}: {paired['metric']} {paired['gain']:+.4f} "
        f"(paired {paired['level']:.0%} interval {low:+.4f} to {high:+.4f}; {verdict})"
    )
