"""Capture a^(l) with forward hooks and measure bundles per layer, without editing the model.

Three ways to name what to measure:
- module names, module objects, or a regex over ``named_modules()`` (kind ``output`` = the
  module's output, or ``residual-branch`` = output - input for shape-preserving blocks);
- probe points a model declares itself via ``model.probe_points(kind)`` (our models do, as
  docs/method.md §2 requires: FNN hidden outputs after ReLU, plain block outputs, residual branches
  scaled by the conv variances). A declared point is a module plus a transform
  ``(inputs, output) -> activation``; :class:`Tap` is an identity module that models call at the
  exact place to be read, passing extra tensors the transform needs.

Hooks are removed on exit of the context manager, also on exceptions (like lucidrains'
Extractor ``eject``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .layerstats import LayerResult, layer_result
from .metric import (
    Criterion,
    bundle_entropy_from_ids,
    group_rows,
    reference_transform,
    weight_amplitude,
)
from .modelmode import evaluating
from .rowgroups import first_appearance_ids

__all__ = [
    "ProbePoint",
    "Tap",
    "probe",
    "Probe",
    "measure",
    "LayerResult",
    "layer_result",
    "resolve_points",
]

Transform = Callable[[tuple, object], torch.Tensor]


class Tap(nn.Module):
    """Identity that marks a probe point: ``self.tap(x, *aux)`` returns x unchanged. A declared
    :class:`ProbePoint` on it receives ``(x, *aux)`` as inputs, so it can compute e.g. a scaled
    residual branch only while it is being probed (no cost otherwise)."""

    def forward(self, x: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        return x


@dataclass(frozen=True)
class ProbePoint:
    """Where to read an activation: ``module``'s forward hook, mapped by ``transform``
    (default: the module's output)."""

    name: str
    module: nn.Module
    kind: str = "output"
    transform: Transform | None = None

    def read(self, inputs: tuple, output) -> torch.Tensor:
        if self.transform is not None:
            return self.transform(inputs, output)
        if self.kind == "residual-branch":
            x = inputs[0]
            out = output[0] if isinstance(output, tuple) else output
            if not isinstance(x, torch.Tensor) or x.shape != out.shape:
                raise ValueError(
                    f"probe {self.name!r}: residual-branch needs a shape-preserving module, but "
                    f"input {tuple(getattr(x, 'shape', ()))} != output {tuple(out.shape)}."
                )
            return out - x
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"probe {self.name!r}: module output is {type(out).__name__}, not a tensor; "
                "declare a ProbePoint with a transform that picks the tensor."
            )
        return out


def _declared(model: nn.Module, kind: str | None) -> list[ProbePoint] | None:
    fn = getattr(model, "probe_points", None)
    if not callable(fn):
        return None
    return list(fn() if kind is None else fn(kind))


def resolve_points(
    model: nn.Module,
    layers: str | nn.Module | Iterable[str | nn.Module | ProbePoint] | None = None,
    kind: str | None = None,
) -> list[ProbePoint]:
    """Turn a layer spec into probe points, in model order.

    layers=None: the model's declared probe points (``model.probe_points(kind)``); error if the
    model declares none. A string that names a module exactly is that module; any other string
    is a regex matched (fullmatch) against ``named_modules()`` names.
    kind: "output" or "residual-branch" for named modules; for declared points, the model's own
    kind names (e.g. "branch", "block-output").
    """
    if layers is None:
        return _declared_points(model, kind)
    hook_kind = kind or "output"
    if hook_kind not in ("output", "residual-branch"):
        raise ValueError(
            f"kind must be 'output' or 'residual-branch' for named layers, got {kind!r}."
        )
    named = dict(model.named_modules())
    if isinstance(layers, (str, nn.Module, ProbePoint)):
        layers = [layers]
    points = [p for spec in layers for p in _spec_points(spec, named, hook_kind)]
    order = {n: i for i, n in enumerate(named)}
    seen: set[str] = set()
    out = []
    for p in sorted(points, key=lambda p: order.get(p.name, len(order))):
        if p.name not in seen:
            seen.add(p.name)
            out.append(p)
    return out


