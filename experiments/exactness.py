"""Exactness of the decoded samples (figure 3), checked with :mod:`rcc.testing`.

Left panel: for each method and a set of fixed targets, ``n`` independent
samples (one batch of ``n`` copies of the target: element ``i`` uses stream
``i`` of the seed) are encoded, decoded with :func:`rcc.decode_sample` (checked
bit for bit by :func:`rcc.testing.draw_samples_batched`) and tested against
the target's CDF with :func:`rcc.testing.ks_check` and
:func:`rcc.testing.chi2_check`.  Gaussian targets are compared with their
truncation to tail mass 1e-4, the distribution the coders sample exactly; the
general targets of :mod:`rcc.general` (Laplace, two-Gaussian mixture, Beta)
with their closed-form CDFs.  Exact methods (hybrid, PFR) should give uniform
p-values; ORC and MRC with their default budget ``2^ceil(KL + 4)`` are
approximate.

Right panel: total variation (binned, :func:`rcc.testing.total_variation_binned`)
between ORC / MRC samples and the target as the candidate budget grows, next
to the same statistic for the exact hybrid coder (the sampling-noise floor).

Writes ``exactness_ks.csv``, ``exactness_tv.csv`` and ``exactness.png``.
"""

from __future__ import annotations

import math

import numpy as np

import rcc
from rcc import general
from rcc import testing as rt

from .common import legend_below, new_figure, output_dir, progress_bar, run_script, save_figure, series_style, write_csv

__all__ = ["GAUSSIAN_TARGETS", "GENERAL_TARGETS", "METHODS", "grid", "ks_cases", "tv_curve", "plot", "main"]

ALPHA = 1e-3
TAIL_MASS = rcc.DEFAULT_TAIL_MASS
_SEED = 424242
#: (label, mean, std) of the fixed Gaussian targets (prior N(0, 1)).
GAUSSIAN_TARGETS = (("N(0, 0.5^2)", 0.0, 0.5), ("N(1.2, 0.1^2)", 1.2, 0.1), ("N(-2, (1/64)^2)", -2.0, 2.0**-6))
#: (label, factory of a batch of n copies) of the general targets.
GENERAL_TARGETS = (
    ("Laplace(0.4, 0.05)", lambda n: general.Laplace(np.full(n, 0.4), 0.05)),
    ("mixture 0.3 N(-0.1, 0.02^2) + 0.7 N(0.1, 0.03^2)",
     lambda n: general.GaussianMixture(0.3, -0.1, 0.02, np.full(n, 0.1), 0.03)),
    ("Beta(2, 5) on [-0.2, 0.3]", lambda n: general.ScaledBeta(2.0, 5.0, np.full(n, -0.2), 0.3)),
)
#: (label, encode keyword arguments)
METHODS = (
    ("hybrid", dict(method="hybrid")),
    ("hybrid, adaptive width", dict(method="hybrid", width="adaptive")),
    ("PFR", dict(method="pfr")),
    ("ORC (default budget)", dict(method="orc")),
    ("MRC (default budget)", dict(method="mrc")),
)
_TV_TARGET = (1.5, 2.0**-6)  # mean, std: KL about 6.9 bits


def grid(quick=False, tiny=False):
    """Samples per case, TV sample size and candidate budgets."""
    if tiny:
        return dict(samples=400, tv_samples=400, budgets=[1, 16, 256], floor_repeats=2)
    if quick:
        return dict(samples=5000, tv_samples=5000, budgets=[2**k for k in range(0, 13)], floor_repeats=3)
    return dict(samples=20_000, tv_samples=20_000, budgets=[2**k for k in range(0, 15)], floor_repeats=5)


