"""Learned compression measured: reverse channel coding against universal quantisation and hard rounding.

One MLP autoencoder family on scikit-learn's 8x8 digits (shipped inside the package,
offline): ``64 -> H -> H -> latents`` encoder, ``latents -> H -> H -> 64`` decoder
(SiLU), trained three ways with the same sizes, optimiser (Adam, learning rate
1e-3, batch 64), number of steps and data order, minimising per image

    ||x - x_hat||^2 / (2 sigma^2 ln 2)  +  beta * rate   (bits, sigma = 0.1),

with the rate knob ``beta``:

* ``rcc``: Gaussian posterior ``q(z|x)`` (the encoder's last layer gives mean and log
  scale, so it is twice as wide), :class:`rcc.torch.RCCChannel` in training mode
  (reparameterised sample, analytic KL to ``N(0, 1)`` as the rate); at test time the
  channel is calibrated on the training images' posteriors and the test posteriors
  are coded into real bytes; the decoder sees the decoded latents, exact samples of
  the posteriors (Theis & Agustsson 2021, "On the advantages of stochastic encoders").
* ``uq``: :class:`rcc.torch.UniformNoiseChannel` with soft rounding (Agustsson & Theis
  2020): training adds uniform noise to ``s_alpha(y)`` (``alpha`` annealed from 1 to
  :data:`ALPHA_FINAL` over the first half of training) and the rate is the learned
  factorised entropy model (a logistic per latent dimension convolved with the unit
  box); at test time universal quantisation with a shared dither, the range-coded
  bytes of ``UniformNoiseChannel.compress`` and the conditional-mean reconstruction.
* ``hard``: hard rounding ``round(y)`` with a straight-through gradient (for both terms
  of the loss) and the same entropy model evaluated at the integers,
  ``P(k) = F(k + 1/2) - F(k - 1/2)``; at test time the integers are range coded with
  that model (``constriction``; values outside the coded window are escaped).

Every pipeline is trained for several ``beta`` and training seeds; test-set rates are
``8 * len(bytes) / images`` of one bitstream for the 360 test images, distortion is
the MSE of the images decoded from the *decoded* latents, PSNR ``10 log10(1 / MSE)``
(pixels in [0, 1]).  Curves are averaged over seeds (mean +- standard error), and the
pipelines are compared at equal rates: each seed's PSNR is interpolated linearly in
the rate on a grid inside the rate range all pipelines reach, and the gap in dB gets
the standard error ``sqrt(se_a**2 + se_b**2)`` (independent seeds).

Writes ``learned_compression.csv`` (one row per pipeline, beta and seed),
``learned_compression_gaps.csv`` (PSNR of each pipeline and the gaps on the common
rate grid), ``learned_compression_drift.csv`` (the RCC channel's cost when test
posteriors drift from the calibration ones, :func:`drift_rows`) and
``learned_compression.png``.  Run
``python -m experiments.learned_compression [--quick]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from rcc.torch import RCCChannel, UniformNoiseChannel

from .common import (Stopwatch, legend_below, new_figure, output_dir, progress_bar, run_script, save_figure,
                     write_csv)
from .vae_digits import distortion_bits, load_digits_split

__all__ = ["SETTINGS", "PIPELINES", "SERIES", "DRIFT_CASES", "Codec", "train", "evaluate", "hard_compress",
           "hard_decompress", "monotone", "compare_at_equal_rate", "drift_rows", "load_rows", "replot", "main"]

#: Seed of the shared randomness of the test-set bitstreams.
CODING_SEED = 20251201
#: Final soft-rounding sharpness of the ``uq`` pipeline.
ALPHA_FINAL = 4.0
#: The entropy model's coded window covers all but this mass of each logistic (``hard``).
HARD_TAIL_MASS = 1e-9
#: Block budget of the RCC channel.  With the default (12 bits) a model whose latents
#: carry 10-12 bits gets one block, and the items whose KL lies above the mean exceed the
#: race's candidate limit and take the per-dimension fallback (tens of bits above the KL
#: per image at the lowest rate of this experiment); 9 bits gives two blocks there and
#: almost no fallbacks.
RCC_BLOCK_BUDGET_BITS = 9.0

PIPELINES = ("rcc", "uq", "hard")
#: Fixed colour, marker and label per series (the same in every figure).
SERIES = {
    "rcc": dict(color="C0", marker="o", label="Gaussian posterior + RCC (bytes)"),
    "rcc_kl": dict(color="C0", marker="", label="Gaussian posterior, ELBO KL (no bytes)"),
    "uq": dict(color="C1", marker="s", label="soft rounding + universal quantisation"),
    "hard": dict(color="C2", marker="^", label="hard rounding (straight-through)"),
}

SETTINGS = {
    "full": dict(betas=(0.1, 0.2, 0.4, 0.8, 1.6, 3.2), seeds=(0, 1, 2), latents=16, hidden=128, steps=6000,
                 calibration_items=None, test_items=None, grid_points=8),
    "quick": dict(betas=(0.2, 0.8, 3.2), seeds=(0, 1), latents=16, hidden=64, steps=700,
                  calibration_items=400, test_items=None, grid_points=5),
    "tiny": dict(betas=(0.5, 2.0), seeds=(0,), latents=4, hidden=32, steps=40, calibration_items=100,
                 test_items=40, grid_points=3),
}


class Codec(nn.Module):
    """MLP autoencoder on 64 pixels with one of the three latent channels.

    Parameters
    ----------
    pipeline : {"rcc", "uq", "hard"}
        Which channel sits between encoder and decoder (module docstring).
    latents, hidden : int
        Latent dimensions and hidden width (the same for every pipeline).
    generator : torch.Generator
        Noise of the training-time channel (``rcc``, ``uq``).
    """

    def __init__(self, pipeline, latents, hidden, *, generator):
        super().__init__()
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
        self.pipeline = pipeline
        head = 2 * latents if pipeline == "rcc" else latents
        self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, head))
        self.decoder = nn.Sequential(nn.Linear(latents, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, 64))
        if pipeline == "rcc":
            self.channel = RCCChannel(latents, block_budget_bits=RCC_BLOCK_BUDGET_BITS, generator=generator)
        else:
            alpha = 1.0 if pipeline == "uq" else None
            # For "hard" only the entropy model (its bits()) is used, never the noise.
            self.channel = UniformNoiseChannel(latents, channel_dim=-1, alpha=alpha, generator=generator)

    @classmethod
    def create(cls, pipeline, latents, hidden, *, seed):
        """A model initialised from ``seed`` (in a forked torch RNG: global state untouched)."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return cls(pipeline, latents, hidden, generator=torch.Generator().manual_seed(seed + 10_000))

    def training_terms(self, x):
        """``(x_hat, rate_bits)`` per image of the training-time channel."""
        out = self.encoder(x)
        if self.pipeline == "rcc":
            mean, log_scale = out.chunk(2, dim=-1)
            z, rate = self.channel(mean, log_scale)
        elif self.pipeline == "uq":
            z, bits = self.channel(out, return_bits=True)
            rate = bits.sum(-1)
        else:
            z = out + (torch.round(out) - out).detach()  # straight-through estimator
            rate = self.channel.bits(z).sum(-1)
        return self.decoder(z), rate


