"""``cbundles prune`` end to end: load, score, remove, heal, evaluate, time, save, report.

Writes to ``out``: model.pt + pruned.json (reloadable: ``--model out``), hf/ (Hugging Face
models: ``save_pretrained``, loadable with ``from_pretrained``), prune.json (the summary),
scores.csv + scores.png (every block's score, the removed ones marked) and report.html.
With ``compare``: compare.csv, compare.png, compare.json and report.html.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..metric import weight_amplitude
from ..runs import write_csv, write_json
from .baselines import calibration_loss, output_features
from .batches import attention_mask, batch_len, first_inputs, split_batch
from .config import DEFAULT_SCORE_SAMPLES, PruneConfig
from .discovery import run_model, to_device
from .heal import evaluate, heal, logits_of, parse_train, trainable_count
from .inputs import (
    ImagePrep,
    load_batches,
    read_sentences,
    split_sentences,
    text_batches,
    train_stream,
)
from .loading import load_model, require
from .outputs import (
    compare_headline,
    open_out,
    plot_scores,
    prune_headline,
    score_rows,
    scoring_text,
    warnings_as_notes,
)
from .runner import compare_scorers, prune_model, time_forward, write_compare
from .scorers import get_scorer, scorer_options
from .surgery import count_params, save_pruned

__all__ = ["PruneConfig", "run_prune", "run_compare", "quality", "samples_used"]


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
    if cfg.block_regex is not None:
        try:
            re.compile(cfg.block_regex)
        except re.error as e:
            raise ValueError(f"--block-regex '{cfg.block_regex}' is not a valid regex: {e}.") from e


def _data(cfg: PruneConfig, base: dict | None) -> tuple[list, list, Callable | None]:
    """(score batches, evaluation batches, heal stream factory or None)."""
    limit = cfg.n_samples if cfg.n_samples is not None else DEFAULT_SCORE_SAMPLES
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


def samples_used(name: str, scorer_kwargs: dict, batches: list) -> int | None:
    """How many of ``batches``' samples scorer ``name`` reads (None: it reads no data)."""
    sc = get_scorer(name, **scorer_options(name, scorer_kwargs))
    if not sc.uses_data:
        return None
    have = sum(batch_len(split_batch(b)[0]) for b in batches)
    return have if sc.n_samples is None else min(sc.n_samples, have)


def _load(cfg: PruneConfig, say: Callable[[str], None]) -> tuple[nn.Module, dict | None]:
    """The model to prune on ``cfg.device`` and its base spec (loading.load_model)."""
    say(f"loading {cfg.model} on {cfg.device}")
    model, base = load_model(cfg.model, cfg.device, cfg.arch, cfg.trust_pickle, cfg.model_kwargs)
    if cfg.run_dir() is not None and base and base.get("checkpoint"):  # which weights
        epoch = "" if base.get("epoch") is None else f", epoch {base['epoch']}"
        say(f"weights: checkpoints/{base['checkpoint']}{epoch} (the default of every command)")
    return model.to(cfg.device), base


def _resolved(cfg: PruneConfig, say: Callable[[str], None]) -> PruneConfig:
    """``cfg`` with the device it will run on ("auto" -> "cuda" or "cpu"; ValueError for an
    unknown or unavailable device) and, for a run directory or auto-tune folder given without
    --dataset or --text, the run's dataset and data folder."""
    from ..train import resolve_device

    cfg = replace(cfg, device=str(resolve_device(cfg.device)))
    run = cfg.run_dir()
    if run is None or cfg.dataset is not None or cfg.text is not None:
        return cfg
    from ..runs import load_config

    conf = load_config(run)
    if not isinstance(conf.get("dataset"), str):
        return cfg
    say(f"dataset {conf['dataset']} (the run's; --dataset overrides)")
    return replace(cfg, dataset=conf["dataset"], data_dir=cfg.data_dir or conf.get("data_dir"))


def _measure(cfg: PruneConfig, spec, source: dict, model: nn.Module, n: int | None) -> dict:
    """The conflict scorer's measurement context as used: the spec, the samples read, w_max."""
    w_from = "the model's largest |trainable parameter|"
    if cfg.iterative and not cfg.compare:
        w_from += " (the full model's; each iterative step re-reads it from the pruned model)"
    return {**spec.to_dict(), "n_samples": n, "w_max": weight_amplitude(model),
            "w_max_from": w_from, "source": source}  # fmt: skip


