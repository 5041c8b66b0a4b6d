"""`cbundles search`: several depth-search methods from one start, one comparison table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..console import make_console
from ..data import DatasetError
from ..rundir import locked
from ..runs import RunDirError
from ..search.records import CONV_START, FNN_START, VAL_SPLIT_DEFAULTS, Budget, SearchStart
from ..train.config import check_names
from .common import (
    DATA_DIR,
    DEVICES,
    PRINT_CONFIG_HELP,
    config_help,
    config_values,
    default,
    error,
    given,
    parse_blocks,
    parse_number,
    print_config,
    sigterm_as_interrupt,
)

# What benchmarks/results/bench_search.json recommends (its "recommended"; tests check that
# they agree): the method `cbundles search` runs beside `fixed` when --methods is not given.
RECOMMENDED = "sh-ladder"
DEFAULT_METHODS = f"{RECOMMENDED},fixed"
ALL_METHODS = (
    "autotune,autotune-warm,autotune-calibrated,oracle-depth,naswot,conflict-at-init,"
    "sh-ladder,cb-sh,fixed,random"
)
EXTRA_KEYS = ("methods", "out")  # config-file keys besides the SearchStart fields
RENAMED = {"model": "family", "layers": "blocks"}  # what other commands call these
DEFAULT_OUT = "runs/search"


def B(name: str) -> str:
    return default(Budget, name)


def S(name: str) -> str:
    return default(SearchStart, name)


def _methods(value) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    specs = [str(m).strip() for m in items if str(m).strip()]
    if not specs:
        raise error("--methods is empty; name at least one method.")
    specs = [RECOMMENDED if m == "recommended" else m for m in specs]
    return list(dict.fromkeys(specs))  # "recommended,sh-ladder" runs it once


def resolve_start(file: dict, cli: dict, budget_cli: dict) -> dict:
    """The SearchStart dict: its defaults, the file's values, then the command line's; the
    family's default start shape (FNN_START / CONV_START) where none is given."""
    d = {**{k: v for k, v in file.items() if k not in EXTRA_KEYS}, **cli}
    d["budget"] = {**(file.get("budget") or {}), **budget_cli}
    family = d.get("family", SearchStart.family)
    shape = FNN_START if family == "fnn" else CONV_START
    for k, v in shape.items():
        if d.get(k) is None:
            d[k] = v
    if family != "fnn":
        d["width"] = d["depth"] = None
    dataset = d.get("dataset", SearchStart.dataset)
    if d["budget"].get("val_split") is None:
        if dataset not in VAL_SPLIT_DEFAULTS:
            raise error(
                f"--val-split is required for dataset {dataset!r}: the number of training "
                "samples held out for validation (e.g. --val-split 500)."
            )
        d["budget"]["val_split"] = VAL_SPLIT_DEFAULTS[dataset]
    return d