def train(model, images, beta, steps, *, seed, progress=True, batch_size=64, learning_rate=1e-3):
    """Adam on ``distortion + beta * rate`` (bits per image); deterministic given ``seed``."""
    data = torch.from_numpy(images)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    bar = progress_bar(total=steps, enabled=progress, desc=f"{model.pipeline} beta={beta:g} seed={seed}",
                       leave=False)
    step = 0
    while step < steps:
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data) - batch_size + 1, batch_size):
            if model.pipeline == "uq":
                model.channel.alpha = 1.0 + (ALPHA_FINAL - 1.0) * min(1.0, step / (0.5 * steps))
            x = data[order[start:start + batch_size]]
            x_hat, rate = model.training_terms(x)
            loss = (distortion_bits(x, x_hat) + beta * rate).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            bar.update(1)
            if step % 250 == 0:
                bar.set_postfix(loss=f"{loss.item():.1f}", rate=f"{rate.mean().item():.1f}")
            if step == steps:
                break
    bar.close()
    model.eval()
    return model


# -- the hard-rounding pipeline's range coder ------------------------------------------


def _hard_window(channel):
    """Per-dimension window centres and the half-width covering all but HARD_TAIL_MASS."""
    loc = channel.loc.detach().double().numpy()
    scale = channel.scale.detach().double().numpy()
    half = int(math.ceil(float(scale.max()) * math.log(2.0 / HARD_TAIL_MASS)) + 1)
    return loc, scale, np.round(loc).astype(np.int64), half


