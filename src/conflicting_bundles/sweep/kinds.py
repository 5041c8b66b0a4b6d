"""The built-in trial kinds: how a sweep builds, runs and reads a training run, an FNN grid cell
(the same cell as ``cbundles grid``: grid.py), an auto-tune search and a lesion study."""

from __future__ import annotations

import copy
from pathlib import Path

from .. import runs
from .plan import apply_params, field_names, set_path, train_config
from .registry import Trial, TrialKind, register_kind
from .spec import SweepSpec

AUTOTUNE_FINAL = "autotune.json"  # autotune.state.SUMMARY
LESION_FINAL = "lesion_summary.json"  # lesion.outputs.SUMMARY_JSON


# ------------------------------------------------------------------------------------ build
def build_train(spec: SweepSpec, params: dict) -> dict:
    cfg = copy.deepcopy(spec.base)
    if spec.kind == "grid-cell":
        cfg.setdefault("model", "fnn")
    apply_params(params, cfg, set(), None)
    return train_config(spec, cfg, f"trial {params}")


def build_autotune(spec: SweepSpec, params: dict) -> dict:
    from ..autotune import AutotuneConfig

    cfg = copy.deepcopy(spec.base)
    own = field_names(AutotuneConfig) - {"train"}
    unknown = sorted(set(cfg) - own - {"train"})
    if unknown:
        raise ValueError(
            f"base: unknown auto-tune field(s) {', '.join(unknown)}; valid: "
            f"{', '.join(sorted(own))} and train (the training config)."
        )
    apply_params(params, cfg, own, "train")
    cfg["train"] = train_config(spec, cfg.get("train", {}), f"trial {params}")
    try:
        AutotuneConfig(**cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"trial {params}: {e}") from None
    return cfg


LESION_KEYS = {"run", "checkpoint", "train", "lesion", "data_dir", "device", "threads"}


