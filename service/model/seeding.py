"""Deterministic execution: fixed seeds, deterministic kernels, at most two threads."""

from __future__ import annotations

import os
import random

import numpy as np

MAX_THREADS = 2
# The network is small: one thread is as fast as two and does not spin-wait when the
# machine is busy. ZTML_TORCH_THREADS may raise it, up to MAX_THREADS.
DEFAULT_THREADS = 1


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, ask for deterministic algorithms, cap the threads.

    Args:
        seed: The seed used for every random number generator.
    """
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        threads = int(os.environ.get("ZTML_TORCH_THREADS", DEFAULT_THREADS))
    except ValueError:
        threads = DEFAULT_THREADS
    torch.set_num_threads(max(1, min(threads, MAX_THREADS)))
