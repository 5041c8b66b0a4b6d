"""Block importance scores for depth pruning, one small interface for all criteria.

Convention: ``Scorer.score(model, blocks, batches) -> {block name: float}``, HIGHER = MORE
REMOVABLE. Pruning k blocks removes the k highest-scoring ones. Scores that are naturally
"importance" (block influence, angular distance, activation entropy) are negated.

Every scorer except ``random`` runs the model once (eval mode, no_grad) on the first
``n_samples`` samples of ``batches``, a hook per block (a ``probes.ProbePoint``) capturing the
block input x and output y, both (B, ...) of the same shape.

Registered scorers (``get_scorer(name, **kwargs)``):

- ``conflict``: bundle entropy (``metric.bundle_stats``, reference criterion by default) of the
  block's residual branch, one row per sample (a sequence: its real tokens in order, zero-padded
  to the longest sample, so padding does not change the score). Needs labels. Ties (most
  healthy blocks have entropy 0) are broken by the conflict margin (``metric.conflict_margin``,
  units of the criterion's resolution; smaller = closer to conflicting): ``score = entropy +
  TIE / (1 + margin)``, TIE = 1e-6, far below any entropy difference of N <= 10^5 samples.
  Per-block details (entropy, num_bundles, margin, activation read) are in ``scorer.details``.
- ``block-influence``: BI = 1 - cos(x, y), mean over positions (ShortGPT, Men et al. 2024);
  score = -BI.
- ``angular``: arccos(cos(x, y)) / pi, mean over positions (Gromov et al. 2024, for one
  block); score = -distance.
- ``activation-entropy``: mean over features of the binary entropy (bits) of the sign of the
  residual branch y - x over samples and positions (Liao et al. 2023's on/off entropy): a
  branch almost always on or off per feature acts nearly linearly; score = -entropy.
- ``random`` (uniform in [0, 1), seeded), ``reverse-order``, ``loss`` (SLEB): baselines.py.

"Positions" (the rows cosines are taken over): a (B, D) tensor has B rows; a (B, T, D) sequence
has B*T token rows over the last dim; a (B, C, H, W...) feature map has B*H*W rows over channels
(dim 1). Rows where x or y is all zero have no direction and are skipped. Inputs given as a
mapping with an ``attention_mask`` (a tokenizer's output) contribute only their real tokens
(a T5 decoder block: those of ``decoder_attention_mask``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..measurespec import MeasureSpec
from ..metric import Criterion, weight_amplitude
from ..modelmode import evaluating
from ..probes import Probe, ProbePoint
from .batches import (
    attention_mask,
    batch_len,
    decoder_blocks,
    feature_rows,
    iter_samples,
    pad_rows,
    sample_rows,
    slice_inputs,
)
from .discovery import Block, run_model
from .scorer_registry import (
    SCORER_REGISTRY,
    get_scorer,
    list_scorers,
    register_scorer,
    scorer_options,
)

__all__ = [
    "Scorer",
    "ConflictScorer",
    "BlockInfluenceScorer",
    "AngularScorer",
    "ActivationEntropyScorer",
    "SCORER_REGISTRY",
    "register_scorer",
    "get_scorer",
    "list_scorers",
    "scorer_options",
]

DECODER_MASK = "decoder_attention_mask"  # masks the decoder blocks of an encoder-decoder


# ------------------------------------------------------------------------------ base class
def _pair_point(block: Block) -> ProbePoint:
    """A probe point whose activation is stack([x, y], dim=1): (B, 2, ...)."""

    def transform(inputs, output) -> torch.Tensor:
        x = inputs[0] if inputs else None
        y = output
        if isinstance(y, (tuple, list)):
            y = y[0]
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError(
                f"block {block.name!r}: expected a tensor as first positional input and output "
                f"(got {type(x).__name__} -> {type(y).__name__}); it cannot be scored."
            )
        if x.shape != y.shape:
            raise ValueError(
                f"block {block.name!r} is not shape-preserving on this data: input "
                f"{tuple(x.shape)} != output {tuple(y.shape)}; it cannot be removed."
            )
        return torch.stack([x, y], dim=1)

    return ProbePoint(block.name, block.module, "block-pair", transform)


class Scorer:
    """Base class. Subclasses implement ``update`` (called per block per forward chunk) and
    ``finish``; or override ``score`` entirely. Higher score = more removable."""

    name: str = ""
    needs_labels: bool = False
    uses_data: bool = True  # False: scores without running the model (n_samples unused)

    def __init__(self, n_samples: int = 256, forward_chunk: int | None = None):
        self.n_samples = n_samples
        self.forward_chunk = forward_chunk  # default: each batch as given
        self.details: dict[str, dict] = {}

    # -- one pass with hooks --------------------------------------------------------------
    def score(self, model: nn.Module, blocks: list[Block], batches: Iterable) -> dict[str, float]:
        if not blocks:
            raise ValueError("no blocks to score: pass the list returned by find_blocks().")
        self.details = {b.name: {} for b in blocks}
        self.start(model, blocks)
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        labels: list[torch.Tensor] = []
        self._labels = None  # labels of the chunk being run, for update()
        self._mask = None  # attention mask (B, T) of the chunk being run, or None

        points = self.points(model, blocks)
        with evaluating(model):
            called: set[str] = set()

            decoder = decoder_blocks(model, blocks)  # T5: their own decoder_attention_mask

            def on_act(name: str, a: torch.Tensor) -> None:
                called.add(name)
                self._mask = masks[name in decoder]
                self.on_activation(name, a)

            with torch.no_grad(), Probe(model, points, on_activation=on_act):
                for x, y in iter_samples(batches, self.n_samples, device):
                    if self.needs_labels and y is None:
                        raise ValueError(
                            f"scorer {self.name!r} needs labels: batches must yield (inputs, "
                            "labels) pairs with one integer class per sample."
                        )
                    n = batch_len(x)
                    step = self.forward_chunk or n
                    for s in range(0, n, step):
                        chunk = slice_inputs(x, s, s + step)
                        self._labels = None if y is None else y[s : s + step]
                        masks = attention_mask(chunk), attention_mask(chunk, DECODER_MASK)
                        run_model(model, chunk)
                    if y is not None:
                        labels.append(y)
        missed = [b.name for b in blocks if b.name not in called]
        if missed:
            raise ValueError(
                f"blocks {', '.join(missed)} never ran in the forward pass: are they part of "
                "this model (find_blocks on this model, not a copy)?"
            )
        y_all = torch.cat(labels) if labels else None
        return self.finish(model, y_all)

    def points(self, model: nn.Module, blocks: list[Block]) -> list[ProbePoint]:
        """Probe points to hook; by default one per block reading stack([x, y], dim=1)."""
        return [_pair_point(b) for b in blocks]

    def on_activation(self, name: str, a: torch.Tensor) -> None:
        """Receives each probe point's activation during the forward."""
        self.update(name, a[:, 0], a[:, 1], self._labels)

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """:func:`feature_rows` of an activation of the chunk being run, padding excluded."""
        return feature_rows(t, self._mask)

    def start(self, model: nn.Module, blocks: list[Block]) -> None:  # noqa: B027 (optional hook)
        """Reset per-block accumulators."""

    def update(self, name: str, x: torch.Tensor, y: torch.Tensor, labels) -> None:
        raise NotImplementedError

    def finish(self, model: nn.Module, labels: torch.Tensor | None) -> dict[str, float]:
        raise NotImplementedError


