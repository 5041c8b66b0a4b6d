"""``cbundles prune`` end to end: load, score, remove, heal, evaluate, time, save, report.

Writes to ``out``: model.pt + pruned.json (reloadable: ``--model out``), hf/ (Hugging Face
models: ``save_pretrained``, loadable with ``from_pretrained``), prune.json (the summary),
scores.csv + scores.png (every block's score, the removed ones marked) and report.html.
With ``compare``: compare.csv, compare.png, compare.json and report.html.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..measurespec import MeasureSpec
from ..runs import write_csv, write_json
from .baselines import calibration_loss, output_features
from .batches import attention_mask, first_inputs, split_batch
from .discovery import run_model, to_device
from .heal import evaluate, heal, logits_of, parse_train, trainable_count
from .loading import (
    ImagePrep,
    load_batches,
    load_model,
    read_sentences,
    require,
    split_sentences,
    text_batches,
    train_stream,
)
from .runner import SCORERS, compare_scorers, prune_model, rank, time_forward, write_compare
from .surgery import count_params, save_pruned

__all__ = ["PruneConfig", "run_prune", "run_compare", "quality"]


@dataclass
class PruneConfig:
    """Everything ``cbundles prune`` needs; see :func:`run_prune`."""

    model: str
    dataset: str | None = None  # image dataset name; or text=
    text: str | None = None  # sentence file (one per line, optionally topic<TAB>sentence)
    arch: str | None = None  # model spec for a state-dict file
    trust_pickle: bool = False
    model_kwargs: dict = field(default_factory=dict)
    input_size: tuple[int, int] | None = None
    channels: int | None = None
    normalize: str = "none"
    tokenizer: str | None = None  # default: the hf model's directory
    max_length: int = 64
    out: str = "pruned"
    remove: int = 1
    scorer: str = "conflict"
    iterative: bool = False
    block_regex: str | None = None  # regex over module names overriding block discovery
    data_dir: str | None = None
    n_samples: int | None = None  # scoring samples (None: each scorer's default)
    # conflict criterion: the training lr and batch size; None = the run's (a run directory),
    # else MeasureSpec's 1e-3 / 64. batch_size is also the healing batch size.
    lr: float | None = None
    batch_size: int | None = None
    criterion: str = "reference"
    eval_batch_size: int = 256
    test_limit: int | None = None  # None: the whole test split
    heal_steps: int = 0
    heal_lr: float = 1e-4
    heal_train: str = "all"  # all | head | head+last:N
    device: str = "cpu"
    seed: int = 0
    compare: bool = False
    max_remove: int | None = None
    scorers: tuple[str, ...] = SCORERS
    random_repeats: int = 5

    def __post_init__(self) -> None:  # a config file holds lists where the fields are tuples
        if self.input_size is not None:
            self.input_size = tuple(self.input_size)
        self.scorers = tuple(self.scorers)

    def measure_spec(self) -> tuple[MeasureSpec, dict[str, str]]:
        """(the conflict scorer's measurement context, where lr and batch size come from):
        a run directory's lr / batch size / probe kind (MeasureSpec.from_run; an auto-tune
        folder stands for its final step) unless --lr / --batch-size are given, else the
        defaults; the criterion and scoring samples (64 unless --n-samples) are this config's."""
        base, origin = MeasureSpec(), "default"
        given = {"lr": self.lr, "batch_size": self.batch_size}
        path = Path(self.model)
        if path.is_dir() and None in given.values():
            from ..autotune import final_run_dir
            from ..runs import RunDirError

            run = final_run_dir(path)
            if (run / "arch.json").is_file() and (run / "config.json").is_file():
                try:
                    base, origin = MeasureSpec.from_run(run), "run"
                except (RunDirError, ValueError, TypeError) as e:
                    raise ValueError(
                        f"{e} prune reads the run's lr and batch size from it (they set the "
                        "bundle metric's resolution): pass --lr and --batch-size to prune "
                        "without it."
                    ) from e
        spec = base.replace(
            **{k: v for k, v in given.items() if v is not None},
            criterion=self.criterion,
            n_samples=self.n_samples or MeasureSpec.n_samples,
        )
        return spec, {k: "given" if v is not None else origin for k, v in given.items()}

    def scorer_kwargs(self, spec: MeasureSpec | None = None) -> dict:
        """Options for every scorer (get_scorer keeps those a scorer takes)."""
        spec = spec or self.measure_spec()[0]
        kw = dict(spec=spec, criterion=self.criterion, seed=self.seed)
        if self.n_samples is not None:
            kw["n_samples"] = self.n_samples
        return kw


