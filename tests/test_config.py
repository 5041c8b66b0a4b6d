"""One config source: config files (YAML/JSON, safe), --config + overrides, --print-config,
defaults in help texts read from the dataclasses, every option documented."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from conflicting_bundles.autotune import AutotuneConfig
from conflicting_bundles.cli import app
from conflicting_bundles.configfile import (
    ConfigFileError,
    check_fields,
    field_default,
    merge,
    read_config_file,
    to_yaml,
)
from conflicting_bundles.grid import GridConfig
from conflicting_bundles.lesion import LesionConfig
from conflicting_bundles.prune.command import PruneConfig
from conflicting_bundles.search import Budget, SearchStart
from conflicting_bundles.train import TrainConfig

TINY = ["--dataset", "synthetic", "--epochs", "1", "--train-limit", "64", "--test-limit", "32"]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def printed(*args: str) -> dict:
    r = run(*args, "--print-config")
    assert r.exit_code == 0, r.output
    return yaml.safe_load(r.output)


# ------------------------------------------------------------------------------- the files
def test_read_yaml_json_and_embedded(tmp_path):
    (tmp_path / "a.yaml").write_text("lr: 0.01\nmodel_kwargs: {width: 3}\n")
    (tmp_path / "a.json").write_text(json.dumps({"lr": 0.02}))
    (tmp_path / "autotune.json").write_text(json.dumps({"config": {"variant": "all"}, "x": 1}))
    (tmp_path / "empty.yaml").write_text("")
    assert read_config_file(tmp_path / "a.yaml") == {"lr": 0.01, "model_kwargs": {"width": 3}}
    assert read_config_file(tmp_path / "a.json") == {"lr": 0.02}
    assert read_config_file(tmp_path / "autotune.json") == {"variant": "all"}
    assert read_config_file(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("list.yaml", "- 1\n- 2\n", "must hold a mapping"),
        ("bad.yaml", "lr: [1,\n", "is not valid YAML"),
        ("bad.json", "{", "is not valid JSON"),
        ("evil.yaml", "lr: !!python/object/apply:os.system ['true']\n", "is not valid YAML"),
    ],
)
def test_bad_files_are_refused(tmp_path, name, text, fragment):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigFileError, match=fragment):
        read_config_file(tmp_path / name)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigFileError, match="does not exist"):
        read_config_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigFileError, match="is a directory"):
        read_config_file(tmp_path)


def test_check_fields_suggests_and_types():
    with pytest.raises(ConfigFileError, match="did you mean 'epochs'"):
        check_fields({"epoch": 3}, TrainConfig, "f.yaml")
    with pytest.raises(ConfigFileError, match="go under model_kwargs"):
        check_fields({"width": 3}, TrainConfig, "f.yaml")
    with pytest.raises(ConfigFileError, match="epochs must be an integer"):
        check_fields({"epochs": "five"}, TrainConfig, "f.yaml")
    with pytest.raises(ConfigFileError, match="augment must be true or false"):
        check_fields({"augment": "yes please"}, TrainConfig, "f.yaml")
    with pytest.raises(ConfigFileError, match=r"\(train\): unknown field 'lrr'"):
        check_fields({"train": {"lrr": 1}}, AutotuneConfig, "f.yaml", nested={"train": TrainConfig})
    check_fields({"epochs": 3, "lr": 1}, TrainConfig, "f.yaml")  # an int is a valid float


def test_merge_is_deep_and_yaml_round_trips():
    base = {"model_kwargs": {"width": 3, "depth": 2}, "lr": 0.1}
    assert merge(base, {"model_kwargs": {"depth": 5}}) == {
        "model_kwargs": {"width": 3, "depth": 5},
        "lr": 0.1,
    }
    d = TrainConfig(model_kwargs={"width": 3, "depth": 2}).to_dict()
    assert yaml.safe_load(to_yaml(d)) == d


def test_field_default_calls_factories():
    assert field_default(TrainConfig, "model_kwargs") == {}
    assert field_default(TrainConfig, "epochs") == TrainConfig.epochs
    with pytest.raises(KeyError):
        field_default(TrainConfig, "nope")


# ---------------------------------------------------------------------- train: file + CLI
def test_train_print_config_round_trip(tmp_path):
    shape = ["--model", "fnn", "--width", "5", "--depth", "2"]
    first = printed("train", *shape, *TINY, "--lr", "0.01", "--out", str(tmp_path / "r"))
    assert first == {**TrainConfig.from_dict(first).to_dict()}  # every field, resolved
    f = tmp_path / "t.yaml"
    f.write_text(to_yaml(first))
    again = printed("train", "--config", str(f))
    assert again == first
    over = printed("train", "--config", str(f), "--seed", "3", "--depth", "4")
    assert over["seed"] == 3 and over["model_kwargs"] == {"width": 5, "depth": 4}
    assert {k: v for k, v in over.items() if k not in ("seed", "model_kwargs")} == {
        k: v for k, v in first.items() if k not in ("seed", "model_kwargs")
    }


def test_train_config_json_of_a_run_reproduces_it(tmp_path):
    out = tmp_path / "r1"
    r = run(
        "train",
        "--model",
        "fnn",
        "--width",
        "4",
        "--depth",
        "2",
        *TINY,
        "--lr",
        "0.005",
        "--out",
        str(out),
        "-q",
        "--no-report",
    )
    assert r.exit_code == 0, r.output
    stored = json.loads((out / "config.json").read_text())
    again = printed("train", "--config", str(out / "config.json"), "--out", str(tmp_path / "r2"))
    # in_shape/num_classes are the dataset's: train() fills them in again, so the file also
    # works with another dataset (tests/test_config_values.py)
    derived = {k: stored["model_kwargs"].pop(k) for k in ("in_shape", "num_classes")}
    assert derived == {"in_shape": [1, 28, 28], "num_classes": 10}
    assert {**again, "out": stored["out"]} == stored


def test_train_bad_config_file_is_one_clear_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epoch: 3\n")
    r = run("train", "--config", str(f), "--model", "fnn", "--width", "3", "--depth", "2")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "unknown field 'epoch'" in r.output and not (tmp_path / "runs").exists()


def test_default_model_is_the_dataclass_default():
    r = run("train", "--print-config")
    assert r.exit_code == 0 and f"model: {TrainConfig.model}\n" in r.output
    assert "model_kwargs: {width: 25, depth: 10}" in r.output  # the fnn factory's defaults


# ---------------------------------------------------------------------- autotune / search
def test_autotune_print_config_round_trip(tmp_path):
    args = ["autotune", "--model", "fnn", "--width", "5", "--depth", "6", *TINY]
    first = printed(*args, "--check-epochs", "1", "--variant", "first-and-rest")
    assert AutotuneConfig.from_dict(first).to_dict() == first
    assert first["train"]["model_kwargs"] == {"width": 5, "depth": 6}
    f = tmp_path / "a.yaml"
    f.write_text(to_yaml(first))
    assert printed("autotune", "--config", str(f)) == first
    over = printed("autotune", "--config", str(f), "--lr", "0.02", "--samples", "32")
    assert over["train"]["lr"] == 0.02 and over["samples"] == 32
    assert over["train"]["measure_samples"] == 32


def test_autotune_conv_start_defaults_to_the_paper():
    d = printed("autotune", "--model", "plain", "--width-mult", "1/16", *TINY)
    assert d["train"]["model_kwargs"]["blocks"] == [3, 12, 41, 3]


def test_search_print_config_round_trip(tmp_path):
    first = printed("search", "--methods", "fixed,random", "--epochs", "1", "--out", "x")
    assert first["methods"] == ["fixed", "random"] and first["budget"]["epochs"] == 1
    start = SearchStart.from_dict({k: v for k, v in first.items() if k not in ("methods", "out")})
    assert start.width == 25 and start.depth == 100
    f = tmp_path / "s.yaml"
    f.write_text(to_yaml(first))
    assert printed("search", "--config", str(f)) == first
    assert printed("search", "--config", str(f), "--val-seed", "2")["budget"]["val_seed"] == 2


def test_grid_print_config_round_trip(tmp_path):
    first = printed("grid", "--widths", "5,3", "--depths", "1", "--epochs", "1")
    assert first["widths"] == [3, 5]
    f = tmp_path / "g.yaml"
    f.write_text(to_yaml(first))
    assert printed("grid", "--config", str(f)) == first
    assert printed("grid", "--config", str(f), "--lr", "0.5")["lr"] == 0.5


def test_lesion_print_config_round_trip(tmp_path):
    first = printed("lesion", str(tmp_path), "--repeats", "2", "--criteria", "raw,coarse:16")
    assert first["repeats"] == 2 and first["lr"] is None  # None: the run's lr
    assert first["criteria"] == ["raw", "coarse:16", "reference"]  # the flag criterion added
    f = tmp_path / "l.yaml"
    f.write_text(to_yaml(first))
    assert printed("lesion", str(tmp_path), "--config", str(f)) == first
    assert printed("lesion", str(tmp_path), "--config", str(f), "--lr", "0.1")["lr"] == 0.1
    f.write_text("repeat: 3\n")
    r = run("lesion", str(tmp_path), "--config", str(f))
    assert r.exit_code != 0 and "unknown field 'repeat'" in r.output and "repeats" in r.output


def test_prune_print_config_round_trip(tmp_path):
    first = printed("prune", "--model", "fnn", "--dataset", "synthetic", "--remove", "2")
    assert first["remove"] == 2 and first["device"] == "auto" and first["lr"] is None
    f = tmp_path / "p.yaml"
    f.write_text(to_yaml(first))
    assert printed("prune", "--config", str(f)) == first
    assert printed("prune", "--config", str(f), "--scorers", "random")["scorers"] == ["random"]
    r = run("prune", "--dataset", "synthetic")
    assert r.exit_code != 0 and "--model" in r.output


# ------------------------------------------------------------------------------ help texts
@pytest.mark.parametrize(
    "command, option, cls, name",
    [
        ("train", "--epochs", TrainConfig, "epochs"),
        ("train", "--val-split", TrainConfig, "val_split"),
        ("autotune", "--check-epochs", AutotuneConfig, "check_epochs"),
        ("search", "--epochs", Budget, "epochs"),
        ("grid", "--samples", GridConfig, "samples"),
        ("lesion", "--repeats", LesionConfig, "repeats"),
        ("prune", "--remove", PruneConfig, "remove"),
    ],
)
def test_help_defaults_come_from_the_dataclasses(command, option, cls, name):
    cmd = get_command(app).commands[command]
    opt = next(p for p in cmd.params if option in p.opts)
    assert f"(default {field_default(cls, name)})" in opt.help


def test_every_option_has_help_text():
    missing = [
        f"{name} {'/'.join(p.opts)}"
        for name, cmd in get_command(app).commands.items()
        for p in cmd.params
        if p.param_type_name == "option" and not (p.help or "").strip()
    ]
    assert missing == []
