"""Data parallel (torchrun/DDP): sharded batches, single-process no-ops, and a real 2-process gloo
run on CPU whose metrics, weights, resume and auto-tune decision match a single-process run.

The 2-process part spawns two workers once (torch.multiprocessing, 1 thread each, a free port)
and runs train, train+resume and an auto-tune search in them; the single-process references run
in the test process."""

from __future__ import annotations

import json
import os
import pickle
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conflicting_bundles import distributed, runs
from conflicting_bundles.autotune import AutotuneConfig, autotune
from conflicting_bundles.data import iterate, load_dataset
from conflicting_bundles.train import TIME_COLUMNS, TrainConfig, TrainingDiverged, train

WORLD = 2
# 193 training samples in global batches of 32 and 257 test samples in evaluation batches of
# 256: the last batch of each has one sample, so rank 1's slice of it is empty.
TRAIN = dict(
    model="fnn",
    model_kwargs={"width": 16, "depth": 3},
    dataset="synthetic",
    epochs=2,
    batch_size=32,
    train_limit=193,
    test_limit=257,
    threads=1,
    progress=False,
    tensorboard=False,
)
AUTOTUNE_TRAIN = dict(TRAIN, model_kwargs={"width": 6, "depth": 24}, epochs=1, train_limit=128)


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows]


# ---------------------------------------------------------------------------- sharded batches
@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("augment", [True, False])
def test_shards_concatenate_to_the_single_process_batches(world, augment):
    ds = load_dataset("synthetic", "train", limit=23)  # batches of 10: 10, 10, 3
    kw = dict(shuffle=True, augment=augment, seed=5, epoch=2)
    full = list(iterate(ds, 10, **kw))
    shards = [list(iterate(ds, 10, shard=(r, world), **kw)) for r in range(world)]
    assert all(len(s) == len(full) for s in shards)  # every rank steps the same number of times
    for i, (x, y) in enumerate(full):
        parts = [s[i] for s in shards]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        sizes = [len(p[1]) for p in parts]
        assert max(sizes) - min(sizes) <= 1
    if world == 4:  # the last batch of 3 leaves one rank an empty slice
        assert min(len(s[-1][1]) for s in shards) == 0


def test_shard_argument_is_checked():
    ds = load_dataset("synthetic", "train", limit=8)
    for bad in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError, match="shard must be"):
            iterate(ds, 4, shuffle=False, augment=False, shard=bad)


# ------------------------------------------------------------------- single-process behaviour
def test_helpers_are_no_ops_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init("cpu") == torch.device("cpu")
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard() is None
    obj = {"a": [1, 2]}
    assert distributed.broadcast_object(obj) is obj
    distributed.barrier()
    t = torch.ones(3)
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1.0, 1.0, 1.0]
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, torch.device("cpu")) is model
    assert distributed.run_on_main(lambda a, b: a + b, 2, b=3) == 5
    with pytest.raises(KeyError, match="boom"):
        distributed.run_on_main(lambda: {}["boom"])


def test_incomplete_torchrun_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        distributed.init("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer"):
        distributed.init("cpu")


def test_divergence_survives_pickling():
    """run_on_main hands rank 0's exception to the other ranks by pickling it."""
    e = pickle.loads(pickle.dumps(TrainingDiverged("loss became nan", 3, 7)))
    assert (str(e), e.epoch, e.step) == ("loss became nan", 3, 7)


# ------------------------------------------------------------------------- 2 processes (gloo)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    """One torchrun-like rank: the environment torchrun would set, then the library as is."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    tmp = Path(tmp)
    out: dict = {}
    res = train(TrainConfig(**dict(TRAIN, tensorboard=True), out=str(tmp / "ddp")))
    out["rank"], out["world"] = distributed.rank(), distributed.world_size()
    out["metrics"] = untimed(res.metrics)
    torch.save(res.model.state_dict(), tmp / f"weights-{rank}.pt")
    # interrupted after one epoch, resumed to two
    train(TrainConfig(**dict(TRAIN, epochs=1), out=str(tmp / "ddp-resume")))
    resumed = train(TrainConfig(**TRAIN, out=str(tmp / "ddp-resume")), resume=True)
    out["resumed"] = untimed(resumed.metrics)
    at = autotune(AutotuneConfig(out=str(tmp / "ddp-at"), check_epochs=1, train=AUTOTUNE_TRAIN))
    out["autotune"] = {"final_arch": at.final_arch, "steps": at.steps, "acc": at.test_acc}
    (tmp / f"rank-{rank}.json").write_text(json.dumps(out))
    distributed.destroy()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp / f"rank-{r}.json").read_text()) for r in range(WORLD)]
    return tmp, ranks


def _close(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k, va in ra.items():
            vb = rb[k]
            if isinstance(va, float) and isinstance(vb, float):
                assert va == pytest.approx(vb, rel=1e-5, abs=1e-7), (ra["epoch"], k)
            else:
                assert va == vb, (ra["epoch"], k)


def test_two_ranks_match_a_single_process_run(two_ranks, tmp_path):
    tmp, ranks = two_ranks
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    # every rank holds the same rows: all-reduced losses, rank 0's bundle numbers
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    single = train(TrainConfig(**TRAIN, out=str(tmp_path / "single")))
    _close(ranks[0]["metrics"], json.loads(json.dumps(untimed(single.metrics))))
    assert ranks[0]["metrics"][0] == json.loads(json.dumps(untimed(single.metrics)))[0]
    w0, w1 = (torch.load(tmp / f"weights-{r}.pt") for r in range(WORLD))
    for k, v in single.model.state_dict().items():
        assert torch.equal(w0[k], w1[k])  # the ranks stay in sync
        assert torch.allclose(w0[k], v, rtol=1e-5, atol=1e-6), k
    # rank 0 wrote the run: its files equal the rows, one TensorBoard file, world size recorded
    d = tmp / "ddp"
    _close(untimed(runs.load_metrics(d)), ranks[0]["metrics"])
    assert len(list((d / "tb").glob("events.out.tfevents*"))) == 1
    assert runs.load_summary(d)["world_size"] == WORLD
    ckpt = runs.load_checkpoint(d)
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the unwrapped model's keys


def test_two_rank_resume_matches_the_uninterrupted_run(two_ranks):
    tmp, ranks = two_ranks
    assert ranks[0]["resumed"] == ranks[1]["resumed"]
    _close(ranks[0]["resumed"], ranks[0]["metrics"])


def test_two_ranks_take_the_same_prune_decision(two_ranks, tmp_path):
    tmp, ranks = two_ranks
    a0, a1 = ranks[0]["autotune"], ranks[1]["autotune"]
    assert len(a0["steps"]) >= 2, "a 24-layer width-6 FNN conflicts at initialisation"
    assert a0["steps"][0]["removed"], "the first step removed blocks"
    assert a0 == a1  # same decisions, same architectures, same accuracy on both ranks
    single = autotune(
        AutotuneConfig(out=str(tmp_path / "at"), check_epochs=1, train=AUTOTUNE_TRAIN)
    )
    assert a0["final_arch"] == single.final_arch
    assert [s["removed"] for s in a0["steps"][:-1]] == [s["removed"] for s in single.steps[:-1]]
    decision = json.loads((tmp / "ddp-at" / "steps" / "step_000" / "decision.json").read_text())
    assert decision["removed_names"] == a0["steps"][0]["removed"]
