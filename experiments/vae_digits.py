"""A small VAE on 8x8 digits whose test latents are sent as real bytes by rcc.torch.RCCChannel.

For a few values of beta we train a tiny MLP VAE (64 -> 256 -> 256 -> 2 x 16 latents
-> 256 -> 256 -> 64, Gaussian decoder with sigma = 0.1) on scikit-learn's 8x8 digits
(shipped inside the package, offline), minimising per image

    ||x - x_hat||^2 / (2 sigma^2 ln 2)  +  beta * KL[q(z|x) || N(0, 1)]   (bits),

with :class:`rcc.torch.RCCChannel` in training mode (reparameterised sample, analytic
KL).  Then, as CompressAI's ``update()``, the channel is calibrated on posteriors of
training images (widths, coding priors, block layout, index code), the 360 test
images' posteriors are compressed into one bitstream and decompressed, and the
images are reconstructed from the *decoded* latents.  The decoding factors are coded
with the channel's learned marginal (fitted at calibration); the same blocks with the
``N(0, 1)`` marginal are coded too, to show what it saves.  Per image the CSV holds the
ELBO's KL term in bits next to the bits of the coded messages (their information
content under the coder's models; the bytes of the whole test set are this plus a
few dozen bits of headers), and the reconstruction error.  For comparison the same
posteriors are coded dimension by dimension: one ``RCCChannel(1)`` per latent
dimension, each with its own calibration, index code and bitstream.

A fresh Python process then rebuilds the model from its ``state_dict`` alone,
decompresses the bytes with the seed and decodes the images: they must equal the
first process's images bit for bit.

Every beta is trained with several training seeds (initialisation, batch order and
the training-time noise all follow the seed); the rate-distortion curves are the mean
over seeds with standard errors, and whether they are monotone in the rate is
checked and reported.  The fresh-process check runs for the first seed of each beta.

Writes ``vae_digits.csv`` (one row per beta, seed and test image),
``vae_digits_summary.csv`` (one row per beta, seed and coding layout),
``vae_digits_curves.csv`` (one row per beta and layout: means and standard errors
over seeds) and ``vae_digits.png`` (rate against distortion; measured bits against
KL per image).
Run ``python -m experiments.vae_digits [--quick]``; :func:`replot` redraws the figure from the
first two CSVs without training.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rcc.torch import RCCChannel

from .common import (
    Stopwatch,
    beta_style,
    legend_below,
    new_figure,
    output_dir,
    progress_bar,
    run_script,
    save_figure,
    series_style,
    train_adam,
    write_csv,
)

__all__ = ["SETTINGS", "DigitsVAE", "load_digits_split", "train", "decode_folder", "curves", "monotone", "replot", "main"]

#: Seed of the shared randomness of the test-set bitstream.
CODING_SEED = 20240601
#: Gaussian decoder's standard deviation (pixels scaled to [0, 1]).
DECODER_SIGMA = 0.1

SETTINGS = {
    "full": dict(betas=(0.1, 0.3, 1.0, 3.0), seeds=(0, 1, 2), latents=16, hidden=256, steps=1000,
                 calibration_items=None, test_items=None, block_budget_bits=12.0),
    "quick": dict(betas=(0.3, 1.0, 3.0), seeds=(0, 1), latents=16, hidden=128, steps=800, calibration_items=400,
                  test_items=None, block_budget_bits=12.0),
    "tiny": dict(betas=(1.0,), seeds=(0, 1), latents=4, hidden=32, steps=150, calibration_items=120,
                 test_items=60, block_budget_bits=8.0),
}


def load_digits_split(seed=0, train_items=1437):
    """scikit-learn's 8x8 digits in [0, 1] as float32, split by a seeded permutation.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Training and test images, shapes ``(1437, 64)`` and ``(360, 64)``.
    """
    from sklearn.datasets import load_digits

    images = (load_digits().data / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(images))
    return images[order[:train_items]], images[order[train_items:]]


class DigitsVAE(nn.Module):
    """MLP VAE on 64 pixels with an :class:`rcc.torch.RCCChannel` between encoder and decoder.

    Parameters
    ----------
    latents, hidden : int
        Latent dimensions and hidden width.
    generator : torch.Generator, optional
        Noise of the channel's training-mode sample.
    block_budget_bits : float
        The channel's block budget.
    """

    def __init__(self, latents, hidden, *, generator=None, block_budget_bits=12.0):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, 2 * latents))
        self.decoder = nn.Sequential(nn.Linear(latents, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, 64))
        self.channel = RCCChannel(latents, block_budget_bits=block_budget_bits, generator=generator)

    @classmethod
    def create(cls, latents, hidden, *, seed, **kwargs):
        """A model initialised from ``seed`` (in a forked torch RNG: global state untouched)."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return cls(latents, hidden, **kwargs)

    def posterior(self, x):
        """``(mean, log_scale)`` of ``q(z | x)``."""
        mean, log_scale = self.encoder(x).chunk(2, dim=-1)
        return mean, log_scale

    def forward(self, x, seed=None):
        """Reconstruction and rate in bits per image (real bytes in eval mode, given ``seed``)."""
        mean, log_scale = self.posterior(x)
        z, rate_bits = self.channel(mean, log_scale, seed)
        return self.decoder(z), rate_bits


