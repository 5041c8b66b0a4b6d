"""The search loop: open the search folder, run steps until ``advance`` says done, finish."""

from __future__ import annotations

import contextlib
import time

from rich.console import Console

from .. import distributed, rundir, runs
from ..console import make_console
from ..models import create_model
from ..train import TrainConfig
from .config import AutotuneConfig, resume_diff
from .outputs import AutotuneResult, finish, write_steps
from .state import SearchDir, SearchState, advance, arch_blocks, num_blocks
from .step import run_step


class SearchDidNotConverge(RuntimeError):
    """The search ran ``max_steps`` steps and still found conflicts."""


def _start_arch(base: TrainConfig) -> dict:
    from ..data import dataset_info
    from ..train import resolve_model_kwargs

    kw = resolve_model_kwargs(base.model, dict(base.model_kwargs), dataset_info(base.dataset))
    arch = create_model(base.model, **kw).arch()
    if num_blocks(arch) < 1:
        raise ValueError(
            f"the start architecture has no blocks ({arch_blocks(arch)}): the search removes "
            "blocks, so start with at least one (e.g. --start-blocks 3,12,41,3)."
        )
    return arch


def open_search(
    store: SearchDir,
    cfg: AutotuneConfig,
    base: TrainConfig,
    *,
    resume: bool,
    force: bool,
    lock: rundir.RunLock | None = None,
) -> SearchState:
    """The state to continue from: the stored one (``resume``, same config outside the
    runtime fields), or a new one (refused over an existing search unless ``force``, which
    removes only the files a search writes, and only in a folder marked as this tool's run:
    ``lock.marker``). The folder is marked once accepted."""
    main = distributed.is_main()
    out = store.out
    if out.exists() and not out.is_dir():
        raise runs.RunDirError(f"--out {out} is a file, not a directory.")
    own = store.state_path.exists()
    exists = own and store.started()  # else a search that failed before training: start afresh
    if not own and store.owned_files() and not force:
        raise runs.RunDirError(
            f"{out} holds auto-tune files ({', '.join(p.name for p in store.owned_files())}) "
            "but no autotune_state.json: pass --force to replace them, or choose another --out."
        )
    if not own and store.owned_files() and lock is not None and lock.marker is None:
        raise runs.RunDirError(
            f"{out} holds {', '.join(p.name for p in store.owned_files()[:6])} but no "
            f"{rundir.MARKER}: it is not a run of this tool, so --force deletes nothing there. "
            "Choose another --out."
        )
    if exists and not (resume or force):
        raise runs.RunDirError(
            f"{out} already holds an auto-tune run; pass --resume to continue it or --force to "
            "start over (its files are replaced)."
        )
    if lock is not None:
        lock.mark()  # accepted
    if resume and exists:
        st = store.load()
        diff = resume_diff(st.config, cfg)
        if diff:
            raise runs.RunDirError(
                f"{out} was started with other settings ({'; '.join(diff)}). Resume with the "
                "same settings (threads, device, data_dir may change), or start a new search "
                "in another --out."
            )
        distributed.barrier()
        return st
    distributed.barrier()  # every rank has looked at `out` before rank 0 changes it
    arch = _start_arch(base)
    st = SearchState(config=cfg.to_dict(), start_arch=arch, arch=arch)
    if main:
        if out.is_dir() and (own or force):
            store.clear()
        out.mkdir(parents=True, exist_ok=True)
        store.save(st)
    distributed.barrier()  # rank 0's clean-up and state file are done before any rank reads
    return st


def autotune(
    cfg: AutotuneConfig,
    *,
    resume: bool = False,
    force: bool = False,
    console: Console | None = None,
) -> AutotuneResult:
    """Run (or resume) the search; see the package docstring. ``result.status`` is
    "diverged" when a step's training diverged (the search ends at that step)."""
    from ..train import resolve_device

    base = TrainConfig.from_dict(cfg.train)
    base.validate()
    distributed.init(resolve_device(base.device))  # torchrun: join the process group
    main = distributed.is_main()
    console = (console or make_console()) if main else make_console(quiet=True)
    store = SearchDir(cfg.out)
    # One process per search folder (rank 0 holds the lock for the whole run under torchrun).
    hold = rundir.locked(store.out, "cbundles autotune", mark=False)
    with hold if main else contextlib.nullcontext() as lock:
        return _search(store, cfg, base, resume=resume, force=force, console=console, lock=lock)


def _search(
    store: SearchDir,
    cfg: AutotuneConfig,
    base: TrainConfig,
    *,
    resume: bool,
    force: bool,
    console: Console,
    lock: rundir.RunLock | None = None,
) -> AutotuneResult:
    main = distributed.is_main()
    st = open_search(store, cfg, base, resume=resume, force=force, lock=lock)
    t_start = time.perf_counter() - st.wall_time
    while not st.done:
        if len(st.steps) >= cfg.max_steps:
            raise SearchDidNotConverge(
                f"auto-tune did not converge within max_steps={cfg.max_steps}; its steps are "
                f"in {store.out}."
            )
        outcome = run_step(len(st.steps), st, base, cfg, store, console)
        st = advance(st, outcome, cfg.restart)
        st.wall_time = time.perf_counter() - t_start
        if main:
            store.save(st)
            write_steps(store.out, st.steps)
    # Costs, plots and report on rank 0; every rank returns rank 0's result.
    return distributed.run_on_main(finish, cfg, st, store.out, base, console)
