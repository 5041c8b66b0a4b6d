"""Where trials run: one after the other in this process, in local worker processes, or as Ray
tasks. The grid and the sweep share the local pool (conflicting_bundles.pool).

Worker processes die with their parent: each watches its parent's pid and exits when the parent
is gone (a ``kill -9`` or the OOM killer gives the parent no chance to stop them).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import runs
from ..pool import run_pool, watch_parent
from .registry import Trial, TrialKind


# ------------------------------------------------------------------------------ one trial
def deterministic_errors() -> tuple[type[BaseException], ...]:
    """Errors in the input: a retry cannot fix them."""
    from ..data import DatasetError

    return (ValueError, TypeError, runs.RunDirError, DatasetError)


def head(trial: Trial, status: str) -> dict:
    return {"trial": trial.name, "status": status, **trial.params}


def execute(kind: TrialKind, trial: Trial) -> dict:
    """Run one trial (resuming what an earlier attempt left) and return its result row.

    Errors in the input (bad config, missing data, a refused resume) give a row with status
    "error": a retry cannot fix them. Any other exception propagates, so the trial is retried
    (by Ray, or by the serial executor)."""
    t0 = time.perf_counter()
    try:
        kind.run(trial)
        row = kind.row(trial)
    except deterministic_errors() as e:
        return {**head(trial, "error"), "error": f"{type(e).__name__}: {e}", "run_dir": trial.dir}
    first = head(trial, row.pop("status", "completed"))
    return {**first, **row, "time_s": time.perf_counter() - t0, "run_dir": trial.dir}


def failed_row(trial: Trial, err: BaseException) -> dict:
    cause = getattr(err, "cause", None) or err  # a RayTaskError carries the trial's exception
    msg = str(cause).strip().splitlines()
    return {
        **head(trial, "failed"),
        "error": f"{type(cause).__name__}: {msg[-1] if msg else ''}",
        "run_dir": trial.dir,
    }


def cached_row(kind: TrialKind, trial: Trial) -> dict:
    row = kind.row(trial)
    first = head(trial, row.pop("status", "completed"))
    return {**first, **row, "cached": True, "run_dir": trial.dir}


# ------------------------------------------------------------------------------ executors
def run_serial(kind: TrialKind, todo: list[Trial], retries: int, done: Callable) -> None:
    """Each trial in this process, up to 1 + ``retries`` attempts; ``done(trial, row)``."""
    for trial in todo:
        for attempt in range(retries + 1):
            try:
                row = execute(kind, trial)
                break
            except Exception as e:
                row = failed_row(trial, e)
                if attempt == retries:
                    break
        done(trial, row)


def run_ray(
    kind: TrialKind,
    todo: list[Trial],
    spec,
    ray_address: str | None,
    num_cpus: int | None,
    done: Callable,
    console,
) -> None:
    """Each trial as a Ray task with the spec's resources and retries; ``done(trial, row)``."""
    try:
        import ray
    except ImportError:
        raise ValueError(
            "Ray is not installed: `pip install 'conflicting-bundles[dist]'` (or "
            "`pip install 'ray[default]'`), or run the trials one by one with --serial."
        ) from None
    started = not ray.is_initialized()
    if started:
        if ray_address:
            ray.init(address=ray_address)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False)
    try:
        have = ray.cluster_resources()
        need = {"CPU": spec.resources.cpus, "GPU": spec.resources.gpus}
        short = {k: v for k, v in need.items() if v > have.get(k, 0.0)}
        if short:
            msg = (
                f"a trial asks for {need['CPU']:g} CPU and {need['GPU']:g} GPU but the Ray "
                f"cluster has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU"
            )
            if ray_address is None:
                raise ValueError(msg + "; lower `resources` in the spec.")
            console.print(f"[yellow]warning:[/] {msg}; trials wait until nodes join.")
        remote = ray.remote(execute).options(
            num_cpus=spec.resources.cpus,
            num_gpus=spec.resources.gpus,
            max_retries=spec.retries,
            retry_exceptions=True,  # our own exceptions too; input errors come back as rows
        )
        pending = {remote.remote(kind, t): t for t in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                trial = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as e:  # retries exhausted (RayTaskError, a dead worker, ...)
                    row = failed_row(trial, e)
                done(trial, row)
    finally:
        if started:
            ray.shutdown()


__all__ = [
    "cached_row",
    "deterministic_errors",
    "execute",
    "failed_row",
    "head",
    "run_pool",
    "run_ray",
    "run_serial",
    "watch_parent",
]
