"""Re-run the 60 cases that FAILED in the reliability audit (/work/shared/audit/README.md, at
commit 3f98960) against the current code, on small MNIST runs, and write results.tsv.

    .venv/bin/python experiments/audit/rerun.py                  # all cases (about 6 min, 1 core)
    .venv/bin/python experiments/audit/rerun.py --only wm_huge depth0
    .venv/bin/python experiments/audit/rerun.py --work /tmp/audit --out results.tsv

Columns of results.tsv: case, verdict_now (PASS/FAIL/NOT-REPRODUCED), rc, traceback (yes/no),
seconds, first message line, note. The mount cases (P5 disk full, ro_*) need root (tmpfs).
Sizes are smaller than the audit's (e.g. an FNN 10x12 auto-tune instead of 25x100) so that
the whole set runs in minutes; the failure each case looks for does not depend on size.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cases import (  # noqa: E402
    AT,
    CB,
    FNN,
    B,
    Result,
    alive,
    can_mount,
    cb,
    damaged_copy,
    descendants,
    finish,
    kill_when,
    start,
    train_fixture,
)

CASES: dict[str, Callable[[Path], tuple[bool | None, Result, str]]] = {}


def case(*names: str):
    def deco(fn):
        for n in names:
            CASES[n] = lambda w, fn=fn, n=n: fn(w, n)
        return fn

    return deco


def fixture(w: Path, name: str, epochs: int = 1) -> Path:
    p = w / "fix" / name
    if not (p / "summary.json").is_file():
        shutil.rmtree(p, ignore_errors=True)
        train_fixture(w, f"fix/{name}", epochs=epochs)
    return p


# ------------------------------------------------------------------ 1. crash / resume
@case("C4")
def c4(w, n):
    """A kill between the two checkpoint writes of a best epoch. best.pt is now written first,
    so the kill leaves best.pt at epoch e and last.pt at e-1 (the audit's state, last.pt ahead,
    can no longer arise); the resume must redo epoch e and leave best.pt = summary's best."""
    d = w / "c4"
    shutil.rmtree(d, ignore_errors=True)
    train_fixture(w, "c4", "--train-limit", "1000", "--lr", "3e-3", epochs=1)
    for epochs in (2, 3, 4):  # until an epoch improves on the best so far
        old_last = (d / "checkpoints" / "last.pt").read_bytes()
        r = cb("train", "--resume", "--out", "c4", "--epochs", str(epochs), "-q", cwd=w)
        last = torch.load(d / "checkpoints/last.pt", weights_only=True)
        if last["best"]["epoch"] == last["epoch"]:
            break
    else:
        return None, r, "no epoch improved on the best: the C4 state cannot be made"
    (d / "checkpoints" / "last.pt").write_bytes(old_last)  # the state a kill there leaves
    r = cb("train", "--resume", "--out", "c4", "-q", cwd=w)
    best = torch.load(d / "checkpoints/best.pt", weights_only=True)
    summary = json.loads((d / "summary.json").read_text())
    ok = r.rc == 0 and best["epoch"] == last["epoch"] == summary.get("best_epoch")
    note = f"best.pt epoch {best['epoch']}, summary best_epoch {summary.get('best_epoch')}"
    return ok, r, note


@case("C9")
def c9(w, n):
    d = w / "c9"
    shutil.rmtree(d, ignore_errors=True)
    train_fixture(w, "c9", epochs=2)
    r = cb("train", "--resume", "--out", "c9", "--epochs", "1", cwd=w)
    return r.clean_fail("shrink"), r, ""


def _at_killed(w: Path, name: str, pattern: str, *extra: str) -> tuple[Path, bool]:
    shutil.rmtree(w / name, ignore_errors=True)
    p = start("autotune", *AT, *extra, "--out", name, cwd=w)
    return w / name, kill_when(p, f"{name}/{pattern}", w)


