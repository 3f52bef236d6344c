"""Measured bits of real bitstreams against the information I (docs/message_coding.rst, docs/blocks.rst).

Gaussian channel: prior N(0, 1), target N(mu, s^2) with s = 2^-I and
mu ~ N(0, 1 - s^2), so I(X; Z) = I bits.  Every target is hybrid coded with
the std-based width ``M = rcc.gaussian_width(s)`` (which the receiver can
recompute), the messages are written to bytes with
:func:`rcc.entropy.encode_messages`, decoded back and checked, and we report
the mean KL, the ideal information content of index and factor, and the
measured bits ``8 * len(bytes) / count`` (header included) for these index codes.

With the defaults (the coding transform N(0, 8^2), factors coded under the
prior's marginal):

* ``zipf``: Li & El Gamal's Zipf code with the KL the index carries on
  average, ``D = I - log2 M + D[prior || transform]``
  (:func:`rcc.entropy.index_kl_bits_gaussian_channel`; known to the receiver:
  no training);
* ``zipf_fitted``: a Zipf law with the maximum-likelihood exponent;
* ``empirical``: the histogram + power-law-tail code.

With the transform through the prior itself (``transform="prior"``, uniform
factors), for comparison:

* ``zipf, transform = prior`` and ``empirical, transform = prior``: as above;
* ``empirical_given_K, transform = prior``: the factor coded first, then the
  index with an empirical code per bin of the position K points to (only for
  widths with ``1/M <= 1/16``; smaller widths fall back to ``empirical``).

Fitted codes are fitted on targets and seeds disjoint from those they are
evaluated on.  The second part codes d-dimensional product targets with one
index per block (d = 1, 2, 4) and reports bits per dimension.

Writes ``bits_vs_kl.csv``/``.png`` and ``bits_blocks.csv``/``.png``.
Run ``python -m experiments.bits_vs_kl [--quick]``.
"""

from __future__ import annotations

import math
import time

import numpy as np

import rcc
from rcc import entropy

from .common import (
    legend_below,
    legend_right,
    new_figure,
    output_dir,
    progress_bar,
    run_script,
    save_figure,
    series_style,
    write_csv,
)

__all__ = ["CODES", "grid", "sweep", "blocks", "throughput", "plot_sweep", "plot_blocks", "main"]

CODES = ("zipf", "zipf_fitted", "empirical", "zipf, transform = prior", "empirical, transform = prior",
         "empirical_given_K, transform = prior")
_TRAIN_SEED = 90_001
_EVAL_SEED = 7
_MAX_CANDIDATES = 2**32


def grid(quick=False, tiny=False):
    """Grids of the sweep and of the block experiment."""
    if tiny:
        return dict(info_bits=[1.0, 8.0], count=500, block_info_bits=[1.0], block_sizes=(1, 2), block_count=300,
                    throughput_count=10_000)
    if quick:
        return dict(info_bits=[1.0, 2.0, 4.0, 8.0, 12.0, 16.0], count=5_000, block_info_bits=[0.5, 2.0, 8.0],
                    block_sizes=(1, 2, 4), block_count=3_000, throughput_count=200_000)
    return dict(info_bits=[float(i) for i in range(1, 17)] + [20.0, 24.0], count=20_000,
                block_info_bits=[0.25, 0.5, 1.0, 2.0, 4.0, 8.0], block_sizes=(1, 2, 4), block_count=20_000,
                throughput_count=1_000_000)


def _encode(info_bits, count, seed, rng, block_size=1, transform=None):
    targets = entropy.gaussian_channel_targets(info_bits, count, rng=rng, block_size=block_size)
    return rcc.encode_sample(targets, seed, max_candidates=_MAX_CANDIDATES, transform=transform)


def _codes(train, info_bits, block_size=1, transform=None):
    """Index codes (name -> code) for messages coded with ``transform``, and the width."""
    width = int(rcc.gaussian_width(2.0**-info_bits, transform=transform))
    zipf = entropy.ZipfIndexCode(block_size * entropy.index_kl_bits_gaussian_channel(info_bits,
                                                                                      transform=transform))
    if transform == "prior":
        codes = {"zipf, transform = prior": zipf,
                 "empirical, transform = prior": entropy.EmpiricalIndexCode.fit(train.index)}
        if block_size == 1:
            codes["empirical_given_K, transform = prior"] = entropy.ConditionedIndexCode.fit(
                train.index, train.factor, train.width, num_bins=8)
        return codes, width
    codes = {
        "zipf": zipf,
        "zipf_fitted": entropy.ZipfIndexCode.fit(train.index),
        "empirical": entropy.EmpiricalIndexCode.fit(train.index),
    }
    return codes, width


