"""What ``cbundles prune`` writes and says: the output folder (refused without --force), the
device and the samples really used, the measurement context only for the conflict scorer, the
comparison headline (ties), and the block-regex messages (no raw UserWarning)."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from conflicting_bundles.cli.prune import register
from conflicting_bundles.prune import find_blocks
from conflicting_bundles.prune.command import PruneConfig, run_prune
from conflicting_bundles.prune.outputs import compare_headline
from conflicting_bundles.train import resolve_device

FNN = ["--model", "fnn", "--model-kwargs", '{"width": 16, "depth": 4, "in_shape": [1, 28, 28]}',
       "--dataset", "synthetic", "--test-limit", "32"]  # fmt: skip


def cli(*args: str):
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    register(app)
    return CliRunner().invoke(app, ["prune", *args])


def flat(text: str) -> str:
    return " ".join(text.split())


def summary(out) -> dict:
    return json.loads((out / "prune.json").read_text())


def test_existing_results_are_refused_without_force(tmp_path):
    out = tmp_path / "p"
    assert cli(*FNN, "--out", str(out)).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before = (out / "prune.json").read_bytes()
    res = cli(*FNN, "--scorer", "random", "--out", str(out))
    assert res.exit_code == 2
    text = flat(res.output)
    assert "already holds prune results" in text and "a prune of fnn by scorer conflict" in text
    assert "--force" in text and "another --out" in text
    assert (out / "prune.json").read_bytes() == before  # nothing was touched
    res = cli(*FNN, "--compare", "--scorers", "random", "--max-remove", "1", "--out", str(out))
    assert res.exit_code == 2 and "already holds prune results" in flat(res.output)
    res = cli(*FNN, "--scorer", "random", "--out", str(out), "--force")
    assert res.exit_code == 0, res.output
    assert summary(out)["scorer"] == "random"
    assert (out / "notes.txt").read_text() == "mine"  # --force replaces prune's files only
    # the pruned folder itself, re-pruned in place: read first, replaced after
    blocks = len(summary(out)["blocks"])
    res = cli("--model", str(out), "--dataset", "synthetic", "--test-limit", "32",
              "--scorer", "reverse-order", "--out", str(out), "--force")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(summary(out)["blocks"]) == blocks - 1


def test_outputs_record_the_device_used(tmp_path):
    used = str(resolve_device("auto"))
    res = cli(*FNN, "--device", "auto", "--out", str(tmp_path / "p"))
    assert res.exit_code == 0, res.output
    s = summary(tmp_path / "p")
    assert s["config"]["device"] == s["device"] == used
    assert f"loading fnn on {used}" in res.output and f"ms on {used}." in flat(res.output)
    # the library resolves "auto" too (it used to be passed to model.to as is)
    cfg = PruneConfig(model="fnn", model_kwargs={"width": 8, "depth": 3, "in_shape": [1, 28, 28]},
                      dataset="synthetic", test_limit=16, device="auto",
                      out=str(tmp_path / "lib"))  # fmt: skip
    assert run_prune(cfg)["config"]["device"] == used


def test_measure_and_sample_counts_are_what_each_scorer_used(tmp_path):
    res = cli(*FNN, "--scorer", "random", "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    s = summary(tmp_path / "r")
    assert "measure" not in s and "criterion" not in s and s["score_samples"] is None
    assert "'random' (reads no data)" in res.output and "samples" not in res.output
    res = cli(*FNN, "--scorer", "angular", "--out", str(tmp_path / "a"))
    assert res.exit_code == 0, res.output
    assert summary(tmp_path / "a")["score_samples"] == 256 and "measure" not in summary(
        tmp_path / "a"
    )
    assert flat(res.output).count("on 256 training samples") == 2  # progress and headline
    res = cli(*FNN, "--out", str(tmp_path / "c"))  # conflict: 64 samples by default
    assert res.exit_code == 0, res.output
    s = summary(tmp_path / "c")
    m = s["measure"]
    assert m["n_samples"] == s["score_samples"] == 64 and "on 256" not in res.output
    assert m["w_max"] is not None and m["w_max"] > 0
    assert m["w_max"] == pytest.approx(max(r["w_max"] for r in s["details"].values()))
    assert flat(res.output).count("on 64 training samples") == 2
    res = cli(*FNN, "--samples", "40", "--out", str(tmp_path / "c40"))
    assert res.exit_code == 0, res.output
    assert summary(tmp_path / "c40")["measure"]["n_samples"] == 40
    assert flat(res.output).count("on 40 training samples") == 2


def rows(acc: dict[str, list[float]], k: int = 1) -> list[dict]:
    out = [dict(scorer="none", seed="", k=0, accuracy=0.9)]
    for name, values in acc.items():
        for seed, a in enumerate(values):
            out.append(dict(scorer=name, seed=seed, k=k, accuracy=a))
    return out


def test_compare_headline_says_tie_and_names_the_tied_scorers():
    one = compare_headline(rows({"conflict": [0.8], "angular": [0.7]}), 1)
    assert one.startswith("At k = 1 removed block the highest test accuracy is by scorer "
                          "'conflict': 80.0% (unpruned 90.0%).")  # fmt: skip
    # equal as printed (80.0%) is a tie; random is the mean of its seeds (0.8)
    tie = compare_headline(
        rows({"conflict": [0.80001], "angular": [0.7], "random": [0.7, 0.9]}, k=2), 2
    )
    assert (
        "is a tie: 80.0% by scorers 'conflict', 'random'" in tie
        and "angular" not in (tie.splitlines()[0])
    )
    assert "random 80.0% (mean of 2 seeds)" in tie
    # max_remove beyond the blocks compared: the largest k there is
    assert compare_headline(rows({"a": [0.5]}, k=3), 10).startswith("At k = 3 ")


def test_compare_cli_reports_a_tie_when_every_block_is_removed(tmp_path):
    out = tmp_path / "cmp"  # 3 blocks: at k = 3 both scorers remove all of them
    res = cli(*FNN, "--compare", "--scorers", "angular,reverse-order", "--max-remove", "3",
              "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads((out / "compare.json").read_text())
    assert "is a tie" in d["headline"] and "'angular', 'reverse-order'" in d["headline"]
    assert "is a tie" in (out / "report.html").read_text()
    assert "is a tie" in flat(res.output)
    assert "measure" not in d and d["score_samples"] == {"angular": 256, "reverse-order": None}


def test_block_regex_messages_and_notes(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    for regex in ("(", "zz"):
        with pytest.raises(ValueError) as e:
            find_blocks(net, torch.randn(2, 4), blocks=regex)
        assert "blocks=" not in str(e.value) and f"block regex '{regex}'" in str(e.value)
    res = cli(*FNN, "--block-regex", "(", "--out", str(tmp_path / "bad"))
    assert res.exit_code == 2 and "--block-regex '(' is not a valid regex" in res.output
    assert "loading" not in res.output  # checked before anything is loaded
    # a matched block that changes the shape: one "note:" line, no raw UserWarning
    res = cli(*FNN, "--block-regex", r"hidden\.\d", "--out", str(tmp_path / "p"))
    assert res.exit_code == 0, res.output
    assert "UserWarning" not in res.output and "warnings.warn" not in res.output
    note = [line for line in res.output.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and r"block regex 'hidden\.\d': ignoring hidden.0" in note[0]
    assert summary(tmp_path / "p")["notes"] == [note[0][len("note: ") :]]
    # a config file with the old key
    (tmp_path / "c.yaml").write_text("model: fnn\nblocks: 'hidden\\.\\d'\n")
    res = cli("--config", str(tmp_path / "c.yaml"), "--dataset", "synthetic")
    assert res.exit_code != 0 and "did you mean 'block_regex'?" in flat(res.output)


def test_a_run_directory_brings_its_dataset_and_names_its_weights(tmp_path):
    from conflicting_bundles.train import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(model="fnn", model_kwargs={"width": 8, "depth": 4}, dataset="synthetic",
                      epochs=1, train_limit=64, test_limit=32, progress=False, tensorboard=False,
                      out=str(run)))  # fmt: skip
    out = tmp_path / "p"
    res = cli("--model", str(run), "--remove", "1", "--test-limit", "32", "--out", str(out))
    assert res.exit_code == 0, res.output
    text = flat(res.output)
    assert "dataset synthetic (the run's" in text
    assert "weights: checkpoints/last.pt, epoch 1" in text
    assert summary(out)["config"]["dataset"] == "synthetic"
    base = json.loads((out / "pruned.json").read_text())["base"]
    assert (base["checkpoint"], base["epoch"]) == ("last.pt", 1)
    # the pruned folder is no run directory: it needs --dataset, and names no checkpoint
    res = cli("--model", str(out), "--remove", "1", "--out", str(tmp_path / "p2"))
    assert res.exit_code != 0 and "exactly one of --dataset" in flat(res.output)
    res = cli("--model", str(out), "--dataset", "synthetic", "--remove", "1",
              "--test-limit", "32", "--out", str(tmp_path / "p2"))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "weights:" not in res.output
