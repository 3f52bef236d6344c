"""Golden streams of the torch channels: the exact bytes, pinned.

Restructuring the code (moving it between modules, sharing helpers) must not change
one byte that a sender writes: these digests were computed from the code as it was
before it was split into the ``rcc.torch`` package, and every stream here must keep
them.  Only items that code without the per-dimension fallback are pinned for
``RCCChannel``: the fallback path is allowed to change (it is where the coder
degrades under drift), the jointly coded path is not.
"""

import hashlib
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")

from rcc.torch import RCCChannel, UniformNoiseChannel  # noqa: E402

LATENTS = 6
STDS = np.array([0.05, 0.1, 0.2, 0.08, 1.0, 0.97])


def digest(data):
    """``(sha256 hex, length)`` of a stream, or of the concatenated per-item streams."""
    if isinstance(data, (list, tuple)):
        lengths = [len(blob) for blob in data]
        data = b"".join(bytes(blob) for blob in data)
        return hashlib.sha256(data).hexdigest(), len(data), lengths
    return hashlib.sha256(bytes(data)).hexdigest(), len(data)


def posteriors(count, seed):
    rng = np.random.default_rng(seed)
    log_scale = np.log(STDS) + 0.05 * rng.standard_normal((count, LATENTS))
    # The C library's exp per element, so that the posteriors are the same on every CPU.
    std = np.minimum(np.vectorize(math.exp, otypes=[float])(log_scale), 1.0)
    mean = rng.standard_normal((count, LATENTS)) * np.sqrt(1.0 - std**2)
    return torch.tensor(mean), torch.tensor(log_scale)


def narrow_posteriors(count, seed, latents=8):
    """Posteriors with std exp(-2) and a N(0, 1 - e^-4) spread of means (a VAE near its optimum)."""
    rng = np.random.default_rng(seed)
    log_scale = np.full((count, latents), -2.0) + 0.05 * rng.standard_normal((count, latents))
    mean = rng.standard_normal((count, latents)) * np.sqrt(1.0 - math.exp(-4.0))
    return torch.tensor(mean), torch.tensor(log_scale)


# ----------------------------------------------------------------------------------
# UniformNoiseChannel
# ----------------------------------------------------------------------------------

NOISE_CASES = {
    "plain": dict(num_channels=3, loc=[0.0, 0.5, -1.0], scale=[1.0, 2.0, 0.5], learnable=False),
    "soft_round": dict(num_channels=3, alpha=4.0, loc=0.2, scale=1.5, learnable=False),
}

NOISE_DIGESTS = {
    "plain": ("284521edb8f82573dea10935837997e357cdd4a970f746003bc1129ca04e0596", 81),
    "soft_round": ("5c54e944cec00cb67e36dc1b9f021ec3f6ce34055e6dc733121c453c1d026598", 69),
}
NOISE_DECODED = ("c8916b9c0b86be104533e65ad49c222c66e1d181fd497ca093e50c2c830b6596", 480)


def noise_stream(name):
    channel = UniformNoiseChannel(**NOISE_CASES[name]).eval()
    g = torch.Generator().manual_seed(11)
    y = 3.0 * torch.randn(4, 3, 5, 2, generator=g, dtype=torch.float32)
    y[0, 0, 0, 0] = 900.0  # one escape
    return channel, y, channel.compress(y, seed=123)


@pytest.mark.parametrize("name", sorted(NOISE_DIGESTS))
def test_uniform_noise_channel_streams_are_pinned(name):
    _, _, data = noise_stream(name)
    assert digest(data) == NOISE_DIGESTS[name]


def test_uniform_noise_channel_decoded_tensor_is_pinned():
    channel, y, data = noise_stream("soft_round")
    out = channel.decompress(data, seed=123, shape=y.shape)
    assert out.dtype == torch.float32
    assert digest(out.numpy().tobytes()) == NOISE_DECODED


# ----------------------------------------------------------------------------------
# RCCChannel (items that code without fallback)
# ----------------------------------------------------------------------------------

RCC_CASES = {
    "default": dict(kwargs=dict(block_budget_bits=6.0), data=posteriors),
    "prior_zipf": dict(kwargs=dict(block_budget_bits=6.0, factor_code="prior", index_code="zipf",
                                   coding_prior_scale=1.0), data=posteriors),
    "empirical": dict(kwargs=dict(block_budget_bits=6.0, index_code="empirical"), data=posteriors),
    "narrow8": dict(kwargs=dict(block_budget_bits=12.0), data=narrow_posteriors),
}

