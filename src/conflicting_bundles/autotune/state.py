"""The search state, its pure transition, and the files of a search directory.

``advance`` is the whole state machine: it takes the state and the outcome of one step and
returns the next state, with no I/O and no training, so unit tests drive it directly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .. import runs

STATE = runs.AUTOTUNE_STATE
SUMMARY = "autotune.json"
STEPS_DIR = "steps"
STEPS_JSON = "steps.json"
STEPS_CSV = "steps.csv"
PRUNE_CSV = "prune_entropies.csv"
PLOTS = ("prune_entropy.png", "depth.png", "accuracy.png")
REPORT = "report.html"
# Everything a search writes into its folder; --force removes these and nothing else.
OWNED_FILES = (STATE, SUMMARY, STEPS_JSON, STEPS_CSV, PRUNE_CSV, *PLOTS, REPORT)


@dataclass
class WarmStart:
    """A warm restart: the carried weights already trained ``offset`` epochs; the previous
    step removed the blocks ``remove`` (indices in its forward order)."""

    offset: int
    remove: list[int]


@dataclass
class StepOutcome:
    """What one step produced: its row of steps.csv and its decision (None: no conflict, or
    the step diverged; the search ends)."""

    row: dict
    decision: dict | None = None


@dataclass
class SearchState:
    """The resumable state (autotune_state.json): the config it was started with, the start
    and current architecture, the finished steps' rows."""

    config: dict
    start_arch: dict
    arch: dict
    steps: list[dict] = field(default_factory=list)
    warm: WarmStart | None = None
    done: bool = False
    wall_time: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SearchState:
        warm = d.get("warm")
        return cls(
            config=d["config"],
            start_arch=d["start_arch"],
            arch=d["arch"],
            steps=list(d.get("steps", [])),
            warm=None if warm is None else WarmStart(int(warm["offset"]), list(warm["remove"])),
            done=bool(d.get("done", False)),
            wall_time=float(d.get("wall_time", 0.0)),
        )


def arch_blocks(arch: dict) -> list[int] | int:
    """The depth as the model family states it: blocks per stage (plain/resnet) or depth."""
    return arch["blocks"] if "blocks" in arch else arch.get("depth")


def num_blocks(arch: dict) -> int:
    return sum(arch["blocks"]) if "blocks" in arch else int(arch.get("depth", 0))


def shrink_arch(arch: dict, remove: list[int]) -> dict:
    """The architecture without the blocks ``remove`` (built on the model family's rules)."""
    from ..models import create_model

    return create_model(**arch).without_blocks(remove, carry_weights=False).arch()


def advance(
    st: SearchState,
    outcome: StepOutcome,
    restart: str,
    shrink: Callable[[dict, list[int]], dict] = shrink_arch,
) -> SearchState:
    """The next state after a step: done when it removed nothing; else the smaller
    architecture, and for ``restart="warm"`` the epochs its surviving weights carry."""
    steps = [*st.steps, outcome.row]
    d = outcome.decision
    if d is None:
        return replace(st, steps=steps, done=True, warm=None)
    arch = shrink(st.arch, list(d["remove"]))
    if num_blocks(arch) >= num_blocks(st.arch):  # depth only shrinks: the search ends
        raise RuntimeError(f"removing {d['remove']} did not shrink {arch_blocks(st.arch)}.")
    offset = st.warm.offset if st.warm else 0
    warm = WarmStart(offset + int(d["epoch"]), list(d["remove"])) if restart == "warm" else None
    return replace(st, steps=steps, arch=arch, warm=warm)


class SearchDir:
    """The files of one search folder, in one place."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.state_path = self.out / STATE

    def step(self, k: int) -> Path:
        return self.out / STEPS_DIR / f"step_{k:03d}"

    def started(self) -> bool:
        """Whether any step has trained (written a checkpoint)."""
        return (self.step(0) / runs.CHECKPOINTS).exists()

    def load(self) -> SearchState:
        """The stored state; RunDirError naming autotune_state.json when it is damaged."""
        d = runs.read_json(self.state_path)
        try:
            return SearchState.from_dict(d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise runs.RunDirError(
                f"{self.state_path} is damaged ({type(e).__name__}: {e}); it is not the state "
                "of an auto-tune of this program: start the search again with --force."
            ) from None

    def save(self, st: SearchState) -> None:
        runs.write_json(self.state_path, st.to_dict())

    def owned_files(self) -> list[Path]:
        """The files and folders of a search that exist in the folder."""
        names = (STEPS_DIR, *OWNED_FILES)
        return [self.out / n for n in names if (self.out / n).exists()]

    def clear(self) -> None:
        """Delete what a search wrote (steps/ and OWNED_FILES); the user's own files stay."""
        steps = self.out / STEPS_DIR
        if steps.is_dir():
            shutil.rmtree(steps)
        for name in OWNED_FILES:
            (self.out / name).unlink(missing_ok=True)


def final_run_dir(path: str | Path) -> Path:
    """The run directory a command should read for ``path``: for an auto-tune folder its final
    step's run directory (steps/step_NNN), for anything else ``path`` itself. An unfinished
    search is a RunDirError that says what to do."""
    p = Path(path)
    store = SearchDir(p)
    if runs.is_run_dir(p) or not store.state_path.is_file():
        return p
    st = store.load()
    if not st.done or not st.steps:
        raise runs.RunDirError(
            f"{p} holds an auto-tune that has not finished ({len(st.steps)} steps done): "
            "continue it with `cbundles autotune ... --resume`, or pass one step's run "
            f"directory, e.g. {store.step(0)}."
        )
    return store.step(len(st.steps) - 1)