@case("A1", "S5")
def a1(w, n):
    d, killed = _at_killed(w, f"a1_{n}", "steps/step_000/decision.json")
    if not killed:
        return None, Result(0, ""), "the search ended before step_000/decision.json"
    s1 = d / "steps/step_000/summary.json"
    note = "killed between decision.json and summary.json"
    if s1.is_file() and not (d / "steps/step_001").exists():
        s1.unlink()  # the kill came after the summary: remove it to make the A1 state
        note = "killed just after summary.json; it was removed to make the A1 state"
    if n == "S5":  # the same state resumed through the sweep executor
        spec = w / "s5.yaml"
        spec.write_text(json.dumps({
            "kind": "autotune", "out": "s5",
            "base": {"check_epochs": 1, "samples": 64, "train": {
                "model": "fnn", "model_kwargs": {"width": 10, "depth": 40}, "epochs": 1,
                "train_limit": 300, "test_limit": 100, "threads": 1, "progress": False}},
            "grid": {"seed": [0]}, "resources": {"cpus": 1}, "retries": 0,
        }))  # fmt: skip
        shutil.rmtree(w / "s5", ignore_errors=True)
        (w / "s5/trials").mkdir(parents=True)
        shutil.copytree(d, w / "s5/trials/seed-0")
        r = cb("sweep", "s5.yaml", "--serial", cwd=w)
        ok = r.rc == 0 and (w / "s5/trials/seed-0/autotune.json").is_file()
        return ok, r, note
    r = cb("autotune", *AT, "--out", d.name, "--resume", cwd=w)
    return r.rc == 0 and (d / "autotune.json").is_file(), r, note


@case("A5")
def a5(w, n):
    d, killed = _at_killed(w, "a5", "steps/step_001/summary.json")
    r = cb("autotune", *AT, "--seed", "7", "--lr", "0.01", "--out", "a5", "--resume", cwd=w)
    return r.clean_fail("seed"), r, "" if killed else "search ended before the kill"


@case("A6")
def a6(w, n):
    d = w / "a6"
    if not (d / "autotune.json").is_file():
        shutil.rmtree(d, ignore_errors=True)
        cb("autotune", *AT, "--out", "a6", cwd=w)
    r = cb("autotune", *AT, "--seed", "3", "--dataset", "fashion-mnist", "--out", "a6",
           "--resume", cwd=w)  # fmt: skip
    return r.clean_fail(), r, ""


@case("G4")
def g4(w, n):
    shutil.rmtree(w / "g4", ignore_errors=True)
    p = start("grid", "--widths", "5,10", "--depths", "1,5", "--dataset", "mnist", "--epochs",
              "2", "--train-limit", "1000", "--test-limit", "200", "--workers", "2", "--out",
              "g4", cwd=w)  # fmt: skip
    t0 = time.time()
    while time.time() - t0 < 120 and not list((w / "g4").glob("cells/*/checkpoints/last.pt")):
        time.sleep(0.05)
    kids = descendants(p.pid)
    p.kill()  # SIGKILL of the main process only (what the OOM killer does)
    p.communicate()
    time.sleep(8)
    left = alive(kids)
    for pid in left:  # clean up what this case started
        subprocess.run(["kill", "-9", str(pid)], check=False)
    note = f"{len(kids)} children at the kill, {len(left)} alive 8 s later"
    return not left, Result(-9, ""), note


# ------------------------------------------------------------------ 2. concurrency, disk
SM = ["train", "--model", "fnn", "--width", "200", "--depth", "10", "--dataset", "mnist",
      "--epochs", "3", "--train-limit", "2000", "--test-limit", "500", "--threads", "1",
      "-q"]  # fmt: skip


def _two(w, out, delay, second):
    shutil.rmtree(w / out, ignore_errors=True)
    p1 = start(*SM, "--seed", "0", "--out", out, cwd=w)
    time.sleep(delay)
    r2 = cb(*second, cwd=w)
    r1 = finish(p1)
    return r1, r2


