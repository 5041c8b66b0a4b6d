"""train(): one run into its run directory (locked for the whole run), fresh or resumed."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .. import distributed, runs
from ..data import dataset_info
from ..probes import resolve_points
from ..report import plural
from ..rundir import RunDir, open_run
from .components import (
    arch_of,
    build_model,
    load_splits,
    make_optimizer,
    resolve_device,
    resolve_model_kwargs,
    seed_everything,
    set_rng_state,
    w_max,
)
from .config import (
    RUNTIME_FIELDS,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    config_defaults,
    jsonable,
)
from .epoch import best_metric, run_epoch
from .recorder import Recorder
from .state import BundleMeter, TrainState, call_hooks
from .summary import epoch_line, log, new_row, print_summary, summarize

# Everything `train` writes into a run directory: --force removes exactly these.
TRAIN_OWNED = (*runs.RUN_FILES, *runs.RUN_DIRS, "report.html", "accuracy.png", "bundles.png")


def describe_run(run_dir: Path) -> str:
    """'model fnn, dataset mnist, 3/10 epochs' for the run found in ``run_dir``."""
    try:
        c = runs.load_config(run_dir)
        done = len(runs.load_metrics(run_dir)) - 1 if (run_dir / runs.METRICS_JSONL).exists() else 0
        return (
            f"model {c.get('model')}, dataset {c.get('dataset')}, {done}/{c.get('epochs')} epochs"
        )
    except runs.RunDirError:
        return "an unreadable or partial run"


def open_train_run(config: TrainConfig, resume: bool, force: bool) -> RunDir:
    """Lock ``config.out`` and check it for a fresh run, a resume or an overwrite (the old
    run is cleared only when the new one is about to write: RunDir.pending_clear)."""
    run_dir = Path(config.out)
    rd = open_run(
        run_dir,
        command="cbundles train",
        resume=resume,
        force=force,
        config=config.to_dict(),
        owned=TRAIN_OWNED,
        runtime_keys=RUNTIME_FIELDS,
        defaults=config_defaults(),
        describe=describe_run(run_dir) if runs.is_run_dir(run_dir) else None,
        defer_clear=True,
    )
    if resume and not runs.checkpoint_path(run_dir, "last").is_file():
        rd.close()
        raise runs.RunDirError(
            f"nothing to resume: {run_dir} has no {runs.CHECKPOINTS}/last.pt (the run "
            "stopped before its first checkpoint). Start it again with --force."
        )
    return rd


def train(
    config: TrainConfig,
    callbacks: Iterable = (),
    model: nn.Module | None = None,
    optimizer_state: dict | None = None,
    *,
    resume: bool = False,
    force: bool = False,
) -> TrainResult:
    """Train ``config`` into the run directory ``config.out``; see the package docstring.

    model: a ready model (e.g. a pruned one for a warm restart) instead of
      ``create_model(config.model, **config.model_kwargs)``; config.model/model_kwargs are
      then set from ``model.arch()``. optimizer_state: an optimizer state_dict to start from.
    resume: continue from checkpoints/last.pt (only runtime fields of the config may differ).
    force: overwrite a run already in ``config.out`` (only the files a run writes are removed).
    The run directory is locked (rundir.open_run) from the checks to the return: a second train
    into it, or a --resume while it runs, is refused with RunInUseError.
    Raises ValueError / RunDirError / DatasetError for bad input, OSError when the disk fills
    mid-run (the last completed epoch stays resumable); KeyboardInterrupt leaves the last
    completed epoch's checkpoint in place. A NaN/Inf loss ends the run with status
    "diverged" and keeps the last good checkpoint. Under torchrun every rank calls it with the
    same arguments (rank 0 holds the lock and writes).
    """
    t_start = time.perf_counter()
    config = dataclasses.replace(config, model_kwargs=dict(config.model_kwargs))
    config.validate()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    # torchrun: join the process group; a CUDA device becomes this rank's GPU.
    device = distributed.init(resolve_device(config.device))
    world = distributed.world_size()
    if config.batch_size < world:
        raise ValueError(
            f"batch_size {config.batch_size} is smaller than the {world} processes: batch_size "
            "is the global batch, split over the ranks; use at least one sample per rank."
        )
    info = dataset_info(config.dataset)  # ValueError for unknown datasets
    if model is None:
        config.model_kwargs = resolve_model_kwargs(config.model, config.model_kwargs, info)
    else:
        arch = arch_of(model)
        config.model = arch.get("name") or arch["class"]
        config.model_kwargs = {k: v for k, v in arch.items() if k != "name"}
    config.model_kwargs = jsonable(config.model_kwargs)

    held: list[RunDir] = []  # rank 0's open run directory (the lock stays in this process)

    def open_on_main() -> bool:
        held.append(open_train_run(config, resume, force))
        return True

    distributed.run_on_main(open_on_main)  # a refusal on rank 0 is raised on every rank
    try:
        return _train_locked(
            config, callbacks, model, optimizer_state, resume, device, info, held, t_start
        )
    finally:
        for rd in held:
            rd.close()


def _train_locked(config, callbacks, model, optimizer_state, resume, device, info, held, t_start):
    world, main = distributed.world_size(), distributed.is_main()
    run_dir = Path(config.out)
    ckpt = runs.load_checkpoint(run_dir, "last", map_location="cpu") if resume else None
    if ckpt is not None and config.epochs < int(ckpt["epoch"]):
        raise ValueError(
            f"{run_dir} has completed {plural(int(ckpt['epoch']), 'epoch')}; --epochs "
            f"{config.epochs} would "
            f"shrink it. Resume with --epochs {int(ckpt['epoch'])} or more, or start a new run "
            "in another --out."
        )
    train_ds, val_ds, test_ds = load_splits(config)

    seed_everything(config.seed)  # before the model is built: the init is a function of seed
    if model is None:
        model = build_model(config.model, config.model_kwargs)
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise runs.RunDirError(
                f"the checkpoint in {run_dir} does not fit the model: {e}"
            ) from e
    if config.measure_samples > 0:  # before anything is written: say what the model lacks
        try:
            resolve_points(model, None, config.measure_kind)
        except ValueError as e:
            fix = (
                "use a model with at least one block or hidden layer"
                if callable(getattr(model, "probe_points", None))
                else "give the model a probe_points(kind=None) method (ARCHITECTURE.md, probe "
                "points)"
            )
            raise ValueError(
                f"{e} The bundle metric needs at least one: {fix}, or train without the metric "
                "(measure_samples=0, --samples 0)."
            ) from e
    model.to(device).train()
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    # DDP (under torchrun) broadcasts rank 0's weights; every rank built the same ones anyway.
    train_model = distributed.wrap_model(model, device, sync_bn=config.sync_bn)
    if config.sync_bn and world > 1 and device.type != "cuda":
        log(config, "sync_bn is ignored on CPU: BatchNorm uses each rank's batch slice")
    optimizer = make_optimizer(model.parameters(), config)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    elif optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    # Every rank has looked at the run directory (checks, resume) before rank 0 changes it.
    distributed.barrier()
    if main:
        for rd in held:
            if rd.pending_clear:
                rd.clear()
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.write_json(run_dir / runs.CONFIG, config.to_dict())
        runs.write_json(run_dir / runs.ARCH, arch_of(model, config.model, config.model_kwargs))

    state = TrainState(
        config, model, optimizer, run_dir, device, train_ds, test_ds, info.num_classes
    )
    state.train_model = train_model
    state.val_ds = val_ds
    callbacks = list(callbacks)
    if config.measure_samples > 0:
        callbacks.insert(0, BundleMeter(config.measure_all_layers, config.measure_every))
    best = {"metric": best_metric(config), "value": None, "epoch": None, "test_acc": None}
    if ckpt is not None:
        state.epoch, state.resumed = int(ckpt["epoch"]), True
        state.metrics, state.layer_rows = list(ckpt["metrics"]), list(ckpt["layers"])
        best = {**best, **ckpt["best"]}
        if best["value"] is None and best["metric"] == "test_acc":  # an older checkpoint
            best["value"] = best["test_acc"]
        set_rng_state(ckpt["rng"])
        log(config, f"resuming {run_dir} after epoch {state.epoch}")
    recorder = Recorder(
        run_dir, config, purge_step=state.epoch + 1 if resume else None, enabled=main
    )

    status, message = "completed", ""
    try:
        if not state.resumed:
            t0 = time.perf_counter()
            state.row = new_row(0)
            state.row["w_max"] = w_max(model)
        call_hooks(callbacks, "on_train_start", state)
        if not state.resumed:
            state.row["epoch_time"] = time.perf_counter() - t0
            state.metrics.append(state.row)
            recorder.checkpoint(state, best, is_best=False)  # epoch 0: something to resume from
            recorder.rows(state, state.row)
            log(config, epoch_line(state.row, config.epochs))
        state.row = None
        while not state.stopped and state.epoch < config.epochs:
            state.epoch += 1
            call_hooks(callbacks, "on_epoch_start", state)
            if state.stopped:
                state.epoch -= 1  # this epoch never ran
                break
            row, is_best = run_epoch(state, best)
            state.row = row
            call_hooks(callbacks, "on_epoch_end", state)
            row["epoch_time"] += time.perf_counter() - row.pop("_t0")
            state.metrics.append(row)
            # Checkpoints before the metric files: a kill in between leaves rows one epoch
            # behind the checkpoint (a resume rewrites them), never an epoch without one.
            recorder.checkpoint(state, best, is_best)
            recorder.rows(state, row)
            state.row = None
            log(config, epoch_line(row, config.epochs))
        if state.stopped:
            status, message = "stopped", state.stop_reason
    except TrainingDiverged as e:
        status, message = "diverged", str(e)
        log(config, f"[diverged] {e}")
    finally:
        recorder.close()

    call_hooks(callbacks, "on_train_end", state)
    summary = summarize(state.metrics, model, config, status, message)
    summary["world_size"] = world  # processes that shared each global batch of batch_size
    summary["best_checkpoint"] = {k: best.get(k) for k in ("metric", "value", "epoch")}
    # This invocation's whole time: data, model construction, every epoch, files.
    summary["total_time"] = time.perf_counter() - t_start
    if main:
        runs.write_json(run_dir / runs.SUMMARY, summary)
        if config.progress:
            print_summary(summary, run_dir)
    distributed.barrier()  # what rank 0 wrote is there when train returns on any rank
    return TrainResult(run_dir, status, message, summary, state.metrics, model)
