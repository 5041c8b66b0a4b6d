"""Handed-on files as a property (issue 23): random and mutated config files fed to every
command, and every file of a finished run replaced in turn by garbage, a symbolic link, a
folder or an empty file. Whatever the input: no traceback, a bad input exits non-zero with an
error line, no file outside --out changes, and no file the tool did not write is deleted."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conflicting_bundles.cli import app
from conftest import snapshot

TINY = {"model": "fnn", "model_kwargs": {"width": 4, "depth": 2}, "dataset": "synthetic",
        "epochs": 1, "train_limit": 32, "test_limit": 16, "measure_samples": 8}  # fmt: skip
COMMANDS = ["train", "autotune", "prune", "lesion", "search"]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def no_traceback(res) -> None:
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if res.exit_code != 0:
        assert "error" in res.output.lower() or "usage" in res.output.lower(), res.output


# ------------------------------------------------------------------ random config files
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
mutated = st.builds(
    lambda base, key, value: {**base, key: value},
    st.just(TINY),
    st.sampled_from(
        [*TINY, "out", "seed", "threads", "lr", "criterion", "val_split", "trust_pickle"]
    ),
    json_values,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(command=st.sampled_from(COMMANDS), data=st.one_of(mutated, json_values),
       raw=st.booleans(), junk=st.binary(max_size=64))  # fmt: skip
def test_random_and_mutated_config_files(tmp_path_factory, command, data, raw, junk):
    tmp = tmp_path_factory.mktemp("cfg")
    (tmp / "mine.txt").write_text("user file")
    f = tmp / "c.json"
    f.write_bytes(junk if raw else json.dumps(data, default=str).encode())
    before = snapshot(tmp)
    res = run(command, "--config", f, "--out", tmp / "out", "--epochs", "1")
    no_traceback(res)
    after = snapshot(tmp)
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed == set(), changed  # nothing outside --out changed, nothing deleted


# ----------------------------------------------------------------- a received run folder
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("recv") / "run"
    res = run("train", "--model", "fnn", "--width", "4", "--depth", "2", "--dataset",
              "synthetic", "--epochs", "1", "--train-limit", "32", "--test-limit", "16",
              "--samples", "8", "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


DAMAGE = ["garbage", "symlink", "folder", "empty"]
READERS = [
    ("measure", lambda d, o: ["measure", d, "--samples", "8"]),
    ("lesion", lambda d, o: ["lesion", d, "--repeats", "1", "--samples", "8", "--out", o]),
    (
        "prune",
        lambda d, o: [
            "prune",
            "--model",
            d,
            "--remove",
            "1",
            "--test-limit",
            "16",
            "--n-samples",
            "8",
            "--out",
            o,
        ],
    ),  # fmt: skip
    ("resume", lambda d, o: ["train", "--resume", "--epochs", "2", "--out", d]),
    ("report", lambda d, o: ["report", d]),
]


def damage(p, how, outside):
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()
    if how == "garbage":
        p.write_bytes(b"\x00garbage{[" * 7)
    elif how == "symlink":
        p.symlink_to(outside)
    elif how == "folder":
        p.mkdir()
    else:
        p.write_bytes(b"")


def test_every_file_of_a_received_run_replaced_in_turn(finished, tmp_path):
    """Each file x each damage x each reader: no traceback, outside untouched."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    cases = 0
    for rel in _files(finished):
        for how in DAMAGE:
            d = tmp_path / f"{str(rel).replace('/', '_')}-{how}"
            shutil.copytree(finished, d, symlinks=True)
            damage(d / rel, how, outside)
            for name, args in READERS:
                res = run(*args(d, tmp_path / f"o-{name}-{cases}"))
                no_traceback(res)
                assert outside.read_text() == "precious", (rel, how, name)
                cases += 1
    assert cases >= 5 * len(DAMAGE) * len(READERS)
