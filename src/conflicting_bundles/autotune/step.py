"""One step of the search: train (or resume, or reload) one architecture with the check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from .. import distributed, runs
from ..models import create_model
from ..report import plural
from ..train import TrainConfig, summarize, train
from .check import CHECKS, DECISION, DECISION_STATE, ConflictCheck
from .config import AutotuneConfig
from .state import SearchDir, SearchState, StepOutcome, arch_blocks, num_blocks
from .warm import warm_model


def stop_message(decision: dict) -> str:
    return f"conflicting bundles at epoch {decision['epoch']}: remove {decision['removed_names']}"


def repair_step(step_dir: Path) -> str | None:
    """A step killed after its decision.json but before its summary.json. When its last
    checkpoint reached the decision's epoch, only summary.json is missing: write it from the
    checkpoint, as train() would have ("completed"). Otherwise the check's epoch was never
    saved: drop the decision so that the resumed training redoes it ("retrain"). None when the
    step is not in that state."""
    dec_path = step_dir / DECISION
    if not dec_path.is_file() or (step_dir / runs.SUMMARY).is_file():
        return None
    decision = runs.read_json(dec_path)
    ckpt = runs.load_checkpoint(step_dir, "last")
    if int(ckpt["epoch"]) >= int(decision["epoch"]):
        config = TrainConfig.from_dict(runs.load_config(step_dir))
        model = create_model(**runs.load_arch(step_dir))
        summary = summarize(list(ckpt["metrics"]), model, config, "stopped", stop_message(decision))
        summary["world_size"] = distributed.world_size()
        best = ckpt.get("best") or {}
        summary["best_checkpoint"] = {k: best.get(k) for k in ("metric", "value", "epoch")}
        summary["total_time"] = summary.get("wall_time")  # the killed process's time is lost
        runs.write_json(step_dir / runs.SUMMARY, summary)
        return "completed"
    dec_path.unlink()
    (step_dir / DECISION_STATE).unlink(missing_ok=True)
    return "retrain"


def step_row(k: int, st: SearchState, step_dir: Path, status: str, summary: dict, decision):
    """The row of steps.csv/steps.json for step ``k``."""
    metrics = runs.load_metrics(step_dir)
    checks_path = step_dir / CHECKS
    checks = runs.read_json(checks_path) if checks_path.exists() else []
    row = {
        "step": k,
        "blocks": arch_blocks(st.arch),
        "num_blocks": num_blocks(st.arch),
        "restart": "warm" if st.warm else "fresh",
        "epochs_trained": max((int(r["epoch"]) for r in metrics), default=0),
        "status": status,
        "test_acc": summary.get("test_acc"),
        "params": summary.get("params"),
        "checks": len(checks),
        "unresolved_conflict": any("note" in c for c in checks),
    }
    if decision is not None:
        row.update(
            prune_epoch=decision["epoch"],
            removed=decision["removed_names"],
            guard=decision["guard"],
            entropies=decision["entropies"],
            block_names=decision["blocks"],
        )
    return row


def step_config(base: TrainConfig, st: SearchState, step_dir: Path) -> TrainConfig:
    offset = st.warm.offset if st.warm else 0
    return dataclasses.replace(
        base,
        out=str(step_dir),
        epochs=max(1, base.epochs - offset),
        model=st.arch["name"],
        model_kwargs={k: v for k, v in st.arch.items() if k != "name"},
    )


def run_step(
    k: int,
    st: SearchState,
    base: TrainConfig,
    cfg: AutotuneConfig,
    store: SearchDir,
    console: Console,
) -> StepOutcome:
    """Train step ``k`` (resuming its checkpoints), or read it back when it already decided."""
    step_dir = store.step(k)
    offset = st.warm.offset if st.warm else 0
    console.print(
        f"[bold]auto-tune step {k}[/]: blocks {arch_blocks(st.arch)}"
        + (f" (warm, {plural(offset, 'epoch')} carried)" if st.warm else "")
    )
    if distributed.is_main():
        repaired = repair_step(step_dir)
        if repaired:
            console.print(f"step {k} was interrupted after its decision: {repaired}")
    distributed.barrier()
    decision_path = step_dir / DECISION
    if not decision_path.exists():
        model, opt_state = (None, None)
        if st.warm:
            model, opt_state = warm_model(store.step(k - 1), st.warm)
        step_resume = runs.checkpoint_path(step_dir, "last").exists()
        res = train(
            step_config(base, st, step_dir),
            [ConflictCheck(cfg, epoch_offset=offset)],
            model=model,
            optimizer_state=opt_state,
            resume=step_resume,
            force=not step_resume,
        )
        status, summary = res.status, res.summary
        if status == "diverged":
            console.print(f"[red]step {k} diverged:[/] {escape(res.message)}")
    else:
        summary, status = runs.load_summary(step_dir), "stopped"
    decision = runs.read_json(decision_path) if decision_path.exists() else None
    return StepOutcome(step_row(k, st, step_dir, status, summary, decision), decision)