def distortion_bits(x, x_hat):
    """Negative log-likelihood of the Gaussian decoder in bits, up to a constant."""
    return ((x - x_hat) ** 2).sum(-1) / (2.0 * DECODER_SIGMA**2 * math.log(2.0))


def train(model, images, beta, steps, *, seed, progress=True, batch_size=64, learning_rate=1e-3):
    """Adam on ``distortion + beta * KL`` (bits per image); deterministic given ``seed``."""

    def loss_terms(x):
        x_hat, rate_bits = model(x)
        return (distortion_bits(x, x_hat) + beta * rate_bits).mean(), rate_bits

    return train_adam(model, images, loss_terms, steps, seed=seed, progress=progress, batch_size=batch_size,
                      learning_rate=learning_rate, desc=f"train beta={beta:g} seed={seed}", postfix_every=500)


def decode_folder(folder):
    """Receiver side in a fresh process: state_dict + bytes + seed -> images (``decoded.npy``).

    ``folder`` holds ``model.pt`` (the VAE's state_dict), ``latents.bin`` (the
    bitstream) and ``meta.json`` (seed, latent shape, model sizes).
    """
    import json

    torch.set_num_threads(1)
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    model = DigitsVAE(meta["latents"], meta["hidden"])
    model.load_state_dict(torch.load(folder / "model.pt"))
    model.eval()
    data = (folder / "latents.bin").read_bytes()
    with torch.no_grad():
        z = model.channel.decompress(data, meta["seed"], tuple(meta["shape"]))
        images = model.decoder(z)
    np.save(folder / "decoded.npy", images.numpy())


def _fresh_process_check(model, data, shape, images, *, latents, hidden):
    """Decode in a new interpreter from the state_dict, the bytes and the seed; compare bits."""
    import json

    repository = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        torch.save(model.state_dict(), folder / "model.pt")
        (folder / "latents.bin").write_bytes(data)
        (folder / "meta.json").write_text(json.dumps(
            {"seed": CODING_SEED, "shape": list(shape), "latents": latents, "hidden": hidden}))
        code = "import sys; from experiments.vae_digits import decode_folder; decode_folder(sys.argv[1])"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repository), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-c", code, str(folder)], check=True, cwd=repository, env=env, timeout=600)
        decoded = np.load(folder / "decoded.npy")
    return bool(decoded.dtype == images.dtype and np.array_equal(decoded, images))


def _code_test_set(channel, mean, log_scale, *, seed=CODING_SEED, progress=False):
    """Compress, decompress and check one channel; returns a dict of what the table needs."""
    with Stopwatch() as encode_time:
        data, item_bits, stats = channel.compress(mean, log_scale, seed, return_stats=True, progress=progress)
    with Stopwatch() as decode_time:
        z = channel.decompress(data, seed, mean.shape)
    if not torch.equal(z, stats["latents"]):
        raise RuntimeError("decoded latents differ from the encoder's latents")
    return {
        "z": z,
        "data": data,
        "bytes": len(data),
        "streams": 1,
        "item_bits": item_bits.numpy(),
        "kl_bits": stats["kl_bits"].numpy(),
        "candidates": stats["candidates"].numpy().astype(np.float64),
        "fallback_blocks": stats["fallback_blocks"],
        "num_blocks": channel.num_blocks,
        "block_size": channel.block_size,
        "encode_seconds": encode_time.seconds,
        "decode_seconds": decode_time.seconds,
    }


