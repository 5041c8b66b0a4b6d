"""The training loop of METHOD.md §4 with the per-epoch bundle measurements of §8.

    cfg = TrainConfig(model="fnn", model_kwargs={"width": 10, "depth": 50}, dataset="mnist",
                      epochs=3, out="runs/fnn-50x10")
    result = train(cfg)                       # -> TrainResult (status, summary, run_dir, model)
    result = train(cfg, resume=True)          # continue from runs/fnn-50x10/checkpoints/last.pt

Recipe: RAdam (lr 1e-3, eps 1e-6, decoupled weight decay 1e-2) inside Lookahead (k 6, alpha
0.5), batch 64, cross-entropy on logits, no schedule, float32. Evaluation uses the fast weights
(as Keras' Lookahead does: the model's variables are the fast weights).

Epoch numbering: row 0 is the model at initialisation (bundle metrics only); row e >= 1 holds
the training loss/accuracy of epoch e and the test accuracy and bundle metrics measured right
after it. So "the state before epoch e's training", where the reference measures, is row e-1.

Callbacks are plain objects with any of ``on_train_start(state)``, ``on_epoch_start(state)``,
``on_epoch_end(state)``, ``on_train_end(state)``; ``state`` is a :class:`TrainState`.
``state.stop(reason)`` ends the run after the current hook (auto-tune prunes this way). The
bundle measurement itself is such a callback (:class:`BundleMeter`), added by ``train``.

Determinism: the data order and augmentation are a function of (seed, epoch) only (data.iterate),
the model init of the seed; a checkpoint holds model, optimizer (Lookahead slow weights and step
counter included), RNG states and all metric rows, so an interrupted run resumed from its last
checkpoint produces exactly the rows of an uninterrupted one (same device and thread count).

Data parallel (torchrun, see docs/scale-out.md): ``train`` runs unchanged on every rank. The
process group is joined from torchrun's environment (gloo on CPU, nccl on GPU, one GPU per
process); ``batch_size`` is the *global* batch: each rank takes its slice of the same global
batch (data.iterate's ``shard``), DDP averages the gradients, and each rank's loss is its share
of the global mean, so an update equals the single-process one up to float rounding. The bundle
metric uses that global batch size. Rank 0 measures bundles (and broadcasts the numbers), writes
every file and checkpoint (the unwrapped model's state_dict); evaluation is split over the ranks
and summed. BatchNorm normalises with each rank's slice unless ``sync_bn`` (CUDA only).
"""

from __future__ import annotations

import dataclasses
import io
import math
import random
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed, runs
from .data import dataset_info, iterate, load_dataset, num_batches
from .metric import Criterion
from .models import create_model, model_signature
from .probes import LayerResult, measure, resolve_points

__all__ = [
    "BundleMeter",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingDiverged",
    "evaluate",
    "make_optimizer",
    "measure_run",
    "summarize",
    "train",
]

EVAL_BATCH = 256  # evaluation batch size (eval mode: results do not depend on it)
LAST_EPOCHS = 5  # test accuracy is always measured on, and reported as the mean of, these
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

    model: str = "fnn"
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
    progress: bool = True  # progress bar, per-epoch lines and the final table
    # torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm) instead of
    # each rank's slice. Ignored in a single process and on CPU.
    sync_bn: bool = False
    # Mixed precision for the training forward pass: None (float32, the reference) or "bf16"
    # (torch.autocast; no loss scaling needed). Evaluation and bundle measurement always run
    # in float32: the metric is defined on float32 activations (METHOD.md §2).
    amp: str | None = None
    channels_last: bool = False  # NHWC memory format for conv nets (faster on recent GPUs)

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
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or None for the whole split), got {v}.")
        if self.amp not in (None, "bf16"):
            raise ValueError(f"amp must be None or 'bf16', got {self.amp!r}.")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}.")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}.")
        Criterion.parse(self.criterion)
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {type(self.model_kwargs).__name__}.")


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