def register(app: typer.Typer) -> None:
    @app.command("search")
    def search_cmd(
        config: Path = typer.Option(
            None, "--config", "-c", help=config_help("search", "its search.json")
        ),
        print_config_: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
        dataset: str = typer.Option(
            None, "--dataset", "-d", help="A name of `cbundles datasets`" + S("dataset") + "."
        ),
        model: str = typer.Option(
            None, "--model", "-m", help="fnn, plain or resnet" + S("family") + "."
        ),
        width: int = typer.Option(
            None, help=f"fnn: units per hidden layer (default {FNN_START['width']})."
        ),
        depth: int = typer.Option(
            None, help=f"fnn: start number of hidden layers (default {FNN_START['depth']})."
        ),
        start_blocks: str = typer.Option(
            None,
            help="plain/resnet: start blocks a,b,c,d (default "
            f"{','.join(map(str, CONV_START['blocks']))}).",
        ),
        width_mult: str = typer.Option(
            None,
            help=f"plain/resnet: channel multiplier (default {CONV_START['width_mult']}; "
            "fnn has none).",
        ),
        methods: str = typer.Option(
            None,
            help="Comma-separated methods, name or name@criterion; `recommended` is "
            f"{RECOMMENDED} (default {DEFAULT_METHODS}; all: {ALL_METHODS}).",
        ),
        optimizer: str = typer.Option(
            None, help="Optimizer of every training" + B("optimizer") + "."
        ),
        lr: str = typer.Option(None, help="Learning rate of every training" + B("lr") + "."),
        batch_size: int = typer.Option(
            None, help="Batch size of every training" + B("batch_size") + "."
        ),
        epochs: int = typer.Option(
            None, help="Epochs of every training (the same for all)" + B("epochs") + "."
        ),
        check_epochs: int = typer.Option(
            None, help="auto-tune: check while epoch < this" + B("check_epochs") + "."
        ),
        train_limit: int = typer.Option(None, help="First N training samples (split included)."),
        val_split: int = typer.Option(
            None, help="Training samples held out for validation (default 5000 on MNIST/Fashion)."
        ),
        val_seed: int = typer.Option(
            None, help="Seed of the validation split" + B("val_seed") + "."
        ),
        test_limit: int = typer.Option(None, help="First N test samples (final evaluation)."),
        samples: int = typer.Option(None, help="Samples of the bundle metric" + B("samples") + "."),
        seed: int = typer.Option(None, help="Seed of every training" + S("seed") + "."),
        data_dir: Path = typer.Option(None, help=DATA_DIR + "."),
        threads: int = typer.Option(None, help="torch threads" + S("threads") + "."),
        device: str = typer.Option(None, help=DEVICES + S("device") + "."),
        out: Path = typer.Option(
            None, "--out", "-o", help=f"Output folder (default {DEFAULT_OUT})."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final table."),
        verbose: bool = typer.Option(
            False, "--verbose", "-v", help="Every training's per-epoch lines and tables."
        ),
    ) -> None:
        """Compare depth searches from one start network (docs/search.md).

        Default: the benchmark's recommended method beside fixed. Methods: auto-tune
        (reference, warm, calibrated), oracle-depth, naswot, conflict-at-init, sh-ladder,
        cb-sh, fixed and random.

        Every choice uses the validation split; the test set is evaluated once per final
        network. Finished methods in --out are reused (same start), so a rerun resumes.
        Settings: the SearchStart/Budget defaults, then --config FILE (SearchStart fields, the
        budget under `budget`, plus `methods` and `out`), then these options.

        Example:

          cbundles search --dataset checkerboard:4 --width 24 --depth 55 --val-split 5000 \\
            --optimizer adam --epochs 20 --methods recommended,fixed,autotune
        """
        from ..search import print_comparison, run_methods, write_outputs
        from ..search.compare import headline

        file = config_values(
            config, SearchStart, nested={"budget": Budget}, extra=EXTRA_KEYS, renamed=RENAMED
        )
        cli = given(
            family=model,
            width=width,
            depth=depth,
            blocks=None if start_blocks is None else parse_blocks(start_blocks),
            width_mult=None if width_mult is None else parse_number(width_mult, "--width-mult"),
            dataset=dataset,
            seed=seed,
            data_dir=None if data_dir is None else str(data_dir),
            threads=threads,
            device=device,
        )
        budget_cli = given(
            optimizer=optimizer,
            lr=None if lr is None else parse_number(lr, "--lr"),
            batch_size=batch_size,
            epochs=epochs,
            check_epochs=check_epochs,
            train_limit=train_limit,
            val_split=val_split,
            val_seed=val_seed,
            test_limit=test_limit,
            samples=samples,
        )
        specs = _methods(methods if methods is not None else file.get("methods", DEFAULT_METHODS))
        out = Path(out if out is not None else file.get("out", DEFAULT_OUT))
        console = make_console()  # piped: whole names, no wrapping at 80 columns
        try:
            named = {**file, **cli}
            check_names(named.get("dataset"), named.get("device"))
            start = SearchStart.from_dict(resolve_start(file, cli, budget_cli))
            if verbose and not quiet:  # else one line per method and a heartbeat
                start = SearchStart.from_dict({**start.to_dict(), "progress": True})
            resolved = {**start.to_dict(), "methods": specs, "out": str(out)}
            if print_config_:
                print_config(resolved)
            log = (lambda t: None) if quiet else (lambda t: console.print(t, markup=False))
            with locked(out, "cbundles search"), sigterm_as_interrupt():  # one search per --out
                results = run_methods(start, specs, out, log=log)
                report = write_outputs(out, start, results, config=resolved)
        except (ValueError, TypeError, RunDirError, DatasetError) as e:
            raise error(str(e)) from e
        except KeyboardInterrupt:
            Console(stderr=True).print(
                f"interrupted; finished methods and epochs are saved in {out}: rerun the same "
                "command to continue."
            )
            raise typer.Exit(130) from None
        print_comparison(start, results, console=console)
        console.print(headline(start, results).splitlines()[0], markup=False)  # the answer
        console.print(f"results: {out / 'search.json'}, {out / 'search.csv'}; report: {report}")