@case("P1", "P2", "P3")
def p123(w, n):
    out = n.lower()
    if n == "P3":  # the original runs 30 epochs (stopped once the resume has answered)
        shutil.rmtree(w / out, ignore_errors=True)
        long = list(SM)
        long[long.index("--epochs") + 1] = "30"
        p1 = start(*long, "--out", out, cwd=w)
        t0 = time.time()
        while time.time() - t0 < 120 and not (w / out / "checkpoints/last.pt").exists():
            time.sleep(0.05)
        r2 = cb("train", "--resume", "--out", out, cwd=w)
        running = p1.poll() is None
        os.killpg(p1.pid, signal.SIGINT)
        r1 = finish(p1)
        r1 = Result(0 if running else r1.rc, r1.out)  # interrupted by this case, not failed
    else:
        r1, r2 = _two(w, out, 0.0 if n == "P1" else 1.5, [*SM, "--seed", "1", "--out", out])
    codes = sorted([r1.rc, r2.rc])
    loser = r2 if r2.rc else r1
    ok = codes[0] == 0 and codes[1] != 0 and not loser.tb
    return ok, loser, f"exit codes {r1.rc}, {r2.rc}"


@case("P4")
def p4(w, n):
    shutil.rmtree(w / "p4", ignore_errors=True)
    p1 = start("autotune", *AT, "--out", "p4", cwd=w)
    time.sleep(0.3)
    r2 = cb("autotune", *AT, "--out", "p4", cwd=w)
    r1 = finish(p1)
    loser = r2 if r2.rc else r1
    ok = sorted([r1.rc, r2.rc])[0] == 0 and loser.rc != 0 and not loser.tb
    return ok, loser, f"exit codes {r1.rc}, {r2.rc}"


def _mount(d: Path, size: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["umount", str(d)], capture_output=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], check=True)


def _umount(d: Path) -> None:
    subprocess.run(["umount", str(d)], capture_output=True)


@case("P5")
def p5(w, n):
    if not can_mount():
        return None, Result(0, ""), "needs root to mount a tmpfs"
    m = w / "small"
    _mount(m, "6m")  # an FNN 300x5 checkpoint (with Adam state) is ~6.5 MB
    try:
        r = cb("train", "--model", "fnn", "--width", "300", "--depth", "5", *B, "--out",
               "small/run", cwd=w)  # fmt: skip
        tmps = list(m.rglob("*.tmp"))
        broken = []
        for f in m.rglob("*.pt"):  # what was written must be whole
            try:
                torch.load(f, weights_only=True)
            except Exception:
                broken.append(f.name)
    finally:
        _umount(m)
    full = r.clean_fail("disk full") or r.clean_fail("no space")
    ok = full and not tmps and not broken
    return ok, r, f"{len(tmps)} temp files left, damaged checkpoints: {broken or 'none'}"


RO: list[tuple[str, list[str]]] = [
    ("ro_train_newsubdir", ["train", *FNN, *B, "--out", "romnt/new"]),
    ("ro_train_existing_empty", ["train", *FNN, *B, "--out", "romnt/emptydir"]),
    ("ro_autotune", ["autotune", *AT, "--out", "romnt/at"]),
    ("ro_grid", ["grid", "--widths", "5", "--depths", "1", "--dataset", "mnist", "--epochs",
                 "1", "--train-limit", "200", "--test-limit", "100", "--out", "romnt/g"]),
    ("ro_measure", ["measure", "romnt/run"]),
    ("ro_lesion_default_out", ["lesion", "romnt/run", "--repeats", "1", "--samples", "16"]),
    ("ro_report", ["report", "romnt/run"]),
    ("ro_resume", ["train", "--resume", "--out", "romnt/run", "--epochs", "2"]),
    ("ro_prune_out", ["prune", "--model", "romnt/run", "--dataset", "mnist", "--test-limit",
                      "100", "--samples", "32", "--out", "romnt/pr"]),
    ("ro_sweep", ["sweep", "sw.yaml", "--serial", "--out", "romnt/sw"]),
    ("ro_datadir", ["train", *FNN, *B, "--data-dir", "romnt", "--out", "ro_dd_out"]),
]  # fmt: skip