def _hard_probabilities(loc, scale, centre, half, count):
    """Rows ``[P(c - H), ..., P(c + H), P(escape)]`` of the logistic entropy model, tiled over items."""
    from scipy.special import expit

    edges = np.arange(-half - 0.5, half + 1.0)
    z = (centre[:, None] - loc[:, None] + edges[None, :]) / scale[:, None]
    cells = np.maximum(np.diff(expit(z), axis=1), 0.0)
    rows = np.concatenate([cells, expit(z[:, :1]) + expit(-z[:, -1:])], axis=1)
    rows = np.maximum(rows, 1e-12)  # every symbol codable (the escape too)
    return np.tile(rows / rows.sum(axis=1, keepdims=True), (count, 1))


def hard_compress(channel, k):
    """Range-code the integers ``k`` (``(items, latents)``) under ``channel``'s logistic model."""
    import constriction

    loc, scale, centre, half = _hard_window(channel)
    n, d = k.shape
    rel = (k - centre[None, :]).reshape(-1)
    outside = np.abs(rel) > half
    symbols = np.where(outside, 2 * half + 1, rel + half).astype(np.int32)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(symbols, constriction.stream.model.Categorical(perfect=False),
                   _hard_probabilities(loc, scale, centre, half, n))
    for value in rel[outside]:  # escaped values: sign, then the distance beyond the window in 2 x 16 bits
        distance = int(abs(value)) - half
        if distance >= 1 << 32:
            raise ValueError(f"latent value {int(value)} is too far outside the entropy model's window to code")
        encoder.encode(int(value > 0), constriction.stream.model.Uniform(2))
        encoder.encode(np.array([distance >> 16, distance & 0xFFFF], dtype=np.int32),
                       constriction.stream.model.Uniform(1 << 16))
    return np.asarray(encoder.get_compressed(), dtype=np.uint32).tobytes(), int(outside.sum())


def hard_decompress(channel, data, shape):
    """Inverse of :func:`hard_compress`."""
    import constriction

    loc, scale, centre, half = _hard_window(channel)
    n, d = shape
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype=np.uint32))
    symbols = np.asarray(decoder.decode(constriction.stream.model.Categorical(perfect=False),
                                        _hard_probabilities(loc, scale, centre, half, n)), dtype=np.int64)
    rel = symbols - half
    for i in np.flatnonzero(symbols == 2 * half + 1):
        side = int(decoder.decode(constriction.stream.model.Uniform(2)))
        high, low = np.asarray(decoder.decode(constriction.stream.model.Uniform(1 << 16), 2)).tolist()
        distance = (int(high) << 16 | int(low)) + half
        rel[i] = distance if side else -distance
    return rel.reshape(n, d) + centre[None, :]


# -- test-time evaluation ---------------------------------------------------------------


def _mse(model, z, x):
    with torch.no_grad():
        return float(((model.decoder(z) - x) ** 2).mean())


