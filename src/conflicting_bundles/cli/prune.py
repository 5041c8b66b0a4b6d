"""`cbundles prune`: remove the most removable blocks of a model, or compare the scorers."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from ..console import escape, make_console
from ..prune.command import PruneConfig, run_compare, run_prune
from ..prune.config import RENAMED_FIELDS
from ..prune.outputs import PRUNE_FILES, compare_headline, relative_scores
from ..prune.scorers import list_scorers
from ..report import pct
from ..train import resolve_device
from .common import (
    CRITERIA,
    DATA_DIR,
    DEVICES,
    PRINT_CONFIG_HELP,
    config_help,
    config_values,
    default,
    error,
    given,
    os_error_message,
    print_config,
)


def P(name: str) -> str:
    return default(PruneConfig, name)


def _scorer_list(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [n for n in names if n not in list_scorers()]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown scorer(s) {', '.join(unknown) or '(none given)'}; "
            f"available: {', '.join(list_scorers())}."
        )
    return names


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or min(vals) < 1:
        raise typer.BadParameter(f"{text!r}: give H or H,W (e.g. 224 or 224,224).")
    return (vals[0], vals[-1])


def _kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"not JSON ({e}); e.g. '{{\"num_classes\": 10}}'.") from e
    if not isinstance(d, dict):
        raise typer.BadParameter("give a JSON object, e.g. '{\"num_classes\": 10}'.")
    return d


def register(app: typer.Typer) -> None:
    @app.command("prune")
    def prune(
        model: str = typer.Option(
            None,
            "--model",
            help="Import path (torchvision.models:resnet18), timm:NAME, hf:PATH, run "
            "directory, pruned directory, state-dict file (with --arch), or registered model.",
        ),
        config: Path = typer.Option(
            None, "--config", "-c", help=config_help("prune", "its prune.json")
        ),
        print_config_: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
        dataset: str | None = typer.Option(
            None,
            "--dataset",
            help="Image dataset name (see `cbundles datasets`; default: a run directory's).",
        ),
        text: Path | None = typer.Option(
            None, "--text", help="Sentence file for language models (topic<TAB>sentence)."
        ),
        arch: str | None = typer.Option(
            None, "--arch", help="Model spec that builds the architecture of a state-dict file."
        ),
        model_kwargs: str | None = typer.Option(
            None, "--model-kwargs", help="JSON keyword arguments, e.g. '{\"num_classes\": 10}'."
        ),
        trust_pickle: bool = typer.Option(
            None, "--trust-pickle", help="Allow loading a pickled nn.Module (runs its code)."
        ),
        input_size: str | None = typer.Option(
            None, "--input-size", help="Resize images to H or H,W (e.g. 224)."
        ),
        channels: int | None = typer.Option(
            None, "--channels", min=1, max=3, help="Image channels the model takes (1 or 3)."
        ),
        normalize: str = typer.Option(
            None,
            "--normalize",
            help="Image normalisation: none, imagenet, or M,..:S,.." + P("normalize") + ".",
        ),
        tokenizer: str | None = typer.Option(
            None, "--tokenizer", help="Tokenizer directory (default: the hf: model's)."
        ),
        max_length: int = typer.Option(
            None, "--max-length", min=2, help="Tokens per sentence" + P("max_length") + "."
        ),
        iterative: bool = typer.Option(
            None, "--iterative", help="Re-score after each removal (SLEB with --scorer loss)."
        ),
        heal_train: str = typer.Option(
            None,
            "--heal-train",
            help="What healing trains: all, head, or head+last:N" + P("heal_train") + ".",
        ),
        out: Path = typer.Option(None, "--out", help="Output directory" + P("out") + "."),
        remove: int = typer.Option(
            None, "--remove", min=0, help="Number of blocks to remove" + P("remove") + "."
        ),
        scorer: str = typer.Option(
            None,
            "--scorer",
            help=f"Block scorer: {', '.join(list_scorers())}" + P("scorer") + ".",
        ),
        block_regex: str | None = typer.Option(
            None,
            "--block-regex",
            help="Regex over module names overriding block discovery, e.g. 'layer\\d\\.\\d+'.",
        ),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR + "."),
        n_samples: int | None = typer.Option(
            None,
            "--samples",
            "--n-samples",
            min=1,
            help="Training samples to score on (default: conflict and loss 64, the others "
            "256; random and reverse-order read none).",
        ),
        lr: float = typer.Option(
            None,
            "--lr",
            help="Conflict criterion: the training learning rate (default: a run directory's, "
            "else 0.001).",
        ),
        batch_size: int = typer.Option(
            None,
            "--batch-size",
            min=1,
            help="Conflict criterion: the training batch size, also the heal batch size "
            "(default: a run directory's, else 64).",
        ),
        criterion: str = typer.Option(
            None,
            "--criterion",
            help=f"Conflict criterion: {CRITERIA}" + P("criterion") + ".",
        ),
        test_limit: int | None = typer.Option(
            None, "--test-limit", min=1, help="Evaluate on the first N test samples only."
        ),
        heal_steps: int = typer.Option(
            None,
            "--heal-steps",
            min=0,
            help="Fine-tune steps after pruning" + P("heal_steps") + ".",
        ),
        heal_lr: float = typer.Option(
            None, "--heal-lr", help="Fine-tune learning rate" + P("heal_lr") + "."
        ),
        device: str = typer.Option(None, "--device", help=DEVICES + P("device") + "."),
        seed: int = typer.Option(
            None, "--seed", help="Seed of the random scorer and healing" + P("seed") + "."
        ),
        compare: bool = typer.Option(
            None,
            "--compare",
            help="Accuracy for k = 1..K removed blocks by every scorer (CSV + PNG).",
        ),
        max_remove: int | None = typer.Option(
            None, "--max-remove", min=1, help="--compare: largest k (default: all blocks)."
        ),
        scorers: str = typer.Option(
            None, "--scorers", help="--compare: comma-separated scorers" + P("scorers") + "."
        ),
        random_repeats: int = typer.Option(
            None,
            "--random-repeats",
            min=1,
            help="--compare: seeds of the random scorer" + P("random_repeats") + ".",
        ),
        force: bool = typer.Option(
            False,
            "--force",
            help="Replace the prune results already in --out (only prune's own files: "
            + ", ".join(PRUNE_FILES)
            + ").",
        ),
    ) -> None:
        """Depth-prune any model: score its removable blocks and delete the most removable.

        Settings: the PruneConfig defaults, then --config FILE, then the options given here.
        """
        console = make_console(stderr=True)
        file = config_values(config, PruneConfig, renamed=RENAMED_FIELDS)
        cli = given(
            model=model, dataset=dataset, text=None if text is None else str(text), arch=arch,
            model_kwargs=None if model_kwargs is None else _kwargs(model_kwargs),
            trust_pickle=trust_pickle, input_size=_size(input_size), channels=channels,
            normalize=normalize, tokenizer=tokenizer, max_length=max_length, iterative=iterative,
            heal_train=heal_train, out=None if out is None else str(out), remove=remove,
            scorer=scorer, block_regex=block_regex,
            data_dir=None if data_dir is None else str(data_dir),
            n_samples=n_samples, lr=lr, batch_size=batch_size, criterion=criterion,
            test_limit=test_limit, heal_steps=heal_steps, heal_lr=heal_lr, device=device,
            seed=seed, compare=compare, max_remove=max_remove,
            scorers=None if scorers is None else _scorer_list(scorers),
            random_repeats=random_repeats,
        )  # fmt: skip
        values = {**file, **cli}
        if values.get("model") is None:
            raise error("give the model to prune: --model SPEC (or `model:` in --config).")
        if values.get("scorer", "conflict") not in list_scorers():
            raise typer.BadParameter(
                f"unknown scorer {values['scorer']!r}; available: {', '.join(list_scorers())}.",
                param_hint="--scorer",
            )
        try:
            cfg = PruneConfig(**values)
        except (TypeError, ValueError) as exc:
            raise error(str(exc)) from exc
        try:
            resolve_device(cfg.device)  # run_prune resolves it again and records the result
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--device") from exc
        if print_config_:
            print_config(asdict(cfg))  # as given, reusable as --config ("auto" stays "auto")
        out = Path(cfg.out)
        compare = cfg.compare
        say = lambda m: console.print(escape(m), highlight=False)  # noqa: E731
        try:  # the output folder is locked and checked (writable, no old results) first
            if compare:
                rows = run_compare(cfg, say, force=force)
            else:
                summary = run_prune(cfg, say, force=force)
        except (ValueError, TypeError, FileNotFoundError, RuntimeError, KeyError) as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from exc
        except OSError as exc:  # read-only or full disk while writing the results
            console.print(f"[red]error:[/red] {escape(os_error_message(exc))}", highlight=False)
            raise typer.Exit(1) from exc
        if compare:
            where = escape(f"{out}/compare.csv")
            table = Table(title=f"test accuracy after removing k blocks ({where})")
            for col in ("scorer", "seed", "k", "accuracy", "params"):
                table.add_column(col)
            for r in rows:
                table.add_row(
                    r["scorer"], str(r["seed"]), str(r["k"]), pct(r["accuracy"]),
                    str(r["num_params"]),
                )  # fmt: skip
            make_console().print(table)
            make_console().print(escape(compare_headline(rows, cfg.max_remove)), highlight=False)
            return
        s = summary
        table = Table(title=f"blocks by {cfg.scorer} ({escape(str(out))}/scores.csv)")
        for col in ("block", "rank", "score / max", "score", "removed"):
            table.add_column(col, justify="left" if col == "block" else "right")
        order = sorted(s["scores"], key=lambda n: -s["scores"][n])
        rel = relative_scores(s["scores"])
        for name in s["blocks"]:
            table.add_row(
                escape(name), str(order.index(name) + 1) if name in order else "-",
                f"{rel.get(name, float('nan')):.2f}", f"{s['scores'].get(name, float('nan')):.3g}",
                "yes" if name in s["removed"] else "",
            )  # fmt: skip
        make_console().print(table)
        saved = "model.pt, pruned.json, " + ("hf/, " if (out / "hf").is_dir() else "")
        make_console().print(
            escape(
                s["headline"] + f"\nsaved to {out}/ ({saved}prune.json, scores.csv, "
                "scores.png, report.html)"
            ),
            highlight=False,
        )