def ro_cases(w: Path) -> dict[str, tuple[bool | None, Result, str]]:
    """The P6-P16 read-only cases, on one tmpfs remounted read-only."""
    if not can_mount():
        return {n: (None, Result(0, ""), "needs root to mount a tmpfs") for n, _ in RO}
    m = w / "romnt"
    _mount(m, "64m")
    (m / "emptydir").mkdir()
    shutil.copytree(fixture(w, "good"), m / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(m)], check=True)
    _sw_yaml(w)
    res = {}
    try:
        for name, args in RO:
            t0 = time.time()
            r = cb(*args, cwd=w)
            res[name] = (r.clean_fail("read-only"), r, f"took {time.time() - t0:.1f} s")
    finally:
        _umount(m)
    return res


def _sw_yaml(w: Path, name: str = "sw.yaml", **over) -> Path:
    spec = {
        "kind": "train", "out": "sw_out",
        "base": {"model": "fnn", "model_kwargs": {"width": 5, "depth": 2}, "epochs": 1,
                 "train_limit": 200, "test_limit": 100, "threads": 1, "progress": False},
        "grid": {"seed": [0]}, "resources": {"cpus": 1}, "retries": 0,
    }  # fmt: skip
    for k, v in over.items():
        if k in ("model_kwargs",):
            spec["base"]["model_kwargs"].update(v)
        elif k in ("train_limit",):
            spec["base"][k] = v
        else:
            spec[k] = v
    (w / name).write_text(json.dumps(spec))  # JSON is YAML
    return w / name


# ------------------------------------------------------------------ 4. / 5.
@case("N6")
def n6(w, n):
    shutil.rmtree(w / "n6", ignore_errors=True)
    r = cb("autotune", *AT, "--lr", "1e3", "--out", "n6", cwd=w)
    return r.clean_fail(), r, ""


@case("X1")
def x1(w, n):
    src = Path(__file__).resolve().parents[2] / "src"
    bad = []
    for f in src.rglob("*.py"):
        text = f.read_text()
        if "weights_only=False" in text and "trust_pickle" not in text:
            bad.append(str(f.relative_to(src)))
    return not bad, Result(0, ""), f"weights_only=False outside an opt-in: {bad or 'none'}"


_EVIL = """
import os, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch {flag}",))
torch.save(Evil(), "{path}")
"""


@case("X2", "sec_prune_file")
def x2(w, n):
    flag = w / f"pwned_{n}"
    flag.unlink(missing_ok=True)
    code = _EVIL.replace("{flag}", str(flag)).replace("{path}", str(w / "evil.pt"))
    subprocess.run([sys.executable, "-c", code], check=True)
    flag.unlink(missing_ok=True)  # torch.save itself does not run it; make sure
    r = cb("prune", "--model", "evil.pt", "--dataset", "mnist", cwd=w)
    ran = flag.exists()
    return r.clean_fail() and not ran, r, f"code ran: {ran}"


@case("X3", "sec_autotune_warm_resume")
def x3(w, n):
    name = f"warm_{n}"
    d, killed = _at_killed(w, name, "steps/step_001/config.json", "--restart", "warm")
    flag = w / f"pwned_{n}"
    flag.unlink(missing_ok=True)
    target = d / "steps/step_000/decision_state.pt"
    if not target.is_file():
        return None, Result(0, ""), "no decision_state.pt at the kill"
    code = _EVIL.replace("{flag}", str(flag)).replace("{path}", str(target))
    subprocess.run([sys.executable, "-c", code], check=True)
    r = cb("autotune", *AT, "--restart", "warm", "--out", name, "--resume", cwd=w)
    ran = flag.exists()
    return r.clean_fail() and not ran, r, f"code ran: {ran}"