def _code_per_dimension(mean, log_scale, calibration_mean, calibration_log_scale):
    """Per-dimension coding: one channel (own width, prior, index code, stream) per dimension."""
    parts = []
    for j in range(mean.shape[-1]):
        channel = RCCChannel(1).eval()
        channel.calibrate(calibration_mean[:, j:j + 1], calibration_log_scale[:, j:j + 1])
        parts.append(_code_test_set(channel, mean[:, j:j + 1], log_scale[:, j:j + 1], seed=CODING_SEED + 1 + j))
    return {
        "z": torch.cat([p["z"] for p in parts], dim=-1),
        "data": None,
        "bytes": sum(p["bytes"] for p in parts),
        "streams": len(parts),
        "item_bits": sum(p["item_bits"] for p in parts),
        "kl_bits": sum(p["kl_bits"] for p in parts),
        "candidates": sum(p["candidates"] for p in parts),
        "fallback_blocks": sum(p["fallback_blocks"] for p in parts),
        "num_blocks": len(parts),
        "block_size": 1,
        "encode_seconds": sum(p["encode_seconds"] for p in parts),
        "decode_seconds": sum(p["decode_seconds"] for p in parts),
    }


def run_beta(beta, train_images, test_images, settings, *, seed=0, progress=True, fresh_process=True):
    """Train one VAE (training seed ``seed``), code its test latents three ways, return per-image rows
    and summaries; ``fresh_process`` also decodes the bytes in a new interpreter."""
    model = DigitsVAE.create(settings["latents"], settings["hidden"], seed=1000 * seed + 1,
                             generator=torch.Generator().manual_seed(1000 * seed + 2),
                             block_budget_bits=settings["block_budget_bits"])
    with Stopwatch() as train_time:
        train(model, train_images, beta, settings["steps"], seed=1000 * seed + 3, progress=progress)
    x_train = torch.from_numpy(train_images)
    x_test = torch.from_numpy(test_images)
    with torch.no_grad():
        # None: every training image.
        calibration_mean, calibration_log_scale = model.posterior(x_train[: settings["calibration_items"]])
        mean, log_scale = model.posterior(x_test)
        kl_bits = model.channel.kl_bits(mean, log_scale).numpy()
        # The training-time channel (reparameterised sample) and the posterior mean, for reference.
        model.channel.train()
        z_train_style, _ = model.channel(mean, log_scale)
        model.channel.eval()
        mse_reparameterised = ((model.decoder(z_train_style) - x_test) ** 2).mean(-1).numpy()
        mse_mean = ((model.decoder(mean) - x_test) ** 2).mean(-1).numpy()

    with Stopwatch() as calibration_time:
        calibration = model.channel.calibrate(calibration_mean, calibration_log_scale, progress=progress)
    # The same blocks with the factors coded under the N(0, 1) marginal instead of the
    # learned one: what the learned marginal of the factors saves.
    prior_factors = copy.deepcopy(model.channel)
    prior_factors.factor_tables = torch.zeros(0, dtype=torch.float64)
    layouts = {
        "blocks": _code_test_set(model.channel, mean, log_scale, progress=progress),
        "blocks_prior_factors": _code_test_set(prior_factors, mean, log_scale, progress=progress),
        "per_dimension": _code_per_dimension(mean, log_scale, calibration_mean, calibration_log_scale),
    }
    for layout in layouts.values():
        with torch.no_grad():
            images = model.decoder(layout["z"])
        layout["images"] = images.numpy()
        layout["mse"] = ((images - x_test) ** 2).mean(-1).numpy()

    blocks = layouts["blocks"]
    fresh_ok = (_fresh_process_check(model, blocks["data"], tuple(mean.shape), blocks["images"],
                                     latents=settings["latents"], hidden=settings["hidden"])
                if fresh_process else "")
    rows = []
    for i in range(len(test_images)):
        rows.append({
            "beta": beta,
            "seed": seed,
            "image": i,
            "kl_bits": float(kl_bits[i]),
            "truncated_kl_bits": float(blocks["kl_bits"][i]),
            "message_bits": float(blocks["item_bits"][i]),
            "message_bits_prior_factors": float(layouts["blocks_prior_factors"]["item_bits"][i]),
            "message_bits_per_dimension": float(layouts["per_dimension"]["item_bits"][i]),
            "fallback_blocks_in_batch": blocks["fallback_blocks"],
            "mse_decoded_latents": float(blocks["mse"][i]),
            "mse_decoded_latents_per_dimension": float(layouts["per_dimension"]["mse"][i]),
            "mse_reparameterised_sample": float(mse_reparameterised[i]),
            "mse_posterior_mean": float(mse_mean[i]),
        })
    count = len(test_images)
    mean_kl = float(kl_bits.mean())
    summaries = []
    for name, layout in layouts.items():
        measured = 8.0 * layout["bytes"] / count
        allowed = max(0.1 * mean_kl, 2.0)
        summaries.append({
            "beta": beta,
            "seed": seed,
            "layout": name,
            "latents": settings["latents"],
            "num_blocks": layout["num_blocks"],
            "block_size": layout["block_size"],
            "images": count,
            "mean_kl_bits": mean_kl,
            "mean_truncated_kl_bits": float(layout["kl_bits"].mean()),
            "mean_message_bits": float(layout["item_bits"].mean()),
            "measured_bits_per_image": measured,
            "measured_minus_kl_bits": measured - mean_kl,
            "measured_over_kl": measured / mean_kl,
            "within_10pct_or_2_bits": bool(abs(measured - mean_kl) <= allowed),
            "bytes": layout["bytes"],
            "streams": layout["streams"],
            "fallback_blocks": layout["fallback_blocks"],
            "mean_candidates_per_image": float(layout["candidates"].mean()),
            "encode_seconds": layout["encode_seconds"],
            "decode_seconds": layout["decode_seconds"],
            "mse_decoded_latents": float(layout["mse"].mean()),
            "mse_reparameterised_sample": float(mse_reparameterised.mean()),
            "mse_posterior_mean": float(mse_mean.mean()),
            "fresh_process_bit_exact": fresh_ok if name == "blocks" else "",
            "train_seconds": train_time.seconds,
            "calibration_seconds": calibration_time.seconds if name == "blocks" else "",
            "calibration_fallback_fraction": calibration["fallback_fraction"] if name == "blocks" else "",
        })
    return rows, summaries