def _gaussian_case(mean, std, n, kwargs, seed):
    target = rcc.Normal(np.full(n, mean), std)

    def encode(count, s):
        return rcc.encode_sample(target, s, max_candidates=2**34, **kwargs)

    def decode(enc, s):
        return rcc.decode_sample(enc.index, enc.factor, s, width=enc.width, method=kwargs["method"])

    samples = rt.draw_samples_batched(encode, decode, n, seed)
    return samples, rcc.Normal(mean, std).truncate(TAIL_MASS).cdf


def _general_case(factory, n, kwargs, seed):
    target = factory(n)

    def encode(count, s):
        return general.encode_general(target, s, **kwargs)

    def decode(enc, s):
        return rcc.decode_sample(enc.index, enc.factor, s, width=enc.width, method=kwargs["method"])

    samples = rt.draw_samples_batched(encode, decode, n, seed)
    reference = factory(1)
    return samples, lambda x: np.asarray(reference.cdf(np.asarray(x)[..., None]))[..., 0]


def ks_cases(n, progress=True):
    """KS and chi-square results of every (target, method) case; one CSV row each."""
    jobs = [("gaussian", label, (mean, std), m) for label, mean, std in GAUSSIAN_TARGETS for m in METHODS]
    jobs += [("general", label, factory, m) for label, factory in GENERAL_TARGETS for m in METHODS[:1] + METHODS[2:3]]
    rows = []
    for number, (kind, label, spec, (method_label, kwargs)) in enumerate(
            progress_bar(jobs, enabled=progress, desc="exactness: KS")):
        seed = _SEED + number
        if kind == "gaussian":
            samples, cdf = _gaussian_case(spec[0], spec[1], n, kwargs, seed)
            kl = float(rcc.kl_divergence_bits(rcc.Normal(spec[0], spec[1])))
        else:
            samples, cdf = _general_case(spec, n, kwargs, seed)
            kl = float(spec(1).kl_divergence_bits()[0])
        ks = rt.ks_check(samples, cdf, alpha=ALPHA)
        chi2 = rt.chi2_check(samples, cdf, alpha=ALPHA)
        rows.append({
            "target": label, "kind": kind, "method": method_label, "kl_bits": kl, "samples": n,
            "ks_distance": ks.statistic, "ks_pvalue": ks.pvalue, "chi2_pvalue": chi2.pvalue,
            "passed": bool(ks.passed and chi2.passed),
        })
    return rows


def tv_curve(n, budgets, floor_repeats, progress=True):
    """Binned TV of ORC and MRC samples against the target per budget, and the exact coder's floor."""
    mean, std = _TV_TARGET
    target = rcc.Normal(np.full(n, mean), std)
    cdf = rcc.Normal(mean, std).truncate(TAIL_MASS).cdf
    kl = float(rcc.kl_divergence_bits(rcc.Normal(mean, std)))
    rows = []
    jobs = [(m, b) for m in ("orc", "mrc") for b in budgets]
    for number, (method, budget) in enumerate(progress_bar(jobs, enabled=progress, desc="exactness: TV")):
        enc = rcc.encode_sample(target, _SEED + 1000 + number, method=method, num_candidates=int(budget),
                                max_candidates=max(int(budget), 2))
        rows.append({"method": method.upper(), "num_candidates": int(budget), "log2_num_candidates": math.log2(budget),
                     "kl_bits": kl, "samples": n, "tv_binned": rt.total_variation_binned(enc.sample, cdf),
                     "ks_distance": rt.ks_distance(enc.sample, cdf)})
    for repeat in range(floor_repeats):
        enc = rcc.encode_sample(target, _SEED + 2000 + repeat)
        rows.append({"method": "hybrid (exact)", "num_candidates": "", "log2_num_candidates": "", "kl_bits": kl,
                     "samples": n, "tv_binned": rt.total_variation_binned(enc.sample, cdf),
                     "ks_distance": rt.ks_distance(enc.sample, cdf)})
    return rows