def _tokenizer(cfg: PruneConfig, base: dict | None):
    path = cfg.tokenizer
    if path is None:
        spec = (base or {}).get("spec") or cfg.model
        path = spec[3:] if spec.startswith("hf:") else spec
    transformers = require("transformers")
    try:
        return transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"no tokenizer at {path} ({e}); pass --tokenizer PATH.") from e


def _check(cfg: PruneConfig) -> None:
    """Fail before any loading on options that cannot work together."""
    if (cfg.dataset is None) == (cfg.text is None):
        raise ValueError("give exactly one of --dataset (images) or --text (a sentence file).")
    if cfg.heal_steps and cfg.text is not None:
        raise ValueError("--heal-steps needs an image --dataset (labelled training data).")
    parse_train(cfg.heal_train)


def _data(cfg: PruneConfig, base: dict | None) -> tuple[list, list, Callable | None]:
    """(score batches, evaluation batches, heal stream factory or None)."""
    limit = cfg.n_samples if cfg.n_samples is not None else 256
    if cfg.text is not None:
        tok = _tokenizer(cfg, base)
        sents, topics = read_sentences(cfg.text)
        classes = sorted(set(topics)) if topics else None
        (s_sc, t_sc), (s_ev, t_ev) = split_sentences(sents, topics, seed=cfg.seed)
        kw = dict(tokenizer=tok, max_length=cfg.max_length, classes=classes)
        score = text_batches(s_sc[:limit], None if t_sc is None else t_sc[:limit], **kw)
        return score, text_batches(s_ev, t_ev, **kw), None
    prep = ImagePrep(cfg.input_size, cfg.channels, cfg.normalize)
    score = load_batches(cfg.dataset, "train", cfg.eval_batch_size, cfg.data_dir, limit, prep)
    test = load_batches(
        cfg.dataset, "test", cfg.eval_batch_size, cfg.data_dir, cfg.test_limit, prep
    )

    def stream(batch_size: int):
        return train_stream(cfg.dataset, batch_size, cfg.data_dir, seed=cfg.seed, prep=prep)

    return score, test, stream


@torch.no_grad()
def quality(model: nn.Module, full: nn.Module, batches: list) -> dict:
    """How close ``model`` stays to ``full`` on ``batches``: mean cosine of the output features
    (per sample), top-1 accuracy when the model is a classifier of the labels, and the
    next-token loss for a language model."""
    model.eval()
    full.eval()
    cos, n = 0.0, 0
    ref = []
    is_clf = False
    for batch in batches:
        x, y = split_batch(batch)
        x = to_device(x, next(model.parameters()).device)
        o_full, o = run_model(full, x), run_model(model, x)
        f_full = output_features(o_full, attention_mask(x))
        ref.append(f_full)
        f = output_features(o, attention_mask(x))
        cos += float(F.cosine_similarity(f, f_full).sum())
        n += f.shape[0]
        try:
            lg = logits_of(o)
            is_clf = y is not None and lg.dim() == 2 and lg.shape[1] > int(y.max())
        except TypeError:
            is_clf = False
    out = {"cosine_to_full": cos / max(n, 1)}
    if is_clf:
        out["accuracy"] = evaluate(model, batches)
    inputs = [split_batch(b)[0] for b in batches]
    if inputs and isinstance(inputs[0], Mapping) and "input_ids" in inputs[0]:
        loss, kind = calibration_loss(model, inputs, ref)
        if kind == "lm-loss":
            out["lm_loss"] = loss
    return out


