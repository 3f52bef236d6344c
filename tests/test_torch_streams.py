"""Untrusted bytes through the torch channels: seeded fuzzing and per-item streams."""

import tracemalloc
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")

from rcc import entropy as E  # noqa: E402
from rcc.torch import RCCChannel, UniformNoiseChannel  # noqa: E402
from test_streams import MEMORY_LIMIT, assert_rejected_or_exact, mutations  # noqa: E402

LATENTS = 6
STDS = np.array([0.05, 0.1, 0.2, 0.08, 1.0, 0.97])


def posteriors(count, seed):
    rng = np.random.default_rng(seed)
    log_scale = np.log(STDS) + 0.05 * rng.standard_normal((count, LATENTS))
    std = np.minimum(np.exp(log_scale), 1.0)
    mean = rng.standard_normal((count, LATENTS)) * np.sqrt(1.0 - std**2)
    return torch.tensor(mean), torch.tensor(log_scale)


@pytest.fixture(scope="module")
def channel():
    ch = RCCChannel(LATENTS, block_budget_bits=6.0)
    ch.calibrate(*posteriors(300, seed=1))
    return ch.eval()


def with_fallback(mean, log_scale):
    """Posteriors two of which take the exact per-dimension fallback."""
    mean, log_scale = mean.clone(), log_scale.clone()
    mean[1, 0], log_scale[1, 0] = 3.0, 0.3
    mean[4, 2], log_scale[4, 2] = -2.5, 0.2
    return mean, log_scale


def tensors_equal(a, b):
    return a[0].dtype == b[0].dtype and torch.equal(a[0], b[0])


@pytest.mark.parametrize("fallback", [False, True])
def test_fuzz_rcc_channel_batch_stream(channel, fallback):
    mean, log_scale = posteriors(12, seed=2)
    if fallback:
        mean, log_scale = with_fallback(mean, log_scale)
    data, _, stats = channel.compress(mean.float(), log_scale.float(), seed=5, return_stats=True)
    assert (stats["fallback_blocks"] > 0) == fallback
    expected = (stats["latents"],)

    def decode(blob):
        return (channel.decompress(blob, 5, mean.shape),)

    assert tensors_equal(decode(data), expected)
    assert_rejected_or_exact(decode, data, expected, np.random.default_rng(int(fallback)), 900, tensors_equal)
    for seed, shape in ((6, mean.shape), (5, (11, LATENTS)), (5, (3, 4, LATENTS))):
        with pytest.raises(ValueError):
            channel.decompress(data, seed, shape)
    other = RCCChannel(LATENTS, block_budget_bits=3.0)
    other.calibrate(*posteriors(300, seed=9))
    with pytest.raises(ValueError, match="state"):
        other.decompress(data, 5, mean.shape)


def test_hostile_rcc_channel_headers_raise_value_errors(channel):
    """Headers re-checksummed by a hostile sender: only ValueError, bounded memory."""
    mean, log_scale = with_fallback(*posteriors(12, seed=3))
    data, _ = channel.compress(mean, log_scale, seed=5)
    rng = np.random.default_rng(4)
    tracemalloc.start()
    try:
        for _ in range(300):
            header = bytearray(data[:12])
            header[int(rng.integers(1, 12))] = int(rng.integers(0, 256))
            for cut in range(1, 12):  # re-checksum every split of the header a parser could find
                forged = bytes(header[:cut]) + channel._header_check(header[:cut], 5, (12,)).to_bytes(4, "little")
                try:
                    channel.decompress(forged + data[16:], 5, mean.shape)
                except ValueError:
                    pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT


@pytest.mark.parametrize("fallback", [False, True])
def test_per_item_streams_round_trip_and_resist_mutation(channel, fallback):
    mean, log_scale = posteriors(8, seed=6)
    if fallback:
        mean, log_scale = with_fallback(mean, log_scale)
    items, item_bits, stats = channel.compress(mean, log_scale, seed=21, return_stats=True, per_item=True)
    assert isinstance(items, list) and len(items) == 8 and all(isinstance(b, bytes) for b in items)
    assert torch.equal(channel.decompress(items, 21, mean.shape), stats["latents"])
    # each item decodes exactly what the sender's latents were, and costs its bytes
    assert torch.equal(stats["item_measured_bits"], torch.tensor([8.0 * len(b) for b in items], dtype=torch.float64))
    assert stats["measured_bits"] == sum(8 * len(b) for b in items)
    # the payload holds the messages (ideal bits); the header is 2 bytes, the rest is termination
    assert all(8 * (len(b) - 2) <= bits + 40 for b, bits in zip(items, item_bits.tolist()))
    rng = np.random.default_rng(7)
    expected = (stats["latents"],)
    for position in (0, 1, 4):
        def decode(blob, position=position):
            damaged = list(items)
            damaged[position] = blob
            return (channel.decompress(damaged, 21, mean.shape),)

        assert_rejected_or_exact(decode, items[position], expected, rng, 300, tensors_equal)
    with pytest.raises(ValueError):
        channel.decompress(items[::-1], 21, mean.shape)
    with pytest.raises(ValueError, match="per-item streams"):
        channel.decompress(items[:-1], 21, mean.shape)
    with pytest.raises(ValueError):
        channel.decompress(items, 22, mean.shape)
    with pytest.raises(TypeError, match=r"data\[2\]"):
        channel.decompress(items[:2] + ["x"] + items[3:], 21, mean.shape)


