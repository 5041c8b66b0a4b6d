"""`cbundles datasets`: which datasets are on disk, where, and how to obtain the others."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..console import escape, make_console
from ..data import DatasetError, default_data_dir, describe_datasets, load_dataset


def register(app: typer.Typer) -> None:
    @app.command("datasets")
    def datasets(
        data_dir: Path | None = typer.Option(
            None,
            "--data-dir",
            metavar="DIR",
            help="Data directory (default: $CBUNDLES_DATA, else ~/.cache/conflicting-bundles).",
        ),
        download: list[str] = typer.Option(
            [],
            "--download",
            metavar="NAME",
            help="Fetch this dataset (both splits) into the data directory first; repeatable.",
        ),
    ) -> None:
        """List the datasets: available locally?, path, train/test sizes, how to obtain."""
        console = make_console()
        for name in download:
            try:
                for split in ("train", "test"):
                    ds = load_dataset(name, split, data_dir=data_dir, download=True)
                    console.print(f"{name} {split}: {len(ds)} samples")
            except (DatasetError, ValueError) as exc:
                make_console(stderr=True).print(
                    f"[red]error:[/red] {escape(str(exc))}", highlight=False
                )
                raise typer.Exit(1) from exc

        table = Table(title=f"Datasets in {escape(str(default_data_dir(data_dir)))}")
        table.add_column("name", style="bold", no_wrap=True)
        table.add_column("local")
        table.add_column("input (C, H, W)")
        table.add_column("classes", justify="right")
        table.add_column("train / test", justify="right")
        table.add_column("path", overflow="fold")
        table.add_column("how to obtain", overflow="fold")
        try:
            rows = describe_datasets(data_dir)
        except DatasetError as exc:
            make_console(stderr=True).print(
                f"[red]error:[/red] {escape(str(exc))}", highlight=False
            )
            raise typer.Exit(1) from exc
        for r in rows:
            if r["damaged"]:
                local = "[red]damaged[/red]"
                obtain = f"unreadable cache ({r['damaged']}): delete {r['path']} to rebuild it"
            else:
                local = "[green]yes[/green]" if r["available"] else "[red]no[/red]"
                obtain = "-" if r["available"] else r["obtain"]
            table.add_row(
                r["name"],
                local,
                "x".join(map(str, r["in_shape"])),
                str(r["num_classes"]),
                f"{r['num_train']} / {r['num_test']}",
                escape(str(r["path"])),
                escape(obtain),
            )
        console.print(table)
