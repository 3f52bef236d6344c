"""Shared helpers of the experiment scripts: output folder, CSV, plotting style, progress, timing.

Every script in :mod:`experiments` exposes ``main(quick=False, *, out_dir=None,
tiny=False, progress=True)`` and writes a CSV and a PNG into ``out_dir``
(default ``paper_figures/`` at the repository root).  ``quick`` is the mode
that regenerates everything in minutes; ``tiny`` shrinks the grids further for
the end-to-end test.  Figures use matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

__all__ = [
    "FIGURE_DIR",
    "output_dir",
    "write_csv",
    "read_csv",
    "save_figure",
    "new_figure",
    "progress_bar",
    "Stopwatch",
    "gaussian_channel",
    "zipf_index_code",
    "run_script",
    "legend_below",
    "plt",
]

#: Default output folder: ``paper_figures/`` next to the ``experiments`` package.
FIGURE_DIR = Path(__file__).resolve().parent.parent / "paper_figures"

_STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def output_dir(out_dir=None):
    """The folder to write into (created if needed); ``None`` means :data:`FIGURE_DIR`."""
    path = FIGURE_DIR if out_dir is None else Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _format(value):
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return repr(value) if value == 0 or 1e-4 <= abs(value) < 1e12 else f"{value:.6e}"
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


def write_csv(path, rows):
    """Write a list of dicts as CSV (columns in first-seen order); returns the path."""
    path = Path(path)
    columns = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_format(row.get(key, "")) for key in columns])
    return path


def read_csv(path):
    """Read a CSV written by :func:`write_csv` into a list of dicts of strings."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def new_figure(ncols=1, nrows=1, width=4.2, height=3.4, **kwargs):
    """A figure with the experiments' style; returns ``(fig, axes)``."""
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kwargs)
    return fig, axes


def save_figure(fig, path):
    """Save ``fig`` as PNG at ``path`` (suffix forced to .png) and close it; returns the path."""
    path = Path(path).with_suffix(".png")
    with plt.rc_context(_STYLE):
        fig.tight_layout()
        fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def legend_below(fig, axes, ncol=4):
    """One legend for the whole figure, below the panels (entries gathered from ``axes``, no duplicates)."""
    handles, labels = [], []
    for ax in np.atleast_1d(axes).ravel():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False,
               fontsize=8)


def progress_bar(iterable=None, *, enabled=True, **kwargs):
    """A tqdm progress bar (on stderr); ``enabled=False`` or ``RCC_NO_PROGRESS=1`` silences it."""
    disable = (not enabled) or os.environ.get("RCC_NO_PROGRESS", "") not in ("", "0")
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)


class Stopwatch:
    """Wall-clock timer (``time.perf_counter``) usable as a context manager: ``with Stopwatch() as t``."""

    def __enter__(self):
        self.start = time.perf_counter()
        self.seconds = math.nan
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def gaussian_channel(info_bits, count, rng):
    """Means and std of the Gaussian channel with ``I = info_bits`` bits (prior N(0, 1)).

    Target ``N(mu, s**2)`` with ``s = 2**-I`` and ``mu ~ N(0, 1 - s**2)``, so the
    samples' marginal is the prior and ``I(X; Z) = -log2 s``.

    Returns
    -------
    (ndarray, float)
    """
    std = 2.0 ** -float(info_bits)
    mean = np.random.default_rng(rng).normal(0.0, math.sqrt(1.0 - std * std), size=int(count))
    return mean, std


def zipf_index_code(index_bits):
    """The message-coding issue's Zipf index code for ``D = index_bits`` (clipped at 0)."""
    from rcc import entropy

    return entropy.ZipfIndexCode(max(0.0, float(index_bits)))


def run_script(main, description):
    """Command-line entry: ``--quick``, ``--out-dir``, ``--no-progress``; prints the wall time."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small grids (minutes on 2 cores)")
    parser.add_argument("--out-dir", default=None, help=f"output folder (default {FIGURE_DIR})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    with Stopwatch() as watch:
        summary = main(quick=args.quick, out_dir=args.out_dir, progress=not args.no_progress)
    for key, value in (summary or {}).items():
        print(f"{key}: {value}")
    print(f"wall time: {watch.seconds:.1f} s")
    return summary
