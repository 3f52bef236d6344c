"""A* coding and greedy Poisson rejection sampling against PFR and hybrid coding.

Panel 1 and 2, the Gaussian channel (prior N(0, 1), target N(mu, s^2) with
s = 2^-I and mu ~ N(0, 1 - s^2), untruncated): points examined per sample and
encode wall time per sample against I.  Panel 3: bits of the entropy-coded
bytes per message minus I, with an index code fitted on separate targets
(heap indices: :class:`rcc.samplers.TreeIndexCode`, whose path bits cost the node's
prior mass; PFR / global GPRS / hybrid indices: :class:`rcc.EmpiricalIndexCode`; hybrid
adds its log2 M factor bits).
Panel 4: points examined against D_inf at a fixed KL of 2 bits (target
N(mu, s^2) with s growing towards the prior's std and mu set to keep the KL).

Panel ``laplace`` (dashed lines in panels 1 and 3): the same sweep for Laplace targets,
Laplace(mu, b) with std b sqrt(2) = 2^-I and mu ~ N(0, 1 - 4^-I), truncated to tail mass 1e-6
(a Laplace's ratio to a Normal prior is unbounded); bits above the mean KL of the targets.

Rows of panel ``throughput``: encode rate on one thread at I = 8 (best of three calls on
``throughput_count`` targets), with hybrid coding's rate measured in the same process as the
reference (``ratio_to_hybrid``).

Writes ``samplers.csv`` (one row per method, panel and grid point) and ``samplers.png``.
"""

from __future__ import annotations

import math

import numpy as np

import rcc
from rcc import samplers

from .common import Stopwatch, gaussian_channel, legend_below, new_figure, output_dir, progress_bar, run_script, \
    save_figure, write_csv

__all__ = ["METHODS", "PANELS", "grid", "measure", "main"]

#: (label, encode_sample keyword arguments, largest I at which it runs)
METHODS = (
    ("AS* (astar)", dict(method="astar", tail_mass=0.0), math.inf),
    ("AD* (astar-dyadic)", dict(method="astar-dyadic", tail_mass=0.0), math.inf),
    ("GPRS sac", dict(method="gprs-sac", tail_mass=0.0), math.inf),
    ("GPRS dyadic", dict(method="gprs-dyadic", tail_mass=0.0), math.inf),
    ("GRCS (grc-sample)", dict(method="grc-sample", tail_mass=0.0), math.inf),
    ("GRCD (grc-dyadic)", dict(method="grc-dyadic", tail_mass=0.0), math.inf),
    ("GPRS global", dict(method="gprs", tail_mass=0.0), 8.0),
    ("PFR", dict(method="pfr", tail_mass=0.0), 8.0),
    ("hybrid, width from std", dict(method="hybrid"), math.inf),
)
_SEED = 20260101
_KL_BITS = 2.0


def grid(quick=False, tiny=False):
    if tiny:
        return dict(info_bits=[1.0, 4.0], count=300, d_inf_points=3, throughput_count=300)
    if quick:
        return dict(info_bits=[1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0], count=4000, d_inf_points=8,
                    throughput_count=50_000)
    return dict(info_bits=[0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0, 24.0], count=20000,
                d_inf_points=16, throughput_count=500_000)


def _is_tree(method):
    return method in samplers.SAMPLER_METHODS and method != "gprs"


def _index_code(method, fit_enc):
    if _is_tree(method):
        return samplers.TreeIndexCode.fit(fit_enc.index)
    return rcc.EmpiricalIndexCode.fit(np.asarray(fit_enc.index).reshape(-1))


def _bits(enc, fit_enc, kwargs, seed):
    """Measured bits per message of the entropy-coded bytes."""
    method = kwargs["method"]
    code = _index_code(method, fit_enc)
    count = np.size(enc.index)
    if _is_tree(method):
        data = samplers.encode_tree_messages(enc, seed, index_code=code)
        decoded = samplers.decode_tree_messages(data, count, seed, index_code=code, method=method)
        if not np.array_equal(decoded, np.asarray(enc.index).reshape(-1)):
            raise RuntimeError(f"tree message round trip failed for {method}")
    elif method == "gprs":
        data = samplers.encode_index_messages(enc, seed, index_code=code)
    else:
        data = rcc.encode_messages(enc, seed, index_code=code, width=enc.width)
    return 8.0 * len(data) / count


def _normal_targets(info_bits, count, rng):
    mean, std = gaussian_channel(info_bits, count, rng=rng)
    return rcc.Normal(mean, std)


_LAPLACE_TAIL_MASS = 1e-6


