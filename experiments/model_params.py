"""Coding the weights of a Bayesian logistic regression with reverse channel coding.

Model: multinomial logistic regression (64 pixels + bias -> 10 classes, 650
weights) on scikit-learn's digits (1797 8x8 images shipped with the package;
75 % train / 25 % test, stratified, fixed split).  Variational posterior: a
diagonal Gaussian ``q(w) = N(m, diag(s^2))`` against the prior ``N(0, 1)``,
trained by minimising ``NLL + beta * KL[q || p]`` (local reparameterisation,
Adam, fixed seeds); ``beta`` trades accuracy against ``KL``, the ideal number
of bits to communicate one weight sample.

Coding (hybrid coding in blocks; docs/blocks.rst): the weights are visited in a
fixed pseudo-random order (known to the receiver) and cut greedily into
consecutive blocks whose estimated race cost ``sum_j log2 w_max,j`` stays
below a budget (at most 64 weights per block).  Each block is one
``rcc.Product`` target coded with one index; its width ``M_b`` is the largest
width that fits all of its weights (:func:`rcc.gaussian_width` of each std,
minimum over the block).  Blocks are padded to a common length with
dimensions whose target equals the prior (KL 0, width 1: they cost no bits),
so the whole model is one :func:`rcc.encode_sample` call and one bitstream of
:func:`rcc.entropy.measure_bits` (Zipf index code, uniform factor code).

Total bits = the bitstream's real bytes (header included) + side information,
each counted exactly: the number of blocks (Elias-gamma), the block lengths
(Elias-gamma or fixed 6-bit codes, whichever is shorter, plus a flag bit),
the block widths (Elias-gamma) and the index code's parameter (16 bits).  The receiver
decodes the weights with :func:`rcc.decode_sample` and we report the test
accuracy of the decoded model (mean over coding seeds).  Baselines: the
maximum-a-posteriori weights (same prior) stored as float32, float16, and
uniformly quantised to 8, 4, 3 and 2 bits per weight (plus a 32-bit scale).

Writes ``model_params.csv`` and ``model_params.png``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

import rcc
from rcc import entropy

from .common import legend_below, new_figure, output_dir, progress_bar, run_script, save_figure, write_csv

__all__ = ["load_digits_split", "train_posterior", "train_map", "block_layout", "code_weights", "quantised",
           "plot", "main"]

_SEED = 17
_TAIL_MASS = rcc.DEFAULT_TAIL_MASS
_MAX_BLOCK = 64


def grid(quick=False, tiny=False):
    """KL weights beta, training steps, coding seeds per model and the race budget per block (bits)."""
    if tiny:
        return dict(betas=[3.0, 30.0], steps=150, coding_seeds=1, budget_bits=12.0)
    if quick:
        return dict(betas=[0.3, 1.0, 3.0, 10.0, 30.0], steps=600, coding_seeds=3, budget_bits=16.0)
    return dict(betas=[0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0], steps=1500, coding_seeds=5,
                budget_bits=18.0)


def load_digits_split():
    """``(x_train, y_train, x_test, y_test)``: pixels / 16 with a constant bias feature appended."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = np.c_[x / 16.0, np.ones(len(x))]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x_train, y_train, x_test, y_test


class _TorchThreads:
    """Run torch single-threaded (tiny matrices: threads only add overhead), then restore."""

    def __enter__(self):
        import torch

        self.torch = torch
        self.previous = torch.get_num_threads()
        torch.set_num_threads(1)
        return torch

    def __exit__(self, *exc):
        self.torch.set_num_threads(self.previous)