def _mean_se(values):
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
    return float(values.mean()), se


#: Columns of the summaries averaged over seeds in :func:`curves`.
CURVE_COLUMNS = ("mean_kl_bits", "measured_bits_per_image", "measured_minus_kl_bits", "mse_decoded_latents",
                 "mse_reparameterised_sample", "mse_posterior_mean", "fallback_blocks")


def curves(summaries):
    """One row per (layout, beta): mean and standard error over the training seeds of :data:`CURVE_COLUMNS`."""
    out = []
    for layout in dict.fromkeys(s["layout"] for s in summaries):
        for beta in sorted({s["beta"] for s in summaries if s["layout"] == layout}):
            sel = [s for s in summaries if s["layout"] == layout and s["beta"] == beta]
            row = {"layout": layout, "beta": beta, "seeds": len(sel)}
            for column in CURVE_COLUMNS:
                row[column], row[f"{column}_se"] = _mean_se([s[column] for s in sel])
            out.append(row)
    return out


def monotone(curve_rows, layout, rate_key="measured_bits_per_image", distortion_key="mse_decoded_latents"):
    """Whether, along increasing beta, the mean rate falls and the mean distortion rises."""
    sel = sorted((r for r in curve_rows if r["layout"] == layout), key=lambda r: r["beta"])
    rate = np.array([r[rate_key] for r in sel])
    distortion = np.array([r[distortion_key] for r in sel])
    return bool(np.all(np.diff(rate) < 0) and np.all(np.diff(distortion) > 0))


