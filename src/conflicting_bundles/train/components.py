"""The pieces a run is built from: device, seeds and RNG state, data splits, model kwargs,
optimizer, evaluation."""

from __future__ import annotations

import inspect
import random
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..data import ArrayDataset, iterate, load_dataset
from ..factory import import_factory, is_factory_path
from ..modelmode import evaluating
from ..models import create_model, model_signature
from .config import EVAL_BATCH, OPTIMIZERS, TrainConfig


def make_optimizer(params: Iterable[torch.Tensor], config: TrainConfig) -> torch.optim.Optimizer:
    """config.optimizer: "radam-lookahead" (default): RAdam (decoupled weight decay) wrapped in
    Lookahead, as tfa.optimizers.Lookahead(tfa.optimizers.RectifiedAdam(lr, epsilon=1e-6,
    weight_decay=1e-2)) in the reference; "adam": AdamW(lr, eps, weight_decay); "sgd": SGD with
    momentum 0.9 and (coupled) weight_decay."""
    if config.optimizer == "adam":
        return torch.optim.AdamW(
            params, lr=config.lr, eps=config.eps, weight_decay=config.weight_decay
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    if config.optimizer != "radam-lookahead":
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}.")
    from pytorch_optimizer import Lookahead  # lazy: a heavy import

    radam = torch.optim.RAdam(
        params,
        lr=config.lr,
        eps=config.eps,
        weight_decay=config.weight_decay,
        decoupled_weight_decay=True,
    )
    return Lookahead(radam, k=config.lookahead_k, alpha=config.lookahead_alpha)


def resolve_device(name: str) -> torch.device:
    """ "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:N"; ValueError otherwise."""
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
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()  # noqa: NPY002
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = np.asarray(keys, dtype=np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def w_max(model: nn.Module) -> float:
    """Largest |parameter| over all trainable parameters (docs/method.md §2)."""
    ps = [p.detach().abs().max() for p in model.parameters() if p.requires_grad and p.numel()]
    return float(torch.stack(ps).max()) if ps else 0.0


def build_model(name: str, kwargs: dict) -> nn.Module:
    """A registered model (``create_model``) or a user factory's "package.module:function"."""
    if not is_factory_path(name):
        return create_model(name, **kwargs)
    try:
        model = import_factory(name)(**kwargs)
    except TypeError as e:
        raise ValueError(f"model factory {name!r} rejected the arguments {kwargs}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model factory {name!r} returned a {type(model).__name__}, not a torch nn.Module."
        )
    return model


def resolve_model_kwargs(name: str, kwargs: dict, info) -> dict:
    """Fill in the dataset's input shape and class count where the factory takes them and the
    caller did not give them."""
    if is_factory_path(name):
        params = inspect.signature(import_factory(name)).parameters
    else:
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


def arch_of(model: nn.Module, factory: str | None = None, kwargs: dict | None = None) -> dict:
    """arch.json: ``model.arch()`` when the model has it; else the class, and for a model built
    by a user factory its import path and keyword arguments (runs.load_model rebuilds it only
    when the caller names the factory again)."""
    fn = getattr(model, "arch", None)
    if callable(fn):
        return dict(fn())
    # Any nn.Module can be trained, but only registry models are rebuilt from arch.json alone.
    out = {"name": None, "class": f"{type(model).__module__}.{type(model).__qualname__}"}
    if factory is not None and is_factory_path(factory):
        out.update(factory=factory, kwargs=dict(kwargs or {}))
    return out


# ------------------------------------------------------------------------------------ data
def split_validation(
    ds: ArrayDataset, n_val: int, seed: int
) -> tuple[ArrayDataset, ArrayDataset | None]:
    """(train part, validation part) of an ArrayDataset: ``n_val`` samples chosen by a
    permutation of a generator seeded with ``seed``; both parts keep the original order.
    n_val = 0 gives (ds, None)."""
    if n_val == 0:
        return ds, None
    if n_val >= len(ds):
        raise ValueError(
            f"val_split {n_val} leaves no training samples of the {len(ds)} available; use a "
            "smaller --val-split."
        )
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values

    def take(idx: torch.Tensor) -> ArrayDataset:
        return ArrayDataset(ds.images[idx], ds.labels[idx], ds.num_classes, ds.name)

    return take(train_idx), take(val_idx)


def load_splits(
    config: TrainConfig, data_dir: str | None = None
) -> tuple[ArrayDataset, ArrayDataset | None, ArrayDataset | None]:
    """(train, validation or None, test or None) datasets of a config: train_limit first, then
    the validation split; the test set only when config.test_eval."""
    where = data_dir or config.data_dir
    ds = load_dataset(config.dataset, "train", where, limit=config.train_limit)
    train_ds, val_ds = split_validation(ds, config.val_split, config.val_seed)
    test_ds = None
    if config.test_eval:
        test_ds = load_dataset(config.dataset, "test", where, limit=config.test_limit)
    return train_ds, val_ds, test_ds


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
    loss_sum, correct, n = 0.0, 0, 0
    with evaluating(model):
        for x, y in iterate(
            ds, batch_size, shuffle=False, augment=False, device=device, shard=shard
        ):
            if len(y) == 0:  # this rank's slice of a short last batch
                continue
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    if shard is not None:
        sums = distributed.all_reduce_sum(
            torch.tensor([loss_sum, correct, n], dtype=torch.float64, device=device)
        ).tolist()
        loss_sum, correct, n = sums[0], int(sums[1]), int(sums[2])
    return loss_sum / max(n, 1), correct / max(n, 1)
