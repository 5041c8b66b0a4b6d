"""lesion_run: the study on a training run directory, its outputs written."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import rundir, runs
from ..measurespec import MeasureSpec
from .cache import CACHE_FILE
from .config import LesionConfig, LesionResult
from .outputs import print_lesion, write_outputs
from .study import lesion_study


def lesion_run(
    run_dir: str | Path,
    cfg: LesionConfig,
    out: str | Path | None = None,
    *,
    checkpoint: str = "last",
    data_dir: str | None = None,
    device: str = "cpu",
    threads: int | None = 1,
    progress: bool = True,
    report: bool = True,
) -> LesionResult:
    """The study on a training run directory's model (arch.json + checkpoint; an auto-tune
    folder stands for its final step): the run's dataset, training subset (train_limit), test
    subset (test_limit; cfg.test_limit overrides it, resolve_test_limit), lr and batch size;
    with progress, a headline naming the test set (describe_test_set) and progress lines;
    writes every output into ``out`` (default RUN_DIR/lesion, locked while the
    study runs), prints the tables and builds report.html."""
    from ..autotune import final_run_dir
    from ..data import iterate, load_dataset
    from ..train import TrainConfig, resolve_device, split_validation

    run_dir = final_run_dir(run_dir)  # an auto-tune folder stands for its final step
    tc = TrainConfig.from_dict(runs.load_config(run_dir))
    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    model, ckpt = runs.load_model(run_dir, checkpoint, map_location=dev)
    # the run's lr, batch size and probe kind (the metric's resolution), unless given
    spec = cfg.measure_spec(MeasureSpec.from_config(tc))
    data_dir = data_dir or tc.data_dir
    # the samples the run trained on: train_limit, then without its validation split
    full = load_dataset(tc.dataset, "train", data_dir, limit=tc.train_limit)
    train_ds, _ = split_validation(full, tc.val_split, tc.val_seed)
    limit, source = resolve_test_limit(cfg, tc)
    test_ds = load_dataset(tc.dataset, "test", data_dir, limit=limit)
    if len(train_ds) < cfg.samples:
        raise ValueError(
            f"the run trained on {len(train_ds)} samples; --samples {cfg.samples} is more."
        )
    train_xy = next(iterate(train_ds, cfg.samples, shuffle=False, augment=False, device=dev))
    test_xy = next(iterate(test_ds, len(test_ds), shuffle=False, augment=False, device=dev))
    test_set = {"samples": len(test_ds), "limit": limit, "source": source}
    test_set["run_test_limit"] = tc.test_limit
    test_set["text"] = describe_test_set(len(test_ds), limit, source, tc.test_limit)
    out = Path(out) if out is not None else run_dir / "lesion"
    with rundir.locked(out, "cbundles lesion"):  # one study per folder (the cache is shared)
        return _study(
            run_dir, out, model, ckpt, tc, cfg, spec, train_xy, test_xy, checkpoint, progress,
            report, test_set,
        )  # fmt: skip


def resolve_test_limit(cfg: LesionConfig, tc) -> tuple[int | None, str]:
    """The test samples the study scores lesions on, and where the figure comes from:
    cfg.test_limit when given ("given"; 0 = the whole split), else the run's own test_limit
    ("run"; None = the whole split), so the study sees the test subset the run was scored on."""
    if cfg.test_limit is None:
        return tc.test_limit, "run"
    return cfg.test_limit or None, "given"


def describe_test_set(n: int, limit: int | None, source: str, run_limit: int | None) -> str:
    """The headline's account of the test set, e.g. "test set: 500 samples (the run's
    --test-limit)" or "test set: 2000 samples (--test-limit 2000 given; the run used 500)"."""
    run = "the whole split" if run_limit is None else str(run_limit)
    if source == "run":
        why = "the whole split, as the run" if limit is None else "the run's --test-limit"
    elif limit is None:
        why = f"the whole split, --test-limit 0 given; the run used {run}"
    else:
        why = f"--test-limit {limit} given; the run used {run}"
    return f"test set: {n} samples ({why})"


def _study(
    run_dir, out, model, ckpt, tc, cfg, spec, train_xy, test_xy, checkpoint, progress, report,
    test_set,
):  # fmt: skip
    if progress:  # the headline: what is studied, on which test samples and why
        print(
            f"lesion study of {run_dir} ({checkpoint} checkpoint, epoch {ckpt['epoch']}, "
            f"{tc.dataset}): {test_set['text']}; {cfg.samples} training samples for the "
            "conflict signals",
            flush=True,
        )
    res = lesion_study(model, train_xy, test_xy, cfg, out / CACHE_FILE, progress, spec=spec)
    res.summary["measure"]["source"] = cfg.measure_source("run")
    res.summary.update(
        test_set=test_set,
        run_dir=str(run_dir),
        checkpoint=checkpoint,
        epoch=int(ckpt["epoch"]),
        dataset=tc.dataset,
        model=runs.load_arch(run_dir),
        # train.py's figure (a fraction, mean of the last epochs on the run's test subset)
        run_test_acc=(
            runs.load_summary(run_dir).get("test_acc")
            if (run_dir / runs.SUMMARY).exists()
            else None
        ),
    )
    write_outputs(res, out)
    if progress:
        print_lesion(res)
    if report:
        from ..runreport import build_report

        build_report(out)
    return res
