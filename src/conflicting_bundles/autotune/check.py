"""The per-epoch conflict check of one auto-tune step (a training callback)."""

from __future__ import annotations

from .. import distributed, runs
from ..train import TrainState
from .config import AutotuneConfig
from .rules import decide_removal

CHECKS = "checks.json"
DECISION = "decision.json"
DECISION_STATE = "decision_state.pt"


class ConflictCheck:
    """Training callback: the cheap check of the last probe point for epochs < check_epochs
    (counted over the whole search with warm restarts), the all-block pass on a conflict, the
    decision written atomically to ``decision.json`` (with the trained weights for a warm
    restart, as tensors only: ``weights_only=True`` loads them), then ``state.stop``."""

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

    def _record(self, state: TrainState, epochs_done: int, last) -> None:
        path = state.run_dir / CHECKS
        if not self.checks and path.exists():  # resumed: keep the checks made before the kill
            self.checks = [c for c in runs.read_json(path) if c["epoch"] < epochs_done]
        self.checks.append(
            {"epoch": epochs_done, "entropy": last.entropy, "num_bundles": last.num_bundles}
        )
        runs.write_json(path, self.checks)

    def _check_on_main(self, state: TrainState, epochs_done: int):
        """The check itself; returns (checks, exhausted, decision or None)."""
        crit, kind, n = self.cfg.criterion, self.cfg.probe_kind, self.cfg.samples
        last = state.measure("last", kind=kind, n_samples=n, criterion=crit)[-1]
        self._record(state, epochs_done, last)
        if not last.conflicting:
            return self.checks, self.exhausted, None
        every = state.measure("all", kind=kind, n_samples=n, criterion=crit)
        guard = ""
        if not any(r.entropy > 0 for r in every):
            # Not reproduced by the all-block pass (cannot happen with the same samples in one
            # pass unless the model is stochastic in eval mode): resample the next N samples.
            every, guard = measure_shifted(state, kind, n, crit), "resampled"
        ent = [r.entropy for r in every]
        d = decide_removal(ent, state.model.block_info(), self.cfg.variant)
        if not d.remove:
            # Only the block the keep-one guard protects is left: the net cannot shrink, so
            # this architecture is final; train it to the budget without further checks.
            self.exhausted = True
            self.checks[-1]["note"] = "conflict, but no block can be removed (keep-one)"
            runs.write_json(state.run_dir / CHECKS, self.checks)
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
                state.run_dir / DECISION_STATE,
                {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict()},
            )
        runs.write_json(state.run_dir / DECISION, decision)
        return self.checks, self.exhausted, decision


def measure_shifted(state: TrainState, kind: str | None, n: int, crit: str):
    """Every block measured on the next ``n`` non-augmented training samples (samples n..2n-1),
    or on the usual ones when the training set has no second batch."""
    from ..data import iterate
    from ..probes import measure, resolve_points

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
