"""A handed-on file is a trust boundary (issue 23): a config file or a folder received from
someone else never chooses code to import, and never makes the tool lose a file it did not
write."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from conflicting_bundles.cli import app


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_clear_line(r) -> str:
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output, r.output
    return " ".join(r.output.split())


# ------------------------------------------------------------------ code from a file
def _shell_model(marker) -> dict:
    """A config naming subprocess.call as the model factory, with a shell command that
    creates ``marker`` if it ever runs."""
    return {"model": "subprocess:call", "model_kwargs": {"args": f"touch {marker}", "shell": True}}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_train_config_file_cannot_name_a_factory(tmp_path, suffix):
    marker = tmp_path / "PWNED"
    cfg = {**_shell_model(marker), "dataset": "synthetic", "out": str(tmp_path / "r")}
    f = tmp_path / f"config{suffix}"
    f.write_text(json.dumps(cfg) if suffix == ".json" else yaml.safe_dump(cfg))
    r = run("train", "--config", str(f))
    msg = _one_clear_line(r)
    assert "model cannot be set to 'subprocess:call' from a config file" in msg
    assert "--model on the command line" in msg and str(f) in msg
    assert not marker.exists(), "the file's factory ran"
    assert not (tmp_path / "r").exists()


def test_a_registered_model_in_a_config_file_is_still_fine(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: plain\nmodel_kwargs: {layers: 4}\ndataset: synthetic\n")
    r = run("train", "--config", str(f), "--print-config")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.output)["model"] == "plain"


def test_autotune_config_file_cannot_name_a_factory(tmp_path):
    marker = tmp_path / "PWNED"
    f = tmp_path / "at.yaml"
    f.write_text(yaml.safe_dump({"train": {**_shell_model(marker), "dataset": "synthetic"}}))
    msg = _one_clear_line(run("autotune", "--config", str(f), "--out", str(tmp_path / "a")))
    assert "model cannot be set to 'subprocess:call' from a config file" in msg
    assert not marker.exists()


@pytest.mark.parametrize("field", ["model", "arch"])
def test_prune_config_file_cannot_name_an_import_path(tmp_path, field):
    marker = tmp_path / "PWNED"
    weights = tmp_path / "w.pt"
    import torch

    torch.save({"w": torch.zeros(1)}, weights)
    cfg = {
        "model": "subprocess:call" if field == "model" else str(weights),
        "model_kwargs": {"args": f"touch {marker}", "shell": True},
        "dataset": "synthetic",
        "out": str(tmp_path / "p"),
    }
    if field == "arch":
        cfg["arch"] = "subprocess:call"
    for name, text in (("prune.json", json.dumps({"config": cfg})), ("p.yaml", yaml.dump(cfg))):
        f = tmp_path / name
        f.write_text(text)
        msg = _one_clear_line(run("prune", "--config", str(f)))
        assert f"{field} cannot be set to 'subprocess:call' from a config file" in msg
        assert f"--{field} on the command line" in msg
        assert not marker.exists(), "the file's import path ran"
        assert not (tmp_path / "p").exists()


def test_prune_config_may_name_timm_hf_and_run_folders(tmp_path):
    from conflicting_bundles.configfile import check_fields
    from conflicting_bundles.prune.config import PruneConfig

    for spec in ("timm:resnet18", "hf:some/dir", "runs/x", str(tmp_path / "a:b" / "run")):
        assert check_fields({"model": spec}, PruneConfig, "f")["model"] == spec


def test_a_pruned_folder_never_chooses_code_to_import(tmp_path):
    from conflicting_bundles.prune import loading
    from conflicting_bundles.prune.surgery import FORMAT

    marker = tmp_path / "PWNED"
    folder = tmp_path / "pruned"
    folder.mkdir()
    base = {"spec": "subprocess:call", "kwargs": {"args": f"touch {marker}", "shell": True}}
    meta = {"format": FORMAT, "base": base, "removed": []}
    (folder / "pruned.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"--arch subprocess:call"):
        loading.load_model(str(folder))
    assert not marker.exists()
    msg = _one_clear_line(
        run("prune", "--model", str(folder), "--dataset", "synthetic", "--out", str(tmp_path / "p"))
    )
    assert "never imported on its own" in msg and not marker.exists()