def train_posterior(x, y, beta, steps, seed):
    """Mean-field Gaussian posterior ``(m, s)`` (shape (65, 10)) minimising NLL + beta KL[q || N(0, 1)]."""
    with _TorchThreads() as torch:
        generator = torch.Generator().manual_seed(int(seed))
        features = torch.tensor(x, dtype=torch.float32)
        squared = features**2
        labels = torch.tensor(y)
        mean = torch.zeros(x.shape[1], 10, requires_grad=True)
        raw_std = torch.full((x.shape[1], 10), math.log(math.expm1(0.05)), requires_grad=True)
        optimiser = torch.optim.Adam([mean, raw_std], lr=0.05)
        for _ in range(steps):
            std = torch.nn.functional.softplus(raw_std)
            # Local reparameterisation: the logits of a weight sample are Gaussian given the inputs.
            logits_mean = features @ mean
            logits_std = (squared @ std**2).sqrt()
            logits = logits_mean + logits_std * torch.randn(logits_mean.shape, generator=generator)
            nll = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
            kl = (-torch.log(std) + 0.5 * (std**2 + mean**2) - 0.5).sum()
            loss = nll + beta * kl
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return mean.detach().double().numpy(), torch.nn.functional.softplus(raw_std).detach().double().numpy()


def train_map(x, y, steps):
    """Maximum-a-posteriori weights under the same N(0, 1) prior (L2-regularised logistic regression)."""
    with _TorchThreads() as torch:
        features = torch.tensor(x, dtype=torch.float32)
        labels = torch.tensor(y)
        weights = torch.zeros(x.shape[1], 10, requires_grad=True)
        optimiser = torch.optim.Adam([weights], lr=0.05)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(features @ weights, labels, reduction="sum") + 0.5 * (
                weights**2).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return weights.detach().double().numpy()


def accuracy(weights, x, y):
    """Test accuracy of weights of shape (65, 10)."""
    return float(np.mean(np.argmax(x @ weights, axis=1) == y))


def _kl_bits(mean, std):
    return (-np.log(std) + 0.5 * (std**2 + mean**2) - 0.5) / math.log(2.0)


def _log2_ratio_max(mean, std):
    """``log2 max q/p`` over each truncated target's support (grid estimate; used only to size blocks)."""
    half = -special.ndtri(0.5 * _TAIL_MASS)
    z = mean + std * half * np.linspace(-1.0, 1.0, 801)[:, None]
    log_ratio = -0.5 * ((z - mean) / std) ** 2 - np.log(std) + 0.5 * z**2 - math.log1p(-_TAIL_MASS)
    return log_ratio.max(axis=0) / math.log(2.0)


def elias_gamma_bits(n):
    """Length of the Elias-gamma code of integers ``n >= 1``: ``2 floor(log2 n) + 1``."""
    n = np.asarray(n, dtype=np.int64)
    return 2 * (np.floor(np.log2(n)).astype(np.int64)) + 1


#: The block layout's cost model (``log2 w_max`` against the prior, padding dimensions equal to
#: the prior at width 1 costing nothing) is that of the transform through the prior.
_TRANSFORM = "prior"


def block_layout(mean, std, budget_bits, order):
    """Greedy consecutive blocks over ``order``: estimated ``sum log2 w_max - L log2 M`` <= budget.

    Returns a list of ``(indices, width)``.
    """
    ratio = _log2_ratio_max(mean, std)
    widths = np.asarray(rcc.gaussian_width(std, tail_mass=_TAIL_MASS, transform=_TRANSFORM))
    blocks, current = [], []

    def cost(members):
        width = min(int(widths[j]) for j in members)
        return float(sum(ratio[j] for j in members)) - len(members) * math.log2(width), width

    for j in order:
        trial = current + [int(j)]
        if current and (len(trial) > _MAX_BLOCK or cost(trial)[0] > budget_bits):
            blocks.append((current, cost(current)[1]))
            trial = [int(j)]
        current = trial
    blocks.append((current, cost(current)[1]))
    return blocks


