"""Which process of a data-parallel run this is. Every rank of an `accelerate launch` (DDP) run trains the same model on
its share of each batch and takes the same decisions (validation scores are computed from identical weights); only
rank 0 writes what the run produces: the adapter, the best adapter seen, the learning curve.

    rank, processes = data_parallel()      # (0, 1) in a plain process
    if main_process(): save(...)
"""

from __future__ import annotations

import os


def data_parallel() -> tuple[int, int]:
    """(this process's rank, processes) of a data-parallel run (`accelerate launch` and torchrun set both); (0, 1) alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def main_process() -> bool:
    """Whether this process writes what a training run produces (every rank trains; rank 0 alone saves)."""
    return data_parallel()[0] == 0
