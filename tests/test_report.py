"""report.html structure: the answer first, then plots, then tables (in scroll wrappers), raw JSON
last and collapsed; every image embedded; text escaped. Run directories are written by hand
(the files each command writes), so nothing is trained here."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import pytest

from conflicting_bundles import runs
from conflicting_bundles.report import (
    fmt_column,
    html_table,
    pct,
    plot_curves,
    short_count,
    write_html,
)
from conflicting_bundles.report_kinds import detect_kind
from conflicting_bundles.runreport import build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(path: Path) -> Path:
    return plot_curves({"a": ([0, 1, 2], [1.0, 0.5, 0.25])}, path, xlabel="x", ylabel="y")


def check_structure(text: str) -> None:
    """Headline before the first table and image; raw JSON in <details> at the very end; every
    table in a scroll wrapper; every image a decodable embedded PNG."""
    head = text.index('class="headline"')
    for marker in ("<table", "<img"):
        if marker in text:
            assert head < text.index(marker), marker
    if "<img" in text and "<table" in text:
        assert text.index("<img") < text.index("<table"), "plots come before tables"
    assert text.count("<table") == len(re.findall(r'<div class="scroll[ "]', text))
    if "<details>" in text:
        assert text.rstrip().endswith("</details>"), "raw JSON must be last"
        assert text.index("<details>") > max(text.rfind("<table"), text.rfind("<img"))
    for src in re.findall(r'<img[^>]* src="([^"]+)"', text):
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC


def test_write_html_orders_and_escapes(tmp_path):
    from conflicting_bundles.report import html_figures, html_table

    img = _png(tmp_path / "curve.png")
    out = write_html(
        tmp_path / "r.html",
        "title <x>",
        [("plots", html_figures([img])), ("t", html_table([{"name": "<b>bold</b>", "v": 1.5}]))],
        headline="Run: something & more\n42 -> 7 blocks <script>",
        raw={"a": [1, 2], "s": "</pre><script>"},
    )
    text = out.read_text()
    check_structure(text)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "title &lt;x&gt;" in text
    assert '<p class="what">Run: something &amp; more</p>' in text
    details = text[text.index("<details>") :]
    assert "<summary>raw JSON</summary>" in details and "&quot;a&quot;" in details


def test_write_html_without_the_new_arguments(tmp_path):
    text = write_html(tmp_path / "r.html", "t", [("h", "<p>x</p>")]).read_text()
    assert "<h2>h</h2><p>x</p>" in text
    assert "headline" not in text.split("</style>")[1] and "<details>" not in text


def test_formatting_helpers():
    assert pct(0.655) == "65.5%" and pct(65.5, percent=True) == "65.5%"
    assert pct(None) == "n/a" and pct(float("nan")) == "n/a"
    assert short_count(84211) == "84k" and short_count(1_234_567) == "1.2M"
    assert short_count(4150) == "4.2k" and short_count(512) == "512"


# ------------------------------------------------------------------------ run directories
def _train_dir(d: Path) -> Path:
    runs.write_json(d / "config.json", {"dataset": "mnist", "epochs": 3, "optimizer": "adam"})
    runs.write_json(d / "arch.json", {"name": "plain", "blocks": [1, 2, 1, 1]})
    runs.write_csv(
        d / "metrics.csv",
        [
            {
                "epoch": 0,
                "train_acc": None,
                "test_acc": None,
                "num_bundles": 60,
                "bundle_entropy": 0.2,
            },
            {
                "epoch": 1,
                "train_acc": 0.5,
                "test_acc": 0.6,
                "num_bundles": 64,
                "bundle_entropy": 0.0,
            },
            {
                "epoch": 2,
                "train_acc": 0.6,
                "test_acc": 0.655,
                "num_bundles": 64,
                "bundle_entropy": 0.0,
            },
        ],
    )
    runs.write_json(
        d / "summary.json",
        {
            "status": "completed",
            "model": "plain",
            "dataset": "mnist",
            "epochs": 2,
            "epochs_completed": 2,
            "params": 84211,
            "test_acc": 0.655,
            "best_test_acc": 0.655,
            "best_epoch": 2,
            "criterion": "reference",
            "bundle_layer": "d.0",
            "num_bundles_final": 64,
            "bundle_entropy_final": 0.0,
            "wall_time": 125.0,
        },
    )
    return d


def _autotune_dir(d: Path) -> Path:
    cost = {
        "start": {"params": 84000, "latency_ms_b64": 19.0},
        "final": {"params": 47000, "latency_ms_b64": 10.0},
    }
    runs.write_json(
        d / "autotune.json",
        {
            "start_blocks": [10, 40, 40, 10],
            "final_blocks": [4, 16, 16, 6],
            "test_acc": 0.655,
            "num_prunes": 2,
            "total_epochs": 130,
            "wall_time_s": 7300.0,
            "variant": "all",
            "restart": "fresh",
            "criterion": "reference",
            "cost": cost,
            "config": {"train": {"model": "plain", "dataset": "cifar10", "epochs": 120}},
        },
    )
    runs.write_csv(d / "steps.csv", [{"step": 0, "num_blocks": 100}, {"step": 1, "num_blocks": 42}])
    runs.write_json(d / "autotune_state.json", {"internal": True})
    _png(d / "depth.png")
    _png(d / "accuracy.png")
    return d


def _lesion_dir(d: Path) -> Path:
    ref = {
        "num_flagged": 3,
        "single_harm_mean": {"conflicting": 0.005, "non-conflicting": 0.0425},
        "note": "",
    }
    runs.write_json(
        d / "lesion_summary.json",
        {
            "base_test_acc": 0.942,
            "num_blocks": 24,
            "num_test_samples": 2000,
            "tolerance": 0.01,
            "removable_all_blocks": {"k": 2},
            "primary_criterion": "reference",
            "by_criterion": {"reference": ref, "coarse:16": {"num_flagged": 11}},
            "run_dir": "runs/r",
            "dataset": "mnist",
            "model": {"name": "resnet", "blocks": [3, 6, 12, 3]},
        },
    )
    wide = {f"column_with_a_long_name_{i}": i * 1.5 for i in range(30)}
    runs.write_csv(d / "lesion_blocks.csv", [{"block": "a.0", **wide}])
    runs.write_csv(d / "lesion_curves.csv", [{"k": k, "acc": 90 - k} for k in range(40)])
    _png(d / "lesion.png")
    return d


def _grid_dir(d: Path) -> Path:
    runs.write_json(
        d / "grid_summary.json",
        {
            "num_finished": 4,
            "num_conflicting": 1,
            "mean_test_acc_conflicting": 0.2,
            "mean_test_acc_not_conflicting": 0.61,
            "best": {"width": 10, "depth": 2, "test_acc": 0.886},
            "first_conflicting_depth_by_width": {"3": 1, "10": None},
            "config": {"dataset": "mnist", "widths": [3, 10], "depths": [1, 2], "epochs": 5},
        },
    )
    runs.write_csv(d / "grid.csv", [{"width": 3, "depth": 1, "test_acc": 0.4}])
    _png(d / "grid.png")
    return d


def _sweep_dir(d: Path) -> Path:
    runs.write_json(
        d / "sweep.json",
        {
            "spec": {"kind": "train", "grid": {"seed": [0, 1], "dataset": ["mnist"]}},
            "trials": [{"name": "a"}, {"name": "b"}],
            "summary": [
                {
                    "dataset": "mnist",
                    "trials": 2,
                    "completed": 2,
                    "test_acc": 0.9,
                    "test_acc_std": 0.01,
                }
            ],
        },
    )
    runs.write_csv(d / "results.csv", [{"trial": t, "status": "completed"} for t in "ab"])
    return d


def _prune_dir(d: Path) -> Path:
    rows = [{"scorer": "none", "k": 0, "accuracy": 0.95}]
    for sc, accs in (("conflict", [0.949, 0.90]), ("random", [0.80, 0.5])):
        rows += [{"scorer": sc, "k": k + 1, "accuracy": a} for k, a in enumerate(accs)]
    runs.write_csv(d / "compare.csv", rows)
    _png(d / "compare.png")
    return d


def _search_dir(d: Path) -> Path:
    res = [
        {"method": "autotune", "size": 42, "params": 46535, "start_params": 84235,
         "val_acc": 0.66, "test_acc": 0.655, "epochs": 5, "wall_s": 120.0},
        {"method": "fixed", "size": 2, "params": 20000, "start_params": 84235,
         "val_acc": 0.5, "test_acc": 0.49, "epochs": 5, "wall_s": 30.0},
    ]  # fmt: skip
    start = {
        "family": "fnn",
        "width": 25,
        "depth": 100,
        "dataset": "mnist",
        "seed": 0,
        "budget": {"epochs": 5},
    }  # search.json holds the fields of the start, no label
    runs.write_json(d / "search.json", {"start": start, "results": res})
    runs.write_csv(d / "search.csv", res)
    _png(d / "search_cost.png")
    return d


KINDS = {
    "train": (_train_dir, ["65.5% test accuracy", "84k parameters", "optimizer adam", "2 min"]),
    "autotune": (_autotune_dir, ["100 -> 42 blocks", "84k -> 47k parameters", "1.9x faster"]),
    "lesion": (
        _lesion_dir,
        [
            "flags 3 of 24 blocks",
            "94.2% test accuracy",
            "coarse:16: 11",
            "tolerance 1 point.",
            "more than 1 point",
            "conflicting 0.5",
        ],
    ),
    "grid": (_grid_dir, ["1 of 4 nets", "20.0% with vs 61.0% without", "88.6%"]),
    "sweep": (_sweep_dir, ["2 of 2 trials completed", "test_acc 90.0% ± 1.0"]),
    "prune-compare": (_prune_dir, ["Unpruned 95.0%", "conflict 1, random 0"]),
    "search": (
        _search_dir,
        [
            "search from fnn 100x25 on mnist",
            "validation accuracy: autotune",
            "84k -> 47k",
            "65.5% test",
            "5 epochs.",
        ],
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_build_report_leads_with_the_answer(tmp_path, kind):
    make, expected = KINDS[kind]
    d = make(tmp_path / kind)
    assert detect_kind(d) == kind
    text = build_report(d).read_text()
    check_structure(text)
    start = text.index('class="headline"')
    headline = html.unescape(text[start : text.index("</div>", start)])
    for phrase in expected:
        assert phrase in headline, (phrase, headline)
    pngs = sorted(d.glob("*.png"))
    assert text.count("<img") == len(pngs), "every PNG in the run directory is embedded"
    for p in pngs:
        assert p.name in text
    raw = text[text.index("<details>") :] if "<details>" in text else ""
    for p in d.glob("*.json"):
        assert (p.name in raw) == (not p.name.endswith("_state.json")), p.name


def test_train_report_draws_its_plots(tmp_path):
    d = _train_dir(tmp_path / "t")
    build_report(d)
    for name in ("accuracy.png", "bundles.png"):
        assert (d / name).read_bytes()[:8] == PNG_MAGIC


def test_wide_and_long_tables_scroll(tmp_path):
    text = build_report(_lesion_dir(tmp_path / "l")).read_text()
    assert '<div class="scroll tall"><table>' in text  # 40 rows: scrolls vertically too
    assert "overflow-x:auto" in text


def test_malformed_summary_still_gives_a_report(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "autotune.json").write_text(json.dumps({"start_blocks": "x", "cost": 5}))
    text = build_report(d).read_text()
    check_structure(text)
    assert "no headline" in text


def test_build_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no result files"):
        build_report(tmp_path / "empty")


def test_piped_tables_keep_full_names(capsys):
    from conflicting_bundles.report import print_table

    names = [f"dataset_column_with_a_long_name_{i}" for i in range(6)]
    print_table([{n: "fashion-mnist-" + "x" * 20 for n in names}], title="wide")
    out = capsys.readouterr().out
    assert "…" not in out and all(n in out for n in names)
    assert out.count("fashion-mnist-" + "x" * 20) == len(names)


def test_folders_written_in_percent_still_report_the_same_figures(tmp_path):
    """Lesion and grid folders from before accuracies were fractions everywhere (``*_pct``,
    ``*_pts``) render the same headline figures as their fraction-valued successors."""
    old = tmp_path / "old"
    old.mkdir()
    runs.write_json(
        old / "lesion_summary.json",
        {
            "base_test_acc_pct": 94.2,
            "tolerance_pts": 1.0,
            "num_blocks": 24,
            "primary_criterion": "reference",
            "by_criterion": {
                "reference": {"num_flagged": 3, "single_harm_pts_mean": {"conflicting": 0.5}}
            },
        },
    )
    text = build_report(old).read_text()
    assert "94.2% test accuracy" in text and "tolerance 1 point." in text
    assert "conflicting 0.5" in text
    g = tmp_path / "grid"
    g.mkdir()
    runs.write_json(
        g / "grid_summary.json",
        {"mean_test_acc_pct_conflicting": 20.0, "mean_test_acc_pct_not_conflicting": 61.0,
         "best": {"width": 10, "depth": 2, "test_acc_pct": 88.6}},
    )  # fmt: skip
    text = build_report(g).read_text()
    assert "20.0% with vs 61.0% without" in text and "88.6%" in text


def test_tables_show_fractions_in_percent_and_points():
    assert fmt_column("test_acc", 0.655) == "65.5%" and fmt_column("accuracy", 1.0) == "100.0%"
    assert fmt_column("test_acc_mean", 0.9) == "90.0%"
    assert fmt_column("single_harm", 0.0125) == "1.25 pts"
    assert fmt_column("test_acc_std", 0.004) == "0.40 pts"
    assert fmt_column("train_loss", 0.655) == "0.655"  # a loss, not an accuracy
    assert fmt_column("test_acc", None) == "" and fmt_column("test_acc", "n/a") == "n/a"
    table = html_table([{"block": "a.0", "single_acc": 0.5, "single_harm": 0.25}])
    assert "<td>50.00%</td>" in table and "<td>25.00 pts</td>" in table  # one style per table
    assert "<td>50.0%</td>" in html_table([{"block": "a.0", "test_acc": 0.5}])