def evaluate(model, train_images, test_images, settings, *, progress=False):
    """Real bytes for the test set and the distortion of the decoded images; returns a dict."""
    x_train = torch.from_numpy(train_images)
    x = torch.from_numpy(test_images)
    n = len(test_images)
    row = {}
    with torch.no_grad():
        out = model.encoder(x)
    with Stopwatch() as watch:
        if model.pipeline == "rcc":
            channel = model.channel
            with torch.no_grad():
                calibration = model.encoder(x_train[: settings["calibration_items"]]).chunk(2, dim=-1)
            channel.calibrate(*calibration)
            channel.eval()
            mean, log_scale = out.chunk(2, dim=-1)
            data, item_bits, stats = channel.compress(mean, log_scale, CODING_SEED, return_stats=True,
                                                      progress=progress)
            z = channel.decompress(data, CODING_SEED, mean.shape)
            if not torch.equal(z, stats["latents"]):
                raise RuntimeError("RCC: decoded latents differ from the encoder's")
            items, _, item_stats = channel.compress(mean, log_scale, CODING_SEED, per_item=True,
                                                    return_stats=True)
            if not torch.equal(channel.decompress(items, CODING_SEED, mean.shape), item_stats["latents"]):
                raise RuntimeError("RCC: per-item streams do not round-trip")
            kl = float(channel.kl_bits(mean, log_scale).mean())
            bits = 8.0 * len(data) / n
            row.update(kl_bits=kl, truncated_kl_bits=float(stats["kl_bits"].mean()),
                       message_bits=float(item_bits.mean()), num_blocks=channel.num_blocks,
                       bits_above_kl_per_image=bits - kl, bits_above_kl_per_block=(bits - kl) / channel.num_blocks,
                       per_item_stream_bits=float(np.mean([8.0 * len(b) for b in items])),
                       per_item_above_kl_per_block=(float(np.mean([8.0 * len(b) for b in items])) - kl)
                       / channel.num_blocks,
                       fallback_blocks=stats["fallback_blocks"],
                       candidates_per_image=float(stats["candidates"].double().mean()))
            # Distortion of the training-time sample (what the KL pays for), for reference.
            row["mse_kl_sample"] = _mse(model, mean + log_scale.exp() * torch.randn(
                mean.shape, generator=torch.Generator().manual_seed(CODING_SEED)), x)
        elif model.pipeline == "uq":
            channel = model.channel
            channel.eval()
            data, stats = channel.compress(out, CODING_SEED, return_stats=True)
            z = channel.decompress(data, CODING_SEED, out.shape)
            with torch.no_grad():
                if not torch.equal(z, channel(out, CODING_SEED)):
                    raise RuntimeError("UQ: decoded latents differ from the eval-mode channel")
            bits = 8.0 * len(data) / n
            row.update(message_bits=stats["ideal_bits"] / n, escapes=stats["num_escapes"])
        else:
            k = torch.round(out).to(torch.int64).numpy()
            data, escapes = hard_compress(model.channel, k)
            decoded = hard_decompress(model.channel, data, k.shape)
            if not np.array_equal(decoded, k):
                raise RuntimeError("hard rounding: decoded integers differ")
            z = torch.from_numpy(decoded).to(out.dtype)
            with torch.no_grad():
                ideal = float(model.channel.bits(z).sum()) / n
            bits = 8.0 * len(data) / n
            row.update(message_bits=ideal, escapes=escapes)
    mse = _mse(model, z, x)
    row.update(bits_per_image=bits, bytes=len(data), mse=mse, psnr_db=10.0 * math.log10(1.0 / mse),
               code_seconds=watch.seconds)
    return row


def run_one(pipeline, beta, seed, train_images, test_images, settings, *, progress=True):
    """Train one model and measure it; returns the CSV row."""
    model = Codec.create(pipeline, settings["latents"], settings["hidden"], seed=1000 * seed + 1)
    with Stopwatch() as watch:
        train(model, train_images, beta, settings["steps"], seed=1000 * seed + 2, progress=progress)
    row = {"pipeline": pipeline, "beta": beta, "seed": seed}
    row.update(evaluate(model, train_images, test_images, settings))
    row["train_seconds"] = watch.seconds
    return row


# -- calibration drift ---------------------------------------------------------------------

#: Drift cases of :func:`drift_rows`: (name, factor on latent 0's std, latent 0's mean or None).
DRIFT_CASES = (("as calibrated", 1.0, None), ("std x1.6", 1.6, None), ("std /1.6", 1 / 1.6, None),
               ("std x2", 2.0, None), ("std /2", 0.5, None), ("mean 3 aggregate stds out", 1.0, 3.0))


