"""Part 1: the metric, measure() and a training epoch give the same answer on the device.

- ``bundle_stats`` on the device against the CPU, on the very same float32 tensors: all rows
  distinct, ~10 bundles, rows that collapse under the reference transform, signed zeros, and
  real activations of the net (exact equality of ids, number of bundles and entropy expected:
  grouping is bitwise, entropy is float64 on counts).
- ``measure()`` of a briefly trained net on the device against the same weights on the CPU
  (TF32 off). Activations are computed by different kernels, so a bundle count may move when
  two samples sit within float rounding of the resolution; every layer is listed.
- One ``train()`` epoch twice on the device, same seed: identical weights and rows? Once with
  PyTorch's defaults and once under ``torch.use_deterministic_algorithms(True)``.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch

from conflicting_bundles import bundle_stats, create_model, measure
from conflicting_bundles.data import iterate, load_dataset
from conflicting_bundles.train import TIME_COLUMNS, TrainConfig, train

from .common import Settings, attempt, write_part
from .speed import train_config

CASES = ("distinct", "ten_bundles", "collapsed", "signed_zero", "activations")


def _cases(activations: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n, d = 2048, 1024
    protos = torch.randn(10, d, generator=g)
    signed = torch.zeros(n, 64)
    signed[torch.rand(n, 64, generator=g) < 0.5] = -0.0
    signed[: n // 2, 7] = 1.0
    return {
        "distinct": torch.randn(n, d, generator=g),
        "ten_bundles": protos[torch.randint(0, 10, (n,), generator=g)],
        "collapsed": torch.rand(n, d, generator=g) * 1e-6,  # all equal after the transform
        "signed_zero": signed,
        "activations": activations,
    }


def compare_stats(a: torch.Tensor, labels: torch.Tensor, device: torch.device) -> dict:
    """bundle_stats of ``a`` on the CPU and on ``device`` (reference and raw criteria)."""
    out = {"shape": list(a.shape)}
    for mode in ("reference", "raw"):
        kw = dict(w_max=1.3, mode=mode)
        c = bundle_stats(a, labels, **kw)
        d = bundle_stats(a.to(device), labels.to(device), **kw)
        out[mode] = {
            "num_bundles_cpu": c.num_bundles,
            "num_bundles_device": d.num_bundles,
            "entropy_cpu": c.entropy,
            "entropy_device": d.entropy,
            "equal": c.num_bundles == d.num_bundles
            and c.entropy == d.entropy
            and torch.equal(c.bundle_ids, d.bundle_ids.cpu()),
        }
    return out


def _block_output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, D) float32 output of the model's middle convolution on x (a forward hook)."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    got = []
    handle = convs[len(convs) // 2].register_forward_hook(lambda m, i, o: got.append(o.detach()))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        handle.remove()
    return got[0].reshape(len(x), -1).float().cpu()


def _short_training(model, x_all, y_all, device: torch.device, steps: int) -> None:
    from conflicting_bundles.train import make_optimizer

    opt = make_optimizer(model.parameters(), TrainConfig())
    model.train()
    for i in range(steps):
        j = torch.arange(i * 64, (i + 1) * 64) % len(y_all)
        loss = torch.nn.functional.cross_entropy(model(x_all[j]), y_all[j])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def compare_measure(s: Settings, device: torch.device) -> dict:
    ds = load_dataset(s.datasets[0], "train", data_dir=s.data_dir, limit=2048)
    x, y = next(iterate(ds, len(ds), shuffle=False, augment=False))
    torch.manual_seed(0)
    model = create_model("resnet", blocks=list(s.resnet_blocks), width_mult=s.width_mult,
                         in_shape=[1, 28, 28])  # fmt: skip
    model.to(device)
    _short_training(model, x.to(device), y.to(device), device, 10 if s.smoke else 200)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        n = min(512, len(y))
        on_dev = measure(model, [(x[:n].to(device), y[:n].to(device))], n_samples=n)
        model_cpu = model.to("cpu")
        on_cpu = measure(model_cpu, [(x[:n], y[:n])], n_samples=n)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    layers = [
        {
            "layer": a.name,
            "num_bundles_device": a.num_bundles,
            "num_bundles_cpu": b.num_bundles,
            "entropy_device": a.entropy,
            "entropy_cpu": b.entropy,
            "equal": a.num_bundles == b.num_bundles and a.entropy == b.entropy,
        }
        for a, b in zip(on_dev, on_cpu, strict=True)
    ]
    acts = _block_output(model_cpu, x[:n])
    return {
        "samples": n,
        "layers": len(layers),
        "layers_equal": sum(r["equal"] for r in layers),
        "all_equal": all(r["equal"] for r in layers),
        "per_layer": layers,
        "activations_for_stats": acts,  # removed before writing
        "labels_for_stats": y[:n],
    }


def _one_epoch(s: Settings, device: torch.device, out: Path) -> tuple[dict, list[dict]]:
    cfg = train_config(s, device, out, epochs=1, steps=8 if s.smoke else 100)
    res = train(cfg)
    weights = {k: v.detach().cpu().clone() for k, v in res.model.state_dict().items()}
    rows = [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in res.metrics]
    return weights, rows


def determinism(s: Settings, device: torch.device) -> dict:
    """Two one-epoch runs, twice: PyTorch's defaults, then deterministic algorithms in
    warn-only mode (so the run completes and every op without a deterministic kernel is
    named in ``nondeterministic_ops``)."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        for mode in ("default", "deterministic_algorithms"):
            prev = torch.are_deterministic_algorithms_enabled()
            try:
                torch.use_deterministic_algorithms(mode != "default", warn_only=True)

                def pair(mode=mode) -> dict:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        w1, r1 = _one_epoch(s, device, Path(d) / f"{mode}-a")
                        w2, r2 = _one_epoch(s, device, Path(d) / f"{mode}-b")
                    ops = sorted({str(w.message).split(" does not have")[0] for w in caught
                                  if "deterministic" in str(w.message)})  # fmt: skip
                    diff = [k for k in w1 if not torch.equal(w1[k], w2[k])]
                    return {
                        "weights_equal": not diff,
                        "tensors_differing": diff[:10],
                        "num_tensors_differing": len(diff),
                        "rows_equal": r1 == r2,
                        "nondeterministic_ops": ops,
                    }

                attempt(out, mode, pair)
            finally:
                torch.use_deterministic_algorithms(prev)
    out["note"] = (
        "PyTorch defaults allow non-deterministic cuDNN/cuBLAS kernels (e.g. convolution "
        "backward, atomics in scatter/index_add/bincount). The second pair runs under "
        "use_deterministic_algorithms(True, warn_only=True) with CUBLAS_WORKSPACE_CONFIG="
        ":4096:8; nondeterministic_ops lists the ops PyTorch has no deterministic kernel for."
    )
    return out


def run(s: Settings, device: torch.device) -> dict:
    body: dict = {}
    meas = attempt(body, "measure_device_vs_cpu", lambda: compare_measure(s, device))
    if isinstance(meas, dict):
        acts, labels = meas.pop("activations_for_stats"), meas.pop("labels_for_stats")
    else:
        acts, labels = torch.randn(512, 256), torch.arange(512) % 10
    stats: dict = {}
    for name, a in _cases(acts).items():
        y = labels if name == "activations" else torch.arange(len(a)) % 10
        attempt(stats, name, lambda a=a, y=y: compare_stats(a, y, device))
    body["bundle_stats_device_vs_cpu"] = stats
    body["bundle_stats_all_equal"] = all(
        isinstance(v, dict) and all(v.get(m, {}).get("equal") for m in ("reference", "raw"))
        for v in stats.values()
    )
    attempt(body, "epoch_determinism", lambda: determinism(s, device))
    write_part(s, "correctness", device, body)
    return body
