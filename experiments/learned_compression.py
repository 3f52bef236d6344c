"""Learned compression measured: reverse channel coding against universal quantisation and hard rounding.

Two autoencoder families on scikit-learn's 8x8 digits (shipped inside the package,
offline), each trained three ways with the same encoder and decoder sizes, optimiser
(Adam, learning rate 1e-3, batch 64), number of steps and data order, minimising per
image

    ||x - x_hat||^2 / (2 sigma^2 ln 2)  +  beta * rate   (bits, sigma = 0.1),

with the rate knob ``beta``.  The models (:data:`ARCHITECTURES`):

* ``mlp``: ``64 -> H -> H -> 16 latents`` encoder, ``16 -> H -> H -> 64`` decoder (SiLU);
* ``conv``: a small convolutional autoencoder with 32 latents, a ``2 x 2 x 8`` latent
  map: three 3x3/4x4 convolutions (8x8 -> 4x4 -> 2x2, ``C`` channels, SiLU) and the
  mirror image with transposed convolutions.

The pipelines:

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

Every (model, pipeline) is trained for several ``beta`` and training seeds; test-set
rates are ``8 * len(bytes) / images`` of one bitstream for the 360 test images,
distortion is the MSE of the images decoded from the *decoded* latents, PSNR
``10 log10(1 / MSE)`` (pixels in [0, 1]).  Curves are averaged over seeds (mean +-
standard error), and the pipelines of one model are compared at equal rates: each
seed's PSNR is interpolated linearly in the rate on a grid inside the rate range all
pipelines reach, and the gap in dB gets the standard error ``sqrt(se_a**2 + se_b**2)``
(independent seeds).  For the RCC channel the CSV also records its bits above the
ELBO's KL per image and per block, the item-blocks and the images that left the
channel's calibrated race (width classes or the exact per-dimension fallback).

Writes ``learned_compression.csv`` (one row per model, pipeline, beta and seed),
``learned_compression_gaps.csv`` (per model: PSNR of each pipeline and the gaps on the
common rate grid) and ``learned_compression.png`` (one row of panels per model).  Run
``python -m experiments.learned_compression [--quick]``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from rcc.torch import RCCChannel, UniformNoiseChannel

from .common import (Stopwatch, legend_below, new_figure, output_dir, progress_bar, run_script, save_figure,
                     series_style, train_adam, write_csv)
from .vae_digits import distortion_bits, load_digits_split

__all__ = ["SETTINGS", "ARCHITECTURES", "PIPELINES", "SERIES", "Codec", "train", "evaluate", "hard_compress",
           "hard_decompress", "fallback_items", "monotone", "compare_at_equal_rate", "best_at", "verdict", "phase_times", "load_rows",
           "replot", "main"]

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
#: The autoencoder families (:class:`Codec`), in the order the figure shows them.
ARCHITECTURES = ("mlp", "conv")
#: Label, colour and marker of every series the figure draws, each colour used once, so that
#: a colour names one series in every panel and row.  The three pipelines take their fixed
#: colours from :func:`experiments.common.series_style`.
SERIES = {
    "rcc": dict(label="Gaussian posterior + RCC (bytes)", **series_style("rcc")),
    "rcc_kl": dict(label="Gaussian posterior, ELBO KL (no bytes)", color="#17becf", marker=""),
    "uq": dict(label="soft rounding + universal quantisation", **series_style("uq")),
    "hard": dict(label="hard rounding (straight-through)", **series_style("hard")),
    "gap_rcc_minus_uq": dict(label="RCC minus soft rounding + UQ", color="#e377c2", marker="s"),
    "gap_rcc_minus_hard": dict(label="RCC minus hard rounding", color="#bcbd22", marker="^"),
    "gap_uq_minus_hard": dict(label="soft rounding + UQ minus hard rounding", color="#595959", marker="."),
    "bits_above_kl_per_image": dict(label="RCC above KL: per image, one stream", color="#9467bd", marker="o"),
    "bits_above_kl_per_block": dict(label="RCC above KL: per block, one stream", color="#d62728", marker="s"),
    "per_item_above_kl_per_block": dict(label="RCC above KL: per block, per-image streams", color="#8c564b",
                                        marker="x"),
}


#: Per mode and architecture: betas, seeds, latents, hidden width (MLP) or channels (conv), steps.
#: ``test_items`` (``None``: all 360) is how many test images are coded, ``calibration_items``
#: how many training posteriors calibrate the RCC channel.  The full mode trains the conv
#: model for 3,000 steps (with hard rounding at beta = 0.6 its test PSNR is near 18 dB
#: after 500 steps, 21.3 dB after 2,000 and 22.3 dB after 4,000); the quick mode trains smaller
#: models for 800 steps at three rates spanning the full mode's range and codes half of the test set.
SETTINGS = {
    "full": dict(
        mlp=dict(betas=(0.1, 0.25, 0.6, 1.4, 3.2), seeds=(0, 1, 2), latents=16, hidden=128, steps=6000),
        conv=dict(betas=(0.1, 0.25, 0.6, 1.4, 3.2), seeds=(0, 1, 2), latents=32, hidden=16, steps=3000),
        calibration_items=None, test_items=None, grid_points=8),
    "quick": dict(
        mlp=dict(betas=(0.25, 0.8, 3.2), seeds=(0, 1), latents=16, hidden=64, steps=800),
        conv=dict(betas=(0.25, 0.8, 3.2), seeds=(0, 1), latents=32, hidden=16, steps=800),
        calibration_items=400, test_items=180, grid_points=5),
    "tiny": dict(
        mlp=dict(betas=(0.5, 2.0), seeds=(0,), latents=4, hidden=32, steps=40),
        conv=dict(betas=(0.5, 2.0), seeds=(0,), latents=8, hidden=8, steps=30),
        calibration_items=100, test_items=40, grid_points=3),
}


def _conv_encoder(channels, head_channels):
    """8x8 image -> ``(head_channels, 2, 2)`` map, flattened channel-major (so a split in two
    halves of the flat vector is a split of the channels)."""
    return nn.Sequential(nn.Unflatten(-1, (1, 8, 8)),
                         nn.Conv2d(1, channels, 3, padding=1), nn.SiLU(),
                         nn.Conv2d(channels, channels, 4, stride=2, padding=1), nn.SiLU(),  # 4x4
                         nn.Conv2d(channels, head_channels, 4, stride=2, padding=1),  # 2x2
                         nn.Flatten(-3))


def _conv_decoder(channels, latent_channels):
    """The mirror of :func:`_conv_encoder`: flat ``(latent_channels, 2, 2)`` -> 64 pixels."""
    return nn.Sequential(nn.Unflatten(-1, (latent_channels, 2, 2)),
                         nn.ConvTranspose2d(latent_channels, channels, 4, stride=2, padding=1), nn.SiLU(),  # 4x4
                         nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.SiLU(),  # 8x8
                         nn.Conv2d(channels, 1, 3, padding=1), nn.Flatten(-3))


class Codec(nn.Module):
    """Autoencoder on 64 pixels (MLP or convolutional) with one of the three latent channels.

    Parameters
    ----------
    pipeline : {"rcc", "uq", "hard"}
        Which channel sits between encoder and decoder (module docstring).
    latents, hidden : int
        Latent dimensions and hidden width (MLP) or convolution channels (conv); the same
        for every pipeline.  For ``conv`` the latents form a ``2 x 2`` map, so ``latents``
        must be a multiple of 4.
    generator : torch.Generator
        Noise of the training-time channel (``rcc``, ``uq``).
    architecture : {"mlp", "conv"}
        The autoencoder family.
    """

    def __init__(self, pipeline, latents, hidden, *, generator, architecture="mlp"):
        super().__init__()
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        self.pipeline = pipeline
        self.architecture = architecture
        widen = 2 if pipeline == "rcc" else 1  # the Gaussian posterior's mean and log scale
        if architecture == "mlp":
            self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                         nn.Linear(hidden, widen * latents))
            self.decoder = nn.Sequential(nn.Linear(latents, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                         nn.SiLU(), nn.Linear(hidden, 64))
        else:
            if latents % 4:
                raise ValueError(f"latents must be a multiple of 4 for the conv model (a 2x2 map), got {latents}")
            self.encoder = _conv_encoder(hidden, widen * latents // 4)
            self.decoder = _conv_decoder(hidden, latents // 4)
        if pipeline == "rcc":
            self.channel = RCCChannel(latents, block_budget_bits=RCC_BLOCK_BUDGET_BITS, generator=generator)
        else:
            alpha = 1.0 if pipeline == "uq" else None
            # For "hard" only the entropy model (its bits()) is used, never the noise.
            self.channel = UniformNoiseChannel(latents, channel_dim=-1, alpha=alpha, generator=generator)

    @classmethod
    def create(cls, pipeline, latents, hidden, *, seed, architecture="mlp"):
        """A model initialised from ``seed`` (in a forked torch RNG: global state untouched)."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return cls(pipeline, latents, hidden, generator=torch.Generator().manual_seed(seed + 10_000),
                       architecture=architecture)

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

    def anneal(step):
        if model.pipeline == "uq":
            model.channel.alpha = 1.0 + (ALPHA_FINAL - 1.0) * min(1.0, step / (0.5 * steps))

    def loss_terms(x):
        x_hat, rate = model.training_terms(x)
        return (distortion_bits(x, x_hat) + beta * rate).mean(), rate

    return train_adam(model, images, loss_terms, steps, seed=seed, progress=progress, batch_size=batch_size,
                      learning_rate=learning_rate, before_step=anneal,
                      desc=f"{model.architecture} {model.pipeline} beta={beta:g} seed={seed}")


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
                       fallback_items=fallback_items(stats),
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