def _declared_points(model: nn.Module, kind: str | None) -> list[ProbePoint]:
    """The model's own probe points of ``kind``; ValueError when it declares none."""
    pts = _declared(model, kind)
    if pts is None:
        raise ValueError(
            f"{type(model).__name__} declares no probe points: pass layers= (module names, "
            "modules or a regex over named_modules(), e.g. layers=r'layer\\d+\\.\\d+')."
        )
    if not pts:
        what = "(it has no blocks or hidden layers)" if kind is None else f"of kind {kind!r}"
        raise ValueError(f"{type(model).__name__} declares no probe points {what}.")
    return pts


def _spec_points(spec, named: dict[str, nn.Module], hook_kind: str) -> list[ProbePoint]:
    """The probe points one layer spec names: a ProbePoint, a module of the model, an exact
    module name, or a regex fullmatched against the module names."""
    if isinstance(spec, ProbePoint):
        return [spec]
    if isinstance(spec, nn.Module):
        name = next((n for n, m in named.items() if m is spec), None)
        if name is None:
            raise ValueError(f"module {type(spec).__name__} is not part of the model.")
        return [ProbePoint(name or "<root>", spec, hook_kind)]
    if not isinstance(spec, str):
        raise TypeError(f"cannot probe {spec!r}: give a module name, module, regex or ProbePoint.")
    if spec in named:
        return [ProbePoint(spec, named[spec], hook_kind)]
    try:
        rx = re.compile(spec)
    except re.error as e:
        raise ValueError(f"layer spec {spec!r} is neither a module name nor a regex: {e}") from e
    hits = [ProbePoint(n, m, hook_kind) for n, m in named.items() if n and rx.fullmatch(n)]
    if not hits:
        sample = ", ".join(n for n in list(named)[1:8])
        raise ValueError(f"no module name matches {spec!r}. Names look like: {sample}, ...")
    return hits


class Probe:
    """Live capture of activations from a set of probe points; see :func:`probe`.

    ``on_activation(name, tensor)`` (if given) receives each activation as it is produced
    instead of storing it, so callers can reduce it immediately.
    """

    def __init__(self, model: nn.Module, points: list[ProbePoint], on_activation=None, detach=True):
        self.model = model
        self.points = points
        self.on_activation = on_activation
        self.detach = detach
        self.activations: dict[str, list[torch.Tensor]] = {p.name: [] for p in points}
        self._handles: list = []

    def _hook(self, point: ProbePoint):
        def fn(module, inputs, output):
            a = point.read(inputs, output)
            if self.detach:
                a = a.detach()
            if self.on_activation is not None:
                self.on_activation(point.name, a)
            else:
                self.activations[point.name].append(a)

        return fn

    def attach(self) -> Probe:
        for p in self.points:
            self._handles.append(p.module.register_forward_hook(self._hook(p)))
        return self

    def eject(self) -> None:
        """Remove every hook this probe registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def clear(self) -> None:
        for v in self.activations.values():
            v.clear()

    def get(self, name: str) -> torch.Tensor:
        """All captured activations of one point, concatenated over forward calls: (N, ...)."""
        chunks = self.activations[name]
        if not chunks:
            raise KeyError(f"no activation captured for {name!r} (was the model run?).")
        return torch.cat(chunks, dim=0)

    def __enter__(self) -> Probe:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.eject()


def probe(model: nn.Module, layers=None, kind: str | None = None, on_activation=None) -> Probe:
    """``with probe(model, layers) as p: model(x)``; then ``p.get(name)``. Hooks are removed on
    exit, also when the body raises."""
    return Probe(model, resolve_points(model, layers, kind), on_activation)


@dataclass
class _Reduced:
    """Per-layer lossless reduction across forward chunks: the distinct rows seen so far and,
    for each sample, the index of its row."""

    rows: list[torch.Tensor] = field(default_factory=list)
    ids: list[torch.Tensor] = field(default_factory=list)
    offset: int = 0
    dim: int = 0

    def add(self, a: torch.Tensor, transform) -> None:
        """One chunk's activations a (n, D) float32: keep one raw row per distinct transformed
        row, and each sample's index into the rows kept so far."""
        ids, g = group_rows(a, transform)
        first = torch.full((g,), a.shape[0], dtype=torch.int64, device=a.device)
        first.scatter_reduce_(0, ids, torch.arange(a.shape[0], device=a.device), reduce="amin")
        self.rows.append(a[first])  # (g, D): distinct rows of this chunk
        self.ids.append(ids + self.offset)
        self.offset += g
        self.dim = a.shape[1]

    def bundle_ids(self, transform) -> tuple[torch.Tensor, int]:
        """(ids (N,) in first-appearance order, number of bundles) over every chunk."""
        rows = torch.cat(self.rows)  # (G_total, D)
        local = torch.cat(self.ids)  # (N,) index into rows
        if len(self.rows) > 1:
            gid, _ = group_rows(rows, transform)
            local = gid[local]
        g = int(local.max()) + 1
        return first_appearance_ids(local, g), g


