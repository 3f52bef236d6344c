"""Bits and total-variation error against the truncation tail mass (figure 4).

Gaussian targets have unbounded support; the coders sample them truncated to
the central interval of total tail mass ``eps`` (docs/truncation.rst, 'The
central interval'), so the decoded samples are at total-variation distance
exactly ``eps`` from the untruncated target.  A smaller ``eps`` widens the support, which lowers the width ``M`` of
the CDF transform and moves information from the decoding factor to the index.

For each ``I`` (Gaussian channel, prior N(0, 1), s = 2^-I) and each ``eps``
from 1e-2 to 1e-8 we encode a batch of targets with ``tail_mass=eps``, with the
default coding transform and with the transform through the prior
(``transform="prior"``), write the messages to bytes
(:func:`rcc.entropy.measure_bits`: Zipf index code given the KL the index
carries, :func:`rcc.entropy.index_kl_bits_gaussian_channel`; the default factor
code) and record:

* measured bits per sample (real bytes, stream header included), next to I;
* candidates examined;
* the exact TV to the untruncated target (= eps,
  :attr:`rcc.EncodedSample.tail_mass`), and a check that coding adds no error
  beyond the truncation: the KS distance between the decoded samples and the
  *truncated* targets (via the probability integral transform of each sample
  under its own truncated target, which is Uniform(0, 1) for an exact coder),
  next to the KS distance of the same number of exact Uniform draws (numpy)
  as the sampling-noise floor.  A binned TV against the untruncated target is
  also written to the CSV (it cannot resolve eps below ~1e-2 at these n).

Writes ``truncation.csv`` and ``truncation.png``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

import rcc
from rcc import entropy
from rcc import testing as rt

from .common import (
    gaussian_channel,
    legend_below,
    value_style,
    new_figure,
    output_dir,
    progress_bar,
    run_script,
    save_figure,
    write_csv,
    zipf_index_code,
)

__all__ = ["grid", "measure", "plot", "main"]

_SEED = 777
_BINS = 20


def grid(quick=False, tiny=False):
    """Tail masses, information values and targets per point."""
    if tiny:
        return dict(tail_masses=[1e-2, 1e-5], info_bits=[4.0], count=400)
    if quick:
        return dict(tail_masses=[10.0**-k for k in range(2, 9)], info_bits=[2.0, 8.0], count=10_000)
    return dict(tail_masses=[10.0 ** -(k / 2) for k in range(4, 17)], info_bits=[2.0, 6.0, 12.0], count=50_000)


def _pit_tv(pit, eps):
    """Binned TV of PIT values against Uniform(0, 1): the two tails and 20 equiprobable inner bins."""
    inner = 0.5 * eps + (1.0 - eps) * np.arange(1, _BINS) / _BINS
    cuts = np.concatenate([[0.5 * eps], inner, [1.0 - 0.5 * eps]])
    return rt.total_variation_binned(pit, lambda u: np.clip(u, 0.0, 1.0), bins=cuts)


def measure(info_bits, eps, count, seed, transform=None):
    """Encode ``count`` targets with tail mass ``eps``; return one CSV row."""
    mean, std = gaussian_channel(info_bits, count, rng=np.random.default_rng([seed, int(100 * info_bits)]))
    enc = rcc.encode_sample(rcc.Normal(mean, std), seed, tail_mass=eps, max_candidates=2**36, transform=transform)
    width = int(rcc.gaussian_width(std, tail_mass=eps, transform=transform))
    index_kl = entropy.index_kl_bits_gaussian_channel(info_bits, transform=transform, tail_mass=eps)
    report = entropy.measure_bits(enc, seed, index_code=zipf_index_code(index_kl), info_bits=info_bits,
                                  transform=transform)
    sample = rcc.decode_sample(enc.index, enc.factor, seed, width=enc.width, transform=transform)
    if not np.array_equal(sample, enc.sample):
        raise RuntimeError("round trip failed")
    pit = special.ndtr((sample - mean) / std)
    uniform = np.random.default_rng([seed, 1, int(-math.log10(eps) * 10)]).uniform(size=count)
    floor = _pit_tv(uniform, eps)
    # PIT under each sample's own truncated target: Uniform(0, 1) exactly when the coder is exact.
    truncated_pit = (pit - 0.5 * eps) / (1.0 - eps)
    candidates = np.asarray(enc.candidates, dtype=float)
    return {
        "info_bits": info_bits, "tail_mass": eps, "transform": "prior" if transform else "default",
        "targets": count, "width": width,
        "mean_kl_bits": report.mean_kl_bits, "measured_bits": report.mean_measured_bits,
        "ideal_bits": report.mean_ideal_bits, "index_bits": report.mean_index_bits,
        "factor_bits": report.mean_factor_bits, "header_bits": report.header_bits,
        "mean_candidates": candidates.mean(), "median_candidates": float(np.median(candidates)),
        "tv_exact": float(np.mean(enc.tail_mass)),
        "ks_to_truncated": rt.ks_distance(truncated_pit, lambda u: np.clip(u, 0.0, 1.0)),
        "ks_to_truncated_pvalue": rt.ks_check(truncated_pit, lambda u: np.clip(u, 0.0, 1.0)).pvalue,
        "ks_noise_floor": rt.ks_distance(uniform, lambda u: np.clip(u, 0.0, 1.0)),
        "tv_binned_to_untruncated": _pit_tv(pit, eps), "tv_binned_noise_floor": floor,
        "samples_outside_support": int(np.sum((pit < 0.5 * eps) | (pit > 1 - 0.5 * eps))),
    }


def plot(rows, path):
    """Bits, candidates and TV against the tail mass (log x axis, decreasing to the right)."""
    fig, (ax_b, ax_c, ax_tv) = new_figure(3, 1, width=3.9)
    infos = sorted({r["info_bits"] for r in rows})
    for j, info in enumerate(infos):
        old = sorted((r for r in rows if r["info_bits"] == info and r["transform"] == "prior"),
                     key=lambda r: -r["tail_mass"])
        if old:
            ax_b.plot([r["tail_mass"] for r in old], [r["measured_bits"] for r in old], "^-.", color=f"C{j}",
                      alpha=0.6, markersize=3)
            ax_c.plot([r["tail_mass"] for r in old], [r["mean_candidates"] for r in old], "^-.", color=f"C{j}",
                      alpha=0.6, markersize=3)
        sel = sorted((r for r in rows if r["info_bits"] == info and r["transform"] == "default"),
                     key=lambda r: -r["tail_mass"])
        eps = [r["tail_mass"] for r in sel]
        color = value_style(info, 1.0, 32.0)["color"]  # fixed by the value of I, not the plotting order
        ax_b.plot(eps, [r["measured_bits"] for r in sel], "o-", color=color, label=f"I = {info:g} bits")
        ax_b.plot(eps, [r["mean_kl_bits"] for r in sel], ":", color=color)
        ax_b.axhline(info, color=color, lw=0.8, ls="--")
        ax_c.plot(eps, [r["mean_candidates"] for r in sel], "o-", color=color)
        ax_c.plot(eps, [r["median_candidates"] for r in sel], "s--", color=color, alpha=0.6, markersize=3)
        ax_tv.plot(eps, [r["ks_to_truncated"] for r in sel], "o", color=color)
        ax_tv.plot(eps, [r["ks_noise_floor"] for r in sel], "x", color=color, alpha=0.6)
    first = sorted((r for r in rows if r["info_bits"] == infos[0] and r["transform"] == "default"),
                   key=lambda r: -r["tail_mass"])
    ax_tv.plot([r["tail_mass"] for r in first], [r["tv_exact"] for r in first], "k-", lw=1.2)
    # Style keys (colours are the I values).
    ax_b.plot([], [], "ko-", label="measured bits (real bytes)")
    ax_b.plot([], [], "k^-.", alpha=0.6, markersize=3, label="transform = prior: bits, mean candidates")
    ax_b.plot([], [], "k:", label="KL of the truncated target")
    ax_b.plot([], [], "k--", lw=0.8, label="I")
    ax_c.plot([], [], "ko-", label="candidates: mean")
    ax_c.plot([], [], "ks--", markersize=3, label="candidates: median")
    ax_tv.plot([], [], "ko", label="KS: decoded vs truncated target")
    ax_tv.plot([], [], "kx", label="KS: exact numpy draws, same n")
    ax_tv.plot([], [], "k-", lw=1.2, label="TV to untruncated target = tail mass")
    for ax in (ax_b, ax_c, ax_tv):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("tail mass eps (truncation)")
    ax_b.set_ylabel("bits per sample")
    ax_b.set_title("Message length")
    ax_c.set_yscale("log")
    ax_c.set_ylabel("candidates examined per sample")
    ax_c.set_title("Race length")
    ax_tv.set_yscale("log")
    ax_tv.set_ylabel("distance (TV or KS)")
    ax_tv.set_title(f"Error: truncation vs coding (n = {rows[0]['targets']})")
    legend_below(fig, (ax_b, ax_c, ax_tv), ncol=4)
    return save_figure(fig, path)


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Run the sweep and write ``truncation.csv`` / ``.png``; returns a summary."""
    settings = grid(quick, tiny)
    out = output_dir(out_dir)
    jobs = [(info, eps, transform) for transform in (None, "prior") for info in settings["info_bits"]
            for eps in settings["tail_masses"]]
    rows = [measure(info, eps, settings["count"], _SEED, transform)
            for info, eps, transform in progress_bar(jobs, enabled=progress, desc="truncation")]
    write_csv(out / "truncation.csv", rows)
    plot(rows, out / "truncation.png")
    summary = {}
    for info in settings["info_bits"]:
        sel = sorted((r for r in rows if r["info_bits"] == info and r["transform"] == "default"),
                     key=lambda r: -r["tail_mass"])
        summary[f"I={info:g}: bits at eps={sel[0]['tail_mass']:.0e} -> {sel[-1]['tail_mass']:.0e}"] = (
            f"{sel[0]['measured_bits']:.2f} -> {sel[-1]['measured_bits']:.2f}")
    return summary


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
