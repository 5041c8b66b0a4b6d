"""The training loop of docs/method.md §4 with the per-epoch bundle measurements of §8.

    cfg = TrainConfig(model="fnn", model_kwargs={"width": 10, "depth": 50}, dataset="mnist",
                      epochs=3, out="runs/fnn-50x10")
    result = train(cfg)                       # -> TrainResult (status, summary, run_dir, model)
    result = train(cfg, resume=True)          # continue from runs/fnn-50x10/checkpoints/last.pt

Recipe (``optimizer="radam-lookahead"``, the default): RAdam (lr 1e-3, eps 1e-6, decoupled
weight decay 1e-2) inside Lookahead (k 6, alpha 0.5), batch 64, cross-entropy on logits, no
schedule, float32. Evaluation uses the fast weights (as Keras' Lookahead does: the model's
variables are the fast weights). ``optimizer="adam"`` (AdamW) and ``"sgd"`` (momentum 0.9)
are named alternatives, recorded in config.json and summary.json.

Validation: ``val_split=N`` holds out N training samples (a subset fixed by ``val_seed``,
independent of ``seed``); training, augmentation and bundle measurement use only the rest,
``val_acc`` is measured with ``test_acc``, and best.pt is chosen by val_acc (without a split by
train_acc, never by test data). ``test_eval=False``
never touches the test set.

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
metric uses that global batch size. Rank 0 holds the run directory's lock, measures bundles (and
broadcasts the numbers), writes every file and checkpoint (the unwrapped model's state_dict);
evaluation is split over the ranks and summed. BatchNorm normalises with each rank's slice
unless ``sync_bn`` (CUDA only).

Modules: config (TrainConfig, TrainResult, TrainingDiverged), components (optimizer, device,
seeds, data splits, evaluate), state (TrainState, BundleMeter, callbacks), epoch (one epoch,
best-checkpoint choice), recorder (files and checkpoints), summary (rows, summary.json,
printing), loop (train), measure_run.
"""

from .components import (
    arch_of,
    evaluate,
    load_splits,
    make_optimizer,
    resolve_device,
    resolve_model_kwargs,
    split_validation,
    w_max,
)
from .config import (
    EVAL_BATCH,
    LAST_EPOCHS,
    OPTIMIZERS,
    RUNTIME_FIELDS,
    TIME_COLUMNS,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    check_resume_config,
    config_defaults,
    jsonable,
)
from .epoch import best_metric
from .loop import TRAIN_OWNED, describe_run, train
from .measure_run import measure_run
from .state import BundleMeter, TrainState
from .summary import ROW_COLUMNS, epoch_line, summarize

__all__ = [
    "EVAL_BATCH",
    "LAST_EPOCHS",
    "OPTIMIZERS",
    "ROW_COLUMNS",
    "RUNTIME_FIELDS",
    "TIME_COLUMNS",
    "TRAIN_OWNED",
    "BundleMeter",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingDiverged",
    "arch_of",
    "best_metric",
    "check_resume_config",
    "config_defaults",
    "describe_run",
    "epoch_line",
    "evaluate",
    "jsonable",
    "load_splits",
    "make_optimizer",
    "measure_run",
    "resolve_device",
    "resolve_model_kwargs",
    "split_validation",
    "summarize",
    "train",
    "w_max",
]
