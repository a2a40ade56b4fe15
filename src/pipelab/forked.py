"""A map over items by one forked process per core, when forking is safe in this process; else here, in order."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any


def fork_map(function: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """``[function(item) for item in items]``, computed by one forked process per core (at most one per item).

    A fork copies this process as it is, locks included, so it is used only when no other Python thread runs
    here (MLflow's, a server's, a pytest-xdist worker's): such a thread could hold a lock that no child would
    ever see released. Otherwise, and on one core, the items are computed here one by one. Native pools
    (OpenBLAS's, started by numpy's import) re-initialise in a forked child, as torch's DataLoader relies on.
    `function` must be importable by name (a module-level function), and what it returns picklable.
    """
    items = list(items)
    workers = min(len(items), len(os.sched_getaffinity(0)))
    if workers > 1 and threading.active_count() == 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(function, items))
    return [function(item) for item in items]
