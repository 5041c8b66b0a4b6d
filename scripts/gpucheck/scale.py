"""Part 3: the paper's scale, as far as the time budget reaches.

- resnet-120 (blocks [3, 12, 41, 3], width 1) trained on each dataset for as many epochs as fit
  its share of the budget (a callback stops the run after the epoch that would overrun it);
- the lesion study (docs/method.md §6) on each trained net: 15 repeats, conflicting /
  non-conflicting / all / position-matched groups, the reference criterion flags; lesion sets
  up to ``max_k`` blocks (chosen from the measured cost of one evaluation), so the removable
  fractions are lower bounds capped at max_k / 59;
- the auto-tune from plain-120 on the first dataset: does the reference trigger fire, what does
  it remove, what does the found net reach (epochs per step chosen to fit);
- a 2-process nccl DDP run when the machine has 2 GPUs (else the reason it did not run).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from conflicting_bundles import runs
from conflicting_bundles.autotune import AutotuneConfig, autotune
from conflicting_bundles.data import iterate, load_dataset
from conflicting_bundles.lesion import LesionConfig, accuracy, lesion_run
from conflicting_bundles.train import train

from .common import Settings, attempt, timed, write_part
from .speed import train_config


class BudgetStop:
    """train() callback: stop after the epoch that leaves too little time for another."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds
        self.t0 = time.perf_counter()
        self.epoch_s = 0.0

    def on_epoch_start(self, state) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, state) -> None:
        self.epoch_s = time.perf_counter() - self.t0
        if time.perf_counter() + self.epoch_s > self.deadline:
            state.stop(f"time budget: {state.epoch} epochs fit")


def train_budgeted(s: Settings, device, dataset: str, out: Path, seconds: float) -> dict:
    """As many epochs as fit ``seconds``; on a subset of the training set (say so) when not
    even one epoch of the whole split fits."""
    stop = BudgetStop(seconds)
    cfg = train_config(s, device, out, epochs=s.train_epochs, dataset=dataset)
    cfg.train_limit = s.fit_limit(seconds, 1)
    res = train(cfg, callbacks=[stop])
    last = res.metrics[-1]
    return {
        "run_dir": str(out),
        "train_limit": cfg.train_limit,
        "status": res.status,
        "epochs": int(last["epoch"]),
        "epoch_s": stop.epoch_s,
        "test_acc": res.summary.get("test_acc"),
        "train_acc": last.get("train_acc"),
        "bundle_entropy": last.get("bundle_entropy"),
        "num_bundles": last.get("num_bundles"),
        "bundle_layer": last.get("bundle_layer"),
        "wall_s": sum(r.get("epoch_time") or 0.0 for r in res.metrics),
    }