def fallback_items(stats):
    """How many items have at least one block off the calibrated race (width classes or width 1).

    ``stats`` is what ``RCCChannel.compress(..., return_stats=True)`` returns; its
    ``"fallback_items"`` flags those items.
    """
    return int(stats["fallback_items"].sum())


def run_one(architecture, pipeline, beta, seed, train_images, test_images, settings, *, progress=True):
    """Train one model and measure it; returns the CSV row."""
    sizes = settings[architecture]
    model = Codec.create(pipeline, sizes["latents"], sizes["hidden"], seed=1000 * seed + 1,
                         architecture=architecture)
    cpu = time.process_time()
    with Stopwatch() as watch:
        train(model, train_images, beta, sizes["steps"], seed=1000 * seed + 2, progress=progress)
    train_cpu = time.process_time() - cpu
    row = {"model": architecture, "latents": sizes["latents"], "pipeline": pipeline, "beta": beta, "seed": seed}
    cpu = time.process_time()
    row.update(evaluate(model, train_images, test_images, settings))
    row["code_cpu_seconds"] = time.process_time() - cpu
    row["train_seconds"] = watch.seconds
    row["train_cpu_seconds"] = train_cpu
    return row


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


def _models(rows):
    """The architectures present in ``rows``, in :data:`ARCHITECTURES` order."""
    present = {r.get("model") or "mlp" for r in rows}
    return [m for m in ARCHITECTURES if m in present]


