"""A handed-on folder or file is a trust boundary (issue 23): no file outside --out changes, no
file the tool did not write is deleted, and no input hangs. One test per reproduced case."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from conflicting_bundles import rundir, runs
from conflicting_bundles.cli import app
from conftest import snapshot

TINY = ["--model", "fnn", "--width", "8", "--depth", "2", "--dataset", "synthetic", "--epochs",
        "1", "--train-limit", "64", "--test-limit", "32", "--samples", "16"]  # fmt: skip


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(res, *fragments) -> str:
    """One clear line, a non-zero exit, no traceback; returns the output flattened."""
    text = " ".join(res.output.split())
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    for f in fragments:
        assert f in text, (f, text)
    return text


@pytest.fixture
def trained(tmp_path):
    out = tmp_path / "run"
    res = run("train", *TINY, "--out", out)
    assert res.exit_code == 0, res.output
    return out


# ----------------------------------------------------------------------------- the lock
def test_a_symlinked_lock_never_truncates_its_target(trained, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (trained / ".lock").unlink()
    (trained / ".lock").symlink_to(victim)
    refused(run("train", *TINY, "--epochs", "2", "--resume", "--out", trained),
            ".lock is a symbolic link")  # fmt: skip
    assert victim.read_text() == "precious"


def test_a_lock_that_is_a_folder_is_refused(trained):
    (trained / ".lock").unlink()
    (trained / ".lock").mkdir()
    refused(run("train", *TINY, "--epochs", "2", "--resume", "--out", trained), ".lock")


# ---------------------------------------------------------------- the user's own files
def test_a_refused_run_deletes_no_temp_file_of_the_user(tmp_path):
    docs = tmp_path / "mydocs"
    (docs / "checkpoints").mkdir(parents=True)
    (docs / "config.json").write_text("{}")
    mine = [docs / ".thesis.docx.tmp", docs / "checkpoints" / ".mine.tmp",
            docs / ".config.json.abcdefgh.tmp"]  # fmt: skip
    for p in mine:
        p.write_text("mine")
    refused(run("train", *TINY, "--out", docs), "already holds a run")
    assert all(p.exists() for p in mine)


def test_force_never_deletes_in_a_folder_that_is_not_a_run_of_this_tool(tmp_path):
    docs = tmp_path / "mydocs"
    (docs / "tb").mkdir(parents=True)
    (docs / "config.json").write_text('{"mine": true}')
    (docs / "report.html").write_text("<p>my report</p>")
    (docs / "tb" / "keep.txt").write_text("keep")
    before = snapshot(docs)
    refused(run("train", *TINY, "--force", "--out", docs), rundir.MARKER, "deletes nothing")
    after = snapshot(docs)
    assert after.pop(".lock", b"") == b""  # the (released, empty) lock file is all it adds
    assert after == before


def test_force_still_replaces_a_run_of_this_tool(trained):
    res = run("train", *TINY, "--force", "--out", trained)
    assert res.exit_code == 0, res.output


def test_another_command_never_writes_into_a_train_run(trained):
    before = (trained / "report.html").read_bytes()
    refused(run("grid", "--widths", "3", "--depths", "1", "--dataset", "synthetic",
                "--epochs", "1", "--train-limit", "64", "--test-limit", "32", "--samples",
                "16", "--workers", "1", "--out", trained),
            "holds a run of cbundles train")  # fmt: skip
    assert (trained / "report.html").read_bytes() == before


def test_resume_never_writes_through_a_symlinked_tb_folder(trained, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("x")
    import shutil

    shutil.rmtree(trained / "tb")
    (trained / "tb").symlink_to(outside, target_is_directory=True)
    refused(run("train", *TINY, "--epochs", "2", "--resume", "--out", trained),
            "tb is a symbolic link")  # fmt: skip
    assert snapshot(outside) == {"x.txt": b"x"}


def test_only_this_tools_temp_names_are_cleaned_after_acceptance(trained):
    ours = [
        trained / ".metrics.csv.k3j4h5g6.tmp",
        trained / "checkpoints" / ".last.pt.ab12cd34.tmp",
    ]
    theirs = [trained / ".notes.k3j4h5g6.tmp", trained / "checkpoints" / ".mine.tmp"]
    for p in ours + theirs:
        p.write_text("partial")
    res = run("train", *TINY, "--epochs", "2", "--resume", "--out", trained)
    assert res.exit_code == 0, res.output
    assert not any(p.exists() for p in ours) and all(p.exists() for p in theirs)


def test_a_damaged_marker_is_named(trained):
    (trained / rundir.MARKER).write_text("[1, 2")
    refused(run("train", *TINY, "--epochs", "2", "--resume", "--out", trained),
            rundir.MARKER, "damaged")  # fmt: skip


# ------------------------------------------------------------------ config files in bounds
def _fifo(tmp_path):
    p = tmp_path / "fifo.yaml"
    os.mkfifo(p)
    return p


def _big(tmp_path):
    p = tmp_path / "big.yaml"
    with open(p, "wb") as f:
        f.truncate(200 * 2**20)  # sparse: 200 MB without writing them
    return p


def _deep_json(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    return p


def _deep_yaml(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("[" * 100_000 + "]" * 100_000)
    return p


def _dup_json(tmp_path):
    p = tmp_path / "dup.json"
    p.write_text('{"epochs": 1, "epochs": 100}')
    return p


def _link(tmp_path):
    (tmp_path / "real.yaml").write_text("epochs: 1\n")
    p = tmp_path / "link.yaml"
    p.symlink_to(tmp_path / "real.yaml")
    return p


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda t: "/dev/zero", "character device"),
        (_fifo, "FIFO"),
        (_big, "more than"),
        (_deep_json, "nest"),
        (_deep_yaml, "nest"),
        (_dup_json, "'epochs' is given twice"),
        (_link, "symbolic link"),
    ],
    ids=["dev-zero", "fifo", "200MB", "deep-json", "deep-yaml", "duplicate-json-key", "symlink"],
)
@pytest.mark.timeout(60)
def test_config_files_are_read_within_bounds(make, fragment, tmp_path):
    path = make(tmp_path)
    for command in ("train", "autotune", "prune"):
        res = run(command, "--config", path, "--out", tmp_path / "o")
        refused(res, str(path), fragment)
    assert not (tmp_path / "o").exists()


def test_run_files_are_read_as_bounded_regular_files(trained, tmp_path):
    cfg = trained / "config.json"
    (tmp_path / "elsewhere.json").write_text(cfg.read_text())
    cfg.unlink()
    cfg.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(runs.RunDirError, match="symbolic link"):
        runs.load_config(trained)
    cfg.unlink()
    cfg.write_text(json.dumps({"seed": 0, "seed ": 1}).replace('"seed "', '"seed"'))
    with pytest.raises(runs.RunDirError, match="given twice"):
        runs.load_config(trained)


# -------------------------------------------------------------- tracebacks and wrong exits
@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--threads", "100000"], "threads must be 1..1024"),
        (["--seed", str(2**70)], "seed must be 0 .. 2**63 - 1"),
        (["--out", "a" * 300], "more than the 255 a file name may have"),
        (["--width", "-3", "--print-config"], "--width must be >= 1"),
    ],
    ids=["threads", "seed", "long-out", "negative-width"],
)
def test_bad_train_values_are_one_line_before_any_work(extra, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(run("train", *TINY, "--out", tmp_path / "o", *extra), fragment)
    assert not (tmp_path / "o").exists()


def test_prune_refuses_a_nan_heal_lr_before_scoring(trained, tmp_path):
    res = run("prune", "--model", trained, "--dataset", "synthetic", "--heal-lr", "nan",
              "--heal-steps", "5", "--out", tmp_path / "p")  # fmt: skip
    text = refused(res, "heal_lr must be a finite number")
    assert "scoring" not in text and not (tmp_path / "p").exists()


def test_a_config_json_that_is_not_an_object_is_named(trained):
    (trained / "config.json").write_text("[1, 2]")
    refused(run("measure", trained), "config.json holds a list, not a config")


@pytest.mark.parametrize("name, garbage", [("summary.json", '{"a": 1'), ("metrics.jsonl", "x{")])
def test_report_of_a_damaged_run_exits_non_zero_naming_the_file(trained, name, garbage):
    with open(trained / name, "a") as f:
        f.write(garbage)
    refused(run("report", trained), f"{name}: not valid JSON")
    assert (trained / "report.html").is_file()  # what could be read is still reported


# ------------------------------------------------------------- inputs that hang or explode
def test_a_model_of_a_hundred_million_layers_is_refused_before_building():
    from conflicting_bundles import create_model

    with pytest.raises(ValueError, match="MAX_LAYERS"):
        create_model("fnn", width=1, depth=100_000_000)
    with pytest.raises(ValueError, match="MAX_LAYERS"):
        create_model("plain", blocks=[1, 1, 1, 20_000])


def test_an_image_size_that_would_exhaust_memory_is_refused(tmp_path):
    refused(run("train", *TINY, "--dataset", f"folder:{tmp_path}?size=200000",
                "--out", tmp_path / "o"), "size=200000 is more than 1024")  # fmt: skip


def _png(path, width, height):
    """A PNG whose header claims width x height (one tiny IDAT: decoding is never reached)."""
    import struct
    import zlib

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(png)


def test_a_decompression_bomb_and_an_empty_class_folder_are_one_line(tmp_path):
    from PIL import Image

    from conflicting_bundles.data.common import DatasetError
    from conflicting_bundles.data.imagefolder import letterbox, read_image_folder

    _png(tmp_path / "bomb.png", 40_000, 40_000)
    with pytest.raises(Exception, match="bomb.png: cannot decode image") as e:
        letterbox(tmp_path / "bomb.png", 32)
    assert "DecompressionBomb" in str(e.value) or "exceeds limit" in str(e.value)
    root = tmp_path / "ds"
    for c in ("cat", "dog"):
        (root / "train" / c).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "train" / "cat" / "a.png")
    with pytest.raises(DatasetError, match="class folders without images.*dog"):
        read_image_folder(root, "train", 8, ["cat", "dog"])


@pytest.mark.parametrize("command", ["train", "autotune"])
def test_kill_pid_stops_like_ctrl_c_with_the_resume_hint(command, tmp_path):
    """`kill PID` (SIGTERM) of a long command exits 130 with the hint, not 143 silently."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "o"
    args = [sys.executable, "-m", "conflicting_bundles.cli", command, "--model", "fnn",
            "--width", "8", "--depth", "3", "--dataset", "synthetic", "--epochs", "500",
            "--train-limit", "512", "--samples", "16", "--out", str(out)]  # fmt: skip
    if command == "autotune":
        args += ["--check-epochs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(out.rglob("last.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text[-2000:]
    assert "interrupted" in text and "--resume" in text and "Traceback" not in text


def test_search_refuses_a_folder_holding_another_commands_run(trained):
    """search locks its --out and marks it like every other command."""
    before = (trained / "report.html").read_bytes()
    refused(run("search", "--dataset", "synthetic", "--model", "fnn", "--width", "4", "--depth",
                "2", "--methods", "fixed", "--epochs", "1", "--val-split", "16", "--train-limit",
                "64", "--test-limit", "16", "--out", trained),
            "holds a run of cbundles train")  # fmt: skip
    assert (trained / "report.html").read_bytes() == before


def test_the_data_cache_lock_never_truncates_a_linked_file(tmp_path):
    """The data directory's .lock is opened without truncating and never through a link."""
    from conflicting_bundles.data.sources import exclusive

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    root = tmp_path / "data"
    root.mkdir()
    (root / ".lock").symlink_to(victim)
    with exclusive(root):
        pass
    assert victim.read_text() == "precious"
    (root / ".lock").unlink()
    (root / ".lock").write_text("kept")  # a regular lock file is reused, not truncated
    with exclusive(root):
        pass
    assert (root / ".lock").read_text() == "kept"


def test_a_damaged_cached_search_result_is_run_again(tmp_path):
    from conflicting_bundles.search.compare import cached_result
    from conflicting_bundles.search.records import SearchStart

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "fixed.json").write_text('{"start": [1, 2]')
    start = SearchStart.from_dict({"dataset": "synthetic", "width": 4, "depth": 2})
    assert cached_result(tmp_path, "fixed", start) is None