def choose_max_k(s: Settings, device, run_dir: Path, dataset: str, seconds: float) -> dict:
    """The largest lesion set size whose study fits ``seconds`` (one evaluation timed)."""
    model, _ = runs.load_model(run_dir, "last", map_location=device)
    test = load_dataset(dataset, "test", data_dir=s.data_dir, limit=s.test_limit)
    x, y = next(iterate(test, len(test), shuffle=False, augment=False, device=device))
    accuracy(model, x, y, 500)  # warm-up
    t, _ = timed(device, lambda: accuracy(model, x, y, 500))
    blocks = len(model.block_names())
    budget_evals = seconds / max(t, 1e-6) - 2 * blocks  # singles + margin
    k = int(budget_evals // (4 * s.lesion_repeats))
    return {"eval_s": t, "blocks": blocks, "max_k": max(1, min(s.lesion_max_k, k, blocks))}


def lesion(s: Settings, device, run_dir: Path, max_k: int) -> dict:
    cfg = LesionConfig(repeats=s.lesion_repeats, max_k=max_k, test_limit=s.test_limit, samples=64)
    res = lesion_run(
        run_dir, cfg, run_dir / "lesion", device=str(device), threads=None,
        progress=False, report=False,
    )  # fmt: skip
    ref = res.summary["by_criterion"]["reference"]
    return {
        "base_acc": res.base_acc,
        "blocks": len(res.blocks),
        "max_k": max_k,
        "reference_num_flagged": ref["num_flagged"],
        "reference_flagged_blocks": ref["flagged_blocks"],
        "reference_removable_within_tolerance": ref["removable"],
        "all_blocks_removable_within_tolerance": res.summary["removable_all_blocks"],
        "flags_by_criterion": res.summary["flags_by_criterion"],
        "summary": res.summary,
        "note": f"lesion sets of at most {max_k} blocks: removable fractions are lower bounds "
        f"capped at {max_k}/{len(res.blocks)}",
    }


def autotune_plain(s: Settings, device, out: Path, seconds: float, epoch_s: float) -> dict:
    per_step = max(1, s.autotune_steps)
    epochs = max(1, min(s.autotune_epochs, math.floor(seconds / max(per_step * epoch_s, 1e-6))))
    cfg = train_config(s, device, out / "steps-train", epochs=epochs, model="plain")
    cfg.train_limit = s.fit_limit(seconds / per_step, epochs)
    at = AutotuneConfig(out=str(out), check_epochs=epochs, max_steps=per_step, train=cfg.to_dict())
    res = autotune(at, force=True)
    steps = [
        {k: v for k, v in st.items() if k not in ("entropies", "block_names")} for st in res.steps
    ]
    start = steps[0]["num_blocks"] if steps else None
    final = steps[-1]["num_blocks"] if steps else None
    return {
        "epochs_per_step": epochs,
        "train_limit": cfg.train_limit,
        "status": res.status,
        "trigger_fired": bool(steps) and any(st.get("checks") for st in steps) and final != start,
        "blocks_start": start,
        "blocks_final": final,
        "steps": steps,
        "final_arch": res.final_arch,
        "final_test_acc": res.test_acc,
        "total_epochs": res.total_epochs,
        "wall_s": res.wall_time,
    }


DDP_SCRIPT = """
import json, sys
from conflicting_bundles.train import TrainConfig, train
cfg = TrainConfig(**json.loads(sys.argv[1]))
train(cfg)
"""


def ddp(s: Settings, device, out: Path) -> dict:
    n = torch.cuda.device_count() if device.type == "cuda" else 0
    if n < 2:
        return {"ran": False, "reason": f"the machine has {n} CUDA device(s); DDP needs 2"}
    cfg = train_config(s, "cuda", out, epochs=1, steps=200)
    script = out.parent / "ddp_train.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(script), json.dumps(cfg.to_dict())]  # fmt: skip
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30.0, s.left() - 10))
    summary = runs.load_summary(out) if (out / runs.SUMMARY).exists() else {}
    return {
        "ran": True,
        "returncode": p.returncode,
        "wall_s": time.perf_counter() - t,
        "world_size": summary.get("world_size"),
        "test_acc": summary.get("test_acc"),
        "stderr_tail": p.stderr.strip().splitlines()[-8:],
    }


def run(s: Settings, device) -> dict:
    body: dict = {"datasets": {}}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        total = max(10.0, s.left() - 15.0)
        share = 0.7 * total / len(s.datasets)  # the rest: the auto-tune and DDP
        epoch_s = 0.0
        for ds in s.datasets:
            rec: dict = {}
            body["datasets"][ds] = rec
            t_ds = time.perf_counter()
            run_dir = root / f"resnet-{ds}"
            tr = attempt(rec, "train", lambda ds=ds, r=run_dir: train_budgeted(
                s, device, ds, r, 0.6 * share))  # fmt: skip
            if not isinstance(tr, dict):
                continue
            epoch_s = max(epoch_s, tr["epoch_s"])
            left = share - (time.perf_counter() - t_ds)
            k = attempt(rec, "lesion_cost", lambda ds=ds, r=run_dir, t=left: choose_max_k(
                s, device, r, ds, t))  # fmt: skip
            if isinstance(k, dict):
                attempt(rec, "lesion", lambda r=run_dir, m=k["max_k"]: lesion(s, device, r, m))
        left = max(5.0, s.left() - 20.0)
        attempt(body, "autotune_plain", lambda: autotune_plain(
            s, device, root / "autotune", left, epoch_s or 1.0))  # fmt: skip
        attempt(body, "ddp", lambda: ddp(s, device, root / "ddp" / "run"))
    write_part(s, "scale", device, body)
    return body
