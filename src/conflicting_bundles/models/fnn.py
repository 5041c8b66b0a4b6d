"""Fully connected network of docs/method.md §3:
flatten -> depth x [Linear(width) + ReLU] -> Linear(C).

Init follows the reference (Keras): hidden weights He-uniform (U(+-sqrt(6/fan_in)), i.e.
``kaiming_uniform_`` for ReLU), zero biases; the output layer uses Keras' default Dense init,
Glorot-uniform with zero bias. The init sets w_max, which enters the bundle metric.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..probes import ProbePoint
from .base import BlockNet, check_layers, check_size
from .registry import register_model

__all__ = ["FNN", "FNNConfig", "fnn"]


@dataclass(frozen=True)
class FNNConfig:
    width: int
    depth: int
    in_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W) of one sample; any shape is flattened
    num_classes: int = 10

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.in_shape)
        object.__setattr__(self, "in_shape", shape)
        if self.width < 1 or self.depth < 0:
            raise ValueError(
                f"fnn needs width >= 1 and depth >= 0, got {self.width}, {self.depth}."
            )
        if not shape or min(shape) < 1:
            raise ValueError(f"fnn in_shape must be positive sizes, e.g. (1, 28, 28); got {shape}.")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}.")


class Hidden(nn.Module):
    """Linear + ReLU; ``bypassed`` (lesion) makes it the identity. (N, in) -> (N, out)"""

    def __init__(self, fan_in: int, width: int):
        super().__init__()
        self.fc = nn.Linear(fan_in, width)
        nn.init.kaiming_uniform_(self.fc.weight, nonlinearity="relu")
        nn.init.zeros_(self.fc.bias)
        self.bypassed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.bypassed else F.relu(self.fc(x))


class FNN(BlockNet):
    """Blocks are the hidden layers "hidden.0".. ; probe kind "hidden" = output after ReLU."""

    name = "fnn"
    probe_kinds = ("hidden",)

    def __init__(self, config: FNNConfig):
        super().__init__()
        self.config = config
        self.in_features = math.prod(config.in_shape)
        w, d = config.width, config.depth
        check_layers(f"fnn {w}x{d}", d)
        n = (self.in_features + 1) * w + (d - 1) * (w + 1) * w + (w + 1) * config.num_classes
        n = n if d else (self.in_features + 1) * config.num_classes
        check_size(f"fnn {w}x{d}", n)
        sizes = [self.in_features] + [config.width] * config.depth
        self.hidden = nn.ModuleList(Hidden(sizes[i], sizes[i + 1]) for i in range(config.depth))
        self.head = nn.Linear(sizes[-1], config.num_classes)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, *in_shape) -> logits (N, C)"""
        if x.dim() < 1 or x[0].numel() != self.in_features:
            raise ValueError(
                f"fnn expects samples of {self.in_features} values (in_shape "
                f"{self.config.in_shape}), got input of shape {tuple(x.shape)}."
            )
        x = x.reshape(x.shape[0], -1)  # (N, D)
        for layer in self.hidden:
            x = layer(x)  # (N, width)
        return self.head(x)

    # ---------------------------------------------------------------- BlockNet interface
    def _block_modules(self) -> list[nn.Module]:
        return list(self.hidden)

    def block_info(self) -> list[dict]:
        return [
            {
                "name": f"hidden.{i}",
                "index": i,
                "stage": "hidden",
                "position_in_stage": i,
                "projecting": False,
                # the identity can stand in for a layer only when its widths match
                "lesionable": h.fc.in_features == h.fc.out_features,
                "in_features": h.fc.in_features,
                "out_features": h.fc.out_features,
            }
            for i, h in enumerate(self.hidden)
        ]

    def arch(self) -> dict:
        d = asdict(self.config)
        d["in_shape"] = list(d["in_shape"])
        return {"name": self.name, **d}

    def _points(self, kind: str) -> list[ProbePoint]:
        return [ProbePoint(f"hidden.{i}", h, kind) for i, h in enumerate(self.hidden)]

    def _rebuilt(self, keep: list[int]) -> FNN:
        return FNN(replace(self.config, depth=len(keep)))


@register_model
def fnn(
    width: int = 25,
    depth: int = 10,
    in_shape: tuple[int, ...] = (1, 28, 28),
    num_classes: int = 10,
) -> FNN:
    """FNN with ``depth`` hidden layers of ``width`` units (depth 0 = linear classifier). The
    default, 10 hidden layers of 25 units, is deep enough to show bundles and trains in seconds."""
    return FNN(FNNConfig(int(width), int(depth), tuple(in_shape), int(num_classes)))