@case("X11")
def x11(w, n):
    d = fixture(w, "good")
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in [d / "config.json",
             d / "summary.json", d / "checkpoints/last.pt", d / "report.html"]}  # fmt: skip
    ok = all(int(m, 8) & 0o044 == 0o044 for m in modes.values())  # run under umask 022
    return ok, Result(0, ""), str(modes)


@case("X12", "rich_markup_closing_train")
def x12(w, n):
    out = f"sec/c{n}[/d]"
    shutil.rmtree(w / out, ignore_errors=True)
    r = cb("train", *FNN, *B, "--out", out, cwd=w)
    return r.rc == 0 and not r.tb, r, ""


@case("rich_markup_dir_measure", "rich_markup_closing_measure")
def rich_measure(w, n):
    name = "sec/[bold]x[/bold]" if n.endswith("dir_measure") else "sec/a[/b]"
    shutil.rmtree(w / name, ignore_errors=True)
    shutil.copytree(fixture(w, "good"), w / name)
    r = cb("measure", name, cwd=w)
    return r.rc == 0 and not r.tb and name in r.out.replace("\n", ""), r, ""


@case("rich_markup_closing_autotune")
def rich_at(w, n):
    shutil.rmtree(w / "sec/e[/f]", ignore_errors=True)
    r = cb("autotune", *AT, "--out", "sec/e[/f]", cwd=w)
    return r.rc == 0 and not r.tb, r, ""


# ------------------------------------------------------------------ 6. bad inputs
def _no_dir(w: Path, out: str, r: Result, *frag: str):
    d = w / out  # a directory holding only the run lock counts as nothing written
    left = d.exists() and any(p.name != ".lock" for p in d.iterdir())
    return r.clean_fail(*frag) and not left, r, f"--out created: {left}"


@case("depth0")
def depth0(w, n):
    return _no_dir(w, "bad/depth0", cb("train", *FNN[:4], "--depth", "0", *B, "--out",
                                       "bad/depth0", cwd=w), "probe points")  # fmt: skip


@case("blocks0000")
def blocks0000(w, n):
    r = cb("train", "--model", "plain", "--blocks", "0,0,0,0", "--width-mult", "1/16", *B,
           "--out", "bad/b0", cwd=w)  # fmt: skip
    return _no_dir(w, "bad/b0", r, "probe points")


@case("at_blocks0000")
def at_blocks0000(w, n):
    r = cb("autotune", "--model", "plain", "--start-blocks", "0,0,0,0", "--dataset", "mnist",
           "--epochs", "1", "--out", "bad/atb0", cwd=w)  # fmt: skip
    return _no_dir(w, "bad/atb0", r, "no blocks")


@case("wm_huge")
def wm_huge(w, n):
    r = cb("train", "--model", "plain", "--layers", "4", "--width-mult", "1e9", *B, "--out",
           "bad/wm", cwd=w)  # fmt: skip
    return _no_dir(w, "bad/wm", r, "MAX_PARAMETERS")


@case("datadir_is_file")
def datadir_is_file(w, n):
    (w / "afile").write_text("x\n")
    r = cb("train", *FNN, *B, "--data-dir", "afile", "--out", "bad/ddf", cwd=w)
    return r.clean_fail("afile", "not a directory"), r, ""


@case("datasets_cmd_corrupt")
def datasets_corrupt(w, n):
    d = w / "dd/trunc"
    d.mkdir(parents=True, exist_ok=True)
    src = Path.home() / ".cache/conflicting-bundles/mnist.npz"
    blob = src.read_bytes()[: 1 << 20] if src.is_file() else b"PK\x03\x04" + bytes(5000)
    (d / "mnist.npz").write_bytes(blob)
    r = cb("datasets", "--data-dir", "dd/trunc", cwd=w)
    row = next((ln for ln in r.out.splitlines() if "│ mnist " in ln), "")
    return "damaged" in row and not r.tb, r, row.split("│")[2].strip() if row else "no row"