# ------------------------------------------------------------------------------------ pieces
def make_optimizer(params: Iterable[torch.Tensor], config: TrainConfig) -> torch.optim.Optimizer:
    """RAdam (decoupled weight decay) wrapped in Lookahead, as tfa.optimizers.Lookahead(
    tfa.optimizers.RectifiedAdam(lr, epsilon=1e-6, weight_decay=1e-2)) in the reference."""
    from pytorch_optimizer import Lookahead  # lazy: a heavy import

    radam = torch.optim.RAdam(
        params,
        lr=config.lr,
        eps=config.eps,
        weight_decay=config.weight_decay,
        decoupled_weight_decay=True,
    )
    return Lookahead(radam, k=config.lookahead_k, alpha=config.lookahead_alpha)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    ds,
    device,
    batch_size: int = EVAL_BATCH,
    *,
    shard: tuple[int, int] | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``ds`` with evaluation preprocessing, in
    eval mode; the model's train/eval mode is restored. shard: (rank, world) under torchrun:
    each rank evaluates its slice of every batch and the sums are all-reduced, so every rank
    returns the whole set's figures (every rank must call it)."""
    was = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    try:
        for x, y in iterate(
            ds, batch_size, shuffle=False, augment=False, device=device, shard=shard
        ):
            if len(y) == 0:  # this rank's slice of a short last batch
                continue
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    finally:
        model.train(was)
    if shard is not None:
        sums = distributed.all_reduce_sum(
            torch.tensor([loss_sum, correct, n], dtype=torch.float64, device=device)
        ).tolist()
        loss_sum, correct, n = sums[0], int(sums[1]), int(sums[2])
    return loss_sum / max(n, 1), correct / max(n, 1)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use cpu or auto.")
    return dev


