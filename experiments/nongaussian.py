"""Non-Gaussian targets coded with the same machinery (figure 6).

The targets of :mod:`rcc.general` -- a truncated Laplace, a truncated mixture
of two Gaussians and a rescaled Beta(2, 5) -- are coded by hybrid coding with
the width-M CDF transform against the prior N(0, 1), exactly like the
Gaussian ones, and decoded by the ordinary :func:`rcc.decode_sample`.

Top row: histograms of ``n`` decoded samples of one fixed target of each
family against its density, with the KS p-value (:func:`rcc.testing.ks_check`).

Bottom row: a "channel" per family: targets of a fixed shape and scale
``sigma = 2^-k`` (the family's standard deviation up to a constant) at random
locations ``loc ~ N(0, 0.7^2)``.  The width ``M`` is the one that fits the
shape centred at the prior's mean, so it depends on the shape alone (the
receiver can know it, as with :func:`rcc.gaussian_width`).  Messages are
written to bytes with :func:`rcc.entropy.measure_bits` (Zipf index code with
``D = mean KL - log2 M``, uniform factor code); Gaussian targets of the same
scale are shown for comparison.  We plot measured bits and candidates against
the mean KL, with Li & El Gamal's bound ``KL + log2(KL + 1) + 4``.

Writes ``nongaussian_hist.csv``, ``nongaussian_bits.csv`` and ``nongaussian.png``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

import rcc
from rcc import entropy
from rcc import testing as rt
from rcc.general import GaussianMixture, Laplace, ScaledBeta, encode_general, general_width

from .common import (
    legend_below,
    new_figure,
    output_dir,
    progress_bar,
    run_script,
    save_figure,
    series_style,
    write_csv,
    zipf_index_code,
)

__all__ = ["FAMILIES", "grid", "histogram_rows", "channel_row", "plot", "main"]

_SEED = 6060
_LOC_STD = 0.7


def _laplace(loc, sigma):
    return Laplace(loc, sigma / math.sqrt(2.0))  # standard deviation sigma


def _mixture(loc, sigma):
    return GaussianMixture(0.3, loc - 1.5 * sigma, sigma, loc + 1.0 * sigma, 0.5 * sigma)


def _beta(loc, sigma):
    span = sigma / stats.beta(2.0, 5.0).std()  # standard deviation sigma
    return ScaledBeta(2.0, 5.0, loc - span * 2.0 / 7.0, loc + span * 5.0 / 7.0)  # mean at loc


#: name -> factory(loc array, sigma) of a batch of general targets
FAMILIES = {"Laplace": _laplace, "two-Gaussian mixture": _mixture, "Beta(2, 5) rescaled": _beta}


def grid(quick=False, tiny=False):
    """Histogram sample size, scale exponents k (sigma = 2^-k) and targets per channel point."""
    if tiny:
        return dict(hist_samples=400, exponents=[2.0, 6.0], count=200)
    if quick:
        return dict(hist_samples=10_000, exponents=[1.0, 3.0, 5.0, 8.0, 12.0], count=2000)
    return dict(hist_samples=50_000, exponents=[0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 14.0],
                count=10_000)


def _receiver_width(factory, sigma):
    """Width fitting the shape with its support centred at the prior's mean (depends on sigma only)."""
    proto = factory(np.zeros(1), sigma)
    shift = 0.5 * (float(proto.low[0]) + float(proto.high[0]))
    return int(general_width(factory(np.full(1, -shift), sigma))[0])


def histogram_rows(n):
    """Decoded samples of one fixed target per family (sigma = 1/8 at loc 0.6) and their KS results."""
    out = {}
    for number, (name, factory) in enumerate(FAMILIES.items()):
        target = factory(np.full(n, 0.6), 0.125)
        enc = encode_general(target, _SEED + number)
        sample = rcc.decode_sample(enc.index, enc.factor, _SEED + number, width=enc.width)
        if not np.array_equal(sample, enc.sample):
            raise RuntimeError(f"round trip failed for {name}")
        single = factory(np.full(1, 0.6), 0.125)
        ks = rt.ks_check(sample, lambda x: single.cdf(np.asarray(x)[:, None])[:, 0])
        out[name] = dict(sample=sample, target=single, ks=ks, width=int(enc.width[0]),
                         candidates=float(np.mean(enc.candidates)), kl_bits=float(enc.kl_bits[0]))
    return out