#: name: (batch stream, per-item streams).  The batch streams are format 4 (one payload ending at
#: its shortest decodable byte string, one check); the per-item streams are format 3 (each payload
#: ends at its shortest decodable byte string).  The digests were refreshed, without a format
#: change, when the standard deviations and the calibration stopped using numpy's vectorised
#: exp/log (whose rounding depends on the CPU): streams written before still decode bit for bit.
RCC_DIGESTS = {
    "default": (("ad2d6bc8e5949441027f5de5ba466a5e87b15cdd18bf6f08cb928218a03dbc37", 26),
                ('2fd875533a08358a9fdb8291a410243154547adb72be193dd2d20b3bcc5d8772', 45, [5, 5, 4, 4, 5, 4, 5, 5, 4, 4])),
    "empirical": (("70773ae4e1f0d1b7ed90842f872e8d2c68804e6fce81e08e319dabe6101b7923", 26),
                  ('6f3345707a3fec493e813774c6ae3dd6e073ed60c9a4320221a1f2c1bb945c7e', 46, [5, 5, 5, 5, 4, 5, 4, 5, 4, 4])),
    "narrow8": (("4f5d4a806a7e46c2e4a54f0ae2477229085ce6e4d582299366e757521c811a43", 35),
                ('77792d3a224ca917574aa07ba00002ce8e1e4f456d7f9953592ea339abd2b6cf', 55, [6, 6, 5, 5, 6, 5, 5, 5, 6, 6])),
    "prior_zipf": (("9390fac1a3993b81b44819b99a57b2cee8c1d2fe5b96d6b9819a53aaf47c085f", 78),
                   ('1c4b95ec9e7d2ddf909f7648a3fd0cf6db790d4b81f15ac96b894e0ed6fc0776', 90, [6, 11, 10, 7, 7, 12, 7, 7, 13, 10])),
}
#: The batch streams of the earlier format 2 (a complete rcc.entropy message stream inside the
#: channel's header), which this rcc still reads and can still write (``earlier_format=True``).
RCC_EARLIER_BATCH_DIGESTS = {
    "default": ("f230d8d70314a7a7275aaf112db5163584bfa06a01b0eeca6c2af5e4e9e77c5f", 45),
    "empirical": ("a94ed1883983a7647ab3499ef4966a3affafbace702ef123454ff4e4ac8a825e", 45),
    "narrow8": ("7b812e5286031c63c28c3c7daa111406d64f8b7a0656adf80a5072e91db58a34", 53),
    "prior_zipf": ("af0e89d9cc91d193ecf89d9fe0c49501cff751e605a7b15cbd539d0e0ce4fb96", 96),
}
#: The per-item streams of the earlier format 1 (payload = the range coder's whole words), which
#: this rcc still reads and can still write (``_compress_items(..., item_format=1)``).
RCC_WORD_ITEM_DIGESTS = {
    "default": ("cdd3ea850f429516b4bd7f6a77bdb2ffa2ca8ea12f78eb516641db5edbf7df6d", 60, [6] * 10),
    "empirical": ("920116ee988ddddd2ed5bb4ee622dfc0fd66f9c745f3e6ec86ffe415db219abd", 60, [6] * 10),
    "narrow8": ("9be59b1885ea58fe7e628e19257e4431c9877bad30ea6e760c43d14831129b06", 60, [6] * 10),
    "prior_zipf": ("352aaf589d89be0e6bf6d7af50bc556ae4ea0587c866105d753fa5476e290740", 106,
                   [6, 13, 10, 10, 10, 13, 10, 10, 14, 10]),
}
RCC_DECODED = ("b262c45052ab52c938dab39ddd0e3f36d863754c5fe092f0260c5f4fe16d696a", 240)

_CHANNELS = {}


def rcc_channel(name):
    if name not in _CHANNELS:
        case = RCC_CASES[name]
        latents = 8 if name == "narrow8" else LATENTS
        channel = RCCChannel(latents, **case["kwargs"])
        channel.calibrate(*case["data"](300, seed=1), seed=3)
        _CHANNELS[name] = channel.eval()
    return _CHANNELS[name]


def rcc_items(name):
    mean, log_scale = RCC_CASES[name]["data"](10, seed=2)
    return mean.float(), log_scale.float()


@pytest.mark.parametrize("name", sorted(RCC_CASES))
def test_rcc_channel_streams_are_pinned(name):
    channel = rcc_channel(name)
    mean, log_scale = rcc_items(name)
    batch, _, stats = channel.compress(mean, log_scale, seed=77, return_stats=True)
    assert stats["fallback_blocks"] == 0  # only the jointly coded path is pinned
    items = channel.compress(mean, log_scale, seed=77, per_item=True)[0]
    assert (digest(batch), digest(items)) == RCC_DIGESTS[name]