def test_hostile_per_item_payloads_raise_value_errors(channel):
    """Payloads whose 11-bit check a hostile sender recomputed: a ValueError, or other valid latents.

    A payload ends at its shortest decodable byte string and carries no redundancy, so most
    damage inside it decodes to other messages (only the header's check catches accidental
    damage); bytes appended to it are never the canonical coding and are always rejected.
    """
    mean, log_scale = with_fallback(*posteriors(6, seed=8))
    items, _ = channel.compress(mean, log_scale, seed=3, per_item=True)
    fingerprint = channel._state_fingerprint()
    rng = np.random.default_rng(9)
    appended_decoded = appended = 0
    for position in range(6):
        for i, damaged in enumerate(mutations(items[position], rng, 150)):
            if len(damaged) < 2 or damaged[2:] == items[position][2:]:
                continue  # a forged header alone (e.g. another dtype) decodes to other valid values
            flags = damaged[0] & 0xF8
            check = channel._item_check(flags, 3, position, damaged[2:], fingerprint)
            forged = bytes([flags | (check >> 8), check & 0xFF]) + damaged[2:]
            batch = list(items)
            batch[position] = forged
            junk = i % 6 == 3 and damaged.startswith(items[position])
            appended += junk
            try:
                out = channel.decompress(batch, 3, mean.shape)
            except ValueError:
                continue
            assert torch.isfinite(out).all()
            appended_decoded += junk
    assert appended > 60 and appended_decoded == 0


def test_batch_stream_overhead_for_256_items(channel):
    mean, log_scale = posteriors(256, seed=10)
    data, item_bits, stats = channel.compress(mean, log_scale, seed=1, return_stats=True)
    # Headers (the channel's with its CRC32, two message streams' with theirs, here one fallback
    # block) and the coders' termination: about 48 bytes, under 1.6 bits per item in all.
    assert stats["fallback_blocks"] == 1
    assert (8 * len(data) - float(item_bits.sum())) / 256 < 1.6
    assert float(stats["item_measured_bits"].sum()) == pytest.approx(8 * len(data))
    items, _ = channel.compress(mean, log_scale, seed=1, per_item=True)
    assert all(len(b) >= 2 for b in items)


@pytest.mark.parametrize("shape", [(40,), (3, 4, 5)])
def test_fuzz_uniform_noise_channel(shape):
    ch = UniformNoiseChannel(num_channels=4 if len(shape) == 3 else 1, scale=1.5).eval()
    y = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 2.0
    y.view(-1)[3] = 500.0  # an escape
    data = ch.compress(y, 9)
    expected = (ch.decompress(data, 9, shape),)
    assert_rejected_or_exact(lambda blob: (ch.decompress(blob, 9, shape),), data, expected,
                             np.random.default_rng(len(shape)), 900, tensors_equal)
    with pytest.raises(ValueError, match="checksum"):
        ch.decompress(data, 10, shape)
    other = UniformNoiseChannel(num_channels=ch.num_channels, scale=1.6).eval()
    with pytest.raises(ValueError, match="checksum"):
        other.decompress(data, 9, shape)
    # Hostile payloads with a recomputed CRC: any value, but only ValueError.
    rng = np.random.default_rng(1)
    for damaged in mutations(data[5:], rng, 300):
        forged = data[:1] + ch._stream_check(data[:1], 9, shape, damaged).to_bytes(4, "little") + damaged
        try:
            ch.decompress(forged, 9, shape)
        except ValueError:
            pass
    assert zlib.crc32(data) == zlib.crc32(ch.compress(y, 9))  # deterministic


def test_batch_stream_is_one_checked_payload(channel):
    """Format 4: a header byte, one 4-byte check over everything, then the range coder's payload."""
    mean, log_scale = posteriors(5, seed=11)
    data, _ = channel.compress(mean, log_scale, seed=2)
    assert data[0] >> 4 == 4
    with pytest.raises(ValueError, match="checksum mismatch"):
        channel.decompress(data[:5] + bytes([data[5] ^ 0x01]) + data[6:], 2, mean.shape)
    with pytest.raises(ValueError, match="checksum mismatch"):
        channel.decompress(data + b"\x00", 2, mean.shape)


def test_message_streams_inside_torch_checked(channel, monkeypatch):
    """In the earlier batch format the joint message stream's own header is version 2 and checked."""
    from test_golden_torch import compress_batch_in_earlier_format

    mean, log_scale = posteriors(5, seed=11)
    data = compress_batch_in_earlier_format(channel, mean, log_scale, monkeypatch, seed=2)
    header = E._parse_header(data[5:])
    assert header["version"] == E.STREAM_VERSION and header["intact"]