# Tie-break weight of the conflict scorer: far below any nonzero entropy difference in practice.
TIE = 1e-6


@register_scorer("conflict")
class ConflictScorer(Scorer):
    """Bundle entropy of each block's residual branch (see the module docstring).

    spec: the measurement context (:class:`MeasureSpec`): the training lr and batch size of
      the reference criterion (docs/method.md §2), the criterion ("reference" by default, or any
      :class:`Criterion` name such as "coarse:16") and n_samples (64 by default, as in the
      reference); w_max is read from the model (largest |trainable parameter|). ``lr``,
      ``batch_size``, ``criterion`` and ``n_samples``, where given, override the spec's.
      ``cbundles prune`` on a run directory passes the run's (MeasureSpec.from_run).
    use_declared: if the model declares ``probe_points("branch")`` (this project's residual
      nets: the branch before the skip add, variance-scaled as docs/method.md §2 prescribes) and
      exactly one declared point lies inside a block, read that point instead of y - x.
    All samples run in one forward unless ``forward_chunk`` is set. Each block's numbers are
    :meth:`MeasureSpec.layer_stats`, the per-layer report measure_run and the lesion use.
    """

    needs_labels = True

    def __init__(
        self,
        spec: MeasureSpec | None = None,
        *,
        lr: float | None = None,
        batch_size: int | None = None,
        criterion: str | None = None,
        n_samples: int | None = None,
        forward_chunk: int | None = None,
        use_declared: bool = True,
    ):
        given = {"lr": lr, "batch_size": batch_size, "criterion": criterion, "n_samples": n_samples}
        self.spec = (spec or MeasureSpec()).replace(
            **{k: v for k, v in given.items() if v is not None}
        )
        super().__init__(self.spec.n_samples, forward_chunk)
        self.criterion = Criterion.parse(self.spec.criterion)
        self.use_declared = use_declared

    def score(self, model, blocks, batches):
        # Batches run one by one (eval mode: no batch statistics), so they may differ in
        # sequence length; rows are gathered over all n_samples before the criterion runs.
        self._declared = self._declared_points(model, blocks)
        return super().score(model, blocks, batches)

    def _declared_points(self, model, blocks) -> dict[str, ProbePoint]:
        """Map block name -> the model's declared branch point inside that block."""
        fn = getattr(model, "probe_points", None)
        if not (self.use_declared and callable(fn)):
            return {}
        try:
            points = list(fn("branch"))
        except (ValueError, TypeError, KeyError):
            return {}
        out = {}
        for b in blocks:
            inside = {id(m) for m in b.module.modules()}
            hits = [p for p in points if id(p.module) in inside]
            if len(hits) == 1:
                out[b.name] = hits[0]
        return out

    def points(self, model, blocks):
        pair = {p.name: p for p in super().points(model, blocks)}
        return [
            _named(self._declared[b.name], b.name) if b.name in self._declared else pair[b.name]
            for b in blocks
        ]

    def on_activation(self, name, a):
        if name in self._declared:
            self._rows[name].extend(sample_rows(a, self._mask))  # declared branch per sample
        else:
            super().on_activation(name, a)

    def start(self, model, blocks):
        self._rows: dict[str, list[torch.Tensor]] = {b.name: [] for b in blocks}

    def update(self, name, x, y, labels):
        self._rows[name].extend(sample_rows(y.float() - x.float(), self._mask))  # B rows

    def finish(self, model, labels):
        spec = self.spec.replace(w_max=weight_amplitude(model))
        c = int(labels.max()) + 1
        out = {}
        for name, rows in self._rows.items():
            a = pad_rows(rows)  # (N, D); sequences of different lengths zero-padded
            r = spec.layer_stats(a, labels, num_classes=c, name=name, margin=True)
            tie = 0.0 if math.isinf(r.margin) else TIE / (1.0 + r.margin)
            self.details[name] = {
                "entropy": r.entropy,
                "num_bundles": r.num_bundles,
                "margin": r.margin,
                "criterion": r.criterion,
                "w_max": r.w_max,
                "lr": spec.lr,
                "batch_size": spec.batch_size,
                "read": "declared-branch" if name in self._declared else "output-minus-input",
            }
            out[name] = r.entropy + tie
        return out


