"""What a newcomer trips on (issue 24): names get "did you mean", `train` has a default
network size (so a mistyped dataset is the error shown), and a missing torchvision/timm is
answered with the one install story of the README (`make setup-real`)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conflicting_bundles.cli import app


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(res) -> str:
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.mark.parametrize(
    "args, wanted",
    [
        (["train", "--dataset", "mnsit"], "unknown dataset 'mnsit' (did you mean 'mnist'?)"),
        (["train", "--model", "fnnn"], "unknown model 'fnnn' (did you mean 'fnn'?)"),
        (
            ["search", "--methods", "sh-ladr", "--dataset", "synthetic", "--val-split", "8"],
            "unknown search method 'sh-ladr' (did you mean 'sh-ladder'?)",
        ),  # fmt: skip
    ],
)
def test_mistyped_names_get_did_you_mean(args, wanted, tmp_path):
    assert wanted in one_line_error(run(*args, "--out", tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_no_suggestion_for_a_name_far_from_every_entry(tmp_path):
    line = one_line_error(run("train", "--dataset", "qqqqqqqq", "--out", tmp_path / "o"))
    assert "unknown dataset 'qqqqqqqq';" in line and "did you mean" not in line


def test_train_has_a_default_network_size_written_to_its_config(tmp_path):
    out = tmp_path / "r"
    res = run("train", "--dataset", "synthetic", "--epochs", "1", "--train-limit", "64",
              "--test-limit", "32", "--samples", "16", "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    kw = json.loads((out / "config.json").read_text())["model_kwargs"]
    assert (kw["width"], kw["depth"]) == (25, 10)
    res = run("train", "--dataset", "synthetic", "--depth", "3", "--print-config")
    assert res.exit_code == 0 and "model_kwargs: {depth: 3, width: 25}" in res.output


@pytest.mark.parametrize(
    "module, advice",
    [
        ("torchvision.no_such_module", "make setup-real"),
        ("timm.no_such_module", "make setup-real"),
        ("no_such_package_cb", "PYTHONPATH"),
    ],
)
def test_missing_optional_dependency_gives_the_one_install_story(module, advice):
    from conflicting_bundles.prune.loading import require

    with pytest.raises(ValueError) as e:
        require(module)
    msg = str(e.value)
    assert advice in msg and "pip install" not in msg and module in msg


def test_prune_of_a_missing_import_path_is_one_line(tmp_path):
    res = run("prune", "--model", "torchvision.no_such_module:resnet18", "--dataset",
              "synthetic", "--out", tmp_path / "p")  # fmt: skip
    assert "make setup-real" in one_line_error(res) and not (tmp_path / "p").exists()


SEARCH = ["search", "--dataset", "synthetic", "--model", "fnn", "--width", "6", "--depth", "4",
          "--methods", "autotune,fixed", "--epochs", "1", "--check-epochs", "1",
          "--val-split", "32", "--train-limit", "128", "--test-limit", "32",
          "--samples", "16"]  # fmt: skip


def test_search_output_fits_one_screen_and_verbose_shows_every_training(tmp_path):
    """Item 3: the answer, one line per method, the table and where the report is; the
    trainings' per-epoch lines and summary tables only with --verbose."""
    res = run(*SEARCH, "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) <= 30 and not any(ln.startswith("epoch ") for ln in lines)
    assert "metric" not in res.output and "Best by validation accuracy:" in res.output
    assert lines[-1].startswith("results: ") and "report.html" in lines[-1]
    res = run(*SEARCH, "--out", tmp_path / "v", "--verbose")
    assert res.exit_code == 0 and any(ln.startswith("epoch ") for ln in res.output.splitlines())


def test_a_running_method_prints_a_heartbeat(tmp_path):
    import time

    from conflicting_bundles.search.compare import heartbeat

    said: list[str] = []
    with heartbeat(tmp_path, "sh-ladder", said.append, every=0.05):
        time.sleep(0.3)
    assert len(said) >= 2 and all(s.startswith("  sh-ladder: 0 trainings done") for s in said)
    with heartbeat(tmp_path, "x", said.append, every=0.01, quiet=True):
        time.sleep(0.05)
    assert not any(s.startswith("  x:") for s in said)


def test_prune_output_a_reader_can_act_on():
    """Item 5: scores as a share of the largest, and what to try after a large drop."""
    from conflicting_bundles.prune.outputs import prune_headline, relative_scores

    rel = relative_scores({"a": 6.36511e-09, "b": 3.2e-09, "c": -6.4e-10})
    assert rel["a"] == 1.0 and abs(rel["b"] - 0.5027) < 1e-3 and rel["c"] < 0
    s = {"params_before": 100, "params_after": 60, "removed": ["b1", "b2"],
         "blocks": ["b0", "b1", "b2"], "scorer": "conflict", "iterative": False,
         "forward_seconds_before": 0.01, "forward_seconds_after": 0.005, "device": "cpu",
         "quality_before": {"accuracy": 0.643}, "score_samples": 64,
         "quality_after": {"accuracy": 0.104, "cosine_to_full": 0.5}}  # fmt: skip
    text = prune_headline(s)
    assert "Accuracy fell 53.9 points: try fewer blocks (--remove 1), --heal-steps 200" in text
    assert "--compare" in text
    s["quality_after"]["accuracy"] = 0.63
    assert "Accuracy fell" not in prune_headline(s)


def test_report_of_a_folder_of_runs_lists_them(tmp_path):
    """Item 10: `cbundles report runs` names the runs inside instead of only failing."""
    res = run("train", "--dataset", "synthetic", "--epochs", "1", "--train-limit", "64",
              "--test-limit", "32", "--samples", "16",
              "--out", tmp_path / "runs" / "a")  # fmt: skip
    assert res.exit_code == 0, res.output
    line = one_line_error(run("report", tmp_path / "runs"))
    assert "holds runs: " in line and str(tmp_path / "runs" / "a") in line


def test_report_tables_use_readers_names_for_columns():
    from conflicting_bundles.report import html_table
    from conflicting_bundles.search.compare import HEADERS

    text = html_table([{"latency_ms_b64": 0.1, "wall_s": 3.0}], None, HEADERS)
    assert "latency b64 (ms)" in text and "wall (s)" in text and "latency_ms_b64" not in text


def test_accuracy_plots_use_percent_like_the_headlines(tmp_path, monkeypatch):
    """Item 10: the y axis of accuracy.png is in % (the rows hold fractions)."""
    from conflicting_bundles import report_kinds, runs

    runs.write_csv(tmp_path / "metrics.csv", [{"epoch": 1, "train_acc": 0.25, "test_acc": 0.5}])
    drawn = {}
    monkeypatch.setattr(report_kinds, "plot_curves",
                        lambda series, p, **kw: drawn.update({p.name: (series, kw)}))  # fmt: skip
    report_kinds._train_plots(tmp_path)
    series, kw = drawn["accuracy.png"]
    assert series["test_acc"][1] == [50.0] and kw["ylabel"] == "accuracy (%)"
