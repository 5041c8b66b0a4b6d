"""Plain progress lines of a lesion study, as train's per-epoch lines: piped (no bar), one line
per evaluated lesion set, and inside a long evaluation at least one every ``INTERVAL`` seconds;
on a terminal (bars drawn, console.progress_enabled) one line every ``INTERVAL`` seconds above
the bars. Nothing when the study runs with progress=False (``cbundles lesion -q``).

    lesion 3/12 sets  elapsed 31 s  eta 93 s

Every line starts with ``lesion `` (``grep '^lesion '`` finds them); ``total`` counts the
distinct lesion sets the study still has to evaluate (the intact model and the single blocks
included; sets in lesion_cache.json are not counted), the eta is the mean time of one
evaluation so far times the sets left.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..console import progress_enabled
from ..report import duration

INTERVAL = 10.0  # seconds of work between two lines, at most (in a long evaluation)


class StudyProgress:
    """Counts evaluated lesion sets and prints the lines (see the module docstring)."""

    def __init__(
        self,
        enabled: bool,
        interval: float = INTERVAL,
        clock: Callable[[], float] | None = None,
    ):
        self.enabled, self.interval = enabled, interval
        self.clock = clock or time.monotonic  # seconds; a test passes its own
        self.bars = enabled and progress_enabled()
        self.t0 = self.last = self.clock()
        self.done = self.total = 0
        self.eval_s = 0.0  # time spent in finished evaluations
        self._start: float | None = None  # of the evaluation under way

    def say(self, text: str) -> None:
        """One plain line (above any bar), unless progress is off."""
        if not self.enabled:
            return
        if self.bars:
            from tqdm import tqdm

            tqdm.write(text)
        else:
            print(text, flush=True)
        self.last = self.clock()

    def begin(self) -> None:
        """An evaluation (a cache miss) starts."""
        self._start = self.clock()

    def end(self) -> None:
        """The evaluation finished: a line piped, or when ``interval`` has passed."""
        now = self.clock()
        self.eval_s += now - (self._start if self._start is not None else now)
        self._start = None
        self.done += 1
        if not self.bars or now - self.last >= self.interval:
            self.say(self.line())

    def batch(self, seen: int, n: int) -> None:
        """Inside an evaluation (``seen`` of ``n`` test samples scored): a line when
        ``interval`` seconds passed since the last one."""
        if self.enabled and self.clock() - self.last >= self.interval:
            self.say(self.line(seen / max(1, n)))

    def finish(self) -> None:
        """The closing line: how many sets were evaluated, in how long."""
        self.say(
            f"lesion {self.done}/{self.total} sets evaluated in {duration(self.clock() - self.t0)}"
        )

    def line(self, part: float = 0.0) -> str:
        """'lesion 3/12 sets  elapsed 31 s  eta 93 s' (part: share of the current set done)."""
        now = self.clock()
        text = f"lesion {self.done}/{self.total} sets"
        if part:
            text += f" (set {self.done + 1}: {100 * part:.0f}% of the test set)"
        per = None
        if self.done:
            per = self.eval_s / self.done
        elif part and self._start is not None:
            per = (now - self._start) / part
        left = max(0.0, self.total - self.done - part)
        eta = duration(per * left) if per is not None else "n/a"
        return f"{text}  elapsed {duration(now - self.t0)}  eta {eta}"
