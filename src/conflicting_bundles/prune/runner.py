"""Library-level pruning: prune a model (one-shot or iterative), compare scorers, time it.

``cbundles prune`` wraps these in ``command.py``; models and data come from ``loading.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..modelmode import evaluating
from ..runs import write_csv
from .baselines import iterative_prune
from .batches import first_inputs
from .discovery import Block, find_blocks, model_device, run_model, to_device
from .heal import evaluate
from .scorers import get_scorer, scorer_options
from .surgery import count_params, remove_blocks

__all__ = [
    "PruneResult",
    "SCORERS",
    "prune_model",
    "compare_scorers",
    "write_compare",
    "time_forward",
    "rank",
]


# ------------------------------------------------------------------------------ pruning
@dataclass
class PruneResult:
    """What :func:`prune_model` did."""

    model: nn.Module = field(repr=False)
    removed: list[str]
    scores: dict[str, float]
    details: dict[str, dict]
    blocks: list[str]
    params_before: int
    params_after: int

    def as_dict(self) -> dict:
        return {
            "removed": self.removed,
            "blocks": self.blocks,
            "scores": self.scores,
            "details": self.details,
            "params_before": self.params_before,
            "params_after": self.params_after,
        }


def rank(scores: dict[str, float]) -> list[str]:
    """Block names, most removable first (ties: forward order, as dicts keep it)."""
    order = {n: i for i, n in enumerate(scores)}
    return sorted(scores, key=lambda n: (-scores[n], order[n]))


def prune_model(
    model: nn.Module,
    batches: Iterable,
    scorer: str = "conflict",
    remove: int = 1,
    blocks: str | list[Block] | None = None,
    scorer_kwargs: dict | None = None,
    iterative: bool = False,
) -> PruneResult:
    """Find removable blocks, score them on ``batches``, remove the ``remove`` most removable.
    ``iterative``: remove one block at a time and re-score the survivors (SLEB-style with
    scorer "loss"); ``scores`` are then the first step's. The input model is not modified."""
    batches = list(batches) if not isinstance(batches, list) else batches
    example = first_inputs(batches)
    if iterative:
        if isinstance(blocks, list):
            raise ValueError(
                "iterative pruning re-finds the blocks after each removal: give a block regex "
                "(--block-regex, or blocks= in Python) or none, not a list of blocks."
            )
        it = iterative_prune(model, batches, remove, scorer, example, blocks, scorer_kwargs)
        found = find_blocks(model, example=example, blocks=blocks)
        first = it.steps[0] if it.steps else {b.name: 0.0 for b in found}
        return PruneResult(
            it.model,
            it.removed,
            first,
            {"steps": it.steps},
            [b.name for b in found],
            count_params(model),
            count_params(it.model),
        )
    found = blocks if isinstance(blocks, list) else find_blocks(model, example, blocks=blocks)
    if not 0 <= remove <= len(found):
        raise ValueError(f"remove={remove}, but the model has {len(found)} removable blocks.")
    sc = get_scorer(scorer, **(scorer_kwargs or {}))
    scores = sc.score(model, found, batches)
    chosen = rank(scores)[:remove]
    pruned = remove_blocks(model, [b for b in found if b.name in chosen])
    return PruneResult(
        pruned,
        chosen,
        scores,
        sc.details,
        [b.name for b in found],
        count_params(model),
        count_params(pruned),
    )


def example_device(x) -> torch.device:
    """Device of the first tensor in an input."""
    if isinstance(x, torch.Tensor):
        return x.device
    vals = x.values() if isinstance(x, Mapping) else x if isinstance(x, (tuple, list)) else []
    return next((v.device for v in vals if isinstance(v, torch.Tensor)), torch.device("cpu"))


