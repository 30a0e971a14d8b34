"""Training methods, one module each: its config section, what it needs and one entry point, `train`.

| method | module | config section | needs (`TaskConfig.needs`) | trains on |
|---|---|---|---|---|
| sft | `core.methods.sft` | `training` | - | the labeled rows |
| selftrain | `core.methods.selftrain` | `self_training` | sft (the labeler) | the labeled rows + the SFT adapter's confident pool answers |
| kd | `core.methods.kd` | `kd` | sft, when the deliberate teacher runs it | the teacher's answers on the pool |
| dpo | `core.methods.dpo` | `dpo` | sft, with `dpo.from_sft` | preference pairs (the user's, or built on-policy) |

Every method trains through `core.training` (TRL trainers) and shares its recipe (`training`). What one
method needs of another is declared once, in `TaskConfig.needs`: the config refuses a need missing
from `methods`, and `order` puts each method after the ones it needs, so the flow walks the methods
in that order and a method with no needs could be submitted beside the others.

    for method in order(cfg):
        ...
    adapter_dir, stats = sft.train(cfg, rows, validation, checkpoint_dir, out_dir)
"""

from __future__ import annotations

from types import ModuleType

from core.common.config import TaskConfig
from core.methods import dpo, kd, selftrain, sft
from core.methods.base import run_dir

METHODS: dict[str, ModuleType] = {"sft": sft, "selftrain": selftrain, "kd": kd, "dpo": dpo}


def order(cfg: TaskConfig) -> list[str]:
    """`cfg.methods` in the order they run: each after the methods it needs, otherwise sft, selftrain, kd, dpo (DPO
    builds its pairs with the teacher's answers when KD asked for them first)."""
    done: list[str] = []
    pending = [method for method in METHODS if method in cfg.methods]
    while pending:
        # The config guarantees every need is among the methods, and no method needs itself through another.
        ready = next(m for m in pending if set(cfg.needs(m)) <= set(done))
        done.append(ready)
        pending.remove(ready)
    return done


def waves(cfg: TaskConfig) -> list[list[str]]:
    """`order(cfg)` cut into waves: a wave's methods need only methods of earlier waves, so they may train side by side
    (`scale.runner: ray`). DPO also waits for KD when both run: its pairs use the teacher's answers KD asked for."""
    result: list[list[str]] = []
    wave_of: dict[str, int] = {}
    for method in order(cfg):
        after = set(cfg.needs(method)) | ({"kd"} if method == "dpo" and "kd" in cfg.methods else set())
        wave = 1 + max((wave_of[m] for m in after), default=-1)
        wave_of[method] = wave
        if wave == len(result):
            result.append([])
        result[wave].append(method)
    return result


def check(cfg: TaskConfig) -> None:
    """Refuse a method the task's type cannot run (raise ConfigError naming the setting)."""
    for method in cfg.methods:
        METHODS[method].check(cfg)


__all__ = ["METHODS", "check", "order", "run_dir"]