def channel_row(name, factory, exponent, count, seed):
    """Encode ``count`` targets of one family at sigma = 2^-exponent; measure bytes; one CSV row."""
    sigma = 2.0**-exponent
    loc = np.random.default_rng([seed, int(10 * exponent)]).normal(0.0, _LOC_STD, count)
    if factory is None:
        width = int(rcc.gaussian_width(sigma))
        enc = rcc.encode_sample(rcc.Normal(loc, sigma), seed, width=width, max_candidates=2**36)
    else:
        width = _receiver_width(factory, sigma)
        enc = encode_general(factory(loc, sigma), seed, width=width, max_candidates=2**36)
    sample = rcc.decode_sample(enc.index, enc.factor, seed, width=enc.width)
    if not np.array_equal(sample, enc.sample):
        raise RuntimeError(f"round trip failed for {name}")
    mean_kl = float(np.mean(enc.kl_bits))
    report = entropy.measure_bits(enc, seed, index_code=zipf_index_code(mean_kl - math.log2(width)))
    candidates = np.asarray(enc.candidates, dtype=float)
    return {
        "family": name, "sigma": sigma, "log2_inv_sigma": exponent, "targets": count, "width": width,
        "mean_kl_bits": mean_kl, "measured_bits": report.mean_measured_bits, "ideal_bits": report.mean_ideal_bits,
        "index_bits": report.mean_index_bits, "factor_bits": report.mean_factor_bits,
        "overhead_bits": report.mean_measured_bits - mean_kl,
        "li_el_gamal_bound_bits": mean_kl + math.log2(mean_kl + 1.0) + 4.0,
        "mean_candidates": candidates.mean(), "median_candidates": float(np.median(candidates)),
    }


def plot(hist, rows, path):
    """Histograms (top) and bits / overhead / candidates against KL (bottom)."""
    fig, axes = new_figure(3, 2, width=4.0, height=3.3)
    for ax, (name, h) in zip(axes[0], hist.items()):
        target = h["target"]
        ax.hist(h["sample"], bins=60, density=True, color=series_style("hybrid")["color"], alpha=0.55,
                label=f"decoded samples (n = {h['sample'].size} per target)")
        x = np.linspace(float(target.low[0]), float(target.high[0]), 600)
        ax.plot(x, target.pdf(x[:, None])[:, 0], "k-", lw=1.2, label="target density")
        ax.set_title(f"{name}\nKS p = {h['ks'].pvalue:.2f}, M = {h['width']}, "
                     f"{h['candidates']:.1f} candidates", fontsize=8)
        ax.set_xlabel("z")
        ax.set_ylabel("density")
    ax_bits, ax_over, ax_cand = axes[1]
    families = list(dict.fromkeys(r["family"] for r in rows))
    for j, family in enumerate(families):
        sel = sorted((r for r in rows if r["family"] == family), key=lambda r: r["mean_kl_bits"])
        kl = [r["mean_kl_bits"] for r in sel]
        style = dict(series_style(family), ls="--" if family.startswith("Gaussian") else "-", markersize=4)
        ax_bits.plot(kl, [r["measured_bits"] for r in sel], label=family, **style)
        ax_over.plot(kl, [r["overhead_bits"] for r in sel], **style)
        ax_cand.plot(kl, [r["mean_candidates"] for r in sel], **style)
    kl_all = np.linspace(0.0, max(r["mean_kl_bits"] for r in rows) * 1.02, 100)
    ax_bits.plot(kl_all, kl_all, "k:", lw=1, label="bits = KL")
    ax_bits.plot(kl_all, kl_all + np.log2(kl_all + 1) + 4, "k--", lw=0.8, label="KL + log2(KL+1) + 4")
    ax_over.plot(kl_all, np.log2(kl_all + 1) + 4, "k--", lw=0.8, label="log2(KL+1) + 4")
    ax_bits.set_ylabel("measured bits per sample")
    ax_bits.set_title("Message length (real bytes)")
    ax_over.set_ylabel("measured bits - KL (bits)")
    ax_over.set_title("Overhead over KL")
    ax_cand.set_yscale("log")
    ax_cand.set_ylabel("mean candidates examined")
    ax_cand.set_title("Race length (hybrid, receiver-known M)")
    for ax in axes[1]:
        ax.set_xlabel("mean KL(target || N(0,1)) (bits)")
    legend_below(fig, axes, ncol=4)
    return save_figure(fig, path)


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Write ``nongaussian_*.csv`` and ``nongaussian.png``; returns a summary."""
    settings = grid(quick, tiny)
    out = output_dir(out_dir)
    hist = histogram_rows(settings["hist_samples"])
    jobs = [(name, factory, k) for name, factory in list(FAMILIES.items()) + [("Gaussian (reference)", None)]
            for k in settings["exponents"]]
    rows = [channel_row(name, factory, k, settings["count"], _SEED)
            for name, factory, k in progress_bar(jobs, enabled=progress, desc="nongaussian")]
    hist_rows = [{"family": name, "loc": 0.6, "sigma": 0.125, "samples": h["sample"].size, "width": h["width"],
                  "kl_bits": h["kl_bits"], "mean_candidates": h["candidates"], "ks_distance": h["ks"].statistic,
                  "ks_pvalue": h["ks"].pvalue} for name, h in hist.items()]
    write_csv(out / "nongaussian_hist.csv", hist_rows)
    write_csv(out / "nongaussian_bits.csv", rows)
    plot(hist, rows, out / "nongaussian.png")
    summary = {f"{name}: KS p": f"{h['ks'].pvalue:.3f}" for name, h in hist.items()}
    top = max(settings["exponents"])
    for r in rows:
        if r["log2_inv_sigma"] == top:
            summary[f"{r['family']} at sigma=2^-{top:g}"] = (
                f"KL {r['mean_kl_bits']:.2f}, measured {r['measured_bits']:.2f} bits, "
                f"{r['mean_candidates']:.1f} candidates")
    return summary


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