def _score_rows(res, found_params: dict[str, int]) -> list[dict]:
    order = rank(res.scores)
    rows = []
    for i, name in enumerate(res.blocks):
        d = res.details.get(name, {}) if isinstance(res.details.get(name), dict) else {}
        row = {
            "block": name,
            "position": i,
            "params": found_params.get(name, 0),
            "score": res.scores.get(name),
            "rank": order.index(name) + 1 if name in order else None,
            "removed": name in res.removed,
        }
        row.update({k: v for k, v in d.items() if isinstance(v, (int, float, str))})
        rows.append(row)
    return rows


def _plot_scores(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.4, 0.3 * len(rows)), 4.0))
    colors = ["tab:red" if r["removed"] else "tab:blue" for r in rows]
    ax.bar(range(len(rows)), [r["score"] for r in rows], color=colors)
    ax.set_xticks(range(len(rows)), [r["block"] for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel("score (higher = more removable)")
    ax.set_title(title + " (red: removed)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def _headline(s: dict) -> str:
    pb, pa = s["params_before"], s["params_after"]
    lines = [
        f"Removed {len(s['removed'])} of {len(s['blocks'])} blocks with scorer "
        f"'{s['scorer']}'{' (iterative)' if s['iterative'] else ''}: "
        f"{', '.join(s['removed']) or '-'}.",
        f"Parameters {pb:,} -> {pa:,} ({100 * (pb - pa) / max(pb, 1):.1f}% fewer); forward "
        f"{1e3 * s['forward_seconds_before']:.2f} ms -> {1e3 * s['forward_seconds_after']:.2f} ms.",
    ]
    q = s["quality_after"]
    if "accuracy" in q:
        from ..report import pct

        lines.append(
            f"Evaluation accuracy {pct(s['quality_before']['accuracy'])} -> {pct(q['accuracy'])}."
        )
    lines.append(f"Output cosine to the full model: {q['cosine_to_full']:.4f}.")
    m = s.get("measure")
    if s["scorer"] == "conflict" and m:
        said = {"run": "the run's", "given": "given", "default": "the default"}
        src = {k: said.get(v, v) for k, v in m["source"].items()}
        lines.append(
            f"Conflict scores: {m['criterion']} criterion on {m['n_samples']} samples, lr "
            f"{m['lr']:g} ({src['lr']}), batch size {m['batch_size']} ({src['batch_size']})."
        )
    return "\n".join(lines)


def run_prune(cfg: PruneConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Load, score, remove ``cfg.remove`` blocks, optionally heal, evaluate, time, save and
    report to ``cfg.out``. Returns the prune.json content."""
    from ..report import html_image, html_table, write_html

    say = progress or (lambda _m: None)
    _check(cfg)
    spec, source = cfg.measure_spec()
    say(f"loading {cfg.model}")
    model, base = load_model(cfg.model, cfg.device, cfg.arch, cfg.trust_pickle, cfg.model_kwargs)
    model.to(cfg.device)
    score_batches, eval_batches, stream = _data(cfg, base)
    mode = "iterative " if cfg.iterative else ""
    say(f"scoring blocks with {mode}{cfg.scorer!r} on {sum(_n(b) for b in score_batches)} samples")
    res = prune_model(
        model,
        score_batches,
        cfg.scorer,
        cfg.remove,
        cfg.block_regex,
        cfg.scorer_kwargs(spec),
        cfg.iterative,
    )
    say(f"found {len(res.blocks)} blocks; removed {', '.join(res.removed) or '-'}")
    s = res.as_dict()
    s.update(scorer=cfg.scorer, iterative=cfg.iterative, criterion=cfg.criterion, model=cfg.model)
    s["measure"] = {**spec.to_dict(), "source": source}  # the conflict scorer's context
    s["quality_before"] = quality(model, model, eval_batches)
    if cfg.heal_steps:
        if stream is None:
            raise ValueError("--heal-steps needs an image --dataset (labelled training data).")
        example = first_inputs(score_batches)
        n_train = trainable_count(res.model, cfg.heal_train, example)
        say(f"healing {cfg.heal_train} ({n_train:,} weights) for {cfg.heal_steps} steps")
        t0 = time.perf_counter()
        losses = heal(
            res.model,
            stream(spec.batch_size),
            cfg.heal_steps,
            cfg.heal_lr,
            train=cfg.heal_train,
            example=example,
            progress=say,
        )
        s["heal"] = {
            "train": cfg.heal_train,
            "steps": cfg.heal_steps,
            "lr": cfg.heal_lr,
            "batch_size": spec.batch_size,
            "samples_seen": cfg.heal_steps * spec.batch_size,
            "trainable_params": n_train,
            "seconds": time.perf_counter() - t0,
            "first_loss": losses[0],
            "last_loss": losses[-1],
        }
    say("evaluating")
    s["quality_after"] = quality(res.model, model, eval_batches)
    example = split_batch(eval_batches[0])[0]
    # Median of 5 timed forwards (after 1 warm-up) on the first evaluation batch.
    s["forward_seconds_before"] = time_forward(model, example, repeats=5, warmup=1)
    s["forward_seconds_after"] = time_forward(res.model, example, repeats=5, warmup=1)
    out = save_pruned(res.model, cfg.out, base)
    if hasattr(res.model, "save_pretrained"):
        res.model.save_pretrained(out / "hf")
    s["config"] = asdict(cfg)
    params = {n: count_params(model.get_submodule(n)) for n in res.blocks}
    rows = _score_rows(res, params)
    write_csv(out / "scores.csv", rows)
    _plot_scores(rows, out / "scores.png", f"{cfg.scorer} scores")
    write_json(out / "prune.json", s)
    s["headline"] = _headline(s)
    sections = [
        ("Block scores", html_image(out / "scores.png", "scores")),
        ("Blocks", html_table(rows)),
    ]
    if "heal" in s:
        sections.append(("Healing budget", html_table([s["heal"]])))
    write_html(
        out / "report.html", f"cbundles prune: {cfg.model}", sections, headline=s["headline"], raw=s
    )
    return s


def _n(batch) -> int:
    from .batches import batch_len

    return batch_len(split_batch(batch)[0])


def run_compare(cfg: PruneConfig, progress: Callable[[str], None] | None = None) -> list[dict]:
    """:func:`compare_scorers` on ``cfg``'s model and (labelled image) data; writes
    compare.csv/.png/.json and report.html to ``cfg.out``. Returns the rows."""
    from ..report import html_image, html_table, write_html

    _check(cfg)
    spec, source = cfg.measure_spec()
    model, base = load_model(cfg.model, cfg.device, cfg.arch, cfg.trust_pickle, cfg.model_kwargs)
    model.to(cfg.device)
    score_batches, test_batches, _ = _data(cfg, base)
    rows = compare_scorers(
        model,
        score_batches,
        test_batches,
        cfg.scorers,
        cfg.max_remove,
        cfg.block_regex,
        cfg.random_repeats,
        cfg.scorer_kwargs(spec),
        progress,
    )
    title = f"{Path(cfg.model).name} on {cfg.dataset or cfg.text}"
    csv_path, png_path = write_compare(rows, cfg.out, title=title)
    measure = {**spec.to_dict(), "source": source}  # the conflict scorer's context
    write_json(
        Path(cfg.out) / "compare.json", {"config": asdict(cfg), "measure": measure, "rows": rows}
    )
    best = {}
    for r in rows:
        if r["k"] == (cfg.max_remove or 1) and r["scorer"] != "none":
            best.setdefault(r["scorer"], []).append(r["accuracy"])
    kk = cfg.max_remove or 1
    top = max(best, key=lambda n: sum(best[n]) / len(best[n])) if best else "-"
    headline = f"At k = {kk} removed blocks the highest test accuracy is by scorer '{top}'."
    write_html(
        Path(cfg.out) / "report.html",
        f"cbundles prune --compare: {title}",
        [
            ("Accuracy vs removed blocks", html_image(png_path, "compare")),
            ("Rows", html_table(rows)),
        ],
        headline=headline,
        raw={"config": asdict(cfg)},
    )
    return rows