class _Collector:
    """The activations of every probe point across forward chunks: reduced at once to their
    distinct rows for the exact criteria (reference, raw), kept whole for tolerance ones."""

    def __init__(self, points: list[ProbePoint], crit: Criterion, transform) -> None:
        self.crit, self.transform = crit, transform
        self.exact = crit.kind in ("reference", "raw")
        self.reduced = {p.name: _Reduced() for p in points}
        self.full: dict[str, list[torch.Tensor]] = {p.name: [] for p in points}

    def on_act(self, name: str, a: torch.Tensor) -> None:
        a = a.reshape(a.shape[0], -1).to(torch.float32)  # (n, D)
        if not self.exact:
            self.full[name].append(a)
            return
        if not bool(torch.isfinite(a).all()):
            raise ValueError(
                f"layer {name!r} produced NaN/Inf activations: the network has diverged."
            )
        self.reduced[name].add(a, self.transform)

    def result(self, name: str, y, c: int, wmax: float, lr: float, batch_size: int) -> LayerResult:
        """The LayerResult of probe point ``name`` over every chunk; labels y (N,)."""
        r, full = self.reduced[name], self.full[name]
        if not (r.rows or full):
            raise RuntimeError(f"probe point {name!r} was never reached in the forward pass.")
        if self.exact:
            ids, g = r.bundle_ids(self.transform)
            ent, sizes = bundle_entropy_from_ids(ids, y, g, c)
            return LayerResult(name, g, ent, len(y), r.dim, ids, sizes, self.crit.name, wmax)
        return layer_result(name, torch.cat(full), y, criterion=self.crit, w_max=wmax, lr=lr,
                            batch_size=batch_size, num_classes=c)  # fmt: skip


def _take_samples(batches, n_samples: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, have = [], [], 0
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("batches must yield (inputs, labels) pairs.")
        x, y = batch[0], batch[1]
        take = min(n_samples - have, len(y))
        xs.append(x[:take])
        ys.append(torch.as_tensor(y[:take]))
        have += take
        if have >= n_samples:
            break
    if have == 0:
        raise ValueError("batches yielded no samples; measure needs labelled training samples.")
    x = torch.cat(xs).to(device)
    y = torch.cat(ys).to(device=device, dtype=torch.int64)
    return x, y


def measure(
    model: nn.Module,
    batches,
    layers=None,
    *,
    kind: str | None = None,
    n_samples: int = 64,
    lr: float = 1e-3,
    batch_size: int = 64,
    criterion: str | Criterion = "reference",
    num_classes: int | None = None,
    forward_chunk: int | None = None,
    w_max: float | None = None,
) -> list[LayerResult]:
    """Bundle statistics of every probe point on the first ``n_samples`` of ``batches``.

    batches: iterable of (x, y) (a DataLoader, a list, ...). The model runs in eval mode under
    no_grad (BatchNorm uses running statistics); its train/eval state is restored afterwards.
    w_max is computed from the model unless given. ``forward_chunk`` (default: all samples in
    one forward, as the reference does; batch-level statistics such as the residual-branch
    variance scale are then those of the whole sample) splits the forward pass.

    For the reference and raw criteria each chunk's activations are reduced at once to their
    distinct transformed rows, so memory grows with the number of distinct rows, not L x N x D;
    tolerance criteria keep the rows of the whole sample per layer.
    """
    crit = Criterion.parse(criterion)
    points = resolve_points(model, layers, kind)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x, y = _take_samples(batches, n_samples, device)
    n = len(y)
    wmax = weight_amplitude(model) if w_max is None else float(w_max)
    transform = reference_transform(wmax, lr, batch_size) if crit.kind == "reference" else None
    col = _Collector(points, crit, transform)
    chunk = forward_chunk or n
    with evaluating(model), torch.no_grad(), Probe(model, points, on_activation=col.on_act):
        for s in range(0, n, chunk):
            model(x[s : s + chunk])
    c = num_classes if num_classes is not None else int(y.max()) + 1
    return [col.result(p.name, y, c, wmax, lr, batch_size) for p in points]