def _of_model(rows, model):
    return [r for r in rows if (r.get("model") or "mlp") == model]


def compare_at_equal_rate(rows, points):
    """Per model: PSNR of every pipeline on a common rate grid, and the gaps, with standard errors over seeds.

    Returns one dict per (model, rate); a model whose pipelines share no rate range
    contributes no rows.
    """
    out = []
    for model in _models(rows):
        mine = _of_model(rows, model)
        curves = {p: _curves(mine, p) for p in PIPELINES}
        if not all(curves.values()):
            continue
        low = max(c[0].min() for p in PIPELINES for c in curves[p].values())
        high = min(c[0].max() for p in PIPELINES for c in curves[p].values())
        if not low < high:
            continue
        grid = np.linspace(low, high, points)
        at = {p: np.array([np.interp(grid, *c) for c in curves[p].values()]) for p in PIPELINES}
        for i, rate in enumerate(grid):
            row = {"model": model, "bits_per_image": float(rate)}
            stats = {p: _mean_se(at[p][:, i]) for p in PIPELINES}
            for p in PIPELINES:
                row[f"psnr_{p}"], row[f"psnr_{p}_se"] = stats[p]
            for a, b in (("rcc", "uq"), ("rcc", "hard"), ("uq", "hard")):
                row[f"gap_{a}_minus_{b}_db"] = stats[a][0] - stats[b][0]
                row[f"gap_{a}_minus_{b}_se"] = math.hypot(stats[a][1], stats[b][1])
            row["best"] = best_at(row)
            out.append(row)
    return out