def _laplace_targets(info_bits, count, rng):
    mean, std = gaussian_channel(info_bits, count, rng=rng)
    return rcc.Laplace(mean, std / math.sqrt(2.0), tail_mass=_LAPLACE_TAIL_MASS)


#: panel -> (target builder ``(info_bits, count, rng) -> target``, seed words of its targets, and whether
#: its bits are measured above I or above the mean KL of its targets)
PANELS = {
    "information": (_normal_targets, (), "info"),
    "laplace": (_laplace_targets, (7,), "mean_kl"),
}


def measure(info_bits, count, kwargs, seed, panel="information"):
    """One point of a sweep over I: steps, encode and decode timings and bits (one CSV row).

    ``panel`` (a key of :data:`PANELS`) picks the targets and what the bits are
    measured above; the index code is fitted on separate targets of the same kind.
    """
    build, words, above = PANELS[panel]
    target = build(info_bits, count, np.random.default_rng([seed, *words, int(info_bits * 100)]))
    fit = build(info_bits, count, np.random.default_rng([seed + 1, *words, int(info_bits * 100)]))
    seconds = []
    while len(seconds) < 3 and sum(seconds) < 1.0:
        with Stopwatch() as watch:
            enc = rcc.encode_sample(target, seed, max_candidates=2**34, **kwargs)
        seconds.append(watch.seconds)
    with Stopwatch() as watch:
        sample = rcc.decode_sample(enc.index, enc.factor, seed, width=enc.width, method=kwargs["method"])
    if not np.array_equal(sample, enc.sample):
        raise RuntimeError(f"round trip failed at I={info_bits} for {kwargs} ({panel} panel)")
    fit_enc = rcc.encode_sample(fit, seed + 1, max_candidates=2**34, **kwargs)
    steps = np.asarray(enc.candidates, dtype=np.float64)
    kl = float(np.mean(enc.kl_bits))
    bits = _bits(enc, fit_enc, kwargs, seed)
    return {
        "panel": panel, "info_bits": info_bits, "d_inf_bits": float("nan"), "targets": count,
        "mean_steps": steps.mean(), "median_steps": float(np.median(steps)),
        "encode_us_per_sample": 1e6 * min(seconds) / count, "decode_us_per_sample": 1e6 * watch.seconds / count,
        "bits_per_message": bits, "bits_above_info": bits - (info_bits if above == "info" else kl),
        "mean_kl_bits": kl,
    }


def _fixed_kl_targets(points):
    """Targets N(mu, s^2) with KL = 2 bits and D_inf from 5.8 to 44.8 bits (prior N(0, 1)).

    At a fixed KL, D_inf grows without bound as s -> 1 (mu^2 = 2 KL + 1 - s^2 + 2 log s).
    """
    from scipy import optimize

    kl = _KL_BITS * math.log(2.0)

    def shape(s):
        mu2 = 2.0 * kl + 1.0 - s * s + 2.0 * math.log(s)
        return math.sqrt(mu2), (mu2 / (2.0 * (1.0 - s * s)) - math.log(s)) / math.log(2.0)

    out = []
    for d_inf in np.linspace(5.77, 44.77, points):
        s = optimize.brentq(lambda x: shape(x)[1] - d_inf, 0.2, 1.0 - 1e-9, xtol=1e-14)
        out.append((s, shape(s)[0], float(d_inf)))
    return out


def measure_d_inf(s, mu, d_inf, count, kwargs, seed):
    target = rcc.Normal(np.full(count, mu), s)
    with Stopwatch() as watch:
        enc = rcc.encode_sample(target, seed, max_candidates=2**34, **kwargs)
    steps = np.asarray(enc.candidates, dtype=np.float64)
    return {"panel": "d_inf", "info_bits": float(np.mean(enc.kl_bits)), "d_inf_bits": d_inf, "targets": count,
            "mean_steps": steps.mean(), "median_steps": float(np.median(steps)),
            "encode_us_per_sample": 1e6 * watch.seconds / count}


def measure_throughput(count, seed):
    """Encode rate per core (one thread) at I = 8 of every method but PFR and global GPRS."""
    mean, std = gaussian_channel(8.0, count, rng=np.random.default_rng([seed, 8]))
    target = rcc.Normal(mean, std)
    rates = {}
    for label, kwargs, cap in METHODS:
        if cap < math.inf:
            continue
        seconds = []
        for _ in range(3):
            with Stopwatch() as watch:
                rcc.encode_sample(target, seed, num_threads=1, **kwargs)
            seconds.append(watch.seconds)
        rates[label] = count / min(seconds)
    reference = rates["hybrid, width from std"]
    return [{"method": label, "panel": "throughput", "info_bits": 8.0, "targets": count,
             "samples_per_second_per_core": rate, "ratio_to_hybrid": rate / reference}
            for label, rate in rates.items()]