@case("grid_epochs0")
def grid_epochs0(w, n):
    r = cb("grid", "--widths", "5", "--depths", "1", "--dataset", "mnist", "--epochs", "0",
           "--out", "bad/g0", cwd=w)  # fmt: skip
    return r.clean_fail("epochs"), r, ""


@case("grid_cell_error_exitcode")
def grid_cell_err(w, n):
    shutil.rmtree(w / "grid_err", ignore_errors=True)
    (w / "grid_err/cells").mkdir(parents=True)
    (w / "grid_err/cells/w5-d1").write_text("x")
    r = cb("grid", "--widths", "5", "--depths", "1", "--dataset", "mnist", "--epochs", "1",
           "--train-limit", "200", "--test-limit", "100", "--out", "grid_err", cwd=w)  # fmt: skip
    return r.rc != 0 and not r.tb, r, ""


@case("sweep_y_grid_dup", "sweeprun_y_grid_dup")
def sweep_dup(w, n):
    _sw_yaml(w, "y_dup.yaml", grid={"seed": [0, 0]}, out=f"y_{n}")
    r = cb("sweep", "y_dup.yaml", "--dry-run" if n.startswith("sweep_") else "--serial", cwd=w)
    if r.clean_fail("seed"):  # refused
        return True, r, "refused"
    if n.startswith("sweep_"):  # or de-duplicated: one trial planned
        return r.rc == 0 and "1 train trials" in r.out, r, "de-duplicated"
    res = w / f"y_{n}/results.csv"
    rows = res.read_text().splitlines()[1:] if res.is_file() else []
    return r.rc == 0 and len(rows) == 1, r, f"{len(rows)} rows in results.csv"


@case("sweep_y_grid_float_limit", "sweeprun_y_grid_float_limit")
def sweep_float(w, n):
    _sw_yaml(w, "y_fl.yaml", train_limit=1.5, out=f"y_{n}")
    r = cb("sweep", "y_fl.yaml", "--dry-run" if n.startswith("sweep_") else "--serial", cwd=w)
    return r.clean_fail("train_limit"), r, ""


@case("sweep_y_type_width", "sweeprun_y_type_width")
def sweep_width(w, n):
    _sw_yaml(w, "y_tw.yaml", model_kwargs={"width": "five"}, out=f"y_{n}")
    r = cb("sweep", "y_tw.yaml", "--dry-run" if n.startswith("sweep_") else "--serial", cwd=w)
    return r.clean_fail("width"), r, ""


@case("sweeprun_out_file")
def sweep_out_file(w, n):
    (w / "afile").write_text("x\n")
    _sw_yaml(w, "y_of.yaml", out="afile")
    r = cb("sweep", "y_of.yaml", "--serial", cwd=w)
    return r.clean_fail("afile"), r, ""


PRUNE = ["--dataset", "mnist", "--test-limit", "100", "--samples", "32"]


@case("prune_trunc_last", "prune_trunc_best", "prune_zero_last", "prune_garbage_last",
      "prune_bad_arch", "prune_bad_config", "prune_fnn_ok")  # fmt: skip
