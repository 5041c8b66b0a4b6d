"""Config files are checked when they are read: value types (configtypes), model arguments,
names, YAML aliases and duplicate keys, where a misplaced key belongs, and a run's own
config.json reused with another dataset or model."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from typer.testing import CliRunner

from conflicting_bundles.cli import app
from conflicting_bundles.configfile import ConfigFileError, read_config_file
from conflicting_bundles.configtypes import coerce_value, parse_annotation
from conflicting_bundles.models import check_model_kwargs

FNN = "model_kwargs: {width: 8, depth: 2}\n"


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, list(args), input=stdin)


def printed(*args: str) -> dict:
    r = run(*args, "--print-config")
    assert r.exit_code == 0, r.output
    return yaml.safe_load(r.output)


@pytest.mark.parametrize(
    "annotation, value, expected",
    [
        ("float", "1e-3", 0.001),  # PyYAML 1.1 reads 1e-3 as a string
        ("float", "1/16", 0.0625),
        ("float", 3, 3),
        ("int", 2.0, 2),
        ("int | None", None, None),
        ("list[int] | None", [1, 2], [1, 2]),
        ("tuple[int, ...]", (5, 10), [5, 10]),
        ("tuple[int, int] | None", [32, 32], [32, 32]),
        ("int | tuple[int, int] | None", [32, 32], [32, 32]),
        ("tuple[str, ...]", ["reference"], ["reference"]),
        ("bool", False, False),
        ("Optional[int]", 4, 4),
        ("Budget", {"epochs": 1}, {"epochs": 1}),  # a type a file cannot spell: as it is
    ],
)
def test_coerce_accepts_and_converts(annotation, value, expected):
    assert coerce_value("f", annotation, value) == expected


@pytest.mark.parametrize(
    "annotation, value, fragment",
    [
        ("int", "eight", "f must be an integer, got the string 'eight'"),
        ("int", 2.5, "f must be an integer, got 2.5"),
        ("int", True, "an integer"),
        ("float", "fast", "a number"),
        ("bool", 1, "true or false"),
        ("str", ["mnist"], "f must be a string, got ['mnist']"),
        ("str | None", 5, "a string or null, got 5"),
        ("dict", [8, 4], "a mapping"),
        ("list[int] | None", "1,1,1,1", "a list is written [a, b] in YAML"),
        ("tuple[str, ...]", "reference", "a list of names"),
        ("tuple[int, int] | None", [1, 2, 3], "a list of 2 integers"),
        ("list[int]", [1, "x"], "f[1] must be an integer"),
    ],
)
def test_coerce_refuses_with_the_field_and_what_it_needs(annotation, value, fragment):
    with pytest.raises(ValueError) as e:
        coerce_value("f", annotation, value)
    assert fragment in str(e.value)


def test_parse_annotation_reads_unions_and_brackets():
    assert parse_annotation("int | tuple[int, int] | None") == [
        ("int", []),
        ("tuple", ["int", "int"]),
        ("None", []),
    ]


def test_model_kwargs_are_checked_against_the_factory():
    assert check_model_kwargs("resnet", {"layers": 4, "width_mult": "1/8"}) == {
        "layers": 4,
        "width_mult": 0.125,
    }
    with pytest.raises(ValueError, match="model_kwargs.width must be an integer"):
        check_model_kwargs("fnn", {"width": "eight", "depth": 2})
    with pytest.raises(ValueError, match="unknown argument.*'dpth'"):
        check_model_kwargs("fnn", {"width": 8, "dpth": 2})
    with pytest.raises(ValueError, match="must be a mapping"):
        check_model_kwargs("fnn", [8, 4])


def test_alias_bomb_and_cycles_are_refused_quickly(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines.append("model_kwargs: {width: *a8}")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")  # 10**9 values once expanded
    t0 = time.perf_counter()
    with pytest.raises(ConfigFileError, match="expands to more than"):
        read_config_file(bomb)
    assert time.perf_counter() - t0 < 5  # generous: it stops after 10,000 values
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text("lr: &x [1, *x]\n")
    with pytest.raises(ConfigFileError, match="or a cycle"):
        read_config_file(cycle)
    ok = tmp_path / "ok.yaml"  # a few aliases are fine
    ok.write_text("base: &b {width: 8}\nmodel_kwargs: *b\n")
    assert read_config_file(ok)["model_kwargs"] == {"width": 8}


def test_a_key_given_twice_is_refused(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("epochs: 3\nseed: 1\nepochs: 4\n")
    with pytest.raises(ConfigFileError, match=r"'epochs' is given twice \(lines 1 and 3\)"):
        read_config_file(f)


def test_config_from_stdin():
    r = run("train", "-c", "-", "--print-config", stdin=FNN + "lr: 0.5\n")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.output)["lr"] == 0.5


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("dataset: [synthetic]\n", "dataset must be a string, got ['synthetic']"),
        ("model_kwargs: {width: eight, depth: 2}\n", "model_kwargs.width must be an integer"),
        ("model: resnet\nmodel_kwargs: {blocks: '1,1,1,1'}\n", "a list is written [a, b]"),
        ("data_dir: 5\n" + FNN, "data_dir must be a string or null, got 5"),
        ("model_kwargs: [8, 4]\n", "model_kwargs must be a mapping"),
        ("dataset: mnsit\n" + FNN, "unknown dataset 'mnsit'"),
        ("model: fnnn\n", "unknown model 'fnnn'"),
        ("device: gpu\n" + FNN, "unknown device 'gpu'"),
        ("optimizer: adamw\n" + FNN, "unknown optimizer 'adamw'"),
        ("epochs: 2.5\n" + FNN, "epochs must be an integer, got 2.5"),
    ],
)
def test_train_print_config_catches_bad_values(tmp_path, text, fragment):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    r = run("train", "-c", str(f), "--print-config")
    assert r.exit_code == 1
    assert fragment in r.output
    assert "Traceback" not in r.output


def test_numbers_written_as_strings_or_fractions_are_read(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: resnet\nmodel_kwargs: {layers: 4, width_mult: 1/16}\nlr: 1e-3\n")
    cfg = printed("train", "-c", str(f))
    assert cfg["lr"] == 0.001 and cfg["model_kwargs"]["width_mult"] == 0.0625


def test_a_runs_config_json_works_with_another_dataset_and_model(tmp_path):
    stored = {
        "model": "fnn",
        "model_kwargs": {"width": 8, "depth": 4, "in_shape": [1, 28, 28], "num_classes": 10},
        "dataset": "mnist",
        "lr": 0.01,
    }
    f = tmp_path / "config.json"
    f.write_text(json.dumps(stored))
    # in_shape/num_classes are mnist's own: dropped, filled in again from the dataset
    cfg = printed("train", "-c", str(f), "--dataset", "cifar10")
    assert cfg["model_kwargs"] == {"width": 8, "depth": 4} and cfg["lr"] == 0.01
    # another model: the file's arguments belong to fnn and are not carried over
    cfg = printed("train", "-c", str(f), "--model", "resnet", "--layers", "4")
    assert cfg["model_kwargs"] == {"layers": 4}
    # a shape the user chose (not the dataset's) is kept
    stored["model_kwargs"]["in_shape"] = [3, 8, 8]
    f.write_text(json.dumps(stored))
    assert printed("train", "-c", str(f))["model_kwargs"]["in_shape"] == [3, 8, 8]


def test_misplaced_keys_say_where_they_belong(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 3\n")
    r = run("autotune", "-c", str(f), "--print-config")
    assert r.exit_code == 1 and "put it under train:" in r.output
    r = run("search", "-c", str(f), "--print-config")
    assert r.exit_code == 1 and "put it under budget:" in r.output
    f.write_text("model: plain\n")
    r = run("search", "-c", str(f), "--print-config")
    assert r.exit_code == 1 and "did you mean 'family'?" in r.output


def test_autotune_file_samples_and_train_out(tmp_path):
    f = tmp_path / "at.yaml"
    f.write_text(
        "samples: 32\nout: runs/x\ntrain: {model: fnn, model_kwargs: {width: 8, depth: 3}}\n"
    )
    cfg = printed("autotune", "-c", str(f))
    assert cfg["samples"] == 32 and cfg["train"]["measure_samples"] == 32  # as --samples does
    assert cfg["train"]["out"] == "runs/x/steps/step_NNN"  # what the steps really use
    f.write_text("train: {model: fnn, model_kwargs: {width: 8, depth: 3}, out: mine}\n")
    r = run("autotune", "-c", str(f), "--print-config")
    assert r.exit_code == 1 and "is not used by autotune" in r.output


def test_list_fields_need_lists_in_every_command(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("widths: 5\n")
    r = run("grid", "-c", str(f), "--print-config")
    assert r.exit_code == 1 and "widths must be a list of integers" in r.output
    f.write_text("widths: [5, 10]\nlr: 1e-2\n")
    cfg = printed("grid", "-c", str(f))
    assert cfg["widths"] == [5, 10] and cfg["lr"] == 0.01


def test_config_help_names_each_commands_results_file():
    from typer.main import get_command

    commands = get_command(app).commands
    for command, name in [
        ("train", "config.json"),
        ("autotune", "autotune.json"),
        ("search", "search.json"),
        ("lesion", "lesion_summary.json"),
        ("grid", "grid_summary.json"),
        ("prune", "prune.json"),
    ]:
        (help_text,) = [p.help for p in commands[command].params if p.name == "config"]
        assert f"cbundles {command} --print-config" in help_text and name in help_text


@pytest.mark.parametrize(
    "command, text, fragment",
    [
        ("search", "dataset: mnsit\n", "unknown dataset 'mnsit'"),
        ("search", "device: gpu\n", "unknown device 'gpu'"),
        ("grid", "dataset: mnsit\n", "unknown dataset 'mnsit'"),
    ],
)
def test_names_are_checked_before_running(tmp_path, command, text, fragment):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    r = run(command, "-c", str(f), "--print-config")
    assert r.exit_code == 1 and fragment in r.output


class _Touch:
    """Unpickling this runs code: it creates ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_config_file_cannot_turn_on_trust_pickle(tmp_path):
    import torch

    marker = tmp_path / "code-ran"
    torch.save(_Touch(marker), tmp_path / "evil.pt")
    model = str(tmp_path / "evil.pt")
    plain = {"model": model, "dataset": "synthetic", "out": str(tmp_path / "p")}
    handed_on = tmp_path / "prune.json"  # a results file that embeds a trusting config
    handed_on.write_text(json.dumps({"config": {**plain, "trust_pickle": True}}))
    as_yaml = tmp_path / "c.yaml"
    as_yaml.write_text(yaml.safe_dump({**plain, "trust_pickle": True}))
    for f in (handed_on, as_yaml):
        r = run("prune", "-c", str(f))
        assert r.exit_code != 0
        msg = " ".join(r.output.split())
        assert "trust_pickle cannot be turned on from a config file" in msg
        assert "pass --trust-pickle on the command line" in msg
        assert not marker.exists(), "the pickle's code ran"
        assert not (tmp_path / "p").exists()
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({**plain, "trust_pickle": False}))
    assert printed("prune", "-c", str(off))["trust_pickle"] is False
    assert printed("prune", "-c", str(off), "--trust-pickle")["trust_pickle"] is True
    r = run("prune", "-c", str(off))  # without the flag the module file is still refused
    assert r.exit_code != 0 and "--trust-pickle" in r.output and not marker.exists()