#: Short names of the pipelines in the printed verdicts.
_NAMES = {"rcc": "RCC", "uq": "soft rounding + UQ", "hard": "hard rounding"}


def best_at(gap_row, z=2.0):
    """The pipeline with the highest PSNR at one rate of :func:`compare_at_equal_rate`, if it leads
    the runner-up by more than ``z`` standard errors of their gap, else ``"tie: a, b"``."""
    order = sorted(PIPELINES, key=lambda p: -gap_row[f"psnr_{p}"])
    first, second = order[:2]
    pair = (first, second) if (first, second) in (("rcc", "uq"), ("rcc", "hard"), ("uq", "hard")) else (second, first)
    gap = abs(gap_row[f"gap_{pair[0]}_minus_{pair[1]}_db"])
    se = gap_row[f"gap_{pair[0]}_minus_{pair[1]}_se"]
    if math.isfinite(se) and gap > z * se:
        return first
    return f"tie: {first}, {second}"


def verdict(gaps, model):
    """Which pipeline wins where, for one model, as a sentence (rates where the best pipeline leads
    the runner-up by more than 2 standard errors; elsewhere the two best are tied)."""
    mine = [g for g in gaps if g["model"] == model]
    if not mine:
        return "no rate range that every pipeline reaches"
    spans = []
    for g in mine:
        if spans and spans[-1][0] == g["best"]:
            spans[-1][2] = g["bits_per_image"]
        else:
            spans.append([g["best"], g["bits_per_image"], g["bits_per_image"]])
    parts = []
    for best, low, high in spans:
        where = f"{low:.1f} bits" if low == high else f"{low:.1f}-{high:.1f} bits"
        if best.startswith("tie"):
            a, b = best[5:].split(", ")
            parts.append(f"{where}: {_NAMES[a]} and {_NAMES[b]} tied within 2 s.e.")
        else:
            parts.append(f"{where}: {_NAMES[best]} best")
    return "; ".join(parts)


def _series(rows, pipeline, rate_key, value_key):
    """``[(rate mean, rate se, value mean, value se)]`` per beta, over seeds."""
    pts = []
    for b in sorted({r["beta"] for r in rows}):
        sel = [r for r in rows if r["pipeline"] == pipeline and r["beta"] == b]
        if sel:
            pts.append((*_mean_se([r[rate_key] for r in sel]), *_mean_se([r[value_key] for r in sel])))
    return np.array(pts).reshape(-1, 4)


_FAMILIES = {"mlp": "MLP", "conv": "conv"}