def plot(ks_rows, tv_rows, path):
    """KS p-values per case (left) and TV against the candidate budget (right)."""
    fig, (ax_p, ax_tv) = new_figure(2, 1, width=5.2, height=3.8)
    targets = list(dict.fromkeys(r["target"] for r in ks_rows))
    methods = list(dict.fromkeys(r["method"] for r in ks_rows))
    for j, method in enumerate(methods):
        xs, ps = [], []
        for i, t in enumerate(targets):
            for r in ks_rows:
                if r["target"] == t and r["method"] == method:
                    xs.append(i + (j - 2) * 0.1)
                    ps.append(max(r["ks_pvalue"], 1e-300))
        ax_p.scatter(xs, ps, s=28, label=method, **series_style(method))
    ax_p.axhline(ALPHA, color="k", lw=0.8, ls="--", label=f"alpha = {ALPHA:g}")
    ax_p.set_yscale("log")
    ax_p.set_ylim(bottom=min(1e-6, min(max(r["ks_pvalue"], 1e-300) for r in ks_rows) / 3), top=1.5)
    ax_p.set_xticks(range(len(targets)))
    ax_p.set_xticklabels([t.replace(" + ", "\n+ ").replace(" on ", "\non ") for t in targets], rotation=30,
                         ha="right", fontsize=7)
    n = ks_rows[0]["samples"]
    ax_p.set_ylabel(f"KS p-value (n = {n} samples)")
    ax_p.set_title("Decoded samples vs target (KS test)")

    kl = tv_rows[0]["kl_bits"]
    for j, method in enumerate(("ORC", "MRC")):
        sel = [r for r in tv_rows if r["method"] == method]
        ax_tv.plot([r["log2_num_candidates"] for r in sel], [r["tv_binned"] for r in sel], ls="-", label=method,
                   **series_style(method))
    floor = [r["tv_binned"] for r in tv_rows if r["method"] == "hybrid (exact)"]
    hybrid_colour = series_style("hybrid")["color"]
    ax_tv.axhspan(min(floor), max(floor), color=hybrid_colour, alpha=0.25)
    ax_tv.axhline(float(np.mean(floor)), color=hybrid_colour, lw=1.2,
                  label=f"hybrid, exact (noise floor, {len(floor)} runs)")
    ax_tv.axvline(kl, color="k", ls=":", lw=1, label=f"KL = {kl:.1f} bits")
    ax_tv.set_yscale("log")
    ax_tv.set_xlabel("log2 candidate budget N_c (bits)")
    ax_tv.set_ylabel("binned total variation to target")
    mean, std = _TV_TARGET
    ax_tv.set_title(f"Approximate coders, target N({mean:g}, (1/{1 / std:.0f})^2)")
    legend_below(fig, (ax_p, ax_tv), ncol=3)
    return save_figure(fig, path)


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Run both experiments and write ``exactness_*.csv`` and ``exactness.png``; returns a summary."""
    settings = grid(quick, tiny)
    out = output_dir(out_dir)
    ks_rows = ks_cases(settings["samples"], progress)
    tv_rows = tv_curve(settings["tv_samples"], settings["budgets"], settings["floor_repeats"], progress)
    write_csv(out / "exactness_ks.csv", ks_rows)
    write_csv(out / "exactness_tv.csv", tv_rows)
    plot(ks_rows, tv_rows, out / "exactness.png")
    exact = [r for r in ks_rows if r["method"] in ("hybrid", "hybrid, adaptive width", "PFR")]
    pvalues = [r["ks_pvalue"] for r in exact]
    return {
        "exact-method cases passing KS and chi2": f"{sum(r['passed'] for r in exact)} / {len(exact)}",
        "min KS p-value of exact methods": f"{min(pvalues):.3g}",
        "uniformity of exact methods' KS p-values (p)": f"{rt.uniformity_check(pvalues).pvalue:.3g}",
        "approximate cases passing": f"{sum(r['passed'] for r in ks_rows if r not in exact)} / "
                                     f"{len(ks_rows) - len(exact)}",
    }


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
