"""Part 2: images/s of train() against a bare PyTorch loop, and the bundle check's share.

resnet-120 (blocks [3, 12, 41, 3]) at full width on MNIST-shaped input, batch 64, RAdam +
Lookahead (``make_optimizer``), augmentation (random crop + brightness) on both sides; float32
and bf16 autocast, channels_last off and on. The bare loop keeps the training set on the device
and augments there; it also runs once with the data on the CPU (one copy per batch, as
``train()`` does), which shows whether the input pipeline is the bottleneck. ``train()`` runs
two epochs of ``speed_steps`` steps and the second is timed (its ``train_time`` row), with the
per-epoch bundle check of ``measure_samples`` samples; the check's share is reported for that
short epoch and scaled to a full MNIST epoch (938 steps). Targets: >= 0.9x, check <= 2%.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from conflicting_bundles import create_model
from conflicting_bundles.data import load_dataset, num_batches
from conflicting_bundles.data.augment import BRIGHTNESS, brightness, random_crop
from conflicting_bundles.train import TrainConfig, make_optimizer, train

from .common import Settings, attempt, timed, write_part

CONFIGS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))
FULL_EPOCH_STEPS = num_batches(60_000, 64)


def train_config(
    s: Settings,
    device: torch.device,
    out: Path,
    *,
    epochs: int,
    steps: int | None = None,
    amp: str | None = None,
    channels_last: bool = False,
    dataset: str | None = None,
    model: str = "resnet",
    **extra,
) -> TrainConfig:
    """The check's TrainConfig: resnet/plain of ``s.resnet_blocks`` at ``s.width_mult``."""
    limit = steps * s.batch_size if steps is not None else s.train_limit
    return TrainConfig(
        model=model,
        model_kwargs={"blocks": list(s.resnet_blocks), "width_mult": s.width_mult},
        dataset=dataset or s.datasets[0],
        data_dir=s.data_dir,
        epochs=epochs,
        batch_size=s.batch_size,
        train_limit=limit,
        test_limit=s.test_limit,
        measure_samples=s.measure_samples,
        device=str(device),
        out=str(out),
        amp=amp,
        channels_last=channels_last,
        tensorboard=False,
        progress=False,
        threads=None,
        **extra,
    )


def bare_loop(
    s: Settings, device: torch.device, amp: str | None, channels_last: bool, data_on_device: bool
) -> dict:
    """images/s of the loop anyone would write (warm-up steps excluded)."""
    ds = load_dataset(s.datasets[0], "train", data_dir=s.data_dir, limit=s.speed_steps * 64 * 2)
    images = ds.images.to(device) if data_on_device else ds.images  # uint8 (N, 1, 28, 28)
    labels = ds.labels.to(device)
    torch.manual_seed(0)
    model = create_model("resnet", blocks=list(s.resnet_blocks), width_mult=s.width_mult,
                         in_shape=[1, 28, 28]).to(device)  # fmt: skip
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model.parameters(), TrainConfig())
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=g)

    def step(i: int) -> None:
        j = order[(i * 64) % len(order) : (i * 64) % len(order) + 64]
        x = images[j.to(images.device)].to(device).float() / 255.0
        x = brightness(random_crop(x, 2, g), BRIGHTNESS, g)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels[j.to(labels.device)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for i in range(3):
        step(i)
    sec, _ = timed(device, lambda: [step(i) for i in range(s.speed_steps)])
    return {"images_per_s": s.speed_steps * 64 / sec, "steps": s.speed_steps, "seconds": sec}


def train_speed(s: Settings, device: torch.device, amp: str | None, channels_last: bool) -> dict:
    """images/s of train()'s second epoch, and its bundle check's time."""
    with tempfile.TemporaryDirectory() as d:
        cfg = train_config(
            s, device, Path(d), epochs=2, steps=s.speed_steps, amp=amp,
            channels_last=channels_last, test_eval=False,
        )  # fmt: skip
        res = train(cfg)
    row = res.metrics[-1]
    steps = num_batches(cfg.train_limit, cfg.batch_size)
    per_step = row["train_time"] / steps
    check = row.get("measure_time") or 0.0
    return {
        "images_per_s": cfg.train_limit / row["train_time"],
        "train_time_s": row["train_time"],
        "epoch_time_s": row["epoch_time"],
        "check_s": check,
        "check_share_of_this_epoch": check / row["epoch_time"],
        "check_share_of_full_epoch": check / (check + per_step * FULL_EPOCH_STEPS),
        "per_step_s": per_step,
    }


def run(s: Settings, device: torch.device) -> dict:
    body: dict = {"configs": []}
    for amp, cl in CONFIGS:
        if s.left() < 60 and not s.smoke:
            body["configs"].append({"amp": amp, "channels_last": cl, "skipped": "time budget"})
            continue
        name = f"{amp}{'+channels_last' if cl else ''}"
        print(f"  speed {name}", flush=True)
        rec: dict = {"amp": amp, "channels_last": cl}
        amp_arg = "bf16" if amp == "bf16" else None
        bare = attempt(rec, "bare", lambda a=amp_arg, c=cl: bare_loop(s, device, a, c, True))
        ours = attempt(rec, "train", lambda a=amp_arg, c=cl: train_speed(s, device, a, c))
        if isinstance(bare, dict) and isinstance(ours, dict):
            rec["ratio_train_vs_bare"] = ours["images_per_s"] / bare["images_per_s"]
            rec["meets_0.9x"] = rec["ratio_train_vs_bare"] >= 0.9
            rec["check_meets_2pct"] = ours["check_share_of_full_epoch"] <= 0.02
        body["configs"].append(rec)
    pipe: dict = {}
    on_dev = attempt(pipe, "data_on_device", lambda: bare_loop(s, device, None, False, True))
    on_cpu = attempt(pipe, "data_on_cpu", lambda: bare_loop(s, device, None, False, False))
    if isinstance(on_dev, dict) and isinstance(on_cpu, dict):
        pipe["device_over_cpu"] = on_dev["images_per_s"] / on_cpu["images_per_s"]
        pipe["input_pipeline_bottleneck"] = pipe["device_over_cpu"] > 1.05
    body["input_pipeline"] = pipe
    fp32 = body["configs"][0].get("train") if body["configs"] else None
    if isinstance(fp32, dict):
        body["fp32_train_images_per_s"] = fp32["images_per_s"]
        s.per_step_s = fp32["per_step_s"]  # the scale part sizes its runs with it
    write_part(s, "speed", device, body)
    return body
