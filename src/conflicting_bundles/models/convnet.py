"""Plain (VGG-like) and residual conv nets in the ResNet-18/34 layout of docs/method.md §3.

stem Conv7x7/2 (64 ch) + BN + ReLU [+ MaxPool3x3/2 if the image width > 50]
-> stages a, b, c, d (64/128/256/512 ch, times width_mult) of blocks
   Conv3x3-BN-ReLU-Conv3x3-BN(-ReLU); the first block of stages b, c, d has stride 2
-> GlobalAvgPool -> Linear(C).

The first block of a stage changes channels and stride even when earlier stages are empty
(as in the reference, each stage's first block is built with stride 2). resnet: identity skip,
1x1 stride-s conv + BN projection on blocks whose stride is 2 or whose channels change; ReLU
after the add. All convs carry a bias, the projection conv too: with that the counts match
the figures of docs/method.md §3 (plain-120: 64,830,474; resnet-120: 65,005,194 trainable
parameters for 3x32x32 input and 10 classes); without the projection bias resnet-120 has 896
fewer.

Reference details kept because they change what the metric sees: Keras initialisers (block and
projection convs He-normal truncated at 2 std, stem conv and fc Glorot-uniform, zero biases)
and Keras BatchNorm defaults (eps 1e-3, momentum 0.99 = PyTorch momentum 0.01). Padding is
symmetric (PyTorch) where TF "same" pads bottom/right first; the shapes are the same.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..probes import ProbePoint, Tap
from .base import BlockNet, check_layers, check_size
from .registry import register_model

__all__ = [
    "BLOCKS_FOR_LAYERS",
    "ConvBlock",
    "ConvNet",
    "ConvNetConfig",
    "blocks_for_layers",
    "plain",
    "resnet",
    "scaled_branch",
]

STAGES = ("a", "b", "c", "d")
BASE_CHANNELS = (64, 128, 256, 512)
# Depth naming: layers = 2 x blocks + 2 (docs/method.md §3).
BLOCKS_FOR_LAYERS: dict[int, tuple[int, int, int, int]] = {
    4: (1, 0, 0, 0),
    10: (1, 1, 1, 1),
    20: (2, 2, 3, 2),
    30: (3, 3, 5, 3),
    50: (3, 6, 12, 3),
    76: (3, 6, 25, 3),
    100: (3, 12, 31, 3),
    120: (3, 12, 41, 3),
}
VAR_EPS = 1e-6  # in the branch scale 1/sqrt(var + eps)


def blocks_for_layers(layers: int) -> list[int]:
    """Blocks per stage for a named depth, e.g. 120 -> [3, 12, 41, 3]."""
    if layers not in BLOCKS_FOR_LAYERS:
        raise ValueError(
            f"no block layout for layers={layers}; known depths: "
            f"{', '.join(map(str, BLOCKS_FOR_LAYERS))} (or pass blocks=[a, b, c, d])."
        )
    return list(BLOCKS_FOR_LAYERS[layers])


@dataclass(frozen=True)
class ConvNetConfig:
    blocks: tuple[int, int, int, int]
    residual: bool
    in_channels: int = 3
    num_classes: int = 10
    image_size: int | tuple[int, int] = 32  # side, or (H, W); only decides the stem max-pool
    width_mult: float = 1.0
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01

    def __post_init__(self) -> None:
        blocks = tuple(int(b) for b in self.blocks)
        if len(blocks) != 4 or min(blocks) < 0:
            raise ValueError(f"blocks must be 4 counts >= 0 (stages a, b, c, d), got {blocks}.")
        object.__setattr__(self, "blocks", blocks)
        size = self.image_size
        size = int(size) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
        if (isinstance(size, tuple) and len(size) != 2) or min(_hw(size)) < 1:
            raise ValueError(f"image_size must be a side or (H, W), got {self.image_size!r}.")
        object.__setattr__(self, "image_size", size)
        if self.in_channels < 1 or self.num_classes < 1 or not self.width_mult > 0:
            raise ValueError(
                "in_channels and num_classes must be >= 1 and width_mult > 0, got "
                f"{self.in_channels}, {self.num_classes}, {self.width_mult}."
            )

    def num_params_estimate(self) -> int:
        """Parameters of the net this config builds (convs, BN, projections, head), computed
        without allocating it."""
        ch, cin = self.channels, self.channels[0]
        n = self.in_channels * ch[0] * 49 + 3 * ch[0]  # stem conv + bias + BN
        for s, (nb, cout) in enumerate(zip(self.blocks, ch, strict=True)):
            for j in range(nb):
                n += cin * cout * 9 + cout * cout * 9 + 6 * cout  # 2 convs, biases, 2 BN
                if self.residual and (cin != cout or (s > 0 and j == 0)):
                    n += cin * cout + 3 * cout  # 1x1 projection conv + BN
                cin = cout
        return n + cin * self.num_classes + self.num_classes

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Channels of stages a..d (the stem has those of stage a); at least 1."""
        return tuple(max(1, round(c * self.width_mult)) for c in BASE_CHANNELS)

    @property
    def layers(self) -> int:
        return 2 * sum(self.blocks) + 2


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def _he_normal_(w: torch.Tensor) -> None:
    """Keras he_normal: truncated normal (2 std), std = sqrt(2 / fan_in) / 0.8796."""
    std = math.sqrt(2.0 / w[0].numel()) / 0.87962566103423978
    nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)


