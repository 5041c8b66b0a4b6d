"""``PruneConfig``: every setting of ``cbundles prune`` (and its measurement context).

The CLI builds it from the PruneConfig defaults, then ``--config FILE``, then the options
given; :func:`command.run_prune` / :func:`command.run_compare` run it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..configfile import COMMAND_LINE_ONLY, command_line_only
from ..measurespec import MeasureSpec
from .loading import imports_code
from .runner import SCORERS

__all__ = ["PruneConfig", "RENAMED_FIELDS", "DEFAULT_SCORE_SAMPLES"]

# Old or mistaken config-file keys -> the PruneConfig field meant (configfile.check_fields).
RENAMED_FIELDS = {"blocks": "block_regex", "samples": "n_samples"}
# Training samples loaded for scoring when n_samples is not given; each scorer then reads its
# own default number of them (Scorer.n_samples: conflict and loss 64, the others 256).
DEFAULT_SCORE_SAMPLES = 256
_IMPORTS = "an import path (package.module:callable) imports and calls the code it names."


@dataclass
class PruneConfig:
    """Everything ``cbundles prune`` needs; see :func:`command.run_prune`."""

    model: str = field(metadata=command_line_only(_IMPORTS, when=imports_code))
    dataset: str | None = None  # image dataset name; or text=
    text: str | None = None  # sentence file (one per line, optionally topic<TAB>sentence)
    # model spec for a state-dict file (and the import path of a pruned directory's base)
    arch: str | None = field(default=None, metadata=command_line_only(_IMPORTS, imports_code))
    trust_pickle: bool = field(  # opt-in to unpickle a module file: it runs the file's code
        default=False,
        metadata={COMMAND_LINE_ONLY: "unpickling a module file runs code stored in that file."},
    )
    model_kwargs: dict = field(default_factory=dict)
    input_size: tuple[int, int] | None = None
    channels: int | None = None
    normalize: str = "none"
    tokenizer: str | None = None  # default: the hf model's directory
    max_length: int = 64
    out: str | None = None  # default: runs/prune/<name of the model> (default_out)
    remove: int = 1
    scorer: str = "conflict"
    iterative: bool = False
    block_regex: str | None = None  # regex over module names overriding block discovery
    data_dir: str | None = None
    n_samples: int | None = None  # scoring samples (None: each scorer's default)
    # conflict criterion: the training lr and batch size; None = the run's (a run directory),
    # else MeasureSpec's 1e-3 / 64. batch_size is also the healing batch size.
    lr: float | None = None
    batch_size: int | None = None
    criterion: str = "reference"
    eval_batch_size: int = 256
    test_limit: int | None = None  # None: the whole test split
    heal_steps: int = 0
    heal_lr: float = 1e-4
    heal_train: str = "all"  # all | head | head+last:N
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N; outputs record it
    seed: int = 0
    compare: bool = False
    max_remove: int | None = None
    scorers: tuple[str, ...] = SCORERS
    random_repeats: int = 5

    def __post_init__(self) -> None:  # a config file holds lists where the fields are tuples
        if not (isinstance(self.heal_lr, (int, float)) and math.isfinite(self.heal_lr)):
            raise ValueError(f"heal_lr must be a finite number > 0, got {self.heal_lr!r}.")
        if self.heal_lr <= 0 or self.heal_steps < 0:
            raise ValueError(
                f"heal_lr must be > 0 and heal_steps >= 0, got {self.heal_lr} and "
                f"{self.heal_steps}."
            )
        if self.out is None:
            self.out = default_out(self.model)
        if self.input_size is not None:
            self.input_size = tuple(self.input_size)
        self.scorers = tuple(self.scorers)

    @property
    def uses_conflict(self) -> bool:
        """Whether the conflict scorer (and so the measurement context) is used."""
        return "conflict" in (self.scorers if self.compare else (self.scorer,))

    def measure_spec(self) -> tuple[MeasureSpec, dict[str, str]]:
        """(the conflict scorer's measurement context, where lr and batch size come from):
        a run directory's lr / batch size / probe kind (MeasureSpec.from_run; an auto-tune
        folder stands for its final step) unless --lr / --batch-size are given, else the
        defaults; the criterion and scoring samples (64 unless --n-samples) are this config's."""
        base, origin = MeasureSpec(), "default"
        given = {"lr": self.lr, "batch_size": self.batch_size}
        if None in given.values():
            from ..runs import RunDirError

            run = self.run_dir()
            if run is not None:
                try:
                    base, origin = MeasureSpec.from_run(run), "run"
                except (RunDirError, ValueError, TypeError) as e:
                    raise ValueError(
                        f"{e} prune reads the run's lr and batch size from it (they set the "
                        "bundle metric's resolution): pass --lr and --batch-size to prune "
                        "without it."
                    ) from e
        spec = base.replace(
            **{k: v for k, v in given.items() if v is not None},
            criterion=self.criterion,
            n_samples=self.n_samples or MeasureSpec.n_samples,
        )
        return spec, {k: "given" if v is not None else origin for k, v in given.items()}

    def run_dir(self) -> Path | None:
        """The training run ``model`` names (an auto-tune folder: its final step), or None."""
        from ..autotune import final_run_dir

        path = Path(self.model)
        if not path.is_dir():
            return None
        run = final_run_dir(path)
        return run if (run / "config.json").is_file() and (run / "arch.json").is_file() else None

    def scorer_kwargs(self, spec: MeasureSpec | None = None) -> dict:
        """Options for every scorer (scorers.scorer_options picks one scorer's own)."""
        spec = spec or self.measure_spec()[0]
        kw = dict(spec=spec, criterion=self.criterion, seed=self.seed)
        if self.n_samples is not None:
            kw["n_samples"] = self.n_samples
        return kw


def default_out(model: str) -> str:
    """runs/prune/<a name from the model spec>: resnet18 for torchvision.models:resnet18,
    deit_tiny for timm:deit_tiny, the folder or file name for a path (git-ignored runs/)."""
    name = str(model).rstrip("/").split(":")[-1].replace("\\", "/").split("/")[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name.removesuffix(".pt")).strip(".-") or "model"
    return f"runs/prune/{name[:80]}"