def drift_rows(*, items=500, calibration_items=2000, latents=8, seed=0):
    """An ``RCCChannel(latents)`` calibrated on posteriors ``N(mu, e**-4)``, ``mu ~ N(0, 1 - e**-4)``
    (aggregate std 1), coding test posteriors of the same law with latent 0 drifted (:data:`DRIFT_CASES`).

    Returns one row per case: measured bits per item (one stream), KL, the difference,
    candidates per item and their ratio to the undrifted case, fallback blocks.
    """
    std = math.exp(-2.0)

    def posteriors(n, stream):
        g = torch.Generator().manual_seed(seed + stream)
        mean = math.sqrt(1.0 - std * std) * torch.randn(n, latents, generator=g, dtype=torch.float64)
        return mean, torch.full((n, latents), math.log(std), dtype=torch.float64)

    channel = RCCChannel(latents)
    channel.calibrate(*posteriors(calibration_items, 1))
    channel.eval()
    rows = []
    for name, factor, shift in DRIFT_CASES:
        mean, log_scale = posteriors(items, 2)
        log_scale[:, 0] += math.log(factor)
        if shift is not None:
            mean[:, 0] = shift
        data, _, stats = channel.compress(mean, log_scale, CODING_SEED, return_stats=True)
        kl = float(channel.kl_bits(mean, log_scale).mean())
        bits = 8.0 * len(data) / items
        rows.append({"case": name, "latents": latents, "blocks": channel.num_blocks, "items": items,
                     "bits_per_item": bits, "kl_bits": kl, "bits_above_kl": bits - kl,
                     "candidates_per_item": float(stats["candidates"].double().mean()),
                     "fallback_blocks": stats["fallback_blocks"]})
    for row in rows:
        row["candidates_over_calibrated"] = row["candidates_per_item"] / rows[0]["candidates_per_item"]
        row["extra_bits_over_calibrated"] = row["bits_above_kl"] - rows[0]["bits_above_kl"]
    return rows


# -- analysis ------------------------------------------------------------------------------


def _curves(rows, pipeline, rate_key="bits_per_image", value_key="psnr_db"):
    """``{seed: (rates, values)}`` sorted by rate."""
    out = {}
    for seed in sorted({r["seed"] for r in rows if r["pipeline"] == pipeline}):
        pts = sorted((r[rate_key], r[value_key]) for r in rows if r["pipeline"] == pipeline and r["seed"] == seed)
        out[seed] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
    return out


def _mean_se(values):
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
    return float(values.mean()), se


def monotone(rows, pipeline):
    """Whether rate falls and PSNR falls as beta grows, on the mean over seeds (and per seed)."""
    betas = sorted({r["beta"] for r in rows if r["pipeline"] == pipeline})

    def check(selected):
        rate = [np.mean([r["bits_per_image"] for r in selected if r["beta"] == b]) for b in betas]
        psnr = [np.mean([r["psnr_db"] for r in selected if r["beta"] == b]) for b in betas]
        return bool(np.all(np.diff(rate) < 0) and np.all(np.diff(psnr) < 0))
    mine = [r for r in rows if r["pipeline"] == pipeline]
    per_seed = [check([r for r in mine if r["seed"] == s]) for s in sorted({r["seed"] for r in mine})]
    return check(mine), per_seed


def compare_at_equal_rate(rows, points):
    """PSNR of every pipeline on a common rate grid, and the gaps, with standard errors over seeds."""
    curves = {p: _curves(rows, p) for p in PIPELINES}
    low = max(c[0].min() for p in PIPELINES for c in curves[p].values())
    high = min(c[0].max() for p in PIPELINES for c in curves[p].values())
    if not low < high:
        return []
    grid = np.linspace(low, high, points)
    at = {p: np.array([np.interp(grid, *c) for c in curves[p].values()]) for p in PIPELINES}
    out = []
    for i, rate in enumerate(grid):
        row = {"bits_per_image": float(rate)}
        stats = {p: _mean_se(at[p][:, i]) for p in PIPELINES}
        for p in PIPELINES:
            row[f"psnr_{p}"], row[f"psnr_{p}_se"] = stats[p]
        for a, b in (("rcc", "uq"), ("rcc", "hard"), ("uq", "hard")):
            row[f"gap_{a}_minus_{b}_db"] = stats[a][0] - stats[b][0]
            row[f"gap_{a}_minus_{b}_se"] = math.hypot(stats[a][1], stats[b][1])
        out.append(row)
    return out


