"""The RCC channel when test posteriors drift from the calibration ones: bits, KL and candidates.

An ``RCCChannel(8)`` is calibrated on posteriors ``N(mu, e**-4)`` with
``mu ~ N(0, 1 - e**-4)`` (aggregate std 1, as a VAE near its optimum), then codes test
posteriors of the same law with latent 0 drifted: its std 1.6 or 2 times wider or
narrower, or its mean 3 aggregate stds out; and every latent's std 1.6 times wider.
For each case, from real bytes (one stream for the batch, and one stream per item):
measured bits per item, KL per item, their difference and its excess over the undrifted
case (in all, and per drifted latent), candidates per item and their ratio to the
undrifted case, and how many item-blocks left the calibrated race.

    python -m experiments.channel_drift [--quick]

Writes ``channel_drift.csv`` and ``channel_drift.png``; :func:`replot` redraws the figure
from the CSV.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import torch

from rcc.torch import RCCChannel

from .common import (legend_below, new_figure, output_dir, progress_bar, read_csv, run_script, save_figure,
                     write_csv)

__all__ = ["DRIFT_CASES", "measure", "draw", "plot", "replot", "main"]

#: (name, factor on the drifted latents' std, their mean or None, whether every latent drifts
#: or latent 0 alone).
DRIFT_CASES = (("as calibrated", 1.0, None, False), ("std x1.6", 1.6, None, False), ("std x2", 2.0, None, False),
               ("std /1.6", 1 / 1.6, None, False), ("std /2", 0.5, None, False),
               ("mean 3 aggregate stds out", 1.0, 3.0, False), ("every latent std x1.6", 1.6, None, True))
_SEED = 0
#: A fixed colour per stream kind.
_STREAM_COLOURS = {"batch": "#1f77b4", "per item": "#ff7f0e"}
_CODING_SEED = 2024


def _posteriors(n, latents, stream):
    std = math.exp(-2.0)
    g = torch.Generator().manual_seed(_SEED + stream)
    mean = math.sqrt(1.0 - std * std) * torch.randn(n, latents, generator=g, dtype=torch.float64)
    return mean, torch.full((n, latents), math.log(std), dtype=torch.float64)


def measure(*, items=500, calibration_items=2000, latents=8, progress=True):
    """One row per drift case and stream kind (see the module docstring)."""
    channel = RCCChannel(latents)
    channel.calibrate(*_posteriors(calibration_items, latents, 1))
    channel.eval()
    rows = []
    jobs = [(case, per_item) for case in DRIFT_CASES for per_item in (False, True)]
    for (name, factor, shift, every), per_item in progress_bar(jobs, enabled=progress, desc="channel drift"):
        mean, log_scale = _posteriors(items, latents, 2)
        drifted = slice(None) if every else slice(0, 1)
        log_scale[:, drifted] += math.log(factor)
        if shift is not None:
            mean[:, drifted] = shift
        data, item_bits, stats = channel.compress(mean, log_scale, _CODING_SEED, return_stats=True,
                                                  per_item=per_item)
        if not torch.equal(channel.decompress(data, _CODING_SEED, mean.shape), stats["latents"]):
            raise RuntimeError("round trip failed")
        kl = float(channel.kl_bits(mean, log_scale).mean())
        bits = stats["measured_bits"] / items
        rows.append({"case": name, "stream": "per item" if per_item else "batch", "latents": latents,
                     "drifted_latents": latents if every else (0 if name == DRIFT_CASES[0][0] else 1),
                     "blocks": channel.num_blocks, "items": items, "bits_per_item": bits,
                     "ideal_bits_per_item": float(item_bits.mean()), "kl_bits": kl, "bits_above_kl": bits - kl,
                     "candidates_per_item": float(stats["candidates"].double().mean()),
                     "fallback_blocks": stats["fallback_blocks"]})
    for row in rows:
        base = next(r for r in rows if r["stream"] == row["stream"] and r["case"] == DRIFT_CASES[0][0])
        row["extra_bits_over_calibrated"] = row["bits_above_kl"] - base["bits_above_kl"]
        row["extra_bits_per_drifted_latent"] = (row["extra_bits_over_calibrated"] / row["drifted_latents"]
                                                if row["drifted_latents"] else 0.0)
        row["candidates_over_calibrated"] = row["candidates_per_item"] / base["candidates_per_item"]
    return rows


def draw(rows):
    """The figure of :func:`plot`, not saved: ``(fig, (ax_bits, ax_cand))``.

    Axis labels are broken into lines so that each is no taller than its axes.
    """
    fig, (ax_bits, ax_cand) = new_figure(2, 1, width=4.6, height=3.6)
    cases = [c[0] for c in DRIFT_CASES]
    x = np.arange(len(cases))
    for k, stream in enumerate(("batch", "per item")):
        sel = {r["case"]: r for r in rows if r["stream"] == stream}
        colour = _STREAM_COLOURS[stream]
        offset = (k - 0.5) * 0.3
        ax_bits.bar(x + offset, [float(sel[c]["bits_above_kl"]) for c in cases], width=0.3, color=colour,
                    label=f"{stream} stream")
        ax_cand.bar(x + offset, [float(sel[c]["candidates_per_item"]) for c in cases], width=0.3, color=colour)
    for ax in (ax_bits, ax_cand):
        ax.set_xticks(x)
        ax.set_xticklabels([textwrap.fill(c, 20) for c in cases], rotation=40, ha="right", rotation_mode="anchor",
                           fontsize=8)
    ax_bits.set_ylabel("measured bits\nabove the KL, per item")
    ax_bits.set_title("Rate overhead under drift")
    ax_cand.set_ylabel("candidates per item")
    ax_cand.set_title("Race length")
    legend_below(fig, (ax_bits,), ncol=2)
    return fig, (ax_bits, ax_cand)


def plot(rows, path):
    """Bits above the KL and candidates per item, per drift case, for both stream kinds."""
    fig, _ = draw(rows)
    return save_figure(fig, path)


def replot(out_dir=None):
    """Redraw ``channel_drift.png`` from the ``channel_drift.csv`` in ``out_dir`` (the CSV is left as it is)."""
    out = output_dir(out_dir)
    return plot(read_csv(out / "channel_drift.csv"), out / "channel_drift.png")


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Measure every drift case and write ``channel_drift.csv`` / ``.png``; returns a summary."""
    out = output_dir(out_dir)
    if tiny:
        rows = measure(items=40, calibration_items=200, progress=progress)
    elif quick:
        rows = measure(items=200, calibration_items=1000, progress=progress)
    else:
        rows = measure(progress=progress)
    write_csv(out / "channel_drift.csv", rows)
    plot(rows, out / "channel_drift.png")
    return {f"{r['case']} ({r['stream']})": f"{r['bits_per_item']:.1f} bits for KL {r['kl_bits']:.1f}, "
            f"{r['extra_bits_over_calibrated']:+.1f} bits and x{r['candidates_over_calibrated']:.2f} candidates "
            "against the calibrated case" for r in rows}


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