def code_weights(mean, std, seed, budget_bits, order):
    """Code one weight sample of ``N(mean, std^2)`` (flat arrays); return decoded weights and costs."""
    blocks = block_layout(mean, std, budget_bits, order)
    count, length = len(blocks), max(len(b) for b, _ in blocks)
    block_mean = np.zeros((count, length))
    block_std = np.ones((count, length))  # padding: target = prior N(0, 1), KL 0, width 1
    block_width = np.ones((count, length), dtype=np.int64)
    for b, (members, width) in enumerate(blocks):
        block_mean[b, :len(members)] = mean[members]
        block_std[b, :len(members)] = std[members]
        block_width[b, :len(members)] = width
    enc = rcc.encode_sample(rcc.Product(rcc.Normal(block_mean, block_std)), seed, width=block_width,
                            tail_mass=_TAIL_MASS, max_candidates=2**34, transform=_TRANSFORM)
    index_kl = np.maximum(np.asarray(enc.kl_bits) - np.log2(block_width).sum(axis=1), 0.0)
    parameter = float(np.float16(index_kl.mean()))  # sent as a float16
    report = entropy.measure_bits(enc, seed, index_code=entropy.ZipfIndexCode(parameter), transform=_TRANSFORM)
    lengths = np.array([len(m) for m, _ in blocks])
    # Block lengths: the cheaper of Elias-gamma codes and fixed log2(64) = 6-bit codes, plus a flag bit.
    length_bits = 1 + min(int(elias_gamma_bits(lengths).sum()), 6 * count)
    side_bits = int(elias_gamma_bits(count) + length_bits + elias_gamma_bits([w for _, w in blocks]).sum() + 16)
    decoded = rcc.decode_sample(enc.index, enc.factor, seed, width=block_width, transform=_TRANSFORM)
    if not np.array_equal(decoded, enc.sample):
        raise RuntimeError("round trip failed")
    weights = np.empty_like(mean)
    for b, (members, _) in enumerate(blocks):
        weights[members] = decoded[b, :len(members)]
    candidates = np.asarray(enc.candidates)
    return weights, {
        "blocks": count, "block_length_max": length, "stream_bits": report.mean_measured_bits * report.count,
        "side_bits": side_bits, "ideal_index_bits": report.mean_index_bits * report.count,
        "factor_bits": report.mean_factor_bits * report.count, "total_candidates": int(candidates.sum()),
        "max_block_candidates": int(candidates.max()),
    }


def quantised(weights, bits):
    """Uniform symmetric quantisation to ``bits`` per weight with one float32 scale; returns (weights, cost)."""
    levels = 2 ** (bits - 1) - 1
    scale = np.float32(np.max(np.abs(weights)) / levels)
    return np.round(weights / scale).clip(-levels, levels) * np.float64(scale), weights.size * bits + 32