def plot(rows, gaps, path):
    """Rate-distortion with error bars; gaps at equal rate; RCC's bits above the KL."""
    fig, axes = new_figure(ncols=3, width=4.2, height=3.5)
    ax = axes[0]
    betas = sorted({r["beta"] for r in rows})

    def series(pipeline, rate_key, value_key):
        pts = []
        for b in betas:
            sel = [r for r in rows if r["pipeline"] == pipeline and r["beta"] == b]
            if sel:
                pts.append((*_mean_se([r[rate_key] for r in sel]), *_mean_se([r[value_key] for r in sel])))
        return np.array(pts)

    for p in PIPELINES:
        pts = series(p, "bits_per_image", "psnr_db")
        style = SERIES[p]
        ax.errorbar(pts[:, 0], pts[:, 2], xerr=np.nan_to_num(pts[:, 1]), yerr=np.nan_to_num(pts[:, 3]),
                    color=style["color"], marker=style["marker"], ms=4, capsize=2, label=style["label"])
    for r in rows:
        if r["pipeline"] == "rcc":
            r["psnr_kl_sample"] = 10.0 * math.log10(1.0 / r["mse_kl_sample"])
    pts = series("rcc", "kl_bits", "psnr_kl_sample")
    ax.plot(pts[:, 0], pts[:, 2], ls="--", color=SERIES["rcc_kl"]["color"], label=SERIES["rcc_kl"]["label"])
    ax.set_xlabel("bits per image (test set)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("rate-distortion, 8x8 digits (mean ± s.e. over seeds)")

    ax = axes[1]
    if gaps:
        rate = np.array([g["bits_per_image"] for g in gaps])
        for (a, b), style in ((("rcc", "uq"), SERIES["uq"]), (("rcc", "hard"), SERIES["hard"])):
            gap = np.array([g[f"gap_{a}_minus_{b}_db"] for g in gaps])
            se = np.nan_to_num(np.array([g[f"gap_{a}_minus_{b}_se"] for g in gaps]))
            ax.plot(rate, gap, color=style["color"], marker=style["marker"], ms=4,
                    label=f"RCC minus {style['label']}")
            ax.fill_between(rate, gap - se, gap + se, color=style["color"], alpha=0.2)
        gap = np.array([g["gap_uq_minus_hard_db"] for g in gaps])
        ax.plot(rate, gap, color="0.4", ls=":", marker=".", label="soft rounding + UQ minus hard rounding")
        ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xlabel("bits per image")
    ax.set_ylabel("PSNR gap at equal rate (dB)")
    ax.set_title("RCC minus quantisation (± s.e.)")

    ax = axes[2]
    for key, label, marker, color in (("bits_above_kl_per_image", "per image, one stream", "o", "C0"),
                                      ("bits_above_kl_per_block", "per block, one stream", "s", "C3"),
                                      ("per_item_above_kl_per_block", "per block, per-image streams", "x", "C4")):
        pts = series("rcc", "kl_bits", key)
        ax.errorbar(pts[:, 0], pts[:, 2], yerr=np.nan_to_num(pts[:, 3]), color=color, marker=marker, ms=4,
                    capsize=2, label=label)
    ax.set_xlabel("KL term of the ELBO (bits per image)")
    ax.set_ylabel("measured bits above the KL")
    ax.set_title("RCC channel overhead")
    ax.legend(fontsize=7)
    legend_below(fig, axes[:2], ncol=2)
    return save_figure(fig, path)


def load_rows(path):
    """The rows of a ``learned_compression.csv`` with numbers as floats (for :func:`replot`)."""
    from .common import read_csv

    rows = read_csv(path)
    for row in rows:
        for key, value in row.items():
            if key != "pipeline":
                row[key] = float(value) if value != "" else None
    return rows


def replot(out_dir=None, *, points=SETTINGS["full"]["grid_points"]):
    """Recompute the gaps and redraw the figure from an existing ``learned_compression.csv``."""
    out = output_dir(out_dir)
    rows = load_rows(out / "learned_compression.csv")
    gaps = compare_at_equal_rate(rows, points)
    write_csv(out / "learned_compression_gaps.csv", gaps or [{"bits_per_image": "no common rate range"}])
    return plot(rows, gaps, out / "learned_compression.png")


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Train and measure every (pipeline, beta, seed); write the CSVs and the figure.

    Returns
    -------
    dict
        Per pipeline: the rate range, monotonicity; the gaps at equal rate.
    """
    settings = SETTINGS["tiny" if tiny else "quick" if quick else "full"]
    out = output_dir(out_dir)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # small matrices: one thread is fastest and bit-reproducible
    torch.use_deterministic_algorithms(True)
    try:
        train_images, test_images = load_digits_split()
        if settings["test_items"] is not None:
            test_images = test_images[: settings["test_items"]]
        jobs = [(p, b, s) for p in PIPELINES for b in settings["betas"] for s in settings["seeds"]]
        rows = []
        for pipeline, beta, seed in progress_bar(jobs, enabled=progress, desc="learned_compression"):
            rows.append(run_one(pipeline, beta, seed, train_images, test_images, settings, progress=progress))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    gaps = compare_at_equal_rate(rows, settings["grid_points"])
    write_csv(out / "learned_compression.csv", rows)
    write_csv(out / "learned_compression_gaps.csv", gaps or [{"bits_per_image": "no common rate range"}])
    drift = drift_rows(items=60, calibration_items=200) if tiny else drift_rows()
    write_csv(out / "learned_compression_drift.csv", drift)
    plot(rows, gaps, out / "learned_compression.png")
    summary = {}
    for p in PIPELINES:
        mine = [r for r in rows if r["pipeline"] == p]
        ok, per_seed = monotone(rows, p)
        summary[p] = (f"{min(r['bits_per_image'] for r in mine):.1f}-{max(r['bits_per_image'] for r in mine):.1f} "
                      f"bits/image, PSNR {min(r['psnr_db'] for r in mine):.2f}-{max(r['psnr_db'] for r in mine):.2f} "
                      f"dB, monotone (mean over seeds) {ok}, per seed {per_seed}")
    rcc_rows = [r for r in rows if r["pipeline"] == "rcc"]
    summary["rcc bits above KL per block"] = (
        f"{min(r['bits_above_kl_per_block'] for r in rcc_rows):.2f}-"
        f"{max(r['bits_above_kl_per_block'] for r in rcc_rows):.2f} (one stream), per-image streams "
        f"{min(r['per_item_above_kl_per_block'] for r in rcc_rows):.2f}-"
        f"{max(r['per_item_above_kl_per_block'] for r in rcc_rows):.2f}")
    for g in gaps:
        summary[f"at {g['bits_per_image']:.1f} bits"] = (
            f"RCC-UQ {g['gap_rcc_minus_uq_db']:+.2f} ± {g['gap_rcc_minus_uq_se']:.2f} dB, "
            f"RCC-hard {g['gap_rcc_minus_hard_db']:+.2f} ± {g['gap_rcc_minus_hard_se']:.2f} dB, "
            f"UQ-hard {g['gap_uq_minus_hard_db']:+.2f} ± {g['gap_uq_minus_hard_se']:.2f} dB")
    for row in drift:
        summary[f"drift: {row['case']}"] = (
            f"{row['bits_per_item']:.2f} bits/item for KL {row['kl_bits']:.2f} ({row['bits_above_kl']:+.2f}), "
            f"{row['candidates_over_calibrated']:.2f}x candidates, {row['fallback_blocks']} fallback blocks")
    return summary


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