def _row(report, **fields):
    return {
        **fields,
        "count": report.count,
        "mean_kl_bits": report.mean_kl_bits,
        "mean_index_bits": report.mean_index_bits,
        "mean_factor_bits": report.mean_factor_bits,
        "mean_ideal_bits": report.mean_ideal_bits,
        "mean_measured_bits": report.mean_measured_bits,
        "mean_payload_bits": report.mean_payload_bits,
        "messages_per_second": report.messages_per_second,
    }


def sweep(info_bits, count, progress=True):
    """Rows of ``bits_vs_kl.csv``: one per (I, code)."""
    rows = []
    for point, info in enumerate(progress_bar(info_bits, enabled=progress, desc="bits vs KL", unit="I")):
        for transform in (None, "prior"):
            train = _encode(info, count, _TRAIN_SEED + point, rng=(1, point), transform=transform)
            enc = _encode(info, count, _EVAL_SEED, rng=(2, point), transform=transform)
            codes, width = _codes(train, info, transform=transform)
            for name, code in codes.items():
                report = entropy.measure_bits(enc, _EVAL_SEED, index_code=code, info_bits=info,
                                              transform=transform)
                rows.append(_row(report, info_bits=info, width=width, code=name,
                                 transform="prior" if transform == "prior" else "default",
                                 mean_candidates=float(np.mean(enc.candidates)),
                                 max_candidates=int(np.max(enc.candidates)),
                                 overhead_bits=report.overhead_bits,
                                 measured_minus_kl_bits=report.mean_measured_bits - report.mean_kl_bits,
                                 li_el_gamal_bound=info + math.log2(info + 1.0) + 4.0))
    return rows


def blocks(info_bits, block_sizes, count, progress=True):
    """Rows of ``bits_blocks.csv``: one per (I per dimension, d, code)."""
    rows = []
    points = [(i, d) for i in info_bits for d in block_sizes]
    for point, (info, d) in enumerate(progress_bar(points, enabled=progress, desc="blocks", unit="point")):
        for transform in (None, "prior"):
            train = _encode(info, count, _TRAIN_SEED + 1000 + point, rng=(3, point), block_size=d,
                            transform=transform)
            enc = _encode(info, count, _EVAL_SEED, rng=(4, point), block_size=d, transform=transform)
            codes, width = _codes(train, info, block_size=d, transform=transform)
            names = ("zipf, transform = prior", "empirical, transform = prior") if transform else ("zipf", "empirical")
            for name in names:
                report = entropy.measure_bits(enc, _EVAL_SEED, index_code=codes[name], info_bits=info,
                                              block_size=d, transform=transform)
                rows.append(_row(report, info_bits_per_dim=info, block_size=d, width=width, code=name,
                                 transform="prior" if transform else "default",
                                 mean_candidates=float(np.mean(enc.candidates)),
                                 measured_bits_per_dim=report.measured_bits_per_dim,
                                 overhead_bits_per_dim=report.overhead_bits_per_dim))
    return rows


def throughput(count, info_bits=8.0):
    """Messages per second of :func:`encode_messages` and :func:`decode_messages` on one large batch."""
    enc = _encode(info_bits, count, _EVAL_SEED, rng=(5, 0))
    train = _encode(info_bits, 20_000, _TRAIN_SEED, rng=(6, 0))
    out = {}
    zipf = entropy.ZipfIndexCode(entropy.index_kl_bits_gaussian_channel(info_bits))
    for name, code in (("zipf", zipf), ("empirical", entropy.EmpiricalIndexCode.fit(train.index))):
        start = time.perf_counter()
        data = entropy.encode_messages(enc, _EVAL_SEED, index_code=code)
        middle = time.perf_counter()
        index, factor = entropy.decode_messages(data, count, _EVAL_SEED, index_code=code, width=enc.width)
        stop = time.perf_counter()
        if not (np.array_equal(index, enc.index) and np.array_equal(factor, enc.factor)):
            raise RuntimeError("throughput run: decoded messages differ")
        out[name] = (count / (middle - start), count / (stop - middle))
    return out


