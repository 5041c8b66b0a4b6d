"""Run directories: the files one training run writes, written atomically, and their readers.

A run directory holds::

    config.json          the resolved TrainConfig (train.py)
    arch.json            model.arch(): ``create_model(**arch)`` rebuilds the network
    metrics.csv/.jsonl   one row per epoch (epoch 0 = at initialisation, bundle metrics only)
    layers.csv           per-layer bundle rows (only when every probe point is measured)
    summary.json         final figures (written when the run ends)
    measure.csv          written by ``cbundles measure``
    checkpoints/         last.pt (every epoch), best.pt (best validation accuracy, else
                         training accuracy; never test data), epoch-NNN.pt
    tb/                  TensorBoard event files

Every write goes to a temporary file in the same folder first and is then renamed over the
target (``os.replace`` is atomic on POSIX and Windows), so a run killed at any moment leaves
either the old or the new file, never half of one; files get the permissions the umask
allows (as ``open`` would give them). Readers never import train.py.

The lifecycle of a run directory (the lock, new / resume / overwrite, the files each command
owns) is in :mod:`conflicting_bundles.rundir` (above this module: it imports this one, never
the other way).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import torch

from .safefile import UnsafeFileError, json_loads_strict, read_bounded

__all__ = [
    "ARCH",
    "CHECKPOINTS",
    "CONFIG",
    "LAYERS_CSV",
    "MEASURE_CSV",
    "METRICS_CSV",
    "METRICS_JSONL",
    "RUN_FILES",
    "SUMMARY",
    "TB_DIR",
    "RunDirError",
    "atomic_write_bytes",
    "atomic_write_text",
    "checkpoint_path",
    "is_run_dir",
    "load_arch",
    "load_checkpoint",
    "load_config",
    "load_metrics",
    "load_model",
    "load_summary",
    "read_csv",
    "save_checkpoint",
    "write_csv",
    "write_json",
    "write_jsonl",
]


CONFIG = "config.json"
ARCH = "arch.json"
METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"
LAYERS_CSV = "layers.csv"
SUMMARY = "summary.json"
MEASURE_CSV = "measure.csv"
CHECKPOINTS = "checkpoints"
TB_DIR = "tb"
AUTOTUNE_STATE = "autotune_state.json"  # marks an auto-tune folder (autotune.state)
# Everything a run writes; ``--force`` removes exactly these and nothing else.
RUN_FILES = (CONFIG, ARCH, METRICS_CSV, METRICS_JSONL, LAYERS_CSV, SUMMARY, MEASURE_CSV)
RUN_DIRS = (CHECKPOINTS, TB_DIR)


class RunDirError(RuntimeError):
    """A run directory is missing, incomplete, or unreadable (the message says what to do)."""


# ------------------------------------------------------------------------------------ writing
_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
    """0o666 minus the process umask (mkstemp alone would give 0600)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(x):
    """NaN/Inf are not JSON: write them as null (readers get None)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(_json_safe(r)) + "\n" for r in rows))


def _columns(rows: list[dict]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return list(cols)


def write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Rows as CSV; columns are the union of the rows' keys in order of first appearance.
    Missing values and None are empty cells; floats are written with ``repr`` (round-trips)."""
    columns = columns or _columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return atomic_write_text(path, buf.getvalue())


def save_checkpoint(path: str | os.PathLike, obj: dict) -> Path:
    """``torch.save`` atomically. Keep ``obj`` to tensors and plain Python types so that it
    loads with ``weights_only=True`` (no pickled code)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------ reading
def _parse_cell(s: str):
    if s == "":
        return None
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    if s in ("True", "False"):
        return s == "True"
    return s


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a CSV written by :func:`write_csv`, with numbers and booleans parsed back."""
    with open(path, newline="") as f:
        return [{k: _parse_cell(v) for k, v in r.items()} for r in csv.DictReader(f)]


def is_run_dir(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / CONFIG).is_file()


def _need(run_dir: str | os.PathLike, name: str, what: str) -> Path:
    d = Path(run_dir)
    if not d.is_dir():
        raise RunDirError(f"run directory {d} does not exist.")
    p = d / name
    if not p.is_file():
        raise RunDirError(f"{d} has no {name}: {what}")
    return p


MAX_RUN_JSON_BYTES = 64 * 2**20


def read_json(p: Path):
    """JSON of a run-directory file, read as a bounded regular file (never through a link;
    safefile.read_bounded); RunDirError naming the file when it is missing or damaged."""
    try:
        return json_loads_strict(read_bounded(p, MAX_RUN_JSON_BYTES, "run file").decode())
    except UnsafeFileError as e:
        raise RunDirError(f"{e} The run directory is damaged.") from e
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError included
        raise RunDirError(f"{p} is unreadable ({e}); the run directory is damaged.") from e


def runs_inside(folder: str | os.PathLike, depth: int = 3, limit: int = 400) -> list[Path]:
    """Run directories and auto-tune folders below ``folder`` (at most ``depth`` levels and
    ``limit`` folders looked at, not looking inside one found), sorted: what to pass instead
    of a folder that holds them (a search's output, a sweep's)."""
    found: list[Path] = []
    todo, seen = [(Path(folder), depth)], 0
    while todo and seen < limit:
        d, left = todo.pop(0)
        try:
            subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            continue
        for sub in subs:
            seen += 1
            if (
                (sub / AUTOTUNE_STATE).is_file()
                or (sub / CONFIG).is_file()
                and (sub / ARCH).is_file()
            ):
                found.append(sub)
            elif left > 1:
                todo.append((sub, left - 1))
    return sorted(found)


