"""What a lesion study measures, and what it returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..measurespec import MeasureSpec
from ..metric import Criterion

# Every criterion is computed for every block (cheap at N = 64); only ``flag_criteria`` also get
# the group curves (a few hundred forward passes each). docs/method.md §9 names these resolutions.
DEFAULT_CRITERIA = (
    "reference",
    "raw",
    "coarse:16",
    "coarse:256",
    "coarse:1024",
    "rel:0.001",
    "rel:0.01",
)
ALL = "-"  # the criterion column of the "all" group, which does not depend on any criterion


@dataclass
class LesionConfig:
    """What the study measures. ``flag_criteria`` decide the groups (the reference criterion by
    default; "all" = every criterion in ``criteria``); every output names its criterion."""

    repeats: int = 15
    samples: int = 64  # first N non-augmented training samples for the bundle metric
    max_k: int | None = None  # largest lesion set; None = every lesionable block
    seed: int = 0
    criteria: tuple[str, ...] = DEFAULT_CRITERIA
    flag_criteria: tuple[str, ...] = ("reference",)
    kind: str | None = None  # probe kind; None = the run's, else the model's default
    # the training lr and batch size enter the reference transform; None = the run's
    # (lesion_run), else MeasureSpec's defaults 1e-3 / 64 (lesion_study on a bare model)
    lr: float | None = None
    batch_size: int | None = None
    eval_batch_size: int = 500
    tolerance: float = 0.01  # "no significant loss": less than this accuracy loss (1 point)
    # first n test samples (lesion_run); None = the run's test_limit, 0 = the whole split
    test_limit: int | None = None

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.samples < 2:
            raise ValueError(
                f"repeats must be >= 1 and samples >= 2, got {self.repeats}, {self.samples}."
            )
        if self.max_k is not None and self.max_k < 1:
            raise ValueError(f"max_k must be >= 1 (or None for all blocks), got {self.max_k}.")
        if self.test_limit is not None and (
            not isinstance(self.test_limit, int) or isinstance(self.test_limit, bool)
        ):
            raise ValueError(f"test_limit must be an integer (or None), got {self.test_limit!r}.")
        if self.test_limit is not None and self.test_limit < 0:
            raise ValueError(
                f"test_limit must be >= 0 (0 = the whole test split, None = the run's), got "
                f"{self.test_limit}."
            )
        if not 0 < self.tolerance < 1:
            raise ValueError(
                f"tolerance is an accuracy loss as a fraction in (0, 1) (0.01 = 1 point), got "
                f"{self.tolerance}."
            )
        crits = [Criterion.parse(c).name for c in self.criteria]
        flags = list(self.flag_criteria)
        if flags == ["all"]:
            flags = crits
        flags = [Criterion.parse(c).name for c in flags]  # ValueError names a bad one
        if not flags:
            raise ValueError("flag_criteria is empty: give at least one criterion, e.g. reference.")
        # A flag criterion needs its per-block entropies: add it to the measured criteria.
        self.criteria = tuple(dict.fromkeys(crits + flags))
        self.flag_criteria = tuple(dict.fromkeys(flags))
        self.measure_spec()  # ValueError for a bad lr / batch size

    def measure_spec(self, base: MeasureSpec | None = None) -> MeasureSpec:
        """The measurement context of the per-block signals: ``base`` (the run's,
        MeasureSpec.from_run; default MeasureSpec()) with this config's lr, batch size and
        kind where given, and its ``samples``. The criterion is the primary flag criterion
        (each criterion of ``criteria`` is measured in that context)."""
        base = base or MeasureSpec()
        given = {"lr": self.lr, "batch_size": self.batch_size, "kind": self.kind}
        return base.replace(
            **{k: v for k, v in given.items() if v is not None},
            n_samples=self.samples,
            criterion=self.flag_criteria[0],
        )

    def measure_source(self, base: str = "run") -> dict[str, str]:
        """Where lr and batch size come from: "given" (this config) or ``base``."""
        return {k: "given" if getattr(self, k) is not None else base for k in ("lr", "batch_size")}


@dataclass
class LesionResult:
    """base_acc: test accuracy (a fraction) of the intact model; blocks: one row per block; curves:
    one row per (criterion, group, k); corr: one row per conflict signal; summary: the JSON."""

    base_acc: float
    blocks: list[dict]
    curves: list[dict]
    corr: list[dict]
    summary: dict = field(default_factory=dict)


class Group(str, enum.Enum):
    """The lesion groups: blocks a criterion flags, the ones it does not, every lesionable
    block, and the position-matched controls of the flagged ones."""

    CONFLICTING = "conflicting"
    NON_CONFLICTING = "non-conflicting"
    ALL = "all"
    POSITION_MATCHED = "position-matched"

    def __str__(self) -> str:
        return self.value


GROUPS = tuple(g.value for g in Group)
