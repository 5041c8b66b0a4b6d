"""Where a benchmark writes (issue 24, item 6): a fresh folder under runs/ by default
(git-ignored, so a fresh clone's tracked results stay as committed); the committed file in
benchmarks/results/ only with --update-results."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def add_output_args(ap: argparse.ArgumentParser, name: str) -> None:
    """--out FILE (default runs/<name>/<UTC stamp>/<name>.json) and --update-results."""
    ap.add_argument("--out", default=None, help=f"results JSON (default runs/{name}/STAMP/)")
    ap.add_argument(
        "--update-results",
        action="store_true",
        help=f"write the committed benchmarks/results/{name}.json instead",
    )


def results_path(args: argparse.Namespace, name: str) -> Path:
    """The JSON this run writes (its folder created): see :func:`add_output_args`."""
    if args.update_results:
        p = RESULTS / f"{name}.json"
    elif args.out:
        p = Path(args.out)
    else:
        p = ROOT / "runs" / name / time.strftime("%Y%m%d-%H%M%S", time.gmtime()) / f"{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
