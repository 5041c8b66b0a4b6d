"""Recorder: the files one run writes per epoch (metrics, layers, TensorBoard, checkpoints)."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from .. import runs
from .components import rng_state
from .config import TrainConfig
from .state import TrainState

TAGS = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "val_loss": "val/loss",
    "val_acc": "val/acc",
    "test_loss": "test/loss",
    "test_acc": "test/acc",
    "num_bundles": "bundles/num_bundles",
    "bundle_entropy": "bundles/entropy",
    "conflicting_layers": "bundles/conflicting_layers",
    "w_max": "weights/w_max",
    "epoch_time": "time/epoch",
    "train_time": "time/train",
    "measure_time": "time/measure",
}


class Recorder:
    """Writes metrics/layers files, TensorBoard scalars and checkpoints of one run.

    Checkpoint order: best.pt (when the epoch is the best so far) before last.pt. A kill
    between the two leaves best.pt one epoch ahead of last.pt, never behind: resuming redoes
    that epoch bit-exactly and rewrites both, and a reader of best.pt (prune, measure) always
    gets the best completed epoch. Each checkpoint's own ``epoch`` says what it holds."""

    def __init__(
        self, run_dir: Path, config: TrainConfig, purge_step: int | None, enabled: bool = True
    ):
        self.run_dir = run_dir
        self.config = config
        self.enabled = enabled  # False on the ranks other than 0 under torchrun: writes nothing
        self.writer = None
        if config.tensorboard and enabled:
            from torch.utils.tensorboard import SummaryWriter  # lazy: a heavy import

            self.writer = SummaryWriter(str(run_dir / runs.TB_DIR), purge_step=purge_step)

    def rows(self, state: TrainState, new_row: dict) -> None:
        if not self.enabled:
            return
        runs.write_csv(self.run_dir / runs.METRICS_CSV, state.metrics)
        runs.write_jsonl(self.run_dir / runs.METRICS_JSONL, state.metrics)
        if state.layer_rows:
            runs.write_csv(self.run_dir / runs.LAYERS_CSV, state.layer_rows)
        if self.writer is not None:
            e = new_row["epoch"]
            for k, v in new_row.items():
                if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(TAGS.get(k, f"other/{k}"), v, e)
            for r in state.layer_rows:
                if r["epoch"] == e:
                    self.writer.add_scalar(f"layers/{r['layer']}/entropy", r["entropy"], e)
                    self.writer.add_scalar(f"layers/{r['layer']}/num_bundles", r["num_bundles"], e)
            self.writer.flush()

    def checkpoint(self, state: TrainState, best: dict, is_best: bool) -> None:
        if not self.enabled:
            return
        ckpt = {
            "epoch": state.epoch,
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "metrics": state.metrics,
            "layers": state.layer_rows,
            "best": best,
            "rng": rng_state(),
            "config": state.config.to_dict(),
        }
        buf = io.BytesIO()
        torch.save(ckpt, buf)  # serialise once, write up to three files
        data = buf.getvalue()
        if is_best:  # before last.pt: see the class docstring
            runs.atomic_write_bytes(runs.checkpoint_path(self.run_dir, "best"), data)
        runs.atomic_write_bytes(runs.checkpoint_path(self.run_dir, "last"), data)
        if self.config.keep_every_checkpoint:
            runs.atomic_write_bytes(runs.checkpoint_path(self.run_dir, str(state.epoch)), data)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