# Our code draws randomness from torch only (model init) and from data.iterate's own generator;
# the global Python/numpy RNGs are seeded and checkpointed for any third-party code using them.
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def _rng_state() -> dict:
    np_state = np.random.get_state()  # noqa: NPY002
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = np.asarray(keys, dtype=np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _w_max(model: nn.Module) -> float:
    """Largest |parameter| over all trainable parameters (METHOD.md §2)."""
    ps = [p.detach().abs().max() for p in model.parameters() if p.requires_grad and p.numel()]
    return float(torch.stack(ps).max()) if ps else 0.0


def _resolve_model_kwargs(name: str, kwargs: dict, info) -> dict:
    """Fill in the dataset's input shape and class count where the factory takes them and the
    caller did not give them."""
    params = model_signature(name).parameters  # ValueError for unknown model names
    kw = dict(kwargs)
    shape_keys = ("in_shape", "in_channels", "image_size")
    if "in_shape" in params and not any(kw.get(k) is not None for k in shape_keys):
        kw["in_shape"] = list(info.in_shape)
    if "num_classes" in params:
        if kw.get("num_classes") is None:
            kw["num_classes"] = info.num_classes
        elif int(kw["num_classes"]) != info.num_classes:
            raise ValueError(
                f"model num_classes={kw['num_classes']} but dataset {info.name!r} has "
                f"{info.num_classes} classes; leave num_classes out to use the dataset's."
            )
    return kw


def _arch_of(model: nn.Module) -> dict:
    fn = getattr(model, "arch", None)
    if callable(fn):
        return dict(fn())
    # Any nn.Module can be trained, but only registry models can be rebuilt from arch.json.
    return {"name": None, "class": f"{type(model).__module__}.{type(model).__qualname__}"}


def _describe_run(run_dir: Path) -> str:
    try:
        c = runs.load_config(run_dir)
        done = len(runs.load_metrics(run_dir)) - 1 if (run_dir / runs.METRICS_JSONL).exists() else 0
        return (
            f"model {c.get('model')}, dataset {c.get('dataset')}, {done}/{c.get('epochs')} epochs"
        )
    except runs.RunDirError:
        return "an unreadable or partial run"


def _has_run_files(run_dir: Path) -> bool:
    return any((run_dir / n).exists() for n in (*runs.RUN_FILES, *runs.RUN_DIRS))


def _clear_run(run_dir: Path) -> None:
    """Remove exactly the files a run writes (never anything else in the folder)."""
    for n in runs.RUN_FILES:
        (run_dir / n).unlink(missing_ok=True)
    for n in runs.RUN_DIRS:
        if (run_dir / n).is_dir():
            shutil.rmtree(run_dir / n)


def _check_resume_config(stored: dict, given: TrainConfig) -> None:
    diff = [
        f"{k}: run has {stored.get(k)!r}, given {v!r}"
        for k, v in given.to_dict().items()
        if k not in RUNTIME_FIELDS and stored.get(k) != v
    ]
    if diff:
        raise ValueError(
            "cannot resume with a different configuration (" + "; ".join(diff) + "). Resume with "
            "the stored config (only epochs, threads, device, data_dir may change), or start a "
            "new run in another --out."
        )


def _jsonable(x):
    """Round-trip through JSON types so the stored config compares equal to a resolved one."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


# ------------------------------------------------------------------------------------ state
class TrainState:
    """What callbacks see: ``epoch`` (the epoch being trained, 1-based; at on_train_start the
    number of completed epochs), ``model``, ``optimizer``, ``config``, ``metrics`` (rows so far),
    ``row`` (the row being filled: at on_train_start the init row on a fresh run, else None;
    at on_epoch_end the current epoch's row), ``layer_rows``, ``run_dir``, ``device``,
    ``train_ds``/``test_ds``, ``num_classes``, ``resumed``; ``train_model`` is the module the
    training step calls (a DistributedDataParallel around ``model`` under torchrun, else
    ``model``). Under torchrun every rank runs every hook: write files on rank 0 only
    (``distributed.is_main``) and make decisions on rank 0 (``distributed.run_on_main``)."""

    def __init__(self, config, model, optimizer, run_dir, device, train_ds, test_ds, num_classes):
        self.config: TrainConfig = config
        self.model: nn.Module = model
        self.optimizer = optimizer
        self.run_dir: Path = run_dir
        self.device = device
        self.train_ds, self.test_ds = train_ds, test_ds
        self.num_classes = num_classes
        self.epoch = 0
        self.metrics: list[dict] = []
        self.layer_rows: list[dict] = []
        self.row: dict | None = None
        self.resumed = False
        self.stop_reason: str | None = None
        self.train_model: nn.Module = model
        self._measure_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def stop(self, reason: str) -> None:
        """End the run after the current callback hook (the current row is still written)."""
        self.stop_reason = reason

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def measure_batch(self, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first N training samples, without augmentation: x (N, C, H, W), y (N,)."""
        n = n_samples or self.config.measure_samples or 64
        if self._measure_batch is None or len(self._measure_batch[1]) < n:
            self._measure_batch = next(
                iterate(self.train_ds, n, shuffle=False, augment=False, device=self.device)
            )
        x, y = self._measure_batch
        return x[:n], y[:n]

    def measure(
        self,
        layers="last",
        *,
        kind: str | None = None,
        n_samples: int | None = None,
        criterion: str | None = None,
    ) -> list[LayerResult]:
        """Bundle statistics on the first N non-augmented training samples with the run's lr,
        batch size and the model's current w_max. layers: "last" (the last probe point),
        "all" (every declared probe point) or anything ``probes.measure`` accepts. Runs on the
        calling rank only (no collectives): under torchrun wrap it in distributed.run_on_main."""
        kind = kind if kind is not None else self.config.measure_kind
        if isinstance(layers, str) and layers in ("last", "all"):
            points = resolve_points(self.model, None, kind)
            layers = points[-1:] if layers == "last" else points
            kind = None  # the points are resolved; measure's kind applies to named modules
        return measure(
            self.model,
            [self.measure_batch(n_samples)],
            layers,
            kind=kind,
            n_samples=n_samples or self.config.measure_samples or 64,
            lr=self.config.lr,
            batch_size=self.config.batch_size,
            criterion=criterion or self.config.criterion,
            num_classes=self.num_classes,
        )


class BundleMeter:
    """The per-epoch bundle measurement (METHOD.md §8): num_bundles and bundle entropy of the
    last probe point (all points with ``all_layers``) at initialisation and after every
    ``every``-th epoch and the last one; fills ``num_bundles``, ``bundle_entropy``,
    ``bundle_layer`` (and ``conflicting_layers``) of the row, per-layer rows in layer_rows."""

    def __init__(self, all_layers: bool = False, every: int = 1):
        self.all_layers, self.every = all_layers, every

    def _measure(self, state: TrainState) -> list[LayerResult]:
        try:
            return state.measure("all" if self.all_layers else "last")
        except ValueError as err:
            if "NaN" not in str(err):
                raise
            # finite weights can still overflow to Inf activations: the run has diverged
            raise TrainingDiverged(
                f"{err} (epoch {state.row['epoch']}). Lower the learning rate (now "
                f"{state.config.lr:g}) and start a new run.",
                state.row["epoch"],
                None,
            ) from err

    def _record(self, state: TrainState) -> None:
        t0 = time.perf_counter()
        # Under torchrun rank 0 measures (on the same samples as a single process) and every
        # rank gets its numbers, so all ranks hold the same rows.
        results = distributed.run_on_main(self._measure, state)
        last = results[-1]
        row = state.row
        row["num_bundles"] = last.num_bundles
        row["bundle_entropy"] = last.entropy
        row["bundle_layer"] = last.name
        if self.all_layers:
            row["conflicting_layers"] = sum(r.conflicting for r in results)
            state.layer_rows.extend(
                {
                    "epoch": row["epoch"],
                    "layer": r.name,
                    "num_bundles": r.num_bundles,
                    "entropy": r.entropy,
                    "conflicting": r.conflicting,
                    "num_samples": r.num_samples,
                }
                for r in results
            )
        row["measure_time"] = time.perf_counter() - t0

    def on_train_start(self, state: TrainState) -> None:
        if state.row is not None:  # fresh run: the row of epoch 0 (initialisation)
            self._record(state)

    def on_epoch_end(self, state: TrainState) -> None:
        e = state.epoch
        if e % self.every == 0 or e == state.config.epochs:
            self._record(state)


def _call(callbacks, hook: str, state: TrainState) -> None:
    # Every callback sees every hook, also after one of them called state.stop(): the loop
    # checks state.stopped only between hooks.
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


# ------------------------------------------------------------------------------------ files
class _Recorder:
    """Writes metrics/layers files, TensorBoard scalars and checkpoints of one run."""

    TAGS = {
        "train_loss": "train/loss",
        "train_acc": "train/acc",
        "test_loss": "test/loss",
        "test_acc": "test/acc",
        "num_bundles": "bundles/num_bundles",
        "bundle_entropy": "bundles/entropy",
        "conflicting_layers": "bundles/conflicting_layers",
        "w_max": "weights/w_max",
        "epoch_time": "time/epoch",
        "train_time": "time/train",
        "measure_time": "time/measure",
    }

    def __init__(
        self, run_dir: Path, config: TrainConfig, purge_step: int | None, enabled: bool = True
    ):
        self.run_dir = run_dir
        self.config = config
        self.enabled = enabled  # False on the ranks other than 0 under torchrun: writes nothing
        self.writer = None
        if config.tensorboard and enabled:
            from torch.utils.tensorboard import SummaryWriter  # lazy: a heavy import

            self.writer = SummaryWriter(str(run_dir / runs.TB_DIR), purge_step=purge_step)

    def rows(self, state: TrainState, new_row: dict) -> None:
        if not self.enabled:
            return
        runs.write_csv(self.run_dir / runs.METRICS_CSV, state.metrics)
        runs.write_jsonl(self.run_dir / runs.METRICS_JSONL, state.metrics)
        if state.layer_rows:
            runs.write_csv(self.run_dir / runs.LAYERS_CSV, state.layer_rows)
        if self.writer is not None:
            e = new_row["epoch"]
            for k, v in new_row.items():
                if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(self.TAGS.get(k, f"other/{k}"), v, e)
            for r in state.layer_rows:
                if r["epoch"] == e:
                    self.writer.add_scalar(f"layers/{r['layer']}/entropy", r["entropy"], e)
                    self.writer.add_scalar(f"layers/{r['layer']}/num_bundles", r["num_bundles"], e)
            self.writer.flush()

    def checkpoint(self, state: TrainState, best: dict, is_best: bool) -> None:
        if not self.enabled:
            return
        ckpt = {
            "epoch": state.epoch,
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "metrics": state.metrics,
            "layers": state.layer_rows,
            "best": best,
            "rng": _rng_state(),
            "config": state.config.to_dict(),
        }
        buf = io.BytesIO()
        torch.save(ckpt, buf)  # serialise once, write up to three files
        data = buf.getvalue()
        runs.atomic_write_bytes(runs.checkpoint_path(self.run_dir, "last"), data)
        if is_best:
            runs.atomic_write_bytes(runs.checkpoint_path(self.run_dir, "best"), data)
        if self.config.keep_every_checkpoint:
            runs.atomic_write_bytes(runs.checkpoint_path(self.run_dir, str(state.epoch)), data)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def summarize(
    metrics: list[dict], model: nn.Module, config: TrainConfig, status: str, message: str
) -> dict:
    """summary.json: reported test accuracy = mean over the last (up to) 5 evaluated epochs;
    bundle metrics at init, at the end and averaged over every measured row (init included)."""
    epochs = [r for r in metrics if r["epoch"] >= 1]
    tested = [r for r in epochs if r.get("test_acc") is not None][-LAST_EPOCHS:]
    accs = [r["test_acc"] for r in tested]
    measured = [r for r in metrics if r.get("num_bundles") is not None]
    init = metrics[0] if metrics and metrics[0]["epoch"] == 0 else {}
    evaluated = [r for r in epochs if r.get("test_acc") is not None]
    best = max(evaluated, key=lambda r: r["test_acc"], default=None)

    def mean(xs):
        return float(np.mean(xs)) if xs else None

    return {
        "status": status,
        "message": message,
        "epochs_completed": epochs[-1]["epoch"] if epochs else 0,
        "epochs": config.epochs,
        "model": config.model,
        "dataset": config.dataset,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "test_acc": mean(accs),
        "test_acc_std": float(np.std(accs)) if accs else None,
        "test_acc_epochs": [r["epoch"] for r in tested],
        "best_test_acc": best["test_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "final_train_acc": epochs[-1]["train_acc"] if epochs else None,
        "criterion": Criterion.parse(config.criterion).name,
        "measure_samples": config.measure_samples,
        "bundle_layer": measured[-1].get("bundle_layer") if measured else None,
        "num_bundles_init": init.get("num_bundles"),
        "bundle_entropy_init": init.get("bundle_entropy"),
        "num_bundles_final": measured[-1]["num_bundles"] if measured else None,
        "bundle_entropy_final": measured[-1]["bundle_entropy"] if measured else None,
        "num_bundles_mean": mean([r["num_bundles"] for r in measured]),
        "bundle_entropy_mean": mean([r["bundle_entropy"] for r in measured]),
        "measured_epochs": [r["epoch"] for r in measured],
        "train_time": sum(r.get("train_time") or 0.0 for r in epochs),
        "wall_time": sum(r.get("epoch_time") or 0.0 for r in metrics),
    }


# ------------------------------------------------------------------------------------ train
def _check_run_dir(config: TrainConfig, resume: bool, force: bool) -> tuple[Path, bool]:
    """Refuse what cannot work before any data is loaded. Returns (run_dir, whether an old
    run must be cleared; done only once the new run is about to write)."""
    run_dir = Path(config.out)
    if resume:
        if not runs.is_run_dir(run_dir):
            raise runs.RunDirError(
                f"nothing to resume: {run_dir} holds no run (no {runs.CONFIG}). "
                "Start it without --resume."
            )
        if not runs.checkpoint_path(run_dir, "last").is_file():
            raise runs.RunDirError(
                f"nothing to resume: {run_dir} has no {runs.CHECKPOINTS}/last.pt (the run "
                "stopped before its first checkpoint). Start it again with --force."
            )
        return run_dir, False
    if run_dir.exists() and not run_dir.is_dir():
        raise runs.RunDirError(f"--out {run_dir} is a file, not a directory.")
    if run_dir.is_dir() and _has_run_files(run_dir):
        if not force:
            raise runs.RunDirError(
                f"{run_dir} already holds a run ({_describe_run(run_dir)}). Pass --resume to "
                "continue it, --force to overwrite it, or choose another --out."
            )
        return run_dir, True
    return run_dir, False


def _log(config: TrainConfig, text: str) -> None:
    if config.progress and distributed.is_main():
        from tqdm import tqdm

        tqdm.write(text)


def _epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']:>3}/{epochs}"]
    if row.get("train_loss") is not None:
        parts.append(f"loss {row['train_loss']:.4f}  acc {row['train_acc']:.4f}")
    if row.get("test_acc") is not None:
        parts.append(f"test {row['test_acc']:.4f}")
    if row.get("num_bundles") is not None:
        parts.append(f"bundles {row['num_bundles']}  H {row['bundle_entropy']:.4f}")
    parts.append(f"w_max {row['w_max']:.4g}")
    if row.get("epoch_time") is not None:
        parts.append(f"{row['epoch_time']:.1f}s")
    return "  ".join(parts)


def _print_summary(summary: dict, run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Run {run_dir} ({summary['status']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in (
        "epochs_completed",
        "params",
        "test_acc",
        "test_acc_std",
        "best_test_acc",
        "final_train_acc",
        "bundle_layer",
        "num_bundles_init",
        "num_bundles_final",
        "num_bundles_mean",
        "bundle_entropy_init",
        "bundle_entropy_final",
        "bundle_entropy_mean",
        "criterion",
        "train_time",
    ):
        v = summary.get(k)
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)


ROW_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "num_bundles",
    "bundle_entropy",
    "bundle_layer",
    "w_max",
    "lr",
    "steps",
    "train_time",
    "measure_time",
    "epoch_time",
)


def _new_row(epoch: int) -> dict:
    # A fixed column order for metrics.csv; callbacks may add more columns after these.
    return {**dict.fromkeys(ROW_COLUMNS), "epoch": epoch}


def train(
    config: TrainConfig,
    callbacks: Iterable = (),
    model: nn.Module | None = None,
    optimizer_state: dict | None = None,
    *,
    resume: bool = False,
    force: bool = False,
) -> TrainResult:
    """Train ``config`` into the run directory ``config.out``; see the module docstring.

    model: a ready model (e.g. a pruned one for a warm restart) instead of
      ``create_model(config.model, **config.model_kwargs)``; config.model/model_kwargs are
      then set from ``model.arch()``. optimizer_state: an optimizer state_dict to start from.
    resume: continue from checkpoints/last.pt (only runtime fields of the config may differ).
    force: overwrite a run already in ``config.out`` (only the files a run writes are removed).
    Raises ValueError / RunDirError / DatasetError for bad input; KeyboardInterrupt leaves the
    last completed epoch's checkpoint in place. A NaN/Inf loss ends the run with status
    "diverged" and keeps the last good checkpoint. Under torchrun every rank calls it with the
    same arguments (see the module docstring).
    """
    config = dataclasses.replace(config, model_kwargs=dict(config.model_kwargs))
    config.validate()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    # torchrun: join the process group; a CUDA device becomes this rank's GPU.
    device = distributed.init(_resolve_device(config.device))
    world, main = distributed.world_size(), distributed.is_main()
    if config.batch_size < world:
        raise ValueError(
            f"batch_size {config.batch_size} is smaller than the {world} processes: batch_size "
            "is the global batch, split over the ranks; use at least one sample per rank."
        )
    info = dataset_info(config.dataset)  # ValueError for unknown datasets
    if model is None:
        config.model_kwargs = _resolve_model_kwargs(config.model, config.model_kwargs, info)
    else:
        arch = _arch_of(model)
        config.model = arch.get("name") or arch["class"]
        config.model_kwargs = {k: v for k, v in arch.items() if k != "name"}
    config.model_kwargs = _jsonable(config.model_kwargs)
    run_dir, clear = _check_run_dir(config, resume, force)
    ckpt = None
    if resume:
        _check_resume_config(runs.load_config(run_dir), config)
        ckpt = runs.load_checkpoint(run_dir, "last", map_location="cpu")

    train_ds = load_dataset(config.dataset, "train", config.data_dir, limit=config.train_limit)
    test_ds = load_dataset(config.dataset, "test", config.data_dir, limit=config.test_limit)

    _seed_everything(config.seed)  # before the model is built: the init is a function of seed
    if model is None:
        model = create_model(config.model, **config.model_kwargs)
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise runs.RunDirError(
                f"the checkpoint in {run_dir} does not fit the model: {e}"
            ) from e
    model.to(device).train()
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    # DDP (under torchrun) broadcasts rank 0's weights; every rank built the same ones anyway.
    train_model = distributed.wrap_model(model, device, sync_bn=config.sync_bn)
    if config.sync_bn and world > 1 and device.type != "cuda":
        _log(config, "sync_bn is ignored on CPU: BatchNorm uses each rank's batch slice")
    optimizer = make_optimizer(model.parameters(), config)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    elif optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    # Every rank has looked at the run directory (checks, resume) before rank 0 changes it.
    distributed.barrier()
    if main:
        if clear:
            _clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.write_json(run_dir / runs.CONFIG, config.to_dict())
        runs.write_json(run_dir / runs.ARCH, _arch_of(model))

    state = TrainState(
        config, model, optimizer, run_dir, device, train_ds, test_ds, info.num_classes
    )
    state.train_model = train_model
    callbacks = list(callbacks)
    if config.measure_samples > 0:
        callbacks.insert(0, BundleMeter(config.measure_all_layers, config.measure_every))
    best = {"test_acc": None, "epoch": None}
    if ckpt is not None:
        state.epoch, state.resumed = int(ckpt["epoch"]), True
        state.metrics, state.layer_rows = list(ckpt["metrics"]), list(ckpt["layers"])
        best = dict(ckpt["best"])
        _set_rng_state(ckpt["rng"])
        _log(config, f"resuming {run_dir} after epoch {state.epoch}")
    recorder = _Recorder(
        run_dir, config, purge_step=state.epoch + 1 if resume else None, enabled=main
    )

    status, message = "completed", ""
    try:
        if not state.resumed:
            t0 = time.perf_counter()
            state.row = _new_row(0)
            state.row["w_max"] = _w_max(model)
        _call(callbacks, "on_train_start", state)
        if not state.resumed:
            state.row["epoch_time"] = time.perf_counter() - t0
            state.metrics.append(state.row)
            recorder.rows(state, state.row)
            recorder.checkpoint(state, best, is_best=False)  # epoch 0: something to resume from
            _log(config, _epoch_line(state.row, config.epochs))
        state.row = None
        while not state.stopped and state.epoch < config.epochs:
            state.epoch += 1
            _call(callbacks, "on_epoch_start", state)
            if state.stopped:
                state.epoch -= 1  # this epoch never ran
                break
            row, is_best = _run_epoch(state, best)
            state.row = row
            _call(callbacks, "on_epoch_end", state)
            row["epoch_time"] += time.perf_counter() - row.pop("_t0")
            state.metrics.append(row)
            recorder.rows(state, row)
            recorder.checkpoint(state, best, is_best)
            state.row = None
            _log(config, _epoch_line(row, config.epochs))
        if state.stopped:
            status, message = "stopped", state.stop_reason
    except TrainingDiverged as e:
        status, message = "diverged", str(e)
        _log(config, f"[diverged] {e}")
    finally:
        recorder.close()

    _call(callbacks, "on_train_end", state)
    summary = summarize(state.metrics, model, config, status, message)
    summary["world_size"] = world  # processes that shared each global batch of batch_size
    if main:
        runs.write_json(run_dir / runs.SUMMARY, summary)
        if config.progress:
            _print_summary(summary, run_dir)
    distributed.barrier()  # what rank 0 wrote is there when train returns on any rank
    return TrainResult(run_dir, status, message, summary, state.metrics, model)


def _run_epoch(state: TrainState, best: dict) -> tuple[dict, bool]:
    """Train one epoch, then evaluate if due. Returns (row, is_best) where ``row`` still holds
    the start time ``_t0`` so callbacks' work counts into ``epoch_time``."""
    from tqdm import tqdm

    cfg, model, opt, e = state.config, state.model, state.optimizer, state.epoch
    t0 = time.perf_counter()
    n_steps = num_batches(len(state.train_ds), cfg.batch_size)
    shard = distributed.shard()  # (rank, world) under torchrun, else None
    batches = iterate(
        state.train_ds,
        cfg.batch_size,
        shuffle=True,
        augment=cfg.augment,
        seed=cfg.seed,
        epoch=e,  # data order and augmentation: a function of (seed, epoch) only
        device=state.device,
        shard=shard,  # this rank's slice of each global batch
    )
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(
        batches,
        total=n_steps,
        desc=f"epoch {e}/{cfg.epochs}",
        leave=False,
        disable=not (cfg.progress and distributed.is_main()),
        dynamic_ncols=True,
    )
    for step, (x, y) in enumerate(bar):
        if shard is not None and len(y) == 0:
            # This rank's slice of a short last batch is empty, but DDP needs its forward and
            # backward: two zero samples (BatchNorm needs two in training) weighted by zero.
            # Their BatchNorm statistics stay on this rank (rank 0's are kept), except with
            # sync_bn, where they enter this one step's statistics.
            x = torch.zeros((2, *x.shape[1:]), device=x.device)
        if cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
            logits = state.train_model(x)
        logits = logits.float()
        if shard is None:
            loss = F.cross_entropy(logits, y)
            loss_val = float(loss.detach())
            n_correct, n_batch = int((logits.detach().argmax(1) == y).sum()), len(y)
        else:
            loss, loss_val, n_correct, n_batch = _sharded_loss(logits, y, shard[1])
        if not math.isfinite(loss_val):
            raise TrainingDiverged(
                f"the training loss became {loss_val} at epoch {e}, step {step + 1}/{n_steps}. "
                f"Lower the learning rate (now {cfg.lr:g}) and start a new run. The last good "
                f"checkpoint (epoch {e - 1}) is kept in {runs.checkpoint_path(state.run_dir)}.",
                e,
                step + 1,
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss_val * n_batch
        correct += n_correct
        seen += n_batch
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
    bar.close()
    # Each rank's BatchNorm running statistics saw only its slices: use rank 0's everywhere
    # (they are the ones checkpointed), so evaluation and measurement agree on every rank.
    distributed.broadcast_buffers(model)
    if not _params_finite(model):
        raise TrainingDiverged(
            f"a parameter became NaN/Inf in the last step of epoch {e}. Lower the learning rate "
            f"(now {cfg.lr:g}) and start a new run. The last good checkpoint (epoch {e - 1}) is "
            f"kept in {runs.checkpoint_path(state.run_dir)}.",
            e,
            None,
        )
    row = _new_row(e)
    row["train_loss"] = loss_sum / max(seen, 1)
    row["train_acc"] = correct / max(seen, 1)
    row["train_time"] = time.perf_counter() - t0
    is_best = False
    if e % cfg.eval_every == 0 or e > cfg.epochs - LAST_EPOCHS:
        row["test_loss"], row["test_acc"] = evaluate(
            model, state.test_ds, state.device, shard=shard
        )
        if best["test_acc"] is None or row["test_acc"] > best["test_acc"]:
            best.update(test_acc=row["test_acc"], epoch=e)
            is_best = True
    row["w_max"] = _w_max(model)
    row["lr"] = cfg.lr
    row["steps"] = n_steps
    row["epoch_time"] = 0.0  # completed after the callbacks ran
    row["_t0"] = t0
    return row, is_best


def _sharded_loss(
    logits: torch.Tensor, y: torch.Tensor, world: int
) -> tuple[torch.Tensor, float, int, int]:
    """This rank's loss for a slice of the global batch, and the global batch's figures.

    DDP averages gradients over the ``world`` ranks, so each rank's loss is
    ``world * (sum of its per-sample losses) / global batch size``: the average of these is the
    single-process mean loss, whatever the slice sizes. One small all-reduce gives the global
    loss (the same on every rank, so a NaN stops all ranks together), correct count and size.
    Returns (loss to backward, global mean loss, global correct, global batch size). An empty
    slice (``y`` empty, ``logits`` of placeholder inputs) contributes a zero loss."""
    if len(y) == 0:
        per_sample, correct = logits.sum() * 0.0, torch.zeros((), device=logits.device)
    else:
        per_sample = F.cross_entropy(logits, y, reduction="sum")
        correct = (logits.detach().argmax(1) == y).sum()
    stats = torch.stack(
        [
            per_sample.detach().double(),
            correct.double(),
            torch.tensor(float(len(y)), dtype=torch.float64, device=logits.device),
        ]
    )
    total, n_correct, n_batch = distributed.all_reduce_sum(stats).tolist()
    n_batch = int(n_batch)
    return per_sample * (world / n_batch), total / n_batch, int(n_correct), n_batch


# ------------------------------------------------------------------------------------ measure
def measure_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "last",
    all_layers: bool = True,
    n_samples: int = 512,
    criterion: str | None = None,
    kind: str | None = None,
    margin: bool = True,
    data_dir: str | None = None,
    device: str = "cpu",
    write: bool = True,
) -> list[dict]:
    """Measure a trained run's model (arch.json + checkpoint) the way training does: the first
    ``n_samples`` non-augmented training samples, the run's lr and batch size, the model's
    w_max. One dict per probe point (layer, num_bundles, entropy, conflicting, margin, ...);
    ``margin`` = metric.conflict_margin (smallest max-norm distance between differently
    labelled samples over the resolution q). Writes measure.csv into the run unless
    ``write=False``."""
    from .metric import conflict_margin
    from .probes import Probe

    run_dir = Path(run_dir)
    cfg = TrainConfig.from_dict(runs.load_config(run_dir))
    dev = _resolve_device(device)
    model, ckpt = runs.load_model(run_dir, checkpoint, map_location=dev)
    crit = Criterion.parse(criterion or cfg.criterion)
    ds = load_dataset(cfg.dataset, "train", data_dir or cfg.data_dir, limit=cfg.train_limit)
    x, y = next(iterate(ds, n_samples, shuffle=False, augment=False, device=dev))  # (N, ...)
    points = resolve_points(model, None, kind if kind is not None else cfg.measure_kind)
    points = points if all_layers else points[-1:]
    w_max = _w_max(model)
    results = measure(
        model,
        [(x, y)],
        points,
        n_samples=len(y),
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        criterion=crit,
        num_classes=ds.num_classes,
        w_max=w_max,
    )
    margins: dict[str, float] = {}
    if margin:
        # One more forward; each activation is reduced to its margin at once, so memory stays
        # at one layer's activations however deep the model is.
        def on_act(name: str, a: torch.Tensor) -> None:
            margins[name] = conflict_margin(a, y, w_max=w_max, lr=cfg.lr, batch_size=cfg.batch_size)

        with torch.no_grad(), Probe(model, points, on_activation=on_act):
            model(x)
    rows = [
        {
            "checkpoint": checkpoint,
            "epoch": int(ckpt["epoch"]),
            "layer": r.name,
            "num_bundles": r.num_bundles,
            "entropy": r.entropy,
            "conflicting": r.conflicting,
            "margin": margins.get(r.name),
            "num_samples": r.num_samples,
            "dim": r.dim,
            "criterion": crit.name,
            "w_max": w_max,
        }
        for r in results
    ]
    if write:
        runs.write_csv(run_dir / runs.MEASURE_CSV, rows)
    return rows