def plot(rows, baselines, path):
    """Test accuracy against total bits (log scale): coded posteriors, their KL, and quantised MAP weights."""
    fig, ax = new_figure(1, 1, width=6.0, height=4.2)
    rows = sorted(rows, key=lambda r: r["total_bits"])
    ax.errorbar([r["total_bits"] for r in rows], [r["coded_accuracy"] for r in rows],
                yerr=[r["coded_accuracy_std"] for r in rows], fmt="o-", color="C0", capsize=2,
                label="rcc hybrid, blocks: measured bytes + side info")
    ax.plot([r["kl_bits"] for r in rows], [r["coded_accuracy"] for r in rows], "o--", color="C0", alpha=0.45,
            mfc="none", label="same models at KL[q||p] (ideal bits)")
    for number, r in enumerate(rows):
        if number % 2 == 0 or number == len(rows) - 1:  # every other label, to keep them readable
            ax.annotate(f"β={r['beta']:g}", (r["total_bits"], r["coded_accuracy"]), textcoords="offset points",
                        xytext=(5, -9), fontsize=6, color="C0")
    ax.plot([b["total_bits"] for b in baselines], [b["accuracy"] for b in baselines], "s:", color="C3",
            markersize=6, label="MAP weights: float32, float16, int8, int4, int3, int2")
    for b in baselines:
        ax.annotate(b["storage"], (b["total_bits"], b["accuracy"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7, color="C3")
    ax.set_xscale("log")
    ax.set_xlabel("total bits to communicate the 650 weights (bits)")
    ax.set_ylabel("test accuracy (digits, 450 images)")
    ax.set_title("Logistic regression on digits: accuracy vs bits")
    legend_below(fig, ax, ncol=2)
    return save_figure(fig, path)


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Train, code and evaluate; write ``model_params.csv`` / ``.png``; returns a summary."""
    settings = grid(quick, tiny)
    out = output_dir(out_dir)
    x_train, y_train, x_test, y_test = load_digits_split()
    map_weights = train_map(x_train, y_train, settings["steps"])
    baselines = []
    for storage, bits in (("float32", 32), ("float16", 16), ("int8", 8), ("int4", 4), ("int3", 3), ("int2", 2)):
        if storage == "float32":
            stored, cost = map_weights.astype(np.float32).astype(np.float64), map_weights.size * 32
        elif storage == "float16":
            stored, cost = map_weights.astype(np.float16).astype(np.float64), map_weights.size * 16
        else:
            stored, cost = quantised(map_weights, bits)
        baselines.append({"storage": storage, "total_bits": cost, "accuracy": accuracy(stored, x_test, y_test)})
    order = np.random.default_rng(_SEED).permutation(map_weights.size)  # shared with the receiver
    rows = []
    jobs = [(beta, s) for beta in settings["betas"] for s in range(settings["coding_seeds"])]
    posteriors = {}
    results = {}
    for beta, coding_seed in progress_bar(jobs, enabled=progress, desc="model_params"):
        if beta not in posteriors:
            posteriors[beta] = train_posterior(x_train, y_train, beta, settings["steps"], seed=_SEED)
        mean, std = posteriors[beta]
        weights, cost = code_weights(mean.ravel(), std.ravel(), _SEED * 1000 + coding_seed, settings["budget_bits"],
                                     order)
        exact = np.random.default_rng([_SEED, coding_seed]).normal(mean, std)  # reference: a numpy sample of q
        results.setdefault(beta, []).append((accuracy(weights.reshape(mean.shape), x_test, y_test),
                                             accuracy(exact, x_test, y_test), cost))
    for beta in settings["betas"]:
        mean, std = posteriors[beta]
        coded = np.array([a for a, _, _ in results[beta]])
        reference = np.array([a for _, a, _ in results[beta]])
        costs = [c for _, _, c in results[beta]]
        total = np.array([c["stream_bits"] + c["side_bits"] for c in costs], dtype=float)
        rows.append({
            "beta": beta, "kl_bits": float(_kl_bits(mean, std).sum()), "coding_seeds": len(coded),
            "total_bits": total.mean(), "total_bits_std": total.std(),
            "stream_bits": float(np.mean([c["stream_bits"] for c in costs])),
            "side_bits": float(np.mean([c["side_bits"] for c in costs])),
            "blocks": costs[0]["blocks"], "block_length_max": costs[0]["block_length_max"],
            "coded_accuracy": coded.mean(), "coded_accuracy_std": coded.std(),
            "numpy_sample_accuracy": reference.mean(), "posterior_mean_accuracy": accuracy(mean, x_test, y_test),
            "mean_total_candidates": float(np.mean([c["total_candidates"] for c in costs])),
            "max_block_candidates": int(max(c["max_block_candidates"] for c in costs)),
        })
    write_csv(out / "model_params.csv", rows + [dict(b, beta="MAP") for b in baselines])
    plot(rows, baselines, out / "model_params.png")
    summary = {f"MAP {b['storage']}": f"{b['total_bits']} bits, accuracy {b['accuracy']:.3f}" for b in baselines}
    for r in rows:
        summary[f"beta={r['beta']:g}"] = (f"KL {r['kl_bits']:.0f} bits, coded {r['total_bits']:.0f} bits "
                                          f"({r['blocks']} blocks), accuracy {r['coded_accuracy']:.3f}")
    return summary


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
