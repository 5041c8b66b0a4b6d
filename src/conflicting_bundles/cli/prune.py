"""`cbundles prune`: remove the most removable blocks of a model, or compare the scorers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..prune.runner import SCORERS, PruneConfig, run_compare, run_prune
from ..prune.scorers import list_scorers


def _scorer_list(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [n for n in names if n not in list_scorers()]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown scorer(s) {', '.join(unknown) or '(none given)'}; "
            f"available: {', '.join(list_scorers())}."
        )
    return names


def register(app: typer.Typer) -> None:
    @app.command("prune")
    def prune(
        model: str = typer.Option(
            ...,
            "--model",
            help="Run directory (arch.json + checkpoints/), pruned directory, torch.save'd "
            "model file, or registered model name (fresh weights).",
        ),
        dataset: str = typer.Option(
            ..., "--dataset", help="Dataset name (see `cbundles datasets`)."
        ),
        out: Path = typer.Option(Path("pruned"), "--out", help="Output directory."),
        remove: int = typer.Option(1, "--remove", min=0, help="Number of blocks to remove."),
        scorer: str = typer.Option(
            "conflict", "--scorer", help=f"Block scorer: {', '.join(list_scorers())}."
        ),
        blocks: str | None = typer.Option(
            None, "--blocks", help="Regex over module names overriding block discovery."
        ),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory."),
        n_samples: int | None = typer.Option(
            None,
            "--n-samples",
            min=1,
            help="Training samples to score on (default: conflict 64, others 256).",
        ),
        lr: float = typer.Option(1e-3, "--lr", help="Conflict criterion: training learning rate."),
        batch_size: int = typer.Option(
            64,
            "--batch-size",
            min=1,
            help="Conflict criterion: training batch size; heal batch size.",
        ),
        criterion: str = typer.Option(
            "reference",
            "--criterion",
            help="Conflict criterion: reference, coarse:K, tol:G, rel:R.",
        ),
        test_limit: int | None = typer.Option(
            None, "--test-limit", min=1, help="Evaluate on the first N test samples only."
        ),
        heal_steps: int = typer.Option(
            0, "--heal-steps", min=0, help="Fine-tune steps after pruning."
        ),
        heal_lr: float = typer.Option(1e-4, "--heal-lr", help="Fine-tune learning rate."),
        device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random scorer and healing."),
        compare: bool = typer.Option(
            False,
            "--compare",
            help="Accuracy for k = 1..K removed blocks by every scorer (CSV + PNG).",
        ),
        max_remove: int | None = typer.Option(
            None, "--max-remove", min=1, help="--compare: largest k (default: all blocks)."
        ),
        scorers: str = typer.Option(
            ",".join(SCORERS), "--scorers", help="--compare: comma-separated scorers."
        ),
        random_repeats: int = typer.Option(
            5, "--random-repeats", min=1, help="--compare: seeds of the random scorer."
        ),
    ) -> None:
        """Depth-prune any model: score its removable blocks and delete the most removable."""
        console = Console(stderr=True)
        if scorer not in list_scorers():
            raise typer.BadParameter(
                f"unknown scorer {scorer!r}; available: {', '.join(list_scorers())}.",
                param_hint="--scorer",
            )
        cfg = PruneConfig(
            model=model, dataset=dataset, out=str(out), remove=remove, scorer=scorer,
            blocks=blocks, data_dir=None if data_dir is None else str(data_dir),
            n_samples=n_samples, lr=lr, batch_size=batch_size, criterion=criterion,
            test_limit=test_limit, heal_steps=heal_steps, heal_lr=heal_lr, device=device,
            seed=seed, compare=compare, max_remove=max_remove, scorers=_scorer_list(scorers),
            random_repeats=random_repeats,
        )  # fmt: skip
        say = lambda m: console.print(m, highlight=False)  # noqa: E731
        try:
            if compare:
                rows = run_compare(cfg, say)
            else:
                summary = run_prune(cfg, say)
        except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from exc
        if compare:
            table = Table(title=f"test accuracy after removing k blocks ({out}/compare.csv)")
            for col in ("scorer", "seed", "k", "accuracy", "params"):
                table.add_column(col)
            for r in rows:
                table.add_row(
                    r["scorer"], str(r["seed"]), str(r["k"]), f"{r['accuracy']:.4f}",
                    str(r["num_params"]),
                )  # fmt: skip
            Console().print(table)
            return
        s = summary
        Console().print(
            f"removed {len(s['removed'])} of {len(s['blocks'])} blocks ({cfg.scorer}): "
            f"{', '.join(s['removed']) or '-'}\n"
            f"params {s['params_before']:,} -> {s['params_after']:,}; "
            f"test accuracy {s['accuracy_before']:.4f} -> {s['accuracy_after']:.4f}; "
            f"forward {1e3 * s['forward_seconds_before']:.2f} ms -> "
            f"{1e3 * s['forward_seconds_after']:.2f} ms\n"
            f"saved to {out}/ (model.pt, pruned.json, prune.json)",
            highlight=False,
        )