@torch.no_grad()
def time_forward(model: nn.Module, example, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one forward on ``example`` (eval mode)."""
    example = to_device(example, model_device(model))
    times = []
    with evaluating(model):
        for i in range(warmup + repeats):
            t = time.perf_counter()
            run_model(model, example)
            if example_device(example).type == "cuda":
                torch.cuda.synchronize()  # kernels are asynchronous: wait before reading time
            if i >= warmup:
                times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


# ------------------------------------------------------------------------------ comparison
SCORERS = (
    "conflict",
    "block-influence",
    "angular",
    "activation-entropy",
    "reverse-order",
    "loss",
    "random",
)
CSV_FIELDS = ["scorer", "seed", "k", "accuracy", "num_params", "removed"]


def compare_scorers(
    model: nn.Module,
    score_batches: Iterable,
    test_batches: Iterable,
    scorers: Iterable[str] = SCORERS,
    max_remove: int | None = None,
    blocks: str | list[Block] | None = None,
    random_repeats: int = 5,
    scorer_kwargs: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Test accuracy after removing the k most removable blocks (k = 0..max_remove) by each
    scorer, one-shot (scores computed once on the full model). ``random`` runs
    ``random_repeats`` seeds. Rows: scorer, seed, k, accuracy, num_params, removed."""
    score_batches = list(score_batches)
    test_batches = list(test_batches)
    found = (
        blocks
        if isinstance(blocks, list)
        else find_blocks(model, example=first_inputs(score_batches), blocks=blocks)
    )
    kmax = len(found) if max_remove is None else min(max_remove, len(found))
    base_acc = evaluate(model, test_batches)
    rows = [
        dict(
            scorer="none",
            seed="",
            k=0,
            accuracy=base_acc,
            num_params=count_params(model),
            removed="",
        )
    ]
    for name in scorers:
        seeds = range(random_repeats) if name == "random" else [None]
        for seed in seeds:
            kw = dict(scorer_kwargs or {})
            if seed is not None:
                kw["seed"] = seed
            sc = get_scorer(name, **scorer_options(name, kw))  # one dict for every scorer
            order = rank(sc.score(model, found, score_batches))
            for k in range(1, kmax + 1):
                chosen = order[:k]
                pruned = remove_blocks(model, chosen)
                acc = evaluate(pruned, test_batches)
                rows.append(
                    dict(
                        scorer=name,
                        seed="" if seed is None else seed,
                        k=k,
                        accuracy=acc,
                        num_params=count_params(pruned),
                        removed=";".join(chosen),
                    )
                )
                if progress:
                    progress(
                        f"{name}{'' if seed is None else f'[{seed}]'} k={k}: acc {100 * acc:.2f}%"
                    )
    return rows


def write_compare(rows: list[dict], out_dir: str | Path, title: str = "") -> tuple[Path, Path]:
    """compare.csv and compare.png (accuracy vs removed blocks, mean +- std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "compare.csv", out / "compare.png"
    write_csv(csv_path, rows, CSV_FIELDS)
    base = next((r["accuracy"] for r in rows if r["k"] == 0), None)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    # Scorers often pick the same blocks: distinct markers and dashes keep overlaps visible.
    styles = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("x", "--")]
    names = dict.fromkeys(r["scorer"] for r in rows if r["scorer"] != "none")
    for i, name in enumerate(names):
        by_k: dict[int, list[float]] = {}
        for r in rows:
            if r["scorer"] == name:
                by_k.setdefault(r["k"], []).append(r["accuracy"])
        ks = sorted(by_k)
        mean = [sum(by_k[k]) / len(by_k[k]) for k in ks]
        if base is not None:
            ks, mean = [0, *ks], [base, *mean]
        marker, dash = styles[i % len(styles)]
        line = ax.plot(ks, mean, marker=marker, ls=dash, ms=5 - 0.5 * i, label=name)[0]
        if any(len(v) > 1 for v in by_k.values()):
            std = (
                [0.0] + [_std(by_k[k]) for k in ks[1:]]
                if base is not None
                else [_std(by_k[k]) for k in ks]
            )
            ax.fill_between(
                ks,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                color=line.get_color(),
                alpha=0.2,
            )
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("blocks removed (k)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "one-shot depth pruning by scorer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return csv_path, png_path


def _std(v: list[float]) -> float:
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / len(v))
