"""The typed records every search method shares: the start, its budget, and the result.

A :class:`SearchStart` is what a user would hand any depth search: a model family with its width,
a start depth (FNN) or start blocks (conv nets), a dataset, a training budget and a seed. Every
method returns a :class:`SearchResult` with the final architecture, its accuracy (validation:
what the method may look at; test: measured once, on the final network only) and its cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

FAMILIES = ("fnn", "plain", "resnet")
RUNTIME_FIELDS = ("data_dir", "threads", "device", "progress")  # may differ when results are reused
# Datasets whose search commands hold out 5000 training samples for validation by default.
VAL_SPLIT_DEFAULTS = {"mnist": 5000, "fashion-mnist": 5000}
# The start `cbundles search` takes when none is given: the main job's FNN 100x25, and for the
# conv families plain/resnet [3,3,5,3] at width 1/8.
FNN_START = {"width": 25, "depth": 100}
CONV_START = {"blocks": (3, 3, 5, 3), "width_mult": 0.125}


@dataclass(frozen=True)
class Budget:
    """The budget of *one* training; every method trains every candidate with it.

    train_limit: first N training samples (the validation split is taken from these);
    val_split: samples of those held out for validation (seeded by val_seed, independent of
    the run seed); test_limit: first N test samples for the single final evaluation;
    check_epochs: auto-tune checks for conflicts while epoch < check_epochs; samples: N of
    the bundle metric; score_batch: samples of the training-free scores (naswot);
    optimizer, lr: the training recipe of every training (train.config.OPTIMIZERS).
    """

    epochs: int = 5
    check_epochs: int = 2
    train_limit: int | None = None
    val_split: int = 5000
    val_seed: int = 0
    test_limit: int | None = None
    batch_size: int = 64
    samples: int = 64
    score_batch: int = 128
    optimizer: str = "radam-lookahead"
    lr: float = 1e-3

    def __post_init__(self) -> None:
        from ..train.config import OPTIMIZERS

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}."
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}.")
        if self.epochs < 1 or self.batch_size < 1 or self.samples < 1 or self.score_batch < 2:
            raise ValueError("epochs, batch_size, samples >= 1 and score_batch >= 2 are required.")
        if self.check_epochs < 0:
            raise ValueError(f"check_epochs must be >= 0, got {self.check_epochs}.")
        if self.val_split < 1:
            raise ValueError(
                f"a search needs a validation split (val_split >= 1), got {self.val_split}: "
                "every choice is made on validation data, never on the test set."
            )
        if self.train_limit is not None and self.val_split >= self.train_limit:
            raise ValueError(
                f"val_split {self.val_split} leaves no training samples of train_limit "
                f"{self.train_limit}; use a smaller --val-split or a larger --train-limit."
            )


@dataclass(frozen=True)
class SearchStart:
    """Where every method starts. FNN: ``width`` units, ``depth`` hidden layers. plain/resnet:
    ``blocks`` per stage [a, b, c, d] and ``width_mult``."""

    family: str = "fnn"
    width: int | None = None
    depth: int | None = None
    blocks: tuple[int, ...] | None = None
    width_mult: float = 1.0
    dataset: str = "mnist"
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    data_dir: str | None = None
    threads: int | None = 1
    device: str = "auto"
    progress: bool = False  # per-epoch lines of every training and auto-tune's tables

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}.")
        if self.family == "fnn":
            if not (isinstance(self.width, int) and self.width >= 1):
                raise ValueError(f"an FNN start needs width >= 1, got {self.width!r}.")
            if not (isinstance(self.depth, int) and self.depth >= 1):
                raise ValueError(f"an FNN start needs depth >= 1 hidden layers, got {self.depth}.")
        else:
            if self.blocks is None or len(self.blocks) != 4 or min(self.blocks) < 0:
                raise ValueError(
                    f"a {self.family} start needs blocks a,b,c,d (4 counts >= 0), got "
                    f"{self.blocks!r}."
                )
            object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
            if not self.width_mult > 0:
                raise ValueError(f"width_mult must be > 0, got {self.width_mult}.")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}.")

    @property
    def size(self) -> int | tuple[int, ...]:
        """The start depth (FNN) or start blocks (conv)."""
        return self.depth if self.family == "fnn" else self.blocks

    @property
    def label(self) -> str:
        """A short name, e.g. ``fnn 100x25`` or ``plain [3,3,5,3] w0.125``."""
        return start_label(self.to_dict())

    def model_kwargs(self, size: int | tuple[int, ...] | None = None) -> dict:
        """create_model keyword arguments (name excluded) for ``size`` (default: the start)."""
        size = self.size if size is None else size
        if self.family == "fnn":
            return {"width": self.width, "depth": int(size)}
        return {"blocks": [int(b) for b in size], "width_mult": self.width_mult}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = None if self.blocks is None else list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SearchStart:
        d = dict(d)
        d["budget"] = Budget(**d.get("budget", {}))
        if d.get("blocks") is not None:
            d["blocks"] = tuple(d["blocks"])
        return cls(**d)


def start_label(d: dict) -> str:
    """:attr:`SearchStart.label` from a start written as a dict (search.json's "start"):
    ``fnn 100x25`` (depth x width) or ``plain [3,3,5,3] w0.125``; "?" for a missing field."""
    family = d.get("family", "?")
    if family == "fnn":
        return f"fnn {d.get('depth', '?')}x{d.get('width', '?')}"
    blocks = ",".join(map(str, d.get("blocks") or ["?"]))
    mult = d.get("width_mult")
    return (
        f"{family} [{blocks}] w{mult:g}"
        if isinstance(mult, (int, float))
        else f"{family} [{blocks}]"
    )


@dataclass
class SearchResult:
    """What a method found and what it cost.

    final_arch: create_model(**final_arch) rebuilds it; size: its depth or blocks; val_acc:
    accuracy of the final weights on the validation split; test_acc: the same weights on the
    test set, evaluated once after the method had made every choice; epochs: training epochs
    over all the method's trainings; trainings: how many networks it trained (or started);
    wall_s: wall time of those trainings plus any scoring; cpu_s: CPU seconds of the same
    (the machine may be shared: wall time then grows, CPU time does not); criterion: the
    bundle criterion the method used (None for methods that use none).
    """

    method: str
    start: str
    dataset: str
    seed: int
    final_arch: dict
    size: int | list[int]
    params: int
    start_params: int
    latency_ms_b1: float
    latency_ms_b64: float
    val_acc: float | None
    test_acc: float
    epochs: int
    trainings: int
    wall_s: float
    criterion: str | None = None
    cpu_s: float | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SearchResult:
        return cls(**d)

    def row(self) -> dict:
        """A flat table row (no nested details)."""
        d = self.to_dict()
        d.pop("details")
        d.pop("final_arch")
        return d