def compress_items_in_format(channel, mean, log_scale, monkeypatch, item_format):
    """Per-item streams in an earlier format (``item_format``, see ``streams._item_version``)."""
    import functools

    from rcc.torch import streams

    writer = streams._StreamCoding._compress_items
    with monkeypatch.context() as patch:
        patch.setattr(streams._StreamCoding, "_compress_items",
                      functools.partialmethod(writer, item_format=item_format))
        return channel.compress(mean, log_scale, seed=77, per_item=True)[0]


def compress_items_in_earlier_format(channel, mean, log_scale, monkeypatch):
    """Per-item streams as the word formats 1 and 2 wrote them: each payload padded to whole 32-bit words."""
    return compress_items_in_format(channel, mean, log_scale, monkeypatch, 1)


def compress_batch_in_earlier_format(channel, mean, log_scale, monkeypatch, seed=77):
    """The batch stream as formats 2 and 3 wrote it (an rcc.entropy message stream inside)."""
    import functools

    from rcc.torch import streams

    writer = streams._StreamCoding._compress_batch
    with monkeypatch.context() as patch:
        patch.setattr(streams._StreamCoding, "_compress_batch", functools.partialmethod(writer, earlier_format=True))
        return channel.compress(mean, log_scale, seed=seed)[0]


@pytest.mark.parametrize("name", sorted(RCC_CASES))
def test_rcc_channel_reads_the_earlier_batch_format(name, monkeypatch):
    channel = rcc_channel(name)
    mean, log_scale = rcc_items(name)
    current = channel.compress(mean, log_scale, seed=77)[0]
    earlier = compress_batch_in_earlier_format(channel, mean, log_scale, monkeypatch)
    assert digest(earlier) == RCC_EARLIER_BATCH_DIGESTS[name]
    assert torch.equal(channel.decompress(earlier, 77, mean.shape), channel.decompress(current, 77, mean.shape))
    # The current format is as short as it allows: one byte less no longer decodes.
    with pytest.raises(ValueError):
        channel.decompress(current[:-1], 77, mean.shape)


@pytest.mark.parametrize("name", sorted(RCC_CASES))
def test_rcc_channel_reads_the_earlier_item_format(name, monkeypatch):
    channel = rcc_channel(name)
    mean, log_scale = rcc_items(name)
    current = channel.compress(mean, log_scale, seed=77, per_item=True)[0]
    earlier = compress_items_in_earlier_format(channel, mean, log_scale, monkeypatch)
    assert digest(earlier) == RCC_WORD_ITEM_DIGESTS[name]
    assert torch.equal(channel.decompress(earlier, 77, mean.shape), channel.decompress(current, 77, mean.shape))
    # Each item is as short as its format allows: one byte less no longer decodes.
    for i, blob in enumerate(current):
        if len(blob) > 2:
            with pytest.raises(ValueError):
                channel.decompress(current[:i] + [blob[:-1]] + current[i + 1:], 77, mean.shape)


def test_rcc_channel_decoded_tensor_is_pinned():
    channel = rcc_channel("default")
    mean, log_scale = rcc_items("default")
    batch = channel.compress(mean, log_scale, seed=77)[0]
    out = channel.decompress(batch, seed=77, shape=mean.shape)
    assert out.dtype == torch.float32
    assert digest(out.numpy().tobytes()) == RCC_DECODED


def test_rcc_channel_item_streams_do_not_depend_on_drifted_neighbours():
    channel = rcc_channel("default")
    mean, log_scale = rcc_items("default")
    pinned = channel.compress(mean, log_scale, seed=77, per_item=True)[0]
    drifted = log_scale.clone()
    drifted[3, :4] += 0.7  # the informative latents of item 3 twice as wide: it leaves the calibrated race
    items, _, stats = channel.compress(mean, drifted, seed=77, per_item=True, return_stats=True)
    assert stats["fallback_blocks"] >= 1
    assert [blob for i, blob in enumerate(items) if i != 3] == [blob for i, blob in enumerate(pinned) if i != 3]
    assert items[3] != pinned[3]


def test_uniform_noise_channel_parameters_do_not_depend_on_torch_transcendentals():
    """The initial ``log_scale`` is the float64 log rounded once, and the coding scale is the
    C library's double ``exp`` of it: torch's float32 log and vectorised exp differ between CPUs
    in the last bit, which would change the streams from one machine to another."""
    import math

    import numpy as np

    scales = [1.5, 0.3, 7.1, 2.0 / 3.0]
    channel = UniformNoiseChannel(num_channels=len(scales), scale=scales, learnable=False)
    expected = np.array([math.log(s) for s in np.asarray(scales, dtype=np.float32).astype(np.float64)],
                        dtype=np.float32)
    assert channel.log_scale.detach().numpy().tobytes() == expected.tobytes()
    _, scale = channel._params_np((1, len(scales)))
    assert scale.tolist() == [math.exp(float(v)) for v in expected]
