"""What an architecture costs: parameters, inference latency and training memory, measured.

Latency is the median wall time of repeated forward passes (eval mode, no_grad) after warm-up.
Training memory on CUDA is the peak of ``torch.cuda.max_memory_allocated`` over one training step;
on CPU, where torch has no allocator statistics, it is the bytes of the tensors autograd saves
for the backward pass of one step (activations) plus parameters, gradients and optimizer state
(RAdam's two moments + Lookahead's slow weights = 3 more copies), stated as such.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from .modelmode import evaluating


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def latency_ms(
    model: nn.Module, in_shape: tuple[int, ...], batch: int, repeats: int = 20, warmup: int = 3
) -> float:
    """Median forward time in milliseconds for a batch of ``batch`` inputs of ``in_shape``."""
    p = next(model.parameters())
    x = torch.randn(batch, *in_shape, device=p.device, dtype=p.dtype)
    times = []
    with evaluating(model):
        for i in range(warmup + repeats):
            if p.is_cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if p.is_cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def train_memory_bytes(
    model: nn.Module, in_shape: tuple[int, ...], batch: int = 64, num_classes: int = 10
) -> dict:
    """Memory of one training step at ``batch`` (see the module docstring for the method)."""
    p = next(model.parameters())
    x = torch.randn(batch, *in_shape, device=p.device, dtype=p.dtype)
    y = torch.randint(0, num_classes, (batch,), device=p.device)
    params = sum(q.numel() * q.element_size() for q in model.parameters())
    saved = 0
    seen: set[int] = set()

    def pack(t: torch.Tensor):
        nonlocal saved
        key = t.untyped_storage().data_ptr()
        if key not in seen:  # count each storage once (views share it)
            seen.add(key)
            saved += t.untyped_storage().nbytes()
        return t

    was = model.training
    model.train()
    if p.is_cuda:
        torch.cuda.reset_peak_memory_stats(p.device)
        base = torch.cuda.memory_allocated(p.device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    out = {
        "params_bytes": params,
        "activation_bytes": saved,
        "estimated_train_bytes": params * 5 + saved,  # params + grads + 3 optimizer copies
        "method": "cpu-estimate",
    }
    if p.is_cuda:
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(p.device) - base
        out["method"] = "cuda-peak"
    model.zero_grad(set_to_none=True)
    model.train(was)
    return out


def cost_report(
    model: nn.Module, in_shape: tuple[int, ...], num_classes: int, repeats: int = 20
) -> dict:
    """Parameters, latency at batch 1 and 64, and training memory of ``model``."""
    mem = train_memory_bytes(model, in_shape, 64, num_classes)
    return {
        "params": param_count(model),
        "latency_ms_b1": latency_ms(model, in_shape, 1, repeats),
        "latency_ms_b64": latency_ms(model, in_shape, 64, repeats),
        "train_memory_mb": mem.get("cuda_peak_bytes", mem["estimated_train_bytes"]) / 2**20,
        "activation_memory_mb": mem["activation_bytes"] / 2**20,
        "memory_method": mem["method"],
    }
