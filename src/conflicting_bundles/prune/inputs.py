"""The data ``cbundles prune`` scores and heals with: image batches of a dataset prepared for
the model (:class:`ImagePrep`: size, channels, normalisation), an endless training stream for
healing, and sentence files (topic<TAB>sentence per line) tokenised into text batches."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET",
    "ImagePrep",
    "load_batches",
    "read_sentences",
    "split_sentences",
    "text_batches",
    "train_stream",
]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# ------------------------------------------------------------------------------ images
@dataclass(frozen=True)
class ImagePrep:
    """Extra preprocessing of image batches (B, C, H, W) in [0, 1]-scaled dataset units.

    size: (H, W) to resize to (bilinear), or None. channels: 1 or 3 (gray repeated / RGB
    averaged), or None. normalize: "none", "imagenet" or "M1,M2,..:S1,S2,.." (per channel)."""

    size: tuple[int, int] | None = None
    channels: int | None = None
    normalize: str = "none"

    def stats(self, c: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.normalize == "none":
            return None
        if self.normalize == "imagenet":
            mean, std = IMAGENET
        else:
            try:
                m, s = self.normalize.split(":")
                mean, std = [float(v) for v in m.split(",")], [float(v) for v in s.split(",")]
            except ValueError:
                raise ValueError(
                    f"normalize={self.normalize!r}: use none, imagenet or M1,M2,..:S1,S2,.."
                ) from None
        if len(mean) == 1:
            mean, std = list(mean) * c, list(std) * c
        if len(mean) != c or len(std) != c:
            raise ValueError(f"normalize={self.normalize!r} has not {c} channel values.")
        return torch.tensor(mean).view(1, c, 1, 1), torch.tensor(std).view(1, c, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels is not None and x.shape[1] != self.channels:
            if self.channels == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            elif self.channels == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise ValueError(f"cannot turn {x.shape[1]} channels into {self.channels}.")
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        st = self.stats(x.shape[1])
        if st is not None:
            x = (x - st[0].to(x.device)) / st[1].to(x.device)
        return x.contiguous()


def load_batches(
    dataset: str,
    split: str,
    batch_size: int,
    data_dir: str | None = None,
    limit: int | None = None,
    prep: ImagePrep | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """All (x, y) batches of a split, non-augmented, in dataset order (a list, re-iterable)."""
    from ..data import iterate, load_dataset

    ds = load_dataset(dataset, split=split, data_dir=data_dir, limit=limit)
    it = iterate(ds, batch_size, shuffle=False, augment=False, seed=0, epoch=0)
    return [(prep(x) if prep else x, y) for x, y in it]


def train_stream(
    dataset: str,
    batch_size: int,
    data_dir: str | None = None,
    limit: int | None = None,
    seed=0,
    prep: ImagePrep | None = None,
):
    """Endless shuffled, augmented training batches (epoch after epoch), for :func:`heal`."""
    from ..data import iterate, load_dataset

    ds = load_dataset(dataset, split="train", data_dir=data_dir, limit=limit)
    epoch = 0
    while True:
        for x, y in iterate(ds, batch_size, shuffle=True, augment=True, seed=seed, epoch=epoch):
            yield (prep(x) if prep else x), y
        epoch += 1


# ------------------------------------------------------------------------------ text
def read_sentences(path: str | Path) -> tuple[list[str], list[str] | None]:
    """(sentences, topics or None) of a text file: one sentence per line, optionally
    ``topic<TAB>sentence``; blank lines and lines starting with # are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} not found.")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"{path} has no sentences (one per line, optionally topic<TAB>text).")
    tagged = [ln.split("\t", 1) for ln in lines]
    if all(len(t) == 2 for t in tagged):
        return [t[1].strip() for t in tagged], [t[0].strip() for t in tagged]
    if any(len(t) == 2 for t in tagged):
        raise ValueError(f"{path}: either every line is topic<TAB>sentence or none is.")
    return lines, None


def text_batches(
    sentences: list[str],
    topics: list[str] | None,
    tokenizer,
    batch_size: int = 32,
    max_length: int = 64,
    classes: list[str] | None = None,
) -> list:
    """Tokenised batches, each padded to its own longest sentence: (encoding, labels) with
    labels the topic index in ``classes`` (sorted topics by default), or the encoding alone."""
    classes = classes or (sorted(set(topics)) if topics else None)
    out = []
    for i in range(0, len(sentences), batch_size):
        enc = tokenizer(
            sentences[i : i + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        if topics is None:
            out.append(enc)
        else:
            y = torch.tensor([classes.index(t) for t in topics[i : i + batch_size]])
            out.append((enc, y))
    return out


def split_sentences(
    sentences: list[str], topics: list[str] | None, eval_fraction: float = 0.25, seed: int = 0
):
    """A seeded shuffle split into (score part, evaluation part), each (sentences, topics)."""
    idx = list(range(len(sentences)))
    random.Random(seed).shuffle(idx)
    n_eval = max(1, int(round(eval_fraction * len(idx)))) if len(idx) > 1 else 0
    parts = []
    for sel in (idx[n_eval:], idx[:n_eval]):
        parts.append(
            ([sentences[i] for i in sel], None if topics is None else [topics[i] for i in sel])
        )
    return parts[0], parts[1]