def scaled_branch(inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Probe transform of docs/method.md §2 for residual blocks; ``inputs = (branch, c1, c2)``:
    the branch (second BN's output, before the add) times 1/sqrt(var(c1) + 1e-6) *
    1/sqrt(var(c2) + 1e-6), with c1, c2 the raw conv outputs and var the population variance
    over the whole batch tensor (a scalar)."""
    branch, c1, c2 = inputs
    s1 = 1.0 / torch.sqrt(c1.float().var(unbiased=False) + VAR_EPS)
    s2 = 1.0 / torch.sqrt(c2.float().var(unbiased=False) + VAR_EPS)
    return branch.float() * (s2 * s1)


class ConvBlock(nn.Module):
    """Conv3x3(stride)-BN-ReLU-Conv3x3-BN, then ReLU (plain) or + shortcut and ReLU (residual).
    (N, cin, H, W) -> (N, cout, H/stride, W/stride). ``bypassed`` (lesion) returns the
    shortcut: the identity, or ReLU(projection) for a projecting residual block."""

    def __init__(self, cin: int, cout: int, stride: int, residual: bool, eps: float, mom: float):
        super().__init__()
        self.cin, self.cout, self.stride, self.residual = cin, cout, stride, residual
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(cout, eps=eps, momentum=mom)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps, momentum=mom)
        self.proj: nn.Sequential | None = None
        if residual and self.changes_shape:
            self.proj = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout, eps=eps, momentum=mom)
            )
        self.branch_tap = Tap()  # probe point of the scaled residual branch (no cost otherwise)
        self.bypassed = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _he_normal_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def changes_shape(self) -> bool:
        return self.stride != 1 or self.cin != self.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bypassed:
            # The reference's lesion: output = relu(shortcut(x)); for the identity the ReLU is a
            # no-op since block inputs are ReLU outputs.
            return x if self.proj is None else F.relu(self.proj(x))
        c1 = self.conv1(x)  # (N, cout, H', W') raw, before BN
        h = F.relu(self.bn1(c1))
        c2 = self.conv2(h)
        branch = self.bn2(c2)
        if not self.residual:
            return F.relu(branch)
        branch = self.branch_tap(branch, c1, c2)
        return F.relu(branch + (x if self.proj is None else self.proj(x)))


class Stem(nn.Module):
    """Conv7x7/2 + BN + ReLU. (N, C_in, H, W) -> (N, C, ceil(H/2), ceil(W/2))"""

    def __init__(self, cin: int, cout: int, eps: float, mom: float):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 7, 2, 3)
        self.bn = nn.BatchNorm2d(cout, eps=eps, momentum=mom)
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ConvNet(BlockNet):
    """Blocks are named "<stage>.<position>" ("a.0", "c.12") and live at that module path.
    Probe kinds: plain "block" (block output); resnet "branch" (scaled residual branch,
    default) and "block-output" (after add + ReLU)."""

    def __init__(self, config: ConvNetConfig):
        super().__init__()
        check_layers(f"{'resnet' if config.residual else 'plain'} {list(config.blocks)}",
                     sum(config.blocks))  # fmt: skip
        check_size(f"{'resnet' if config.residual else 'plain'} {list(config.blocks)} at "
                   f"width_mult {config.width_mult:g}", config.num_params_estimate())  # fmt: skip
        self.config = config
        self.name = "resnet" if config.residual else "plain"
        self.probe_kinds = ("branch", "block-output") if config.residual else ("block",)
        eps, mom, ch = config.bn_eps, config.bn_momentum, config.channels
        self.stem = Stem(config.in_channels, ch[0], eps, mom)
        # "The MaxPool2D 3x3 operator is not added for small datasets such as cifar" (reference:
        # pooling iff the image width > 50).
        self.pool = nn.MaxPool2d(3, 2, 1) if _hw(config.image_size)[1] > 50 else nn.Identity()
        cin = ch[0]
        for s, (stage, n, cout) in enumerate(zip(STAGES, config.blocks, ch, strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if s > 0 and j == 0 else 1
                blocks.append(ConvBlock(cin, cout, stride, config.residual, eps, mom))
                cin = cout
            self.add_module(stage, nn.Sequential(*blocks))
        self.head = nn.Linear(cin, config.num_classes)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, s) for s in STAGES]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> logits (N, C)"""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"{self.name} expects images (N, {self.config.in_channels}, H, W), got input of "
                f"shape {tuple(x.shape)}."
            )
        x = self.pool(self.stem(x))
        for stage in self.stages():
            x = stage(x)
        return self.head(x.mean(dim=(2, 3)))  # global average pool: (N, C_last)

    # ---------------------------------------------------------------- BlockNet interface
    def _named_blocks(self) -> list[tuple[str, int, ConvBlock]]:
        return [(s, j, b) for s in STAGES for j, b in enumerate(getattr(self, s))]

    def _block_modules(self) -> list[nn.Module]:
        return [b for _, _, b in self._named_blocks()]

    def block_info(self) -> list[dict]:
        return [
            {
                "name": f"{s}.{j}",
                "index": i,
                "stage": s,
                "position_in_stage": j,
                "projecting": b.proj is not None,
                "lesionable": b.proj is not None or not b.changes_shape,
                "in_channels": b.cin,
                "out_channels": b.cout,
                "stride": b.stride,
            }
            for i, (s, j, b) in enumerate(self._named_blocks())
        ]

    def arch(self) -> dict:
        d = asdict(self.config)
        del d["residual"]  # encoded in the name
        d["blocks"] = list(d["blocks"])
        if isinstance(d["image_size"], tuple):
            d["image_size"] = list(d["image_size"])
        return {"name": self.name, **d}

    def _points(self, kind: str) -> list[ProbePoint]:
        blocks = self._named_blocks()
        if kind == "branch":
            return [ProbePoint(f"{s}.{j}", b.branch_tap, kind, scaled_branch) for s, j, b in blocks]
        return [ProbePoint(f"{s}.{j}", b, kind) for s, j, b in blocks]

    def _rebuilt(self, keep: list[int]) -> ConvNet:
        stages = [d["stage"] for d in self.block_info()]
        return ConvNet(
            replace(self.config, blocks=tuple(sum(stages[k] == s for k in keep) for s in STAGES))
        )

    def with_blocks(self, blocks: list[int]) -> ConvNet:
        """Same family and settings with another block layout, fresh weights (on this model's
        device and dtype)."""
        new = ConvNet(replace(self.config, blocks=tuple(blocks)))
        self._follow(new)
        return new


def _config(
    residual: bool,
    blocks,
    layers,
    in_channels,
    num_classes,
    image_size,
    width_mult,
    in_shape,
    bn_eps,
    bn_momentum,
) -> ConvNetConfig:
    name = "resnet" if residual else "plain"
    if blocks is None and layers is None:
        raise ValueError(
            f"{name} needs blocks=[a, b, c, d] or layers=N "
            f"(N in {', '.join(map(str, BLOCKS_FOR_LAYERS))})."
        )
    if blocks is None:
        blocks = blocks_for_layers(int(layers))
    elif layers is not None and 2 * sum(blocks) + 2 != layers:
        raise ValueError(
            f"{name}: blocks={list(blocks)} make {2 * sum(blocks) + 2} layers, not layers={layers};"
            " pass only one of them."
        )
    if in_shape is not None:
        # Generic callers pass a dataset's (C, H, W); it must agree with explicit values.
        if len(in_shape) != 3:
            raise ValueError(f"{name}: in_shape must be (C, H, W), got {tuple(in_shape)}.")
        c, h, w = (int(v) for v in in_shape)
        given = _hw(image_size) if image_size is not None else (h, w)
        if (in_channels not in (None, c)) or given != (h, w):
            raise ValueError(
                f"{name}: in_shape={tuple(in_shape)} disagrees with in_channels={in_channels}, "
                f"image_size={image_size}; pass one or the other."
            )
        in_channels, image_size = c, (h if h == w else (h, w))
    return ConvNetConfig(
        blocks=tuple(blocks),
        residual=residual,
        in_channels=3 if in_channels is None else int(in_channels),
        num_classes=int(num_classes),
        image_size=32 if image_size is None else image_size,
        width_mult=float(width_mult),
        bn_eps=float(bn_eps),
        bn_momentum=float(bn_momentum),
    )


@register_model
def plain(
    blocks: list[int] | None = None,
    layers: int | None = None,
    in_channels: int | None = None,
    num_classes: int = 10,
    image_size: int | tuple[int, int] | None = None,
    width_mult: float = 1.0,
    in_shape: tuple[int, int, int] | None = None,
    bn_eps: float = 1e-3,
    bn_momentum: float = 0.01,
) -> ConvNet:
    """VGG-like net without skips. blocks=[a, b, c, d] or layers (4, 10, 20, ..., 120);
    in_channels default 3, image_size default 32; or in_shape=(C, H, W) for both."""
    return ConvNet(_config(False, **locals()))  # locals() = the arguments above


@register_model
def resnet(
    blocks: list[int] | None = None,
    layers: int | None = None,
    in_channels: int | None = None,
    num_classes: int = 10,
    image_size: int | tuple[int, int] | None = None,
    width_mult: float = 1.0,
    in_shape: tuple[int, int, int] | None = None,
    bn_eps: float = 1e-3,
    bn_momentum: float = 0.01,
) -> ConvNet:
    """Residual net (identity skips, projection on shape-changing blocks); arguments as
    :func:`plain`."""
    return ConvNet(_config(True, **locals()))  # locals() = the arguments above