class _MeanOverRows(Scorer):
    """Scorers that average a per-row quantity of (x, y) over all rows of all samples."""

    def start(self, model, blocks):
        self._sum = {b.name: 0.0 for b in blocks}
        self._count = {b.name: 0 for b in blocks}

    def row_values(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, name, x, y, labels):
        v = self.row_values(self.rows(x), self.rows(y))
        self._sum[name] += float(v.double().sum())
        self._count[name] += v.numel()

    def finish(self, model, labels):
        out = {}
        for name, s in self._sum.items():
            c = self._count[name]
            value = s / c if c else 0.0
            self.details[name] = {"value": value, "rows": c}
            out[name] = -value
        return out


def _cosines(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine per row of (M, F) tensors, rows with a zero vector dropped; float64."""
    x, y = x.double(), y.double()
    nx, ny = x.norm(dim=1), y.norm(dim=1)
    ok = (nx > 0) & (ny > 0)
    cos = (x[ok] * y[ok]).sum(dim=1) / (nx[ok] * ny[ok])
    return cos.clamp(-1.0, 1.0)


@register_scorer("block-influence")
class BlockInfluenceScorer(_MeanOverRows):
    """score = -(1 - mean cos(x, y)); a block that only rescales its input scores 0."""

    def row_values(self, x, y):
        return 1.0 - _cosines(x, y)


@register_scorer("angular")
class AngularScorer(_MeanOverRows):
    """score = -mean arccos(cos(x, y)) / pi, in [-1, 0]."""

    def row_values(self, x, y):
        return torch.arccos(_cosines(x, y)) / math.pi


@register_scorer("activation-entropy")
class ActivationEntropyScorer(Scorer):
    """score = -mean over features of H(P(branch > 0)) in bits, branch = y - x."""

    def start(self, model, blocks):
        self._on = {}
        self._rows = {b.name: 0 for b in blocks}

    def update(self, name, x, y, labels):
        rx = self.rows(x)
        on = (self.rows(y) - rx > 0).double().sum(dim=0)  # (F,)
        self._on[name] = on if name not in self._on else self._on[name] + on
        self._rows[name] += rx.shape[0]

    def finish(self, model, labels):
        out = {}
        for name, on in self._on.items():
            p = on / self._rows[name]
            h = torch.zeros_like(p)
            m = (p > 0) & (p < 1)
            pm = p[m]
            h[m] = -(pm * torch.log2(pm) + (1 - pm) * torch.log2(1 - pm))
            value = float(h.mean())
            self.details[name] = {"value": value, "features": int(p.numel())}
            out[name] = -value
        return out


def _named(p: ProbePoint, name: str) -> ProbePoint:
    return ProbePoint(name, p.module, p.kind, p.transform)