def load_config(run_dir: str | os.PathLike) -> dict:
    """The run's resolved config as a dict (``TrainConfig.from_dict`` turns it back)."""
    what = "it is not a run directory (written by `train`)."
    d = Path(run_dir)
    if d.is_dir() and not (d / CONFIG).is_file():
        inside = runs_inside(d)
        if inside:
            shown = ", ".join(str(p) for p in inside[:6]) + (" ..." if len(inside) > 6 else "")
            what = (f"it is not a run directory but holds {len(inside)}: {shown}; pass one of "
                    "them (an auto-tune folder stands for its final step).")  # fmt: skip
    p = _need(run_dir, CONFIG, what)
    cfg = read_json(p)
    if not isinstance(cfg, dict):
        raise RunDirError(
            f"{p} holds a {type(cfg).__name__}, not a config (a JSON object of fields); the run "
            "directory is damaged."
        )
    return cfg


def load_arch(run_dir: str | os.PathLike) -> dict:
    return read_json(_need(run_dir, ARCH, "the model's architecture was never written."))


def load_summary(run_dir: str | os.PathLike) -> dict:
    return read_json(_need(run_dir, SUMMARY, "the run has not finished (no summary yet)."))


def load_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """Per-epoch rows (from metrics.jsonl; epoch 0 is the measurement at initialisation)."""
    p = _need(run_dir, METRICS_JSONL, "no epoch has been recorded yet.")
    try:
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise RunDirError(f"{p} is unreadable ({e}); the run directory is damaged.") from e


def checkpoint_path(run_dir: str | os.PathLike, which: str = "last") -> Path:
    """checkpoints/<which>.pt; ``which`` is "last", "best" or an epoch number."""
    name = f"epoch-{int(which):03d}" if str(which).isdigit() else str(which)
    return Path(run_dir) / CHECKPOINTS / f"{name}.pt"


def load_checkpoint(run_dir: str | os.PathLike, which: str = "last", map_location="cpu") -> dict:
    """A checkpoint dict (keys: epoch, model, optimizer, metrics, rng, ...)."""
    p = checkpoint_path(run_dir, which)
    if not p.is_file():
        have = sorted(x.stem for x in (Path(run_dir) / CHECKPOINTS).glob("*.pt"))
        raise RunDirError(
            f"no checkpoint {p.name} in {p.parent}"
            + (f"; available: {', '.join(have)}." if have else " (the run saved none yet).")
        )
    others = sorted(x.stem for x in p.parent.glob("*.pt") if x != p)
    hint = (f"use another checkpoint ({', '.join(others)}) or " if others else "") + (
        "train the run again with --force"
    )
    size = p.stat().st_size
    if size == 0:
        raise RunDirError(
            f"checkpoint {p} is empty (0 bytes): its write was cut off (disk full, or a copy "
            f"that did not finish). {hint[0].upper()}{hint[1:]}."
        )
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, not a pickle traceback
        what = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise RunDirError(
            f"checkpoint {p} ({size} bytes) is damaged or not a checkpoint of this program "
            f"({type(e).__name__}: {what}). It is only ever loaded with weights_only=True (no "
            f"code runs); {hint}."
        ) from e
    if not (
        isinstance(ckpt, dict)
        and isinstance(ckpt.get("model"), dict)
        and isinstance(ckpt.get("epoch"), int)
    ):
        kind = "weights only (a state dict)" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise RunDirError(
            f"checkpoint {p} holds {kind}, not a checkpoint of this program (entries 'model' "
            f"and 'epoch'); {hint}."
        )
    return ckpt


def load_model(run_dir: str | os.PathLike, which: str = "last", map_location="cpu", factory=None):
    """The run's model rebuilt from arch.json with the weights of checkpoint ``which``, in
    eval mode. Returns (model, checkpoint dict). A run trained with a user model factory
    ("package.module:function") is rebuilt only when ``factory`` names it (an import path or
    the callable): arch.json is never trusted to choose code to import."""
    from .models import create_model  # lazy: runs.py stays importable without the models

    arch = dict(load_arch(run_dir))
    ckpt = load_checkpoint(run_dir, which, map_location)
    name = arch.pop("name")
    if name is None and factory is None:
        if "factory" in arch:
            raise RunDirError(
                f"{run_dir} was trained with the model factory {arch['factory']}: name it to "
                f"rebuild the model (--factory {arch['factory']}, or load_model(..., "
                "factory=...)); a run directory is never trusted to choose code to import."
            )
        raise RunDirError(
            f"{run_dir} was trained with a {arch.get('class', 'custom')} that is not a registered "
            "model: build it yourself and load_state_dict(load_checkpoint(run_dir)['model'])."
        )
    if name is None:
        if isinstance(factory, str):
            from .factory import import_factory

            factory = import_factory(factory)
        model = factory(**arch.get("kwargs", {}))
    else:
        model = create_model(name, **arch)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise RunDirError(
            f"checkpoint {which} of {run_dir} does not fit the architecture in arch.json: {e}"
        ) from e
    return model.to(map_location).eval(), ckpt
