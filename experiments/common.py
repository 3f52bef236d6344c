"""Shared helpers of the experiment scripts: output folder, CSV, plotting style, progress, timing.

Every script in :mod:`experiments` exposes ``main(quick=False, *, out_dir=None,
tiny=False, progress=True)`` and writes a CSV and a PNG into ``out_dir``.  From
the command line, full runs write to ``paper_figures/`` at the repository root
and ``--quick`` runs to the scratch folder ``paper_figures/quick/`` (ignored by
git), so that a quick run never overwrites the committed full-run figures;
``--out-dir DIR`` or ``--overwrite`` choose otherwise.  ``tiny`` shrinks the
grids further for the end-to-end test.

Figures use matplotlib's non-interactive Agg backend and one style: every
method, index code and beta has a fixed colour and marker
(:func:`series_style`, :func:`beta_style`, :func:`value_style`), whatever order a script plots them
in; log axes get plain tick labels (``2``, ``50``, ``10^6``); legends sit
outside the data (:func:`legend_right`, :func:`legend_below`).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere: no display needed

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

__all__ = [
    "FIGURE_DIR",
    "SCRATCH_DIR",
    "default_output_dir",
    "output_dir",
    "record_times",
    "series_style",
    "beta_style",
    "BETA_RANGE",
    "value_style",
    "legend_right",
    "write_csv",
    "read_csv",
    "save_figure",
    "new_figure",
    "progress_bar",
    "train_adam",
    "Stopwatch",
    "gaussian_channel",
    "zipf_index_code",
    "run_script",
    "legend_below",
    "plt",
]

#: Default output folder: ``paper_figures/`` next to the ``experiments`` package.
FIGURE_DIR = Path(__file__).resolve().parent.parent / "paper_figures"
#: Where quick and tiny runs write unless told otherwise (ignored by git).
SCRATCH_DIR = FIGURE_DIR / "quick"

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


def default_output_dir(quick=False, tiny=False, overwrite=False):
    """Where a command-line run writes: :data:`FIGURE_DIR` for full runs (or with
    ``overwrite``), :data:`SCRATCH_DIR` for quick and tiny ones."""
    return FIGURE_DIR if overwrite or not (quick or tiny) else SCRATCH_DIR


def output_dir(out_dir=None):
    """The folder to write into (created if needed); ``None`` means :data:`FIGURE_DIR`."""
    path = FIGURE_DIR if out_dir is None else Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_times(path, rows, scripts):
    """Merge run times into the CSV at ``path``.

    ``rows`` are dicts with ``script``, ``mode``, ``seconds`` and ``status``; they
    replace earlier rows of the same script and mode.  One summary row per mode
    follows: ``total`` when every script in ``scripts`` has a time for that
    mode, otherwise ``partial total`` with the scripts it leaves out, so that a
    sum over some scripts is never labelled as the time of all of them.  Only
    the scripts in ``scripts`` are summed: the times of others (scripts that
    ``run_all`` does not run, recorded by their own command line) stay in the
    table and are named in the summary's ``not_summed`` column.
    """
    path = Path(path)
    previous = read_csv(path) if path.exists() else []
    fresh = {(r["script"], r["mode"]) for r in rows}
    summary_names = ("total", "partial total")
    kept = [r for r in previous
            if r.get("script") not in summary_names and (r.get("script"), r.get("mode")) not in fresh]
    merged = [{k: v for k, v in r.items() if k in ("script", "mode", "seconds", "status")} for r in kept + rows]
    order = {name: i for i, name in enumerate(scripts)}
    merged.sort(key=lambda r: (r["mode"], order.get(r["script"], len(order))))
    for mode in dict.fromkeys(r["mode"] for r in merged):
        recorded = {r["script"]: float(r["seconds"]) for r in merged
                    if r["mode"] == mode and r["seconds"] not in ("", None)}
        timed = {name: seconds for name, seconds in recorded.items() if name in order}
        missing = [name for name in scripts if name not in timed]
        merged.append({
            "script": "partial total" if missing else "total", "mode": mode,
            "seconds": round(sum(timed.values()), 2), "status": "ok",
            "scripts_summed": len(timed), "scripts_left_out": " ".join(missing),
            "not_summed": " ".join(name for name in recorded if name not in order),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
        })
    write_csv(path, merged)
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
    for ax in fig.axes:
        readable_log_ticks(ax)
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


def legend_right(ax, **kwargs):
    """The legend of ``ax`` to the right of its axes, outside the data."""
    options = dict(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=8)
    options.update(kwargs)
    return ax.legend(**options)


#: Fixed (colour, marker) of every method, index code and reference curve the
#: figures show, so that a series looks the same in every figure and every run.
SERIES_STYLES = {
    "hybrid": ("#1f77b4", "o"),
    "hybrid, width from std": ("#1f77b4", "o"),
    "hybrid, adaptive width": ("#17becf", "D"),
    "hybrid (exact)": ("#1f77b4", "o"),
    "pfr": ("#ff7f0e", "s"),
    "orc": ("#2ca02c", "^"),
    "mrc": ("#d62728", "v"),
    "zipf": ("#9467bd", "o"),
    "zipf_fitted": ("#8c564b", "s"),
    "empirical": ("#e377c2", "^"),
    "empirical_given_k": ("#7f7f7f", "v"),
    # The coding layouts of the VAE experiment: black, greys and red, which the
    # viridis colours of beta (beta_style) beside them never take.
    "per_dimension": ("#d62728", "^"),
    "blocks": ("#000000", "s"),
    "blocks_prior_factors": ("#8c8c8c", "x"),
    "kl": ("#595959", "o"),
    # The three latent channels of the learned-compression experiment.
    "rcc": ("#1f77b4", "o"),
    "uq": ("#ff7f0e", "s"),
    "hard": ("#2ca02c", "^"),
}
_FALLBACK_COLOURS = ("#bcbd22", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#9467bd")
_FALLBACK_MARKERS = ("P", "X", "*", "h", "<", ">")


def _style_key(name):
    key = str(name).strip().lower()
    return SERIES_STYLES.get(key) or SERIES_STYLES.get(key.split(" (")[0].strip())


def series_style(name):
    """``dict(color=..., marker=...)`` of a method or code by its label.

    Known labels (``"hybrid"``, ``"PFR"``, ``"ORC (default budget)"``,
    ``"zipf"``, ...) have fixed entries in :data:`SERIES_STYLES`; any other
    label gets a colour and marker from a hash of its text, which is the same
    in every run (not the plotting order).
    """
    style = _style_key(name)
    if style is None:
        digest = sum((i + 1) * ord(c) for i, c in enumerate(str(name)))
        style = (_FALLBACK_COLOURS[digest % len(_FALLBACK_COLOURS)], _FALLBACK_MARKERS[digest % len(_FALLBACK_MARKERS)])
    return {"color": style[0], "marker": style[1]}


_BETA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")


def value_style(value, low, high):
    """``dict(color=..., marker=...)`` of a positive parameter value, fixed by the value itself.

    The colour is a position on the viridis map by ``log10(value)`` between
    ``low`` and ``high`` (so colours order the values), and the marker follows
    the half-decade of the value; neither depends on which other values a
    figure shows or in which order.
    """
    value = float(value)
    if not value > 0:
        raise ValueError(f"value must be > 0, got {value}")
    position = (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low))
    colour = matplotlib.colormaps["viridis"](min(max(position, 0.0), 1.0) * 0.9)
    marker = _BETA_MARKERS[int(round(2 * math.log10(value))) % len(_BETA_MARKERS)]
    return {"color": colour, "marker": marker}


#: The betas that span the viridis map in :func:`beta_style` (smaller and larger ones take its ends).
BETA_RANGE = (0.05, 5.0)


def beta_style(beta):
    """``dict(color=..., marker=...)`` of a rate weight ``beta``, fixed by its value.

    The colour is sequential (viridis by ``log10(beta)`` over :data:`BETA_RANGE`,
    so that colours order the betas and stay clear of the categorical colours
    of the methods and layouts plotted beside them), and the marker follows the
    half-decade: ``beta = 0.03, 0.1, 0.3, 1, ...`` each keep their own colour
    and marker in every figure and run, whichever other betas a figure shows.
    """
    beta = float(beta)
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return value_style(beta, *BETA_RANGE)


def _plain_number(value, _position=None):
    """Tick label of a log axis: ``0.5``, ``2``, ``300``; powers of ten beyond that as ``10^k``."""
    if not value > 0 or not math.isfinite(value):
        return ""
    if 1e-3 <= value < 1e5:
        return f"{value:g}"
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = value / 10.0**exponent
    if abs(mantissa - 1.0) < 1e-6:
        return f"$10^{{{exponent}}}$"
    return f"${mantissa:g}\\cdot 10^{{{exponent}}}$"


def readable_log_ticks(ax):
    """Plain tick labels on the log axes of ``ax``; minor ticks labelled only on short axes."""
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale != "log":
            continue
        low, high = sorted(axis.get_view_interval())
        decades = math.log10(high / low) if low > 0 and high > 0 else math.inf
        axis.set_major_formatter(ticker.FuncFormatter(_plain_number))
        axis.set_minor_formatter(ticker.FuncFormatter(_plain_number) if decades < 1.2 else ticker.NullFormatter())


def progress_bar(iterable=None, *, enabled=True, **kwargs):
    """A tqdm progress bar (on stderr); ``enabled=False`` or ``RCC_NO_PROGRESS=1`` silences it."""
    disable = (not enabled) or os.environ.get("RCC_NO_PROGRESS", "") not in ("", "0")
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)


def train_adam(model, images, loss_terms, steps, *, seed, progress=True, desc="train", batch_size=64,
               learning_rate=1e-3, before_step=None, postfix_every=250):
    """Adam on minibatches of ``images`` for ``steps`` steps; deterministic given ``seed``.

    The one training loop of the autoencoder experiments: each epoch visits the
    images in an order drawn from a ``torch.Generator`` seeded with ``seed``
    (whole batches only), and each step minimises ``loss_terms(x)``.

    Parameters
    ----------
    model : torch.nn.Module
        Its parameters are optimised; it is left in eval mode.
    images : numpy.ndarray
        Training images, ``(items, features)``.
    loss_terms : callable
        ``loss_terms(x) -> (loss, rate)``: the batch's loss (a scalar tensor) and its
        rate per image in bits (shown on the progress bar).
    steps : int
        Number of optimiser steps.
    seed : int
        Seed of the batch order.
    before_step : callable, optional
        Called as ``before_step(step)`` before each step (e.g. an annealing schedule).

    Returns
    -------
    torch.nn.Module
        ``model``.
    """
    import torch

    data = torch.from_numpy(images)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    bar = progress_bar(total=steps, enabled=progress, desc=desc, leave=False)
    step = 0
    while step < steps:
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data) - batch_size + 1, batch_size):
            if before_step is not None:
                before_step(step)
            loss, rate = loss_terms(data[order[start:start + batch_size]])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            bar.update(1)
            if step % postfix_every == 0:
                bar.set_postfix(loss=f"{loss.item():.1f}", rate=f"{rate.mean().item():.1f}")
            if step == steps:
                break
    bar.close()
    model.eval()
    return model


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
    """Li & El Gamal's Zipf index code for ``D = index_bits`` bits carried by the index (clipped at 0)."""
    from rcc import entropy

    return entropy.ZipfIndexCode(max(0.0, float(index_bits)))


