"""What the commands print: final tables in % / points / seconds (never raw fractions or
"None"), progress bars only where console.progress_enabled() (no carriage returns when piped,
one plain line per grid cell instead), one wording ("1 epoch", "1 point", "65.5%")."""

from __future__ import annotations

import html

import pytest
import torch

from conflicting_bundles import runs
from conflicting_bundles.console import set_progress
from conflicting_bundles.models import create_model
from conflicting_bundles.report import fmt_column, pct, plural, table_decimals
from conflicting_bundles.runreport import build_report
from conflicting_bundles.train.summary import SUMMARY_KEYS, print_summary


@pytest.fixture(autouse=True)
def _progress_reset(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    yield
    set_progress(None)


def _headline(report_html: str) -> str:
    start = report_html.index('class="headline"')
    return html.unescape(report_html[start : report_html.index("</div>", start)])


# ------------------------------------------------------------------------- final tables
def test_train_summary_table_shows_units_not_raw_fractions(capsys, tmp_path):
    summary = dict.fromkeys(SUMMARY_KEYS)
    summary.update(
        status="completed",
        epochs_completed=1,
        params=8180,
        test_acc=0.0625,
        test_acc_std=0.004,
        best_test_acc=0.0625,
        final_train_acc=0.1125,
        num_bundles_final=64,
        bundle_entropy_final=0.0,
        train_time=12.34,
    )  # val_acc, bundle_layer, ... stay None: not measured
    print_summary(summary, tmp_path)
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert "6.25%" in lines["test_acc"] and "0.0625" not in out
    assert "11.25%" in lines["final_train_acc"]
    assert "0.40 pts" in lines["test_acc_std"]
    assert "not measured" in lines["val_acc"] and "None" not in out
    assert "12 s" in lines["train_time"]


def test_one_table_one_number_style():
    # a table that shows points shows its accuracies with the same 2 decimals
    assert table_decimals(["test_acc_mean", "loss_mean"]) == 2
    assert table_decimals(["test_acc", "epochs"]) is None
    assert fmt_column("single_acc", 0.0625, 2) == "6.25%"
    assert fmt_column("single_harm", 0.0625, 2) == "6.25 pts"
    assert fmt_column("test_acc", 0.0625) == "6.2%" and pct(0.0625, decimals=2) == "6.25%"
    assert plural(1, "epoch") == "1 epoch" and plural(2, "epoch") == "2 epochs"
    assert plural("1", "point") == "1 point" and plural("0.5", "point") == "0.5 points"
    assert plural(None, "epoch") == "? epochs"


# ------------------------------------------------------------------------ search report
def _search_result(method: str, size: int, val: float, test: float):
    from conflicting_bundles.search import SearchResult

    arch = {"name": "fnn", "width": 25, "depth": size}
    return SearchResult(
        method, "fnn 100x25", "mnist", 0, arch, size, 20000 + size, 84235, 0.05, 0.2, val,
        test, 1, 1, 3.0,
    )  # fmt: skip


def test_search_report_rebuilt_from_search_json_names_its_start(tmp_path):
    from conflicting_bundles.search import Budget, SearchStart, write_outputs

    start = SearchStart("fnn", width=25, depth=100, dataset="mnist", budget=Budget(epochs=1))
    results = [_search_result("autotune", 42, 0.66, 0.655), _search_result("fixed", 2, 0.5, 0.49)]
    write_outputs(tmp_path, start, results)
    assert "label" not in runs.read_json(tmp_path / "search.json")["start"]
    headline = _headline(build_report(tmp_path).read_text())  # cbundles report: from the files
    assert "?" not in headline, headline
    assert "search from fnn 100x25 on mnist" in headline
    assert "1 epoch per training" in headline and "1 epochs" not in headline


def test_search_headline_and_log_wording():
    from conflicting_bundles.search import Budget, SearchStart
    from conflicting_bundles.search.compare import headline

    start = SearchStart("fnn", width=25, depth=100, dataset="mnist", budget=Budget(epochs=1))
    text = headline(start, [_search_result("fixed", 2, 0.5, 0.49)])
    assert "1 epoch." in text and "1 epochs" not in text and "49.0%" in text
    assert "3.0 s" in text


# ------------------------------------------------------------------------ lesion study
def _tiny_lesion(tmp_path):
    from conflicting_bundles.lesion import LesionConfig, lesion_study

    torch.manual_seed(0)
    model = create_model("fnn", width=8, depth=3, in_shape=(1, 4, 4), num_classes=3)
    x, y = torch.randn(32, 1, 4, 4), torch.randint(0, 3, (32,))
    cfg = LesionConfig(repeats=2, samples=16, criteria=("reference",), tolerance=0.02)
    return lesion_study(model, (x, y), (x, y), cfg, tmp_path / "cache.json", progress=True)


@pytest.mark.parametrize("how", ["set_progress", "TQDM_DISABLE"])
def test_lesion_bars_honour_progress_switches(tmp_path, capfd, monkeypatch, how):
    if how == "set_progress":
        set_progress(False)
    else:
        set_progress(True)  # the environment variable wins over the option
        monkeypatch.setenv("TQDM_DISABLE", "1")
    _tiny_lesion(tmp_path)
    out, err = capfd.readouterr()
    assert "\r" not in out + err


def test_lesion_bars_still_drawn_when_progress_is_on(tmp_path, capfd):
    set_progress(True)
    _tiny_lesion(tmp_path)
    assert "lesion sets" in capfd.readouterr().err


def test_lesion_tables_use_one_style(tmp_path, capsys):
    from conflicting_bundles.lesion import print_lesion

    set_progress(False)
    res = _tiny_lesion(tmp_path)
    res.summary["config"]["criteria"] = ["reference"]
    capsys.readouterr()
    print_lesion(res)
    out = capsys.readouterr().out
    assert " %" not in out
    assert f"base test accuracy {100 * res.base_acc:.2f}%" in out
    assert "losing < 2 points" in out and "< 2 points alone" in out
    if res.summary["individually_harmless"]["k"]:
        assert " pts lost" in out
    else:  # nothing was lesioned together: no "(0.00 pts lost)" of an empty set
        assert "none to lesion together" in out and " pts lost" not in out
    harmed = next(b for b in res.blocks if b["single_harm"] is not None)
    assert f"{100 * harmed['single_harm']:.2f} pts" in out


# --------------------------------------------------------------------------------- grid
def test_grid_piped_prints_one_line_per_cell_and_no_bar(tmp_path, capfd):
    from conflicting_bundles.grid import GridConfig, run_grid

    set_progress(False)
    cfg = GridConfig(
        widths=(4,), depths=(1, 2), dataset="synthetic", epochs=1, workers=1, samples=16,
        train_limit=64, test_limit=32, out=str(tmp_path / "g"),
    )  # fmt: skip
    run_grid(cfg, progress=True, report=False)
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    cells = [line for line in out.splitlines() if line.startswith("grid cell ")]
    assert len(cells) == 2 and cells[0].startswith("grid cell 1/2 w4-d")
    assert all("trained, test " in line and "%" in line for line in cells)


# ---------------------------------------------------------------------- report wording
def test_report_headlines_pluralise(tmp_path):
    runs.write_json(tmp_path / "config.json", {"dataset": "mnist", "epochs": 1})
    runs.write_csv(tmp_path / "metrics.csv", [{"epoch": 1, "test_acc": 0.5}])
    runs.write_json(
        tmp_path / "summary.json",
        {"status": "completed", "epochs": 1, "epochs_completed": 1, "test_acc": 0.5},
    )
    text = _headline(build_report(tmp_path).read_text())
    assert "1 epoch," in text and "1 epoch in" in text and "epochs" not in text