def plot(rows, curve_rows, path):
    """Rate against distortion (mean ± s.e. over seeds); per-image message bits against the KL."""
    fig, axes = new_figure(ncols=2, width=4.4, height=3.6)
    ax = axes[0]

    def draw(layout, rate_key, mse_key, label, style_name, ls):
        sel = sorted((r for r in curve_rows if r["layout"] == layout), key=lambda r: r["beta"])
        ax.errorbar([r[rate_key] for r in sel], [r[mse_key] for r in sel],
                    xerr=np.nan_to_num([r[f"{rate_key}_se"] for r in sel]),
                    yerr=np.nan_to_num([r[f"{mse_key}_se"] for r in sel]), ls=ls, ms=4, capsize=2, label=label,
                    **series_style(style_name))
        return sel

    draw("blocks", "mean_kl_bits", "mse_reparameterised_sample", "KL of the ELBO (training-time sample)", "kl", "--")
    blocks = draw("blocks", "measured_bits_per_image", "mse_decoded_latents", "bytes, blocks", "blocks", "-")
    draw("blocks_prior_factors", "measured_bits_per_image", "mse_decoded_latents",
         "bytes, blocks, N(0,1) factor marginal", "blocks_prior_factors", ":")
    draw("per_dimension", "measured_bits_per_image", "mse_decoded_latents", "bytes, per dimension",
         "per_dimension", "-")
    for r in blocks:
        ax.annotate(f"beta={r['beta']:g}", (r["measured_bits_per_image"], r["mse_decoded_latents"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7, color=beta_style(r["beta"])["color"])
    ax.set_yscale("log")
    ax.set_xlabel("bits per image")
    ax.set_ylabel("MSE per pixel (test set)")
    seeds = int(max(r["seeds"] for r in curve_rows))
    ax.set_title(f"rate-distortion, 8x8 digits (mean ± s.e., {seeds} seeds)" if seeds > 1
                 else "rate-distortion, 8x8 digits (one training seed)")
    ax = axes[1]
    first_seed = int(min(r.get("seed", 0) for r in rows))  # CSVs of one-seed runs have no seed column
    shown = [r for r in rows if r.get("seed", 0) == first_seed]
    for beta in sorted({r["beta"] for r in shown}):
        kl = [r["kl_bits"] for r in shown if r["beta"] == beta]
        bits = [r["message_bits"] for r in shown if r["beta"] == beta]
        ax.scatter(kl, bits, s=6, alpha=0.5, label=f"beta={beta:g}", **beta_style(beta))
    low = min(min(r["kl_bits"] for r in shown), min(r["message_bits"] for r in shown))
    high = max(max(r["kl_bits"] for r in shown), max(r["message_bits"] for r in shown))
    ax.plot([low, high], [low, high], color="0.3", lw=0.8, label="bits = KL")
    ax.set_xlabel("KL term of the ELBO (bits)")
    ax.set_ylabel("message bits (blocks)")
    ax.set_title(f"per test image (training seed {first_seed})")
    legend_below(fig, axes, ncol=3)
    return save_figure(fig, path)


def replot(out_dir=None):
    """Recompute the seed averages and redraw the figure from ``vae_digits.csv`` and ``vae_digits_summary.csv``."""
    from .common import read_csv

    out = output_dir(out_dir)

    def number(text):
        try:
            return float(text)
        except ValueError:  # layouts, flags and empty cells stay text
            return text

    def numbers(rows):
        return [{k: number(v) for k, v in r.items()} for r in rows]

    rows = numbers(read_csv(out / "vae_digits.csv"))
    summaries = numbers(read_csv(out / "vae_digits_summary.csv"))
    curve_rows = curves(summaries)
    write_csv(out / "vae_digits_curves.csv", curve_rows)
    return plot(rows, curve_rows, out / "vae_digits.png")


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Train (every beta and seed), code, decode in a fresh process; write the CSVs and the figure.

    Returns
    -------
    dict
        One line per beta and layout (mean ± s.e. over seeds): KL, measured bits per
        image, MSE, fallbacks; whether each curve is monotone in the rate; the
        fresh-process checks.
    """
    settings = SETTINGS["tiny" if tiny else "quick" if quick else "full"]
    out = output_dir(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is fastest and bit-reproducible
    try:
        train_images, test_images = load_digits_split()
        if settings["test_items"] is not None:
            test_images = test_images[: settings["test_items"]]
        rows, summaries = [], []
        # Seed by seed, so that an interrupted run has whole curves.
        jobs = [(beta, seed) for seed in settings["seeds"] for beta in settings["betas"]]
        for beta, seed in progress_bar(jobs, enabled=progress, desc="vae_digits"):
            beta_rows, beta_summaries = run_beta(beta, train_images, test_images, settings, seed=seed,
                                                 progress=progress, fresh_process=seed == settings["seeds"][0])
            rows += beta_rows
            summaries += beta_summaries
            # What is measured so far, so that an interrupted run keeps it (replot() reads it).
            write_csv(out / "vae_digits.csv", rows)
            write_csv(out / "vae_digits_summary.csv", summaries)
    finally:
        torch.set_num_threads(threads)
    curve_rows = curves(summaries)
    write_csv(out / "vae_digits_curves.csv", curve_rows)
    plot(rows, curve_rows, out / "vae_digits.png")
    summary = {}
    for r in curve_rows:
        summary[f"beta={r['beta']:g} {r['layout']}"] = (
            f"KL {r['mean_kl_bits']:.2f} ± {r['mean_kl_bits_se']:.2f}, measured "
            f"{r['measured_bits_per_image']:.2f} ± {r['measured_bits_per_image_se']:.2f} bits/image "
            f"({r['measured_minus_kl_bits']:+.2f} over the KL), MSE {r['mse_decoded_latents']:.4f} ± "
            f"{r['mse_decoded_latents_se']:.4f} (training-time sample {r['mse_reparameterised_sample']:.4f}), "
            f"{r['fallback_blocks']:.1f} fallback blocks, {r['seeds']} seeds")
    for layout in dict.fromkeys(r["layout"] for r in curve_rows):
        summary[f"{layout} monotone in rate (mean over seeds)"] = monotone(curve_rows, layout)
    checks = [s["fresh_process_bit_exact"] for s in summaries if s["fresh_process_bit_exact"] != ""]
    summary["fresh process bit-exact"] = f"{sum(bool(c) for c in checks)} of {len(checks)} checks"
    return summary


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
