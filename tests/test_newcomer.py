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
