"""Data-parallel helpers for torchrun (DDP): join the process group from the environment, rank and
world queries, and the few collectives the training loop and the auto-tune need.

    torchrun --nproc_per_node 8 -m conflicting_bundles.cli train --model plain --layers 20 ...

torchrun starts one process per GPU (or CPU worker) and sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; ``init`` reads them. In a single process (no WORLD_SIZE, or 1) every
helper here is a no-op, so library code calls them unconditionally:

    device = init(torch.device("cuda"))  # cuda:LOCAL_RANK under torchrun (nccl; gloo on CPU)
    if is_main(): write_files()          # rank 0 writes; the others compute the same values
    value = run_on_main(expensive)       # computed on rank 0, the same object on every rank
    barrier()                            # e.g. before the other ranks read what rank 0 wrote

Conventions of this project under torchrun: the run directory is on a filesystem all ranks see
(one node, or a shared mount on several); rank 0 writes every file; the others read only after a
``barrier``.
"""

from __future__ import annotations

import atexit
import datetime
import os
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "ENV_VARS",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "destroy",
    "env_world_size",
    "init",
    "is_distributed",
    "is_main",
    "local_rank",
    "rank",
    "run_on_main",
    "shard",
    "world_size",
    "wrap_model",
]

T = TypeVar("T")
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
EXIT_WAIT = datetime.timedelta(seconds=60)  # how long a leaving rank waits for the others
TIMEOUT = datetime.timedelta(minutes=30)  # torch's default; a rank waits this long at a collective


def env_world_size() -> int:
    """WORLD_SIZE from the environment (torchrun sets it), 1 when unset."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {raw!r}.") from None
    if n < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {n}.")
    return n


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the group; 0 without one."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the group; 1 without one."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """The rank on this node (torchrun's LOCAL_RANK): which GPU this process uses."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """Rank 0, the process that writes files and prints."""
    return rank() == 0


def shard() -> tuple[int, int] | None:
    """(rank, world) for ``data.iterate(shard=...)``; None in a single process."""
    return (rank(), world_size()) if is_distributed() else None


def _check_env() -> dict[str, int]:
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start "
            "data-parallel runs with torchrun (e.g. `torchrun --nproc_per_node 2 -m "
            "conflicting_bundles.cli train ...`), or unset WORLD_SIZE for a single process."
        )
    out = {}
    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        try:
            out[v] = int(os.environ[v])
        except ValueError:
            raise ValueError(f"{v} must be an integer, got {os.environ[v]!r}.") from None
    if not 0 <= out["RANK"] < out["WORLD_SIZE"]:
        raise ValueError(f"RANK={out['RANK']} is outside 0..WORLD_SIZE-1={out['WORLD_SIZE'] - 1}.")
    return out


def init(device: torch.device | str = "cpu", backend: str | None = None) -> torch.device:
    """Join the process group described by torchrun's environment variables (once; later calls
    only check) and return the device this rank computes on.

    Single process (WORLD_SIZE unset or 1): returns ``device`` unchanged. Under torchrun: a CUDA
    device becomes ``cuda:LOCAL_RANK`` (one GPU per process), backend nccl; CPU uses gloo.
    """
    device = torch.device(device)
    if env_world_size() <= 1 and not is_distributed():
        return device
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run a single process.")
    if device.type == "cuda":
        lr = int(os.environ.get("LOCAL_RANK", "0"))
        n_gpu = torch.cuda.device_count()
        if lr >= n_gpu:
            raise ValueError(
                f"LOCAL_RANK={lr} but only {n_gpu} GPU(s) are visible on this node: use "
                f"--nproc_per_node <= {n_gpu} (one process per GPU)."
            )
        device = torch.device("cuda", lr)
        torch.cuda.set_device(device)
    if dist.is_initialized():
        want = "nccl" if device.type == "cuda" else "gloo"
        have = dist.get_backend()
        if backend is None and want not in str(have):
            raise ValueError(
                f"the process group uses backend {have!r} but this run computes on {device}; "
                f"a {device.type} run needs {want!r} (set the device consistently)."
            )
        return device
    env = _check_env()
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=env["RANK"],
        world_size=env["WORLD_SIZE"],
        timeout=TIMEOUT,
    )
    atexit.register(destroy)
    return device


def destroy() -> None:
    """Leave the process group (registered with atexit by ``init``).

    gloo ranks first meet at a barrier, so that none tears down its connections while another
    still writes its files: a rank that left early made a slower one abort ("terminate called
    without an active exception") at exit. The barrier waits at most EXIT_WAIT; one that fails
    (a rank already died) does not keep this rank from leaving. nccl needs no such wait (and
    its barrier could hang on a dead rank until TIMEOUT)."""
    if dist.is_available() and dist.is_initialized():
        if "gloo" in str(dist.get_backend()):
            try:
                dist.monitored_barrier(timeout=EXIT_WAIT)
            except RuntimeError:
                pass
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank got here."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (any picklable object; the others pass anything)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks, in place (and returned)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank. During training
    each rank updates them from its own slice of the batch; rank 0's are the ones checkpointed,
    so every rank evaluates and measures with those."""
    if is_distributed():
        for b in model.buffers():
            dist.broadcast(b.data, src=src)


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling (it crosses to the other ranks), else a RuntimeError with
    its message."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__} on rank 0: {e}")


def run_on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` computed on rank 0 only; every rank returns its result. An
    exception on rank 0 is raised on every rank, so all ranks take the same path (no rank is
    left waiting at the next collective). A single process just calls ``fn``."""
    if not is_distributed():
        return fn(*args, **kwargs)
    payload: tuple[str, Any] | None = None
    if is_main():
        try:
            payload = ("ok", fn(*args, **kwargs))
        except Exception as e:
            payload = ("error", _portable(e))
    kind, value = broadcast_object(payload)
    if kind == "error":
        raise value
    return value


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """The module to call in the training step: ``model`` itself in a single process, else a
    DistributedDataParallel around it (gradients all-reduced and averaged in backward). With
    ``sync_bn`` on CUDA the BatchNorm layers are converted to SyncBatchNorm first (in place: the
    parameters and state_dict keys stay the same), so batch statistics are those of the global
    batch; otherwise each rank normalises with its own slice's statistics."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_bn and device.type == "cuda":
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:  # only when the root itself is a BatchNorm layer
            raise ValueError("sync_bn: the model itself is a BatchNorm layer; wrap it in a module.")
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, output_device=ids[0] if ids else None)
