"""End-to-end pruning used by ``cbundles prune``: load a model and data, score, remove, compare.

Model specs (``load_model``):
- a run directory of this project (``arch.json`` + ``checkpoints/best.pt`` or ``last.pt`` whose
  key "model" is the state dict): ``create_model(**arch)`` + weights;
- a directory written by ``save_pruned`` whose ``pruned.json`` has ``base.arch``;
- a file written by ``torch.save(model)`` (a full nn.Module; loaded with weights_only=False,
  so only load files you trust);
- a registered model name (fresh, untrained weights).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .discovery import Block, find_blocks, model_device, run_model, to_device
from .heal import evaluate, heal
from .scorers import _slice, _split_batch, get_scorer
from .surgery import count_params, load_pruned, read_meta, remove_blocks, save_pruned

__all__ = [
    "PruneConfig",
    "PruneResult",
    "run_compare",
    "run_prune",
    "load_model",
    "load_batches",
    "train_stream",
    "prune_model",
    "compare_scorers",
    "write_compare",
    "time_forward",
]


# ------------------------------------------------------------------------------ loading
def _checkpoint(run_dir: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        p = run_dir / "checkpoints" / name
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"{run_dir} has arch.json but no checkpoints/best.pt or checkpoints/last.pt: was the "
        "run trained to its first checkpoint?"
    )


def load_model(spec: str, map_location: str = "cpu") -> tuple[nn.Module, dict | None]:
    """(model, base) from a run directory, a pruned directory, a torch.save'd model file or a
    registered model name. ``base`` describes the unpruned architecture when known
    (``{"arch": {...}}``), for :func:`save_pruned`."""
    path = Path(spec)
    if path.is_dir():
        if (path / "pruned.json").is_file():
            meta = read_meta(path)
            arch = (meta.get("base") or {}).get("arch")
            if not arch:
                raise ValueError(
                    f"{path} is a pruned model without base.arch in pruned.json: rebuild it in "
                    "Python with load_pruned(factory, path)."
                )
            from ..models import create_model

            model = load_pruned(lambda: create_model(**arch), path, map_location)
            return model.eval(), {"arch": arch}
        if (path / "arch.json").is_file():
            from ..models import create_model

            arch = json.loads((path / "arch.json").read_text())
            model = create_model(**arch)
            ckpt = torch.load(_checkpoint(path), map_location=map_location, weights_only=True)
            if not isinstance(ckpt, dict) or "model" not in ckpt:
                raise ValueError(f"{_checkpoint(path)} has no 'model' entry (a state dict).")
            model.load_state_dict(ckpt["model"])
            return model.eval(), {"arch": arch}
        raise ValueError(
            f"{path} is a directory without arch.json (a run directory) or pruned.json (a "
            "pruned model); cannot load a model from it."
        )
    if path.is_file():
        obj = torch.load(path, map_location=map_location, weights_only=False)
        if isinstance(obj, nn.Module):
            return obj.eval(), None
        raise ValueError(
            f"{path} holds a {type(obj).__name__}, not a torch.save'd nn.Module. For a "
            "checkpoint (state dict) pass its run directory (with arch.json) instead."
        )
    try:
        from ..models import create_model, list_models
    except ImportError as e:  # the models package is optional for foreign models
        raise ValueError(
            f"{spec!r} is not an existing path (and models are unavailable: {e})."
        ) from e
    if spec in list_models():
        return create_model(spec).eval(), {"arch": {"name": spec}}
    raise ValueError(
        f"{spec!r} is neither an existing path (run directory, pruned directory, model file) nor "
        f"a registered model ({', '.join(list_models())})."
    )


def load_batches(
    dataset: str,
    split: str,
    batch_size: int,
    data_dir: str | None = None,
    limit: int | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """All (x, y) batches of a split, non-augmented, in dataset order (a list, re-iterable)."""
    from ..data import iterate, load_dataset

    ds = load_dataset(dataset, split=split, data_dir=data_dir, limit=limit)
    return list(iterate(ds, batch_size, shuffle=False, augment=False, seed=0, epoch=0))


def train_stream(
    dataset: str, batch_size: int, data_dir: str | None = None, limit: int | None = None, seed=0
):
    """Endless shuffled, augmented training batches (epoch after epoch), for :func:`heal`."""
    from ..data import iterate, load_dataset

    ds = load_dataset(dataset, split="train", data_dir=data_dir, limit=limit)
    epoch = 0
    while True:
        yield from iterate(ds, batch_size, shuffle=True, augment=True, seed=seed, epoch=epoch)
        epoch += 1


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


def _example(batches: Iterable, n: int = 2):
    for batch in batches:
        x, _ = _split_batch(batch)
        return _slice(x, n)
    raise ValueError("batches are empty: need at least one batch to run the model.")


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
) -> PruneResult:
    """Find removable blocks, score them on ``batches``, remove the ``remove`` most removable.
    The input model is not modified."""
    batches = list(batches) if not isinstance(batches, list) else batches
    if isinstance(blocks, list):
        found = blocks
    else:
        found = find_blocks(model, example=_example(batches), blocks=blocks)
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
    vals = x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else []
    return next((v.device for v in vals if isinstance(v, torch.Tensor)), torch.device("cpu"))


@torch.no_grad()
def time_forward(model: nn.Module, example, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one forward on ``example`` (eval mode)."""
    was = model.training
    model.eval()
    example = to_device(example, model_device(model))
    times = []
    try:
        for i in range(warmup + repeats):
            t = time.perf_counter()
            run_model(model, example)
            if example_device(example).type == "cuda":
                torch.cuda.synchronize()  # kernels are asynchronous: wait before reading time
            if i >= warmup:
                times.append(time.perf_counter() - t)
    finally:
        model.train(was)
    times.sort()
    return times[len(times) // 2]


# ------------------------------------------------------------------------------ comparison
SCORERS = ("conflict", "block-influence", "angular", "activation-entropy", "random")
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
        else find_blocks(model, example=_example(score_batches), blocks=blocks)
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
            sc = get_scorer(name, **kw)
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
                    progress(f"{name}{'' if seed is None else f'[{seed}]'} k={k}: acc {acc:.4f}")
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
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
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


# ------------------------------------------------------------------------------ CLI entry
@dataclass
class PruneConfig:
    """Everything ``cbundles prune`` needs; see :func:`run_prune`."""

    model: str
    dataset: str
    out: str = "pruned"
    remove: int = 1
    scorer: str = "conflict"
    blocks: str | None = None  # regex override of the discovered blocks
    data_dir: str | None = None
    n_samples: int | None = None  # scoring samples (None: each scorer's default)
    lr: float = 1e-3  # conflict criterion: training learning rate
    batch_size: int = 64  # conflict criterion: training batch size
    criterion: str = "reference"
    eval_batch_size: int = 256
    test_limit: int | None = None  # None: the whole test split
    heal_steps: int = 0
    heal_lr: float = 1e-4
    device: str = "cpu"
    seed: int = 0
    # --compare
    compare: bool = False
    max_remove: int | None = None
    scorers: tuple[str, ...] = SCORERS
    random_repeats: int = 5

    def scorer_kwargs(self) -> dict:
        kw = dict(lr=self.lr, batch_size=self.batch_size, criterion=self.criterion, seed=self.seed)
        if self.n_samples is not None:
            kw["n_samples"] = self.n_samples
        return kw


def _score_limit(cfg: PruneConfig) -> int:
    return cfg.n_samples if cfg.n_samples is not None else 256


def run_prune(cfg: PruneConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Load, score, remove ``cfg.remove`` blocks, optionally heal, evaluate, time and save to
    ``cfg.out`` (model.pt + pruned.json + prune.json). Returns the prune.json content."""
    say = progress or (lambda _m: None)
    model, base = load_model(cfg.model, map_location=cfg.device)
    model.to(cfg.device)
    score_batches = load_batches(
        cfg.dataset, "train", cfg.eval_batch_size, cfg.data_dir, limit=_score_limit(cfg)
    )
    test_batches = load_batches(
        cfg.dataset, "test", cfg.eval_batch_size, cfg.data_dir, limit=cfg.test_limit
    )
    say(f"scoring blocks with {cfg.scorer!r}")
    res = prune_model(model, score_batches, cfg.scorer, cfg.remove, cfg.blocks, cfg.scorer_kwargs())
    summary = res.as_dict()
    summary["scorer"] = cfg.scorer
    summary["accuracy_before"] = evaluate(model, test_batches)
    if cfg.heal_steps:
        say(f"healing for {cfg.heal_steps} steps")
        stream = train_stream(cfg.dataset, cfg.batch_size, cfg.data_dir, seed=cfg.seed)
        losses = heal(res.model, stream, cfg.heal_steps, cfg.heal_lr)
        summary["heal"] = {"steps": cfg.heal_steps, "lr": cfg.heal_lr, "last_loss": losses[-1]}
    summary["accuracy_after"] = evaluate(res.model, test_batches)
    example = test_batches[0][0]
    summary["forward_seconds_before"] = time_forward(model, example)
    summary["forward_seconds_after"] = time_forward(res.model, example)
    out = save_pruned(res.model, cfg.out, base)
    (out / "prune.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def run_compare(cfg: PruneConfig, progress: Callable[[str], None] | None = None) -> list[dict]:
    """:func:`compare_scorers` on ``cfg``'s model and data; writes compare.csv/.png to
    ``cfg.out``. Returns the rows."""
    model, _ = load_model(cfg.model, map_location=cfg.device)
    model.to(cfg.device)
    score_batches = load_batches(
        cfg.dataset, "train", cfg.eval_batch_size, cfg.data_dir, limit=_score_limit(cfg)
    )
    test_batches = load_batches(
        cfg.dataset, "test", cfg.eval_batch_size, cfg.data_dir, limit=cfg.test_limit
    )
    rows = compare_scorers(
        model,
        score_batches,
        test_batches,
        cfg.scorers,
        cfg.max_remove,
        cfg.blocks,
        cfg.random_repeats,
        cfg.scorer_kwargs(),
        progress,
    )
    write_compare(rows, cfg.out, title=f"{Path(cfg.model).name} on {cfg.dataset}")
    return rows