def add_output_arguments(parser):
    """``--quick``, ``--out-dir``, ``--overwrite`` and ``--no-progress``, shared by every command line."""
    parser.add_argument("--quick", action="store_true", help="small grids (minutes on 2 cores)")
    parser.add_argument("--out-dir", default=None,
                        help=f"output folder (default: {FIGURE_DIR} for full runs, {SCRATCH_DIR} for --quick)")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"let a --quick run write into {FIGURE_DIR}, replacing the full-run files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def chosen_output_dir(args):
    """The folder a command line asked for (see :func:`default_output_dir`)."""
    if args.out_dir is not None:
        return Path(args.out_dir)
    return default_output_dir(args.quick, overwrite=args.overwrite)


def run_script(main, description):
    """Command-line entry of one script: ``--quick``, ``--out-dir``, ``--overwrite``, ``--no-progress``.

    Prints the summary, the folder written and the wall time, and records the
    time in that folder's ``run_all_times.csv``.
    """
    args = add_output_arguments(argparse.ArgumentParser(description=description)).parse_args()
    out = output_dir(chosen_output_dir(args))
    with Stopwatch() as watch:
        summary = main(quick=args.quick, out_dir=out, progress=not args.no_progress)
    for key, value in (summary or {}).items():
        print(f"{key}: {value}")
    from .run_all import SCRIPTS  # the list of scripts lives with the command that runs them all

    spec = main.__globals__.get("__spec__")  # under ``python -m`` the module is called __main__
    name = (spec.name if spec is not None else main.__module__).rsplit(".", 1)[-1]
    record_times(out / "run_all_times.csv",
                 [{"script": name, "mode": "quick" if args.quick else "full", "seconds": round(watch.seconds, 2),
                   "status": "ok"}], SCRIPTS)
    print(f"wrote {out}")
    print(f"wall time: {watch.seconds:.1f} s")
    return summary
