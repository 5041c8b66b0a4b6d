"""Test accuracies of lesion sets, cached on disk for an interrupted study to resume."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from .. import runs

CACHE_FILE = "lesion_cache.json"


class AccuracyCache:
    """Test accuracy (%) per lesion set, persisted atomically; ``tag`` identifies the model and
    test set, and a file with another tag is ignored (started over)."""

    def __init__(self, path: Path | None, tag: str):
        self.path, self.tag, self.acc = path, tag, {}
        self._unsaved = 0
        if path is not None and path.is_file():
            try:
                d = runs.read_json(path)
            except runs.RunDirError:  # damaged: start over
                d = {}
            if d.get("tag") == tag:
                self.acc = {k: float(v) for k, v in d.get("acc", {}).items()}

    def get(self, key: str) -> float | None:
        return self.acc.get(key)

    def put(self, key: str, value: float) -> None:
        self.acc[key] = value
        self._unsaved += 1
        if self._unsaved >= 25:
            self.save()

    def save(self) -> None:
        if self.path is not None and self._unsaved:
            runs.write_json(self.path, {"tag": self.tag, "acc": self.acc})
        self._unsaved = 0


def fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
    """A fingerprint of the weights and the test set (so a stale cache is never reused)."""
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
