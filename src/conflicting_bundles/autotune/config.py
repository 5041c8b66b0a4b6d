"""The search's configuration, and what may change when a search is resumed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from .rules import RESTARTS, VARIANTS

# May change on --resume: where and how the steps run. Everything else (the recipe: seed, lr,
# dataset, model, epochs, ...) would relabel results trained with the old settings.
RESUMABLE_FIELDS = ("out", "max_steps")
RESUMABLE_TRAIN_FIELDS = ("threads", "device", "out", "data_dir", "progress", "tensorboard")


@dataclass
class AutotuneConfig:
    """The search; ``train`` holds the training recipe (a TrainConfig dict) of every step."""

    out: str = "runs/autotune"
    variant: str = "all"
    restart: str = "fresh"
    check_epochs: int = 10
    samples: int = 64
    criterion: str = "reference"
    probe_kind: str | None = None  # None: the model's default (FNN hidden, plain block, branch)
    check_timing: str | None = None  # "before" | "after" epoch; default per variant (§5)
    max_steps: int = 50
    train: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}.")
        if self.restart not in RESTARTS:
            raise ValueError(f"restart must be one of {', '.join(RESTARTS)}, got {self.restart!r}.")
        if self.check_timing is None:
            # `all` (2021 code) checks before each epoch, so the first check is at init;
            # `first-and-rest` (2020 wording) after each epoch; `first-stage` like `all`.
            self.check_timing = "after" if self.variant == "first-and-rest" else "before"
        if self.check_timing not in ("before", "after"):
            raise ValueError("check_timing must be 'before' or 'after'.")
        if self.check_epochs < 0 or self.samples < 1 or self.max_steps < 1:
            raise ValueError("check_epochs >= 0, samples >= 1 and max_steps >= 1 are required.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AutotuneConfig:
        """The config of a dict; unknown keys are an error (a typo would silently be ignored)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown auto-tune field(s) {', '.join(unknown)}; valid: "
                f"{', '.join(sorted(names))}."
            )
        return cls(**d)


def _plain(x):
    return json.loads(json.dumps(x))  # tuples -> lists, as a stored config has them


def _train_dict(d: dict) -> dict:
    from ..train import TrainConfig

    return _plain(TrainConfig.from_dict(d).to_dict())  # defaults filled in: compare fairly


def resume_diff(stored: dict, given: AutotuneConfig) -> list[str]:
    """What differs between a stored search config (a dict) and ``given``, outside the fields
    that may change on resume; one "key: stored vs given" entry per difference."""
    now = _plain(given.to_dict())
    old = _plain(AutotuneConfig.from_dict(stored).to_dict())
    diff = [
        f"{k}: run has {old[k]!r}, given {now[k]!r}"
        for k in now
        if k not in (*RESUMABLE_FIELDS, "train") and old[k] != now[k]
    ]
    t_old, t_now = _train_dict(old["train"]), _train_dict(now["train"])
    diff += [
        f"train.{k}: run has {t_old.get(k)!r}, given {v!r}"
        for k, v in t_now.items()
        if k not in RESUMABLE_TRAIN_FIELDS and t_old.get(k) != v
    ]
    return diff
