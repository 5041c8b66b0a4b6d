"""TrainConfig (everything that defines a run), TrainResult, TrainingDiverged, constants."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..configfile import command_line_only
from ..factory import is_factory_path
from ..metric import Criterion
from ..rundir import ConfigMismatchError, config_differences
from ..safefile import check_path_names

MAX_THREADS = 1024  # torch threads; more makes OpenMP fail to start them (a crash, not an error)
EVAL_BATCH = 256  # evaluation batch size (eval mode: results do not depend on it)
LAST_EPOCHS = 5  # test accuracy is always measured on, and reported as the mean of, these
OPTIMIZERS = ("radam-lookahead", "adam", "sgd")  # the first is the paper's recipe (default)
# Fields that may change when a run is resumed: where and how it runs, and how long.
RUNTIME_FIELDS = (
    "epochs",
    "threads",
    "device",
    "out",
    "data_dir",
    "progress",
    "tensorboard",
    "sync_bn",
)
TIME_COLUMNS = ("epoch_time", "train_time", "measure_time")  # differ between identical runs


@dataclass
class TrainConfig:
    """Everything that defines a training run (config.json holds the resolved version)."""

    # A registered model name, or (command line / Python only) a factory path
    # "package.module:function": a config file never names code to import.
    model: str = field(
        default="fnn",
        metadata=command_line_only(
            "a model factory path imports and calls the code it names.", when=is_factory_path
        ),
    )
    model_kwargs: dict = field(default_factory=dict)  # e.g. {"width": 10, "depth": 50}
    dataset: str = "mnist"
    data_dir: str | None = None  # None: $CBUNDLES_DATA, else ~/.cache/conflicting-bundles
    epochs: int = 120
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2  # decoupled (AdamW-style), as in tfa.RectifiedAdam
    eps: float = 1e-6
    lookahead_k: int = 6
    lookahead_alpha: float = 0.5
    seed: int = 0
    train_limit: int | None = None  # first n training samples only
    test_limit: int | None = None
    augment: bool = True
    eval_every: int = 1  # test accuracy every k epochs, and always on the last 5
    measure_samples: int = 64  # N training samples for the bundle metric; 0 = never measure
    measure_all_layers: bool = False  # every probe point (layers.csv), not only the last
    measure_every: int = 1  # bundle metric every k epochs (and at init and the last epoch)
    measure_kind: str | None = None  # probe kind; None = the model's default
    criterion: str = "reference"
    threads: int | None = 1  # torch.set_num_threads; None = leave torch's default
    device: str = "auto"  # "auto" = cuda if available, else cpu
    out: str = "runs/run"
    keep_every_checkpoint: bool = False  # also checkpoints/epoch-NNN.pt
    tensorboard: bool = True
    # Per-epoch lines and the final table (progress bars: also only on a terminal, see
    # console.progress_enabled).
    progress: bool = True
    # torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm) instead of
    # each rank's slice. Ignored in a single process and on CPU.
    sync_bn: bool = False
    # Mixed precision for the training forward pass: None (float32, the reference) or "bf16"
    # (torch.autocast; no loss scaling needed). Evaluation and bundle measurement always run
    # in float32: the metric is defined on float32 activations (docs/method.md §2).
    amp: str | None = None
    channels_last: bool = False  # NHWC memory format for conv nets (faster on recent GPUs)
    # Validation split: ``val_split`` training samples (after train_limit) held out, chosen by
    # a permutation seeded with ``val_seed`` (independent of ``seed``, so runs of different
    # seeds share one split). Training, augmentation and bundle measurement use only the rest
    # (in their original order); val_acc is measured when test_acc would be. 0 = no split.
    val_split: int = 0
    val_seed: int = 0
    test_eval: bool = True  # False: the test set is never loaded nor evaluated during training
    # "radam-lookahead" (the paper's recipe), "adam" (AdamW: Adam with the same decoupled
    # weight decay, no Lookahead) or "sgd" (momentum 0.9, L2 weight decay; set --lr yourself).
    optimizer: str = "radam-lookahead"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig field(s) {', '.join(unknown)}; valid: {', '.join(names)}."
            )
        return cls(**d)

    def validate(self) -> None:
        """Clear errors for values that would otherwise fail deep inside torch."""
        positive = ("epochs", "batch_size", "lookahead_k", "eval_every", "measure_every")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
        for name in ("lr", "eps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}.")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")
        if not 0.0 <= self.lookahead_alpha <= 1.0:
            raise ValueError(f"lookahead_alpha must be in [0, 1], got {self.lookahead_alpha!r}.")
        if self.measure_samples < 0:
            raise ValueError(f"measure_samples must be >= 0, got {self.measure_samples}.")
        for name in ("train_limit", "test_limit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise ValueError(f"{name} must be an integer (or None), got {v!r}.")
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or None for the whole split), got {v}.")
        if self.amp not in (None, "bf16"):
            raise ValueError(f"amp must be None or 'bf16', got {self.amp!r}.")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(
                f"threads must be 1..{MAX_THREADS} (this machine has {os.cpu_count()} cores), "
                f"got {self.threads}."
            )
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be 0 .. 2**63 - 1 (torch's seed range), got {self.seed}.")
        check_path_names(self.out, "out")
        self._validate_options()
        Criterion.parse(self.criterion)
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {type(self.model_kwargs).__name__}.")

    def _validate_options(self) -> None:
        for name in ("val_split", "val_seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}.")
        if self.train_limit is not None and self.val_split >= self.train_limit:
            raise ValueError(
                f"val_split {self.val_split} leaves no training samples of train_limit "
                f"{self.train_limit}; use a smaller --val-split or a larger --train-limit."
            )
        if not isinstance(self.test_eval, bool):
            raise ValueError(f"test_eval must be True or False, got {self.test_eval!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}."
            )
        self._validate_names()

    def _validate_names(self) -> None:
        """Model, dataset and device names (so --print-config catches a typo, not the run)."""
        from ..models import model_signature

        for name in ("model", "dataset", "device"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a name (a string), got {getattr(self, name)!r}.")
        if not is_factory_path(self.model):
            model_signature(self.model)  # ValueError listing the models
        check_names(self.dataset, self.device)


def check_names(dataset: str | None = None, device: str | None = None) -> None:
    """ValueError for an unknown dataset (listing the known ones) or device name."""
    from ..data import dataset_info

    if dataset is not None:
        dataset_info(dataset)
    if device is not None:
        check_device_name(device)


def check_device_name(name: str) -> None:
    """ValueError unless ``name`` is auto, cpu, cuda, cuda:N (or another torch device name);
    whether CUDA is there is checked when the run starts."""
    import torch

    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None


@dataclass
class TrainResult:
    """What a run ended with. status: "completed", "stopped" (a callback called state.stop),
    or "diverged" (NaN/Inf loss; the last good checkpoint is kept). ``model`` is the model as
    training left it (after divergence: the diverged one; ``runs.load_model`` gives the last
    good one)."""

    run_dir: Path
    status: str
    message: str
    summary: dict
    metrics: list[dict]
    model: nn.Module = field(repr=False)

    @property
    def test_acc(self) -> float | None:
        return self.summary.get("test_acc")


class TrainingDiverged(RuntimeError):
    """The loss or a parameter became NaN/Inf."""

    def __init__(self, message: str, epoch: int, step: int | None):
        super().__init__(message)
        self.epoch, self.step = epoch, step

    def __reduce__(self):  # picklable, so rank 0 can hand it to the other ranks
        return type(self), (str(self), self.epoch, self.step)


def config_defaults() -> dict:
    """Every TrainConfig field's default (runs written before a field existed used it)."""
    return TrainConfig().to_dict()


def check_resume_config(stored: dict, given: TrainConfig) -> None:
    """Refuse a resume whose config differs from the stored one outside RUNTIME_FIELDS:
    ConfigMismatchError (a ValueError) naming each key with both values."""
    diff = config_differences(stored, given.to_dict(), RUNTIME_FIELDS, config_defaults())
    if diff:
        raise ConfigMismatchError(
            "cannot resume with a different configuration (" + "; ".join(diff) + "). Resume with "
            "the stored config (only epochs, threads, device, data_dir may change), or start a "
            "new run in another --out."
        )


def jsonable(x):
    """Round-trip through JSON types so the stored config compares equal to a resolved one."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x