def plot_sweep(rows, path):
    """Measured bits and overhead against I."""
    fig, (left, right) = new_figure(ncols=2, width=4.6)
    info = sorted({r["info_bits"] for r in rows})
    grid_i = np.linspace(min(info), max(info), 200)
    left.plot(grid_i, grid_i, color="black", lw=1, label="I")
    left.plot(grid_i, grid_i + np.log2(grid_i + 1) + 4, color="grey", ls="--", lw=1,
              label="I + log2(I + 1) + 4 (Li & El Gamal)")
    for name in CODES:
        sel = [r for r in rows if r["code"] == name]
        if not sel:
            continue
        x = [r["info_bits"] for r in sel]
        # The transform through the prior (as in Theis & Yosri 2022) is dotted beside the default.
        style = dict(series_style(name), ls=":" if "transform = prior" in name else "-", ms=3, lw=1)
        left.plot(x, [r["mean_measured_bits"] for r in sel], label=f"measured, {name}", **style)
        right.plot(x, [r["mean_measured_bits"] - r["info_bits"] for r in sel], **style)
    left.set_xlabel("mutual information I (bits)")
    left.set_ylabel("bits per sample (measured bytes)")
    right.set_xlabel("mutual information I (bits)")
    right.set_ylabel("measured bits - I (bits per sample)")
    right.set_ylim(0.0, 3.5)  # the Li-El Gamal excess log2(I + 1) + 4 is 5 to 8 bits: off this scale
    legend_below(fig, (left, right), ncol=3)
    gap = max(r["mean_measured_bits"] - r["mean_ideal_bits"] for r in rows)
    right.set_title(f"measured - ideal content <= {gap:.3f} bits per sample")
    return save_figure(fig, path)


def plot_blocks(rows, path):
    """Overhead per dimension against I per dimension, one line per block size."""
    fig, axes = new_figure(ncols=1, width=6.4, height=3.8)
    block_colours = {1: "#1f77b4", 2: "#ff7f0e", 4: "#2ca02c", 8: "#d62728", 16: "#9467bd"}  # fixed per d
    for d in sorted({r["block_size"] for r in rows}):
        for name, line in (("empirical", "-"), ("zipf", "--"), ("empirical, transform = prior", ":")):
            sel = [r for r in rows if r["block_size"] == d and r["code"] == name]
            axes.plot([r["info_bits_per_dim"] for r in sel], [r["overhead_bits_per_dim"] for r in sel], ls=line,
                      marker=series_style(name)["marker"], color=block_colours.get(d, "#7f7f7f"), ms=3, lw=1,
                      label=f"d = {d}, {name}")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("I per dimension (bits)")
    axes.set_ylabel("measured bits / dim - I / dim\n(bits per dimension)")
    axes.set_ylim(bottom=0.0)
    axes.set_title("Gaussian channel, one index per block of d dimensions")
    legend_right(axes)
    return save_figure(fig, path)


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Run both parts, write the CSVs and figures, and return a summary dict."""
    settings = grid(quick=quick, tiny=tiny)
    folder = output_dir(out_dir)
    rows = sweep(settings["info_bits"], settings["count"], progress=progress)
    write_csv(folder / "bits_vs_kl.csv", rows)
    plot_sweep(rows, folder / "bits_vs_kl.png")
    block_rows = blocks(settings["block_info_bits"], settings["block_sizes"], settings["block_count"],
                        progress=progress)
    write_csv(folder / "bits_blocks.csv", block_rows)
    plot_blocks(block_rows, folder / "bits_blocks.png")
    speed = {f"{name}, M = 2**{math.log2(width):.0f}": rates
             for info in (8.0, 18.6)
             for width in [int(rcc.gaussian_width(2.0**-info))]
             for name, rates in throughput(settings["throughput_count"], info).items()}
    summary = {}
    for name in CODES:
        sel = [r for r in rows if r["code"] == name]
        worst = max(sel, key=lambda r: r["overhead_bits"])
        summary[f"max measured - I, {name}"] = f"{worst['overhead_bits']:.3f} bits (at I = {worst['info_bits']:g})"
    for d in settings["block_sizes"]:
        sel = [r for r in block_rows if r["block_size"] == d and r["code"] == "empirical"]
        summary[f"blocks d={d}: measured/dim - I/dim (empirical)"] = ", ".join(
            f"I={r['info_bits_per_dim']:g}: {r['overhead_bits_per_dim']:.3f}" for r in sel)
    for name, (enc_rate, dec_rate) in speed.items():
        summary[f"throughput {name} ({settings['throughput_count']} messages)"] = (
            f"encode {enc_rate:,.0f} msg/s, decode {dec_rate:,.0f} msg/s")
    return summary


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