def run_prune(
    cfg: PruneConfig, progress: Callable[[str], None] | None = None, *, force: bool = False
) -> dict:
    """Load, score, remove ``cfg.remove`` blocks, optionally heal, evaluate, time, save and
    report to ``cfg.out``. A folder that already holds prune results is refused unless
    ``force`` (then exactly prune's files are replaced). Library warnings reach ``progress``
    as one-line notes. Returns the prune.json content."""
    say = progress or (lambda _m: None)
    cfg = _resolved(cfg, say)
    _check(cfg)
    spec, source = cfg.measure_spec()
    with open_out(cfg.out, force) as rd, warnings_as_notes(say) as notes:
        model, base = _load(cfg, say)
        score_batches, eval_batches, stream = _data(cfg, base)
        kwargs = scorer_options(cfg.scorer, cfg.scorer_kwargs(spec))
        n_used = samples_used(cfg.scorer, kwargs, score_batches)
        mode = "iterative " if cfg.iterative else ""
        say(f"scoring blocks with {mode}{cfg.scorer!r} {scoring_text(n_used)}")
        res = prune_model(
            model, score_batches, cfg.scorer, cfg.remove, cfg.block_regex, kwargs, cfg.iterative
        )
        say(f"found {len(res.blocks)} blocks; removed {', '.join(res.removed) or '-'}")
        s = res.as_dict()
        s.update(scorer=cfg.scorer, iterative=cfg.iterative, model=cfg.model, device=cfg.device)
        s["score_samples"] = n_used
        if cfg.scorer == "conflict":  # the measurement context exists for this scorer only
            s["criterion"] = spec.to_dict()["criterion"]
            s["measure"] = _measure(cfg, spec, source, model, n_used)
        s["quality_before"] = quality(model, model, eval_batches)
        if cfg.heal_steps:
            s["heal"] = _heal(cfg, res.model, score_batches, stream, spec.batch_size, say)
        say("evaluating")
        s["quality_after"] = quality(res.model, model, eval_batches)
        for when in ("before", "after"):
            if "accuracy" in s[f"quality_{when}"]:
                s[f"accuracy_{when}"] = s[f"quality_{when}"]["accuracy"]
        example = split_batch(eval_batches[0])[0]
        # Median of 5 timed forwards (after 1 warm-up) on the first evaluation batch.
        s["forward_seconds_before"] = time_forward(model, example, repeats=5, warmup=1)
        s["forward_seconds_after"] = time_forward(res.model, example, repeats=5, warmup=1)
        if rd.pending_clear:  # --force: the old results go only now (the model may be one)
            rd.clear()
        s["notes"] = notes
        _write_prune(cfg, s, res, model, base)
    return s


def _heal(cfg, pruned, score_batches, stream, batch_size: int, say) -> dict:
    """Fine-tune ``pruned`` in place for cfg.heal_steps; returns the healing record."""
    if stream is None:
        raise ValueError("--heal-steps needs an image --dataset (labelled training data).")
    example = first_inputs(score_batches)
    n_train = trainable_count(pruned, cfg.heal_train, example)
    say(f"healing {cfg.heal_train} ({n_train:,} weights) for {cfg.heal_steps} steps")
    t0 = time.perf_counter()
    losses = heal(
        pruned, stream(batch_size), cfg.heal_steps, cfg.heal_lr, train=cfg.heal_train,
        example=example, progress=say,
    )  # fmt: skip
    return {
        "train": cfg.heal_train,
        "steps": cfg.heal_steps,
        "lr": cfg.heal_lr,
        "batch_size": batch_size,
        "samples_seen": cfg.heal_steps * batch_size,
        "trainable_params": n_train,
        "seconds": time.perf_counter() - t0,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def _write_prune(cfg: PruneConfig, s: dict, res, model: nn.Module, base: dict | None) -> None:
    """model.pt + pruned.json (+ hf/), scores.csv/.png, prune.json and report.html."""
    from ..report import html_image, html_table, write_html

    out = save_pruned(res.model, cfg.out, base)
    if hasattr(res.model, "save_pretrained"):
        res.model.save_pretrained(out / "hf")
    s["config"] = asdict(cfg)
    params = {n: count_params(model.get_submodule(n)) for n in res.blocks}
    rows = score_rows(res, params)
    write_csv(out / "scores.csv", rows)
    plot_scores(rows, out / "scores.png", f"{cfg.scorer} scores")
    s["headline"] = prune_headline(s)
    write_json(out / "prune.json", s)
    sections = [
        ("Block scores", html_image(out / "scores.png", "scores")),
        ("Blocks", html_table(rows)),
    ]
    if "heal" in s:
        sections.append(("Healing budget", html_table([s["heal"]])))
    write_html(
        out / "report.html", f"cbundles prune: {cfg.model}", sections, headline=s["headline"], raw=s
    )


def run_compare(
    cfg: PruneConfig, progress: Callable[[str], None] | None = None, *, force: bool = False
) -> list[dict]:
    """:func:`compare_scorers` on ``cfg``'s model and (labelled image) data; writes
    compare.csv/.png/.json and report.html to ``cfg.out`` (refused where prune results are,
    unless ``force``). Returns the rows; :func:`outputs.compare_headline` says the answer."""
    from ..report import html_image, html_table, write_html

    say = progress or (lambda _m: None)
    cfg = _resolved(cfg, say)
    _check(cfg)
    spec, source = cfg.measure_spec()
    with open_out(cfg.out, force) as rd, warnings_as_notes(say) as notes:
        model, base = _load(cfg, say)
        score_batches, test_batches, _ = _data(cfg, base)
        kwargs = cfg.scorer_kwargs(spec)
        used = {n: samples_used(n, kwargs, score_batches) for n in cfg.scorers}
        say("comparing " + ", ".join(f"{n} {scoring_text(k)}" for n, k in used.items()))
        rows = compare_scorers(
            model, score_batches, test_batches, cfg.scorers, cfg.max_remove, cfg.block_regex,
            cfg.random_repeats, kwargs, say,
        )  # fmt: skip
        if rd.pending_clear:
            rd.clear()
        title = f"{Path(cfg.model).name} on {cfg.dataset or cfg.text}"
        _, png_path = write_compare(rows, cfg.out, title=title)
        summary = {"config": asdict(cfg), "device": cfg.device, "score_samples": used}
        if cfg.uses_conflict:
            summary["measure"] = _measure(cfg, spec, source, model, used["conflict"])
        headline = compare_headline(rows, cfg.max_remove)
        summary.update(headline=headline, notes=notes, rows=rows)
        write_json(Path(cfg.out) / "compare.json", summary)
        write_html(
            Path(cfg.out) / "report.html",
            f"cbundles prune --compare: {title}",
            [
                ("Accuracy vs removed blocks", html_image(png_path, "compare")),
                ("Rows", html_table(rows)),
            ],
            headline=headline,
            raw={k: v for k, v in summary.items() if k != "rows"},
        )
    return rows