def build_lesion(spec: SweepSpec, params: dict) -> dict:
    from ..lesion import LesionConfig

    cfg = copy.deepcopy(spec.base)
    unknown = sorted(set(cfg) - LESION_KEYS)
    if unknown:
        raise ValueError(
            f"base: unknown lesion key(s) {', '.join(unknown)}; valid: {', '.join(LESION_KEYS)} "
            "(LesionConfig fields go under `lesion`)."
        )
    if ("run" in cfg) == ("train" in cfg):
        raise ValueError(
            "base of a lesion sweep needs exactly one of `run` (a trained run directory) or "
            "`train` (a training config: each trial trains its own model first)."
        )
    lesion_fields = field_names(LesionConfig)
    for key, v in params.items():
        if "." in key or key in LESION_KEYS:
            set_path(cfg, key, v)
        elif key in lesion_fields:
            cfg.setdefault("lesion", {})[key] = v
            if key == "seed" and "train" in cfg:
                cfg["train"]["seed"] = v  # a repeat trains its own model too
        elif "train" in cfg:
            apply_params({key: v}, cfg, set(), "train")
        else:
            raise ValueError(
                f"grid key {key!r} is not a LesionConfig field, and the trials train no model "
                f"(base has `run`); LesionConfig fields: {', '.join(sorted(lesion_fields))}."
            )
    try:
        LesionConfig(**cfg.get("lesion", {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"trial {params}: lesion: {e}") from None
    cfg.setdefault("threads", max(1, int(spec.resources.cpus)))
    if "train" in cfg:
        cfg["train"] = train_config(spec, cfg["train"], f"trial {params}")
    else:
        from ..autotune import final_run_dir

        try:  # an auto-tune folder stands for its final step
            cfg["run"] = str(final_run_dir(Path(cfg["run"]).expanduser().resolve()))
        except runs.RunDirError as e:
            raise ValueError(f"base.run: {e}") from None
        if not runs.is_run_dir(cfg["run"]):
            raise ValueError(f"base.run: {cfg['run']} holds no training run ({runs.CONFIG}).")
    return cfg


# ------------------------------------------------------------------------------- run and row
def train_into(tcfg: dict, d: Path) -> None:
    """Train ``tcfg`` into ``d``, resuming its checkpoint when an earlier attempt left one."""
    from ..train import TrainConfig, train

    resume = runs.checkpoint_path(d, "last").is_file() and (d / runs.CONFIG).is_file()
    train(TrainConfig.from_dict({**tcfg, "out": str(d)}), resume=resume, force=not resume)


def _run_train(trial: Trial) -> None:
    train_into(trial.config, Path(trial.dir))


TRAIN_ROW_KEYS = (
    "status",
    "epochs_completed",
    "params",
    "test_acc",
    "test_acc_std",
    "best_test_acc",
    "final_train_acc",
    "num_bundles_final",
    "bundle_entropy_init",
    "bundle_entropy_final",
    "bundle_entropy_mean",
    "train_time",
)


def _row_train(trial: Trial) -> dict:
    s = runs.load_summary(trial.dir)
    return {k: s.get(k) for k in TRAIN_ROW_KEYS}


def _run_grid_cell(trial: Trial) -> None:
    from ..grid import finish_cell, train_or_resume
    from ..train import TrainConfig

    tc = TrainConfig.from_dict({**trial.config, "out": trial.dir})
    train_or_resume(tc)
    finish_cell(Path(trial.dir), tc.measure_samples, keep_checkpoints=True)


def _grid_cell_finished(trial: Trial) -> bool:
    from ..grid import cell_finished

    return cell_finished(trial.dir)  # summary.json and the per-layer figures


def _row_grid_cell(trial: Trial) -> dict:
    """grid.csv's row of the cell (grid.cell_row), so a sweep of cells and `cbundles grid`
    give the same columns."""
    from ..grid import cell_row

    kw = trial.config.get("model_kwargs", {})
    row = cell_row(trial.dir, kw.get("width"), kw.get("depth"))
    row.pop("run_dir", None)
    return row


def _plot_grid_cells(spec: SweepSpec, rows: list[dict], summary: list[dict], out: Path) -> None:
    from ..grid import plot_grid

    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("width") is not None and r.get("depth") is not None:
            cells.setdefault((r["width"], r["depth"]), []).append(r)
    if not cells:
        return
    merged = []
    for (w, d), rs in cells.items():
        accs = [r["test_acc"] for r in rs if r.get("test_acc") is not None]
        merged.append(
            {
                "width": w,
                "depth": d,
                "test_acc": sum(accs) / len(accs) if accs else None,
                "conflicting": any(r.get("conflicting") for r in rs),
                "conflicting_init": any(r.get("conflicting_init") for r in rs),
            }
        )
    plot_grid(merged, out / "sweep.png", title=f"sweep {out.name}: mean test accuracy (%)")


def _run_autotune(trial: Trial) -> None:
    from rich.console import Console

    from ..autotune import AutotuneConfig, autotune

    d = Path(trial.dir)
    cfg = AutotuneConfig.from_dict({**trial.config, "out": str(d)})
    resume = (d / "autotune_state.json").is_file()
    autotune(cfg, resume=resume, force=not resume, console=Console(quiet=True))


def _row_autotune(trial: Trial) -> dict:
    s = runs.read_json(Path(trial.dir) / AUTOTUNE_FINAL)
    cost = s.get("cost", {})
    return {
        "status": s.get("status", "completed"),  # "diverged" when a step's training diverged
        "start_blocks": str(s.get("start_blocks")),
        "final_blocks": str(s.get("final_blocks")),
        "num_prunes": s.get("num_prunes"),
        "total_epochs": s.get("total_epochs"),
        "test_acc": s.get("test_acc"),
        "params_start": cost.get("start", {}).get("params"),
        "params_final": cost.get("final", {}).get("params"),
        "wall_time_s": s.get("wall_time_s"),
    }


def _run_lesion(trial: Trial) -> None:
    from ..lesion import LesionConfig, lesion_run

    c, d = trial.config, Path(trial.dir)
    run_dir = c.get("run")
    if run_dir is None:  # the trial trains its own model first
        run_dir = d / "train"
        if not (run_dir / runs.SUMMARY).is_file():
            train_into(c["train"], run_dir)
    lesion_run(
        run_dir,
        LesionConfig(**c.get("lesion", {})),
        d,
        checkpoint=c.get("checkpoint", "last"),
        data_dir=c.get("data_dir"),
        device=c.get("device", "cpu"),
        threads=c.get("threads", 1),
        progress=False,
        report=False,
    )


def _row_lesion(trial: Trial) -> dict:
    s = runs.read_json(Path(trial.dir) / LESION_FINAL)
    crit = s.get("primary_criterion", "reference")
    by = s.get("by_criterion", {}).get(crit, {})
    removable = by.get("removable", {})
    return {
        "status": "completed",
        "criterion": crit,
        "base_test_acc": s.get("base_test_acc"),
        "num_blocks": s.get("num_blocks"),
        "num_flagged": by.get("num_flagged"),
        "removable_all": s.get("removable_all_blocks", {}).get("fraction_of_blocks"),
        "removable_conflicting": removable.get("conflicting", {}).get("fraction_of_blocks"),
        "removable_non_conflicting": removable.get("non-conflicting", {}).get("fraction_of_blocks"),
    }


register_kind(
    TrialKind(
        "train",
        runs.SUMMARY,
        build_train,
        _run_train,
        _row_train,
        ("test_acc", "bundle_entropy_final", "num_bundles_final"),
    )
)
register_kind(
    TrialKind(
        "grid-cell",
        runs.SUMMARY,
        build_train,
        _run_grid_cell,
        _row_grid_cell,
        ("test_acc", "entropy_last_init", "entropy_last"),
        plot=_plot_grid_cells,
        is_finished=_grid_cell_finished,
    )
)
register_kind(
    TrialKind(
        "autotune",
        AUTOTUNE_FINAL,
        build_autotune,
        _run_autotune,
        _row_autotune,
        ("test_acc", "final_blocks", "num_prunes", "total_epochs"),
    )
)
register_kind(
    TrialKind(
        "lesion",
        LESION_FINAL,
        build_lesion,
        _run_lesion,
        _row_lesion,
        ("removable_all", "removable_conflicting", "base_test_acc", "num_flagged"),
    )
)
