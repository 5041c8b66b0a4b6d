"""cost.py: parameter count, latency and training-memory figures of a model."""

from __future__ import annotations

import torch
from torch import nn

from conflicting_bundles.cost import cost_report, latency_ms, param_count, train_memory_bytes


def test_param_count_skips_frozen_parameters():
    m = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))  # 15 + 8
    assert param_count(m) == 23
    m[0].weight.requires_grad_(False)
    assert param_count(m) == 11


def test_latency_is_positive_and_restores_the_mode():
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).train()
    t = latency_ms(m, (1, 4, 4), batch=8, repeats=3, warmup=1)
    assert t > 0 and m.training


def test_train_memory_counts_saved_activations_once():
    """Linear(8, 32) -> ReLU -> Linear(32, 4) on a batch of 16 saves the input (16x8), the
    ReLU output (16x32, shared by ReLU's backward and the second Linear) and the first
    Linear's output used by ReLU's backward (at most one more 16x32): between 2 and 3
    float32 tensors of the hidden size plus the input."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    mem = train_memory_bytes(m, (8,), batch=16, num_classes=4)
    params = sum(p.numel() * 4 for p in m.parameters())
    assert mem["params_bytes"] == params
    assert 16 * (8 + 32) * 4 <= mem["activation_bytes"] <= 16 * (8 + 2 * 32 + 4) * 4 + 1024
    assert mem["estimated_train_bytes"] == 5 * params + mem["activation_bytes"]
    assert mem["method"] == "cpu-estimate"
    assert all(p.grad is None for p in m.parameters())  # no gradients left behind


def test_cost_report_keys_and_units():
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    r = cost_report(m, (1, 4, 4), num_classes=4, repeats=2)
    assert r["params"] == 68
    assert r["latency_ms_b1"] > 0 and r["latency_ms_b64"] > 0
    assert r["train_memory_mb"] * 2**20 >= 5 * 68 * 4
    assert r["memory_method"] == "cpu-estimate"
