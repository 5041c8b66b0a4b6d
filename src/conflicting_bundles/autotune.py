"""Auto-tune (METHOD.md §5): train, detect conflicting layers early, remove them, repeat.

The search is a loop of training *steps*. Each step trains one architecture with a
:class:`ConflictCheck` callback: for epochs < ``check_epochs`` it measures the bundle entropy of
the last probe point (cheap); when that is > 0 it measures every block, decides which blocks to
remove (``variant``), writes the decision atomically and stops the step. The next step builds the
smaller net, with fresh weights and optimizer (the paper) or, with ``restart="warm"``, the
trained weights of the surviving blocks and their optimizer state (our improvement). A step that
reaches the epoch budget without a conflict ends the search. Depth only shrinks, so it ends.

Run directory ``out``::

    autotune_state.json   resumable state (atomic): finished steps, current architecture
    steps/step_000/       a training run dir (config, metrics, checkpoints) + decision.json
    steps.csv/.json       the architectures and the per-block entropies that pruned them
    autotune.json         final architecture, accuracy, size/latency/memory of start vs final
    *.png, report.html        plots and the one-page report

Under torchrun every rank runs ``autotune`` with the same arguments: each step trains data
parallel (train.py), rank 0 measures and decides (the decision is broadcast, so every rank builds
the same pruned architecture) and writes every file; the others read only after a barrier.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from . import distributed, runs
from .cost import cost_report
from .models import create_model
from .report import plot_curves, print_table
from .train import TrainConfig, TrainState, _resolve_device, train

VARIANTS = ("all", "first-and-rest", "first-stage")
RESTARTS = ("fresh", "warm")


@dataclass
class Decision:
    """Which blocks a conflict removes, and why."""

    remove: list[int]
    guard: str = ""  # non-empty when an edge-case rule changed the plain variant's choice


def decide_removal(
    entropies: Sequence[float], info: Sequence[dict], variant: str = "all"
) -> Decision:
    """Blocks to remove given every block's bundle entropy (forward order) and block_info().

    - ``all``: every conflicting block (the 2021 paper's code).
    - ``first-and-rest``: the first conflicting block and all later blocks of its stage
      (the 2020 paper's wording).
    - ``first-stage``: the conflicting blocks of the first stage that has any.

    Guards: if nothing is conflicting although the cheap check fired, the last block is removed
    (``guard="last-block"``); a removal that would leave no block keeps the first block
    (``guard="keep-one"``): a net without blocks is no longer in the search space.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    if len(entropies) != len(info):
        raise ValueError(f"{len(entropies)} entropies for {len(info)} blocks.")
    n = len(info)
    if n == 0:
        return Decision([], guard="no-blocks")
    conflicting = [i for i, e in enumerate(entropies) if e > 0]
    guard = ""
    if not conflicting:
        remove, guard = [n - 1], "last-block"
    elif variant == "all":
        remove = conflicting
    elif variant == "first-and-rest":
        f = conflicting[0]
        stage = info[f]["stage"]
        remove = [i for i in range(f, n) if info[i]["stage"] == stage]
    else:
        stage = info[conflicting[0]]["stage"]
        remove = [i for i in conflicting if info[i]["stage"] == stage]
    if len(remove) >= n:
        remove = [i for i in remove if i != 0]
        guard = (guard + "+" if guard else "") + "keep-one"
    return Decision(sorted(remove), guard)


@dataclass
class AutotuneConfig:
    """The search; ``train`` holds the training recipe (a TrainConfig dict) of every step."""

    out: str = "runs/autotune"
    variant: str = "all"
    restart: str = "fresh"
    check_epochs: int = 10
    samples: int = 64
    criterion: str = "reference"
    probe_kind: str | None = (
        None  # the model's default kind (FNN hidden, plain block, resnet branch)
    )
    check_timing: str | None = None  # "before" | "after" epoch; default per variant (§5)
    max_steps: int = 50
    train: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"--variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}."
            )
        if self.restart not in RESTARTS:
            raise ValueError(
                f"--restart must be one of {', '.join(RESTARTS)}, got {self.restart!r}."
            )
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
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ------------------------------------------------------------------------ the per-epoch check
class ConflictCheck:
    """Training callback: the cheap check of the last probe point for epochs < check_epochs
    (counted over the whole search with warm restarts), the all-block pass on a conflict, the
    decision written atomically to ``decision.json`` (with the trained weights for a warm
    restart), then ``state.stop``."""

    def __init__(self, cfg: AutotuneConfig, epoch_offset: int = 0):
        self.cfg = cfg
        self.offset = epoch_offset  # epochs the surviving weights already trained (warm)
        self.decision: dict | None = None
        self.checks: list[dict] = []
        self.exhausted = False  # a conflict remained that no allowed removal can fix

    def _due(self, epochs_done: int) -> bool:
        return not self.exhausted and self.offset + epochs_done < self.cfg.check_epochs

    def on_epoch_start(self, state: TrainState) -> None:
        if self.cfg.check_timing == "before" and self._due(state.epoch - 1):
            self._check(state, state.epoch - 1)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.cfg.check_timing == "after" and self._due(state.epoch - 1):
            self._check(state, state.epoch)

    def _check(self, state: TrainState, epochs_done: int) -> None:
        # Under torchrun rank 0 measures, decides and writes; every rank gets the outcome, so
        # all stop at the same epoch with the same decision (a single process just runs it).
        self.checks, self.exhausted, self.decision = distributed.run_on_main(
            self._check_on_main, state, epochs_done
        )
        if self.decision is not None:
            state.stop(
                f"conflicting bundles at epoch {epochs_done}: remove "
                f"{self.decision['removed_names']}"
            )

    def _check_on_main(self, state: TrainState, epochs_done: int):
        """The check itself; returns (checks, exhausted, decision or None)."""
        crit, kind, n = self.cfg.criterion, self.cfg.probe_kind, self.cfg.samples
        last = state.measure("last", kind=kind, n_samples=n, criterion=crit)[-1]
        path = state.run_dir / "checks.json"
        if not self.checks and path.exists():  # resumed: keep the checks made before the kill
            self.checks = [c for c in runs.read_json(path) if c["epoch"] < epochs_done]
        self.checks.append(
            {"epoch": epochs_done, "entropy": last.entropy, "num_bundles": last.num_bundles}
        )
        runs.write_json(path, self.checks)
        if not last.conflicting:
            return self.checks, self.exhausted, None
        every = state.measure("all", kind=kind, n_samples=n, criterion=crit)
        ent = [r.entropy for r in every]
        guard = ""
        if not any(e > 0 for e in ent):
            # Not reproduced by the all-block pass (cannot happen with the same samples in one
            # pass unless the model is stochastic in eval mode): resample the next N samples.
            every = _measure_shifted(state, kind, n, crit)
            ent = [r.entropy for r in every]
            guard = "resampled"
        model = state.model
        d = decide_removal(ent, model.block_info(), self.cfg.variant)
        if not d.remove:
            # Only the block the keep-one guard protects is left: the net cannot shrink, so
            # this architecture is final; train it to the budget without further checks.
            self.exhausted = True
            self.checks[-1]["note"] = "conflict, but no block can be removed (keep-one)"
            runs.write_json(path, self.checks)
            return self.checks, self.exhausted, None
        decision = {
            "epoch": epochs_done,
            "global_epoch": self.offset + epochs_done,
            "blocks": [r.name for r in every],
            "entropies": ent,
            "num_bundles": [r.num_bundles for r in every],
            "remove": d.remove,
            "removed_names": [every[i].name for i in d.remove],
            "guard": "+".join(g for g in (guard, d.guard) if g),
            "criterion": crit,
            "trigger_entropy": last.entropy,
        }
        if self.cfg.restart == "warm":
            runs.save_checkpoint(
                state.run_dir / "decision_state.pt",
                {"model": model.state_dict(), "optimizer": state.optimizer.state_dict()},
            )
        runs.write_json(state.run_dir / "decision.json", decision)
        return self.checks, self.exhausted, decision


def _measure_shifted(state: TrainState, kind, n: int, crit: str):
    from .data import iterate
    from .probes import measure, resolve_points

    it = iterate(state.train_ds, n, shuffle=False, augment=False, device=state.device)
    next(it, None)
    batch = next(it, None)
    if batch is None:
        return state.measure("all", kind=kind, n_samples=n, criterion=crit)
    return measure(
        state.model,
        [batch],
        resolve_points(state.model, None, kind),
        n_samples=n,
        lr=state.config.lr,
        batch_size=state.config.batch_size,
        criterion=crit,
        num_classes=state.num_classes,
    )


# ------------------------------------------------------------------------- optimizer remap
def remap_optimizer_state(
    old_sd: dict, old_model: nn.Module, new_model: nn.Module, new_sd: dict, rename: dict[str, str]
) -> dict:
    """Carry per-parameter optimizer state (RAdam moments, Lookahead slow weights) from the old
    model to the new one for every parameter whose (renamed) name and shape match; the rest
    start fresh. ``rename`` maps new block names to the old blocks they came from."""
    old_names = [n for n, _ in old_model.named_parameters()]
    old_shape = {n: p.shape for n, p in old_model.named_parameters()}
    old_index = {n: i for i, n in enumerate(old_names)}
    out = copy.deepcopy(new_sd)
    for j, (name, p) in enumerate(new_model.named_parameters()):
        block = ".".join(name.split(".")[:2])
        src = rename[block] + name[len(block) :] if block in rename else name
        i = old_index.get(src)
        if i is None or old_shape[src] != p.shape:
            continue
        base_old = old_sd["base_optimizer"]["state"]
        if i in base_old:
            out["base_optimizer"]["state"][j] = copy.deepcopy(base_old[i])
        la = old_sd.get("lookahead_state", {})
        if (0, i) in la:
            out.setdefault("lookahead_state", {})[(0, j)] = copy.deepcopy(la[(0, i)])
    return out


# ------------------------------------------------------------------------------- the search
@dataclass
class AutotuneResult:
    out: Path
    final_arch: dict
    test_acc: float | None
    steps: list[dict]
    total_epochs: int
    wall_time: float
    summary: dict


def _arch_blocks(arch: dict) -> list[int] | int:
    return arch["blocks"] if "blocks" in arch else arch.get("depth")


def autotune(
    cfg: AutotuneConfig,
    *,
    resume: bool = False,
    force: bool = False,
    console: Console | None = None,
) -> AutotuneResult:
    """Run (or resume) the search; see the module docstring."""
    out = Path(cfg.out)
    state_path = out / "autotune_state.json"
    base = TrainConfig.from_dict(cfg.train)
    base.validate()
    distributed.init(_resolve_device(base.device))  # torchrun: join the process group
    main = distributed.is_main()
    console = (console or Console()) if main else Console(quiet=True)
    started = (out / "steps" / "step_000" / "checkpoints").exists()
    if state_path.exists() and not started:
        state_path.unlink()  # a search that failed before training anything: start afresh
    if state_path.exists() and not (resume or force):
        raise runs.RunDirError(
            f"{out} already holds an auto-tune run; pass --resume to continue it or --force to "
            "start over (its files are replaced)."
        )
    if resume and state_path.exists():
        st = runs.read_json(state_path)
        stored = AutotuneConfig.from_dict(st["config"])
        if (
            stored.variant != cfg.variant
            or stored.restart != cfg.restart
            or stored.criterion != cfg.criterion
        ):
            raise runs.RunDirError(
                f"{out} was started with variant={stored.variant}, restart={stored.restart}, "
                f"criterion={stored.criterion}; resume with the same settings."
            )
    else:
        distributed.barrier()  # every rank has looked at `out` before rank 0 changes it
        if main and force and out.exists():
            import shutil

            for p in [
                out / "steps",
                *out.glob("*.json"),
                *out.glob("*.csv"),
                *out.glob("*.png"),
                out / "report.html",
            ]:
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        if main:
            out.mkdir(parents=True, exist_ok=True)
        start = create_model(base.model, **_model_kwargs(base))
        st = {
            "config": cfg.to_dict(),
            "steps": [],
            "arch": start.arch(),
            "start_arch": start.arch(),
            "done": False,
            "warm": None,
            "wall_time": 0.0,
        }
        if main:
            runs.write_json(state_path, st)
    distributed.barrier()  # rank 0's clean-up and state file are done before any rank reads

    t_start = time.perf_counter() - st.get("wall_time", 0.0)
    while not st["done"]:
        k = len(st["steps"])
        if k >= cfg.max_steps:
            raise RuntimeError(f"auto-tune did not converge within max_steps={cfg.max_steps}.")
        step_dir = out / "steps" / f"step_{k:03d}"
        decision_path = step_dir / "decision.json"
        warm = st.get("warm")  # {"offset": epochs already trained by the carried weights}
        offset = warm["offset"] if warm else 0
        tcfg = dataclasses.replace(
            base,
            out=str(step_dir),
            epochs=max(1, base.epochs - offset),
            model=st["arch"]["name"],
            model_kwargs={k2: v for k2, v in st["arch"].items() if k2 != "name"},
        )
        console.print(
            f"[bold]auto-tune step {k}[/]: blocks {_arch_blocks(st['arch'])}"
            + (f" (warm, {offset} epochs carried)" if warm else "")
        )
        check = ConflictCheck(cfg, epoch_offset=offset)
        if not decision_path.exists():
            model, opt_state = None, None
            if warm:
                model, opt_state = _warm_model(out / "steps" / f"step_{k - 1:03d}", st)
            step_resume = (step_dir / "checkpoints" / "last.pt").exists()
            res = train(
                tcfg,
                [check],
                model=model,
                optimizer_state=opt_state,
                resume=step_resume,
                force=not step_resume,
            )
            status, summary = res.status, res.summary
            if status == "diverged":
                console.print(f"[red]step {k} diverged: {res.message}[/]")
        else:
            summary = runs.load_summary(step_dir)
            status = "stopped"
        decision = runs.read_json(decision_path) if decision_path.exists() else None
        metrics = runs.load_metrics(step_dir)
        epochs_trained = max((int(r["epoch"]) for r in metrics), default=0)
        row = {
            "step": k,
            "blocks": _arch_blocks(st["arch"]),
            "num_blocks": _num_blocks(st["arch"]),
            "restart": "warm" if warm else "fresh",
            "epochs_trained": epochs_trained,
            "status": status,
            "test_acc": summary.get("test_acc"),
            "params": summary.get("params"),
        }
        checks_path = step_dir / "checks.json"
        checks = runs.read_json(checks_path) if checks_path.exists() else []
        row["checks"] = len(checks)
        row["unresolved_conflict"] = any("note" in c for c in checks)
        if decision is not None:
            row.update(
                prune_epoch=decision["epoch"],
                removed=decision["removed_names"],
                guard=decision["guard"],
                entropies=decision["entropies"],
                block_names=decision["blocks"],
            )
            old = create_model(**st["arch"])
            new = old.without_blocks(decision["remove"], carry_weights=False)
            st["arch"] = new.arch()
            st["warm"] = (
                {"offset": offset + decision["epoch"], "remove": decision["remove"]}
                if cfg.restart == "warm"
                else None
            )
        else:
            st["done"] = True
            st["warm"] = None
        st["steps"].append(row)
        st["wall_time"] = time.perf_counter() - t_start
        if main:
            runs.write_json(state_path, st)
            _write_steps(out, st["steps"])

    # Costs, plots and report on rank 0; every rank returns rank 0's result.
    return distributed.run_on_main(_finish, cfg, st, out, base, console)


def _model_kwargs(base: TrainConfig) -> dict:
    from .data import dataset_info
    from .train import _resolve_model_kwargs

    return _resolve_model_kwargs(base.model, dict(base.model_kwargs), dataset_info(base.dataset))


def _num_blocks(arch: dict) -> int:
    return sum(arch["blocks"]) if "blocks" in arch else int(arch.get("depth", 0))


def _warm_model(prev_dir: Path, st: dict):
    """The pruned model with the previous step's trained weights and remapped optimizer state."""
    from .train import make_optimizer

    saved = torch.load(prev_dir / "decision_state.pt", map_location="cpu", weights_only=False)
    cfg_prev = TrainConfig.from_dict(runs.load_config(prev_dir))
    old = create_model(**runs.load_arch(prev_dir))
    old.load_state_dict(saved["model"])
    remove = st["warm"]["remove"]
    new = old.without_blocks(remove, carry_weights=True)
    keep = [i for i in range(len(old.block_names())) if i not in set(remove)]
    rename = dict(zip(new.block_names(), [old.block_names()[i] for i in keep], strict=True))
    opt_old = make_optimizer(old.parameters(), cfg_prev)
    opt_old.load_state_dict(saved["optimizer"])
    opt_new = make_optimizer(new.parameters(), cfg_prev)
    sd = remap_optimizer_state(opt_old.state_dict(), old, new, opt_new.state_dict(), rename)
    return new, sd


def _write_steps(out: Path, steps: list[dict]) -> None:
    runs.write_json(out / "steps.json", steps)
    flat = [
        {
            k: (str(v) if isinstance(v, list) else v)
            for k, v in s.items()
            if k not in ("entropies", "block_names")
        }
        for s in steps
    ]
    runs.write_csv(out / "steps.csv", flat)
    rows = []
    for s in steps:
        for name, e in zip(s.get("block_names", []), s.get("entropies", []), strict=True):
            rows.append(
                {
                    "step": s["step"],
                    "block": name,
                    "entropy": e,
                    "removed": name in s.get("removed", []),
                }
            )
    if rows:
        runs.write_csv(out / "prune_entropies.csv", rows)


def _finish(cfg: AutotuneConfig, st: dict, out: Path, base: TrainConfig, console: Console):
    from .data import dataset_info
    from .report import build_report

    info = dataset_info(base.dataset)
    threads = torch.get_num_threads()
    if base.threads:
        torch.set_num_threads(base.threads)
    start = create_model(**st["start_arch"])
    final = create_model(**st["arch"])
    costs = {
        "start": cost_report(start, tuple(info.in_shape), info.num_classes),
        "final": cost_report(final, tuple(info.in_shape), info.num_classes),
    }
    torch.set_num_threads(threads)
    steps = st["steps"]
    summary = {
        "final_arch": st["arch"],
        "final_blocks": _arch_blocks(st["arch"]),
        "start_blocks": _arch_blocks(st["start_arch"]),
        "test_acc": steps[-1].get("test_acc"),
        "num_prunes": len(steps) - 1,
        "total_epochs": sum(s["epochs_trained"] for s in steps),
        "wall_time_s": st["wall_time"],
        "variant": cfg.variant,
        "restart": cfg.restart,
        "criterion": cfg.criterion,
        "cost": costs,
        "config": cfg.to_dict(),
    }
    runs.write_json(out / "autotune.json", summary)
    _plots(out, steps)
    build_report(out)
    print_table(
        [
            {
                "": name,
                "blocks": _arch_blocks(st["start_arch" if name == "start" else "arch"]),
                "params": c["params"],
                "ms b1": c["latency_ms_b1"],
                "ms b64": c["latency_ms_b64"],
                "train MiB": c["train_memory_mb"],
            }
            for name, c in costs.items()
        ],
        title="auto-tune: start vs final architecture",
        console=console,
    )
    cols = [
        "step",
        "num_blocks",
        "restart",
        "epochs_trained",
        "status",
        "test_acc",
        "prune_epoch",
        "removed",
    ]
    print_table(
        [{**s, "removed": len(s.get("removed", []))} for s in steps],
        cols,
        title="auto-tune steps (removed = number of blocks)",
        console=console,
    )
    console.print(
        f"final blocks {summary['final_blocks']}, test acc {summary['test_acc']}, "
        f"{summary['total_epochs']} epochs, {summary['wall_time_s']:.0f} s; "
        f"report: {out / 'report.html'}"
    )
    return AutotuneResult(
        out,
        st["arch"],
        summary["test_acc"],
        steps,
        summary["total_epochs"],
        st["wall_time"],
        summary,
    )


def _plots(out: Path, steps: list[dict]) -> None:
    series = {}
    for s in steps:
        if s.get("entropies"):
            series[f"step {s['step']} (epoch {s.get('prune_epoch')})"] = (
                list(range(len(s["entropies"]))),
                s["entropies"],
            )
    if series:
        plot_curves(
            series,
            out / "prune_entropy.png",
            xlabel="block index",
            ylabel="bundle entropy",
            title="Per-block bundle entropy at each prune",
        )
    plot_curves(
        {"blocks": ([s["step"] for s in steps], [s["num_blocks"] for s in steps])},
        out / "depth.png",
        xlabel="search step",
        ylabel="number of blocks",
        title="Depth over the search",
    )
    acc = {}
    for s in steps:
        m = runs.read_csv(out / "steps" / f"step_{s['step']:03d}" / "metrics.csv")
        acc[f"step {s['step']}"] = ([r["epoch"] for r in m], [r.get("test_acc") for r in m])
    plot_curves(
        acc,
        out / "accuracy.png",
        xlabel="epoch (within step)",
        ylabel="test accuracy",
        title="Accuracy per search step",
    )
