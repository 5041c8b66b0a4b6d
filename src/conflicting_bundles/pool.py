"""Local worker processes that die with their parent, shared by the grid and the sweep.

``run_pool(fn, jobs, workers, done)`` runs ``fn(*args)`` for each job in spawned processes and
reports each result in this process. Each worker watches its parent's pid and exits when the
parent is gone (a ``kill -9`` or the OOM killer gives the parent no chance to stop them). This
module is the bottom layer: it imports nothing from the package.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

__all__ = ["run_pool", "watch_parent"]

WATCH_INTERVAL_S = 0.5


def watch_parent(parent_pid: int) -> None:
    """Worker initializer: a daemon thread that ends this process once ``parent_pid`` is no
    longer its parent (the parent died and the worker was re-parented)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(WATCH_INTERVAL_S)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def run_pool(
    fn: Callable,
    jobs: Sequence[tuple[Hashable, tuple]],
    workers: int,
    done: Callable[[Hashable, object, BaseException | None], None],
) -> None:
    """``fn(*args)`` for every ``(key, args)`` of ``jobs`` in ``workers`` spawned processes
    (``fn`` top level, so that it pickles); ``done(key, result, error)`` as each finishes,
    in this process. Workers exit when this process dies; Ctrl-C cancels what has not
    started."""
    if workers <= 1:
        for key, args in jobs:
            try:
                done(key, fn(*args), None)
            except Exception as e:  # one failed job is reported, the others go on
                done(key, None, e)
        return
    with ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=watch_parent,
        initargs=(os.getpid(),),
    ) as pool:
        futures = {pool.submit(fn, *args): key for key, args in jobs}
        try:
            for f in as_completed(futures):
                try:
                    result, error = f.result(), None
                except Exception as e:
                    result, error = None, e
                done(futures[f], result, error)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