def plot(rows, path):
    fig, axes = new_figure(2, 2, width=4.4, height=3.2)
    (ax_s, ax_t), (ax_b, ax_d) = axes
    for k, (label, _, _) in enumerate(METHODS):
        sel = [r for r in rows if r["method"] == label and r["panel"] == "information"]
        style = dict(color=f"C{k}", marker="o", markersize=3.5, label=label)
        if sel:
            info = [r["info_bits"] for r in sel]
            ax_s.plot(info, [r["mean_steps"] for r in sel], "-", **style)
            ax_t.plot(info, [r["encode_us_per_sample"] for r in sel], "-", **style)
            ax_b.plot(info, [r["bits_above_info"] for r in sel], "-", **style)
        sel = [r for r in rows if r["method"] == label and r["panel"] == "laplace"]
        if sel:
            info = [r["info_bits"] for r in sel]
            ax_s.plot(info, [r["mean_steps"] for r in sel], "--", color=f"C{k}", marker="s", markersize=3)
            ax_b.plot(info, [r["bits_above_info"] for r in sel], "--", color=f"C{k}", marker="s", markersize=3)
        sel = [r for r in rows if r["method"] == label and r["panel"] == "d_inf"]
        if sel:
            ax_d.plot([r["d_inf_bits"] for r in sel], [r["mean_steps"] for r in sel], "-", **style)
    for ax in (ax_s, ax_t, ax_d):
        ax.set_yscale("log")
    if any(r["panel"] == "laplace" for r in rows):
        ax_s.plot([], [], "k--", marker="s", markersize=3, label="dashed: Laplace targets (tree samplers)")
    ax_s.set(xlabel="I(X; Z) (bits)", ylabel="points examined per sample (mean)", title="Steps vs information")
    ax_t.set(xlabel="I(X; Z) (bits)", ylabel="encode time per sample (µs)", title="Wall time (batched)")
    ax_b.set(xlabel="I(X; Z) (bits)", ylabel="bits per message - I", title="Bits of the bytes above I")
    ax_d.set(xlabel="D_inf[q || p] (bits)", ylabel="points examined per sample (mean)",
             title=f"Steps vs D_inf at KL = {_KL_BITS:g} bits")
    legend_below(fig, axes, ncol=4)
    return save_figure(fig, path)


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Run both sweeps and write ``samplers.csv`` / ``samplers.png``; returns a summary dict."""
    settings = grid(quick, tiny)
    out = output_dir(out_dir)
    for _, kwargs, _ in METHODS:  # compile before timing
        warm = rcc.encode_sample(rcc.Normal(np.zeros(4), 0.5), 1, **kwargs)
        rcc.decode_sample(warm.index, warm.factor, 1, width=warm.width, method=kwargs["method"])
    jobs = [(label, kwargs, info) for info in settings["info_bits"] for label, kwargs, cap in METHODS if info <= cap]
    rows = []
    for label, kwargs, info in progress_bar(jobs, enabled=progress, desc="samplers"):
        count = settings["count"]
        if kwargs["method"] in ("gprs", "pfr"):
            count = int(np.clip(4e6 / 2.0 ** (info + 2), 200, count))
        rows.append({"method": label, **measure(info, count, kwargs, _SEED)})
    for info in settings["info_bits"]:
        for label, kwargs, _ in METHODS[:6]:
            rows.append({"method": label, **measure(info, settings["count"], kwargs, _SEED, panel="laplace")})
    for s, mu, d_inf in _fixed_kl_targets(settings["d_inf_points"]):
        for label, kwargs, _ in METHODS[:6]:
            rows.append({"method": label, **measure_d_inf(s, mu, d_inf, settings["count"], kwargs, _SEED)})
    rows.extend(measure_throughput(settings["throughput_count"], _SEED))
    write_csv(out / "samplers.csv", rows)
    plot(rows, out / "samplers.png")
    summary = {f"{r['method']} encode rate at I=8, one thread": f"{r['samples_per_second_per_core'] / 1e6:.2f}M/s "
               f"({r['ratio_to_hybrid']:.2f}x hybrid)" for r in rows if r["panel"] == "throughput"}
    for label, _, _ in METHODS[:6]:
        sel = [r for r in rows if r["method"] == label and r["panel"] == "information"]
        last = sel[-1]
        summary[f"{label} at I={last['info_bits']:g}"] = (
            f"{last['mean_steps']:.2f} steps, {last['bits_above_info']:.2f} bits above I, "
            f"{last['encode_us_per_sample']:.2f} us per sample")
    return summary


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
