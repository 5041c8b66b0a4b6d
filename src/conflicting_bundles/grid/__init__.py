"""The width x depth map of FNNs (docs/method.md §7): train every net of a grid, record its test
accuracy and where it forms conflicting bundles, draw the map.

    cfg = GridConfig(widths=(5, 10, 25), depths=(1, 5, 20), dataset="mnist", epochs=3,
                     out="runs/grid")
    result = run_grid(cfg)          # trains the cells not yet done, in parallel processes

Each cell is a normal training run directory ``out/cells/w<width>-d<depth>`` (train.py), plus
measure.csv (``train.measure_run``: every hidden layer of the final model, with the margin).
A cell with summary.json for the same number of epochs is done and never retrained; a cell with
a checkpoint but no summary (interrupted) resumes with ``train(resume=True)``; anything else
starts over. Cells run in ``workers`` processes with one torch thread each, largest nets first.

Outputs in ``out``: grid.csv (one row per cell; accuracies as fractions, ``*_acc``),
grid_summary.json, grid.png (heat map of test accuracy with the conflict boundary drawn over it),
report.html; grid.json holds the settings every cell shares (a rerun with others is refused).
The cells run in the shared local pool (pool.run_pool; workers die with the parent),
and the sweep's grid-cell kind runs the same cells (cells.py).
"""

from .cells import (
    GridConfig,
    GridResult,
    cell_config,
    cell_dir,
    cell_finished,
    cell_row,
    finish_cell,
    parse_ints,
    train_or_resume,
)
from .plot import boundary_segments, plot_grid, print_grid
from .run import run_grid, summarize_grid

__all__ = [
    "GridConfig",
    "GridResult",
    "boundary_segments",
    "cell_config",
    "cell_dir",
    "cell_finished",
    "cell_row",
    "finish_cell",
    "parse_ints",
    "plot_grid",
    "print_grid",
    "run_grid",
    "summarize_grid",
    "train_or_resume",
]