def plot(rows, gaps, path):
    """Per model, one row of panels: rate-distortion with error bars; gaps at equal rate; RCC's bits above the KL."""
    models = _models(rows)
    fig, axes = new_figure(ncols=3, nrows=len(models), width=4.2, height=3.5, squeeze=False)
    for line, model in zip(axes, models):
        mine = _of_model(rows, model)
        latents = sorted({int(r["latents"]) for r in mine if r.get("latents") is not None})
        name = _FAMILIES.get(model, model) + (f", {latents[0]} latents" if len(latents) == 1 else "")
        ax = line[0]
        for p in PIPELINES:
            pts = _series(mine, p, "bits_per_image", "psnr_db")
            style = SERIES[p]
            ax.errorbar(pts[:, 0], pts[:, 2], xerr=np.nan_to_num(pts[:, 1]), yerr=np.nan_to_num(pts[:, 3]),
                        color=style["color"], marker=style["marker"], ms=4, capsize=2, label=style["label"])
        for r in mine:
            if r["pipeline"] == "rcc":
                r["psnr_kl_sample"] = 10.0 * math.log10(1.0 / r["mse_kl_sample"])
        pts = _series(mine, "rcc", "kl_bits", "psnr_kl_sample")
        ax.plot(pts[:, 0], pts[:, 2], ls="--", color=SERIES["rcc_kl"]["color"], label=SERIES["rcc_kl"]["label"])
        ax.set_xlabel("bits per image (test set)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{name}: rate-distortion")

        ax = line[1]
        mine_gaps = [g for g in gaps if g["model"] == model]
        if mine_gaps:
            rate = np.array([g["bits_per_image"] for g in mine_gaps])
            for key, ls in (("gap_rcc_minus_uq", "-"), ("gap_rcc_minus_hard", "-"), ("gap_uq_minus_hard", ":")):
                style = SERIES[key]
                gap = np.array([g[f"{key}_db"] for g in mine_gaps])
                ax.plot(rate, gap, color=style["color"], marker=style["marker"], ms=4, ls=ls, label=style["label"])
                if ls == "-":
                    se = np.nan_to_num(np.array([g[f"{key}_se"] for g in mine_gaps]))
                    ax.fill_between(rate, gap - se, gap + se, color=style["color"], alpha=0.2)
            ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_xlabel("bits per image")
        ax.set_ylabel("PSNR gap at equal rate (dB)")
        ax.set_title(f"{name}: gap at equal rate")

        ax = line[2]
        for key in ("bits_above_kl_per_image", "bits_above_kl_per_block", "per_item_above_kl_per_block"):
            style = SERIES[key]
            pts = _series(mine, "rcc", "kl_bits", key)
            ax.errorbar(pts[:, 0], pts[:, 2], yerr=np.nan_to_num(pts[:, 3]), color=style["color"],
                        marker=style["marker"], ms=4, capsize=2, label=style["label"])
        ax.set_xlabel("KL term of the ELBO (bits per image)")
        ax.set_ylabel("measured bits above the KL")
        ax.set_title(f"{name}: RCC bits above the KL")
    legend_below(fig, axes, ncol=3)
    return save_figure(fig, path)


def load_rows(path):
    """The rows of a ``learned_compression.csv`` with numbers as floats (for :func:`replot`)."""
    from .common import read_csv

    rows = read_csv(path)
    for row in rows:
        for key, value in row.items():
            if key not in ("pipeline", "model"):
                row[key] = float(value) if value != "" else None
    return rows


def replot(out_dir=None, *, points=SETTINGS["full"]["grid_points"]):
    """Recompute the gaps and redraw the figure from an existing ``learned_compression.csv``."""
    out = output_dir(out_dir)
    rows = load_rows(out / "learned_compression.csv")
    gaps = compare_at_equal_rate(rows, points)
    write_csv(out / "learned_compression_gaps.csv", gaps or [{"bits_per_image": "no common rate range"}])
    return plot(rows, gaps, out / "learned_compression.png")