def prune_damaged(w, n):
    kind = n[len("prune_") :]
    good = fixture(w, "good")
    d = good if kind == "fnn_ok" else damaged_copy(good, w / "runsbad" / kind, kind)
    shutil.rmtree(w / "pr" / kind, ignore_errors=True)  # prune refuses old results (--force)
    r = cb("prune", "--model", str(d.relative_to(w)), *PRUNE, "--out", f"pr/{kind}", cwd=w)
    if kind in ("fnn_ok", "trunc_last"):  # prune reads best.pt, not last.pt
        return r.rc == 0 and (w / f"pr/{kind}/model.pt").is_file(), r, ""
    if kind == "bad_config":  # the run's lr / batch size are in it: named, or given by hand
        again = cb("prune", "--model", str(d.relative_to(w)), *PRUNE, "--lr", "1e-3",
                   "--batch-size", "64", "--out", f"pr/{kind}", cwd=w)  # fmt: skip
        ok = r.clean_fail("config.json", "--lr and --batch-size")
        return (
            ok and again.rc == 0 and (w / f"pr/{kind}/model.pt").is_file(),
            r,
            (f"with --lr/--batch-size: rc {again.rc}"),
        )
    damaged = {"bad_arch": "arch.json", "trunc_best": "best.pt"}.get(kind, "best.pt")
    return r.clean_fail(damaged), r, ""


# ------------------------------------------------------------------ 7. Python API
_API = """
import resource, sys, time, torch
from conflicting_bundles import bundle_stats
a = torch.randn(64, 100); y = torch.arange(64) % 10; y[0] = int(float(sys.argv[1]))
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; t = time.time()
s = bundle_stats(a, y)
print(f"bundles {s.num_bundles} entropy {s.entropy} {time.time() - t:.3f}s "
      f"+{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) / 1024:.0f} MiB")
"""


@case("labels_huge_no_numclasses", "labels_huge_1e12", "label_2e6")
def api_labels(w, n):
    val = {"labels_huge_no_numclasses": "1e9", "labels_huge_1e12": "1e12"}.get(n, "2e6")
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", _API, val], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    r = Result(p.returncode, p.stdout + p.stderr)
    mib = float(r.out.split("+")[-1].split()[0]) if r.rc == 0 else float("inf")
    ok = r.rc == 0 and "bundles 64" in r.out and mib < 100 and time.time() - t0 < 60
    return ok, r, ""


ALL = list(CASES) + [n for n, _ in RO]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/cb-audit-rerun"))
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results.tsv"))
    ap.add_argument("--only", nargs="*", default=None, help="case names (default: all)")
    a = ap.parse_args()
    names = a.only or ALL
    unknown = [x for x in names if x not in ALL]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {', '.join(ALL)}")
    os.umask(0o022)  # X11 expects 0644 files under the usual umask
    a.work.mkdir(parents=True, exist_ok=True)
    w = a.work.resolve()
    print(f"cbundles: {CB}; work dir {w}", flush=True)
    rows, t_all = [], time.time()
    ro = ro_cases(w) if any(n.startswith("ro_") for n in names) else {}
    for name in names:
        t0 = time.time()
        if name in ro:  # run above, on one read-only mount
            ok, r, note = ro[name]
            t0 -= float(note.split()[1]) if note.startswith("took ") else 0.0
        else:
            try:
                ok, r, note = CASES[name](w)
            except Exception as e:  # a broken case must not stop the others
                ok, r, note = False, Result(-1, f"{type(e).__name__}: {e}"), "case crashed"
        verdict = "NOT-REPRODUCED" if ok is None else ("PASS" if ok else "FAIL")
        row = [name, verdict, r.rc, "yes" if r.tb else "no", f"{time.time() - t0:.1f}",
               r.first_line(), note]  # fmt: skip
        rows.append(row)
        print("\t".join(map(str, row)), flush=True)
    with open(a.out, "w", newline="") as f:
        wr = csv.writer(f, delimiter="\t")
        wr.writerow(["case", "verdict_now", "rc", "traceback", "seconds", "message", "note"])
        wr.writerows(rows)
    counts = {v: sum(r[1] == v for r in rows) for v in ("PASS", "FAIL", "NOT-REPRODUCED")}
    print(f"{len(rows)} cases in {time.time() - t_all:.0f} s: {counts}; written to {a.out}")


if __name__ == "__main__":
    main()