def main(quick=False, *, out_dir=None, tiny=False, progress=True, models=ARCHITECTURES):
    """Train and measure every (model, pipeline, beta, seed); write the CSVs and the figure.

    Returns
    -------
    dict
        Per model and pipeline: the rate range, monotonicity; the RCC channel's
        overhead and fallbacks; the gaps at equal rate; which pipeline wins where.
    """
    settings = SETTINGS["tiny" if tiny else "quick" if quick else "full"]
    unknown = [m for m in models if m not in ARCHITECTURES]
    if unknown:
        raise ValueError(f"models must be among {ARCHITECTURES}, got {unknown}")
    out = output_dir(out_dir)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # small matrices: one thread is fastest and bit-reproducible
    torch.use_deterministic_algorithms(True)
    try:
        train_images, test_images = load_digits_split()
        test_total = len(test_images)
        if settings["test_items"] is not None:
            test_images = test_images[: settings["test_items"]]
        # Seed by seed (every pipeline and beta of a seed before the next seed), so that the
        # rows of an interrupted run still compare the pipelines on complete seeds.
        jobs = [(m, p, b, s) for m in models for s in settings[m]["seeds"] for p in PIPELINES
                for b in settings[m]["betas"]]
        rows = []
        for model, pipeline, beta, seed in progress_bar(jobs, enabled=progress, desc="learned_compression"):
            rows.append(run_one(model, pipeline, beta, seed, train_images, test_images, settings,
                                progress=progress))
            # Rows so far, so that an interrupted run leaves what it measured (replot() reads them).
            write_csv(out / "learned_compression.csv", rows)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    gaps = compare_at_equal_rate(rows, settings["grid_points"])
    write_csv(out / "learned_compression.csv", rows)
    write_csv(out / "learned_compression_gaps.csv", gaps or [{"bits_per_image": "no common rate range"}])
    plot(rows, gaps, out / "learned_compression.png")
    summary = {}
    for model in _models(rows):
        mine = _of_model(rows, model)
        for p in PIPELINES:
            sel = [r for r in mine if r["pipeline"] == p]
            ok, per_seed = monotone(mine, p)
            summary[f"{model} {p}"] = (
                f"{min(r['bits_per_image'] for r in sel):.1f}-{max(r['bits_per_image'] for r in sel):.1f} "
                f"bits/image, PSNR {min(r['psnr_db'] for r in sel):.2f}-{max(r['psnr_db'] for r in sel):.2f} "
                f"dB, monotone (mean over seeds) {ok}, per seed {per_seed}")
        rcc_rows = [r for r in mine if r["pipeline"] == "rcc"]
        summary[f"{model} rcc bits above KL per block"] = (
            f"{min(r['bits_above_kl_per_block'] for r in rcc_rows):.2f}-"
            f"{max(r['bits_above_kl_per_block'] for r in rcc_rows):.2f} (one stream), per-image streams "
            f"{min(r['per_item_above_kl_per_block'] for r in rcc_rows):.2f}-"
            f"{max(r['per_item_above_kl_per_block'] for r in rcc_rows):.2f}; fallback item-blocks per run "
            f"{min(r['fallback_blocks'] for r in rcc_rows)}-{max(r['fallback_blocks'] for r in rcc_rows)}, "
            f"images with a fallback block per run "
            f"{min(r['fallback_items'] for r in rcc_rows)}-{max(r['fallback_items'] for r in rcc_rows)}")
        for g in gaps:
            if g["model"] == model:
                summary[f"{model} at {g['bits_per_image']:.1f} bits"] = (
                    f"RCC-UQ {g['gap_rcc_minus_uq_db']:+.2f} ± {g['gap_rcc_minus_uq_se']:.2f} dB, "
                    f"RCC-hard {g['gap_rcc_minus_hard_db']:+.2f} ± {g['gap_rcc_minus_hard_se']:.2f} dB, "
                    f"UQ-hard {g['gap_uq_minus_hard_db']:+.2f} ± {g['gap_uq_minus_hard_se']:.2f} dB")
        summary[f"{model} who wins where"] = verdict(gaps, model)
    summary.update(phase_times(rows, settings))
    summary["test images coded"] = f"{len(test_images)} of {test_total}" + (
        "" if len(test_images) == test_total else " (the first ones of the test split)")
    return summary


def phase_times(rows, settings):
    """Time per phase: training (total and per 100 steps) and test-set coding, per model and pipeline.

    Wall-clock seconds, and the process's CPU seconds beside them (torch runs on one thread,
    so on a machine shared with other jobs the CPU time is what the work itself costs).
    Coding includes, for ``rcc``, the channel's calibration and both the one-stream and the
    per-image encodings and their decodings.
    """
    out = {}
    for model in _models(rows):
        steps = settings[model]["steps"]
        for p in PIPELINES:
            sel = [r for r in _of_model(rows, model) if r["pipeline"] == p]
            if not sel:
                continue
            total = {key: sum(r.get(key) or 0.0 for r in sel)
                     for key in ("train_seconds", "train_cpu_seconds", "code_seconds", "code_cpu_seconds")}
            per_100 = 100.0 / (steps * len(sel))
            out[f"{model} {p} time"] = (
                f"training {total['train_seconds']:.1f} s for {len(sel)} models "
                f"({per_100 * total['train_seconds']:.2f} s per 100 steps; CPU "
                f"{per_100 * total['train_cpu_seconds']:.2f} s), test-set coding {total['code_seconds']:.1f} s "
                f"(CPU {total['code_cpu_seconds']:.1f} s)")
    return out


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
