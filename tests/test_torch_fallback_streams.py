"""Pinned bytes of RCCChannel streams whose blocks leave the calibrated race.

The fallback section (which item-blocks fall back, their modes, width classes and
messages) is coded with array operations; these digests were computed with the earlier
symbol-by-symbol coder, so the two write the same bytes and the decoder reads what the
earlier coder wrote.  The cases mix width classes with the width-1 race, one and several
blocks (with padding), fitted and prior factor codes, bucket and Zipf index codes.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")

from rcc.torch import RCCChannel  # noqa: E402

# The pinned-stream helpers of the in-distribution golden tests, shared.
from test_golden_torch import (compress_batch_in_earlier_format, compress_items_in_earlier_format,  # noqa: E402
                               compress_items_in_format, digest, posteriors)


def narrow_posteriors(count, seed, latents=8):
    rng = np.random.default_rng(seed)
    log_scale = np.full((count, latents), -2.0) + 0.05 * rng.standard_normal((count, latents))
    mean = rng.standard_normal((count, latents)) * np.sqrt(1.0 - np.exp(-4.0))
    return torch.tensor(mean), torch.tensor(log_scale)


def drifted_case(name):
    """``(channel, mean, log_scale)``: a calibrated channel and float32 posteriors, some drifted."""
    if name == "classes_one_block":
        channel = RCCChannel(8)
        channel.calibrate(*narrow_posteriors(300, seed=1), seed=3)
        mean, log_scale = narrow_posteriors(40, seed=2)
        log_scale[::2, 0] += 0.5
        log_scale[5, 3] += 0.7
        log_scale[7] = -3.5  # narrower everywhere: the width-1 race
    elif name == "classes_blocks":
        channel = RCCChannel(6, block_budget_bits=6.0)
        channel.calibrate(*posteriors(300, seed=1), seed=3)
        mean, log_scale = posteriors(30, seed=2)
        log_scale[::3, :4] += 0.6
        log_scale[4, 1] += 2.5
    elif name == "prior_factors_zipf":
        channel = RCCChannel(6, block_budget_bits=6.0, factor_code="prior", index_code="zipf", coding_prior_scale=1.0)
        channel.calibrate(*posteriors(300, seed=1), seed=3)
        mean, log_scale = posteriors(20, seed=2)
        log_scale[1::2, 0] += 0.6
    else:
        assert name == "padded_blocks"
        channel = RCCChannel(7, block_budget_bits=5.0)
        channel.calibrate(*narrow_posteriors(300, seed=1, latents=7), seed=3)
        mean, log_scale = narrow_posteriors(120, seed=2, latents=7)
        log_scale[::3, 2] += 0.5
        log_scale[50:60, 5] += 0.6
        log_scale[17] = -3.6
    return channel.eval(), mean.float(), log_scale.float()


#: name: ((batch stream), (per-item streams), decoded latents); modes of the fallback blocks in a comment.
#: The batch streams are format 4 (one payload ending at its shortest decodable bytes);
#: EARLIER_BATCH_DIGESTS holds the same batches in the earlier format 3, which this rcc still reads.
#: The per-item streams are format 3 without fallback blocks and format 0 with them (shortest
#: payloads; the fallback mask and classes under one item's fixed models); ADAPTIVE_ITEM_DIGESTS
#: and WORD_ITEM_DIGESTS hold the same items in the earlier formats 3 and 1-2.  The
#: digests were refreshed (same lengths, same decoded latents) when calibration stopped using
#: numpy's vectorised exp, whose rounding depends on the CPU.
DIGESTS = {
    "classes_one_block": (
        ("02f6c641d0c26a15aadec442d9a5268d0f44663b8d980ac3af80aee29d9ae45a", 146),
        ("51340824cb2654ede0531039326735dcb4be7aa9e0cf792b7b6f40175d3312e1", 240, [6, 5, 6, 5, 6, 6, 6, 14, 5, 5, 6, 7, 6, 6, 6, 7, 6, 5, 6, 6, 6, 6, 6, 5, 6, 6, 6, 5, 5, 5, 6, 5, 6, 5, 6, 6, 6, 6, 7, 6]),
        ("6c201508d88f25ebdc726d784609720771e8a5d2e14b64f5c743c26f25276680", 1280)),
    "classes_blocks": (
        ("bb09c28268ce11c3d129f637200ba01b8d1461be478b3c90e6f65348525a276e", 80),
        ("e58273edd0de4b5c46e0009c56f1a70fe6ef5caa7f12f82ac90a62017fe16f60", 147, [5, 5, 5, 5, 5, 4, 6, 4, 4, 4, 5, 3, 7, 4, 5, 7, 5, 5, 5, 4, 5, 6, 5, 5, 5, 4, 5, 7, 4, 4]),
        ("e48b90dcb527a9c332d395eb500924ddfc8a155e58cf1cc7e75dab0f8fd0548d", 720)),
    "prior_factors_zipf": (
        ("2a9d7f5070dba136afda71a9c1e664fc24bfe7b3a76b37d6728f22d0793b7b8a", 123),
        ("7f184ab03f7fcb30bc7e48cbf11dcea9fc95aef6d51032f4749f5965579ca392", 159, [9, 7, 9, 4, 10, 8, 6, 5, 6, 7, 10, 9, 8, 12, 11, 7, 10, 6, 10, 5]),
        ("e199cd982a3e5c817b9305241d3dd58cc66c7b0347c434f91c4e7bdf821b12a0", 480)),
    "padded_blocks": (
        ("e5833a6f238b15c41d612997a94fa196525526507efa696a20e8079eaa3412ec", 409),
        ("19e1b744154719c2fc88adf2a01081398ef0b3c578a5245e81b8fe371114b799", 685, [5, 5, 6, 5, 6, 6, 5, 5, 6, 5, 6, 5, 6, 6, 6, 7, 6, 9, 5, 6, 5, 5, 7, 7, 7, 5, 5, 8, 6, 6, 5, 5, 6, 6, 5, 5, 6, 5, 6, 6, 6, 5, 5, 6, 5, 7, 5, 6, 7, 6, 7, 6, 5, 5, 6, 8, 6, 6, 6, 6, 8, 5, 6, 6, 5, 5, 6, 5, 6, 6, 5, 6, 7, 6, 5, 6, 6, 6, 6, 5, 5, 7, 5, 5, 6, 6, 5, 6, 6, 6, 6, 4, 5, 5, 6, 5, 5, 6, 5, 5, 5, 5, 7, 5, 5, 6, 5, 5, 5, 6, 5, 6, 6, 6, 6, 6, 5, 5, 5, 5]),
        ("ecafaa6ea45b26eab7d1c30e38473f00436ae8a8d10131588865eb991e222f8c", 3360)),
}
EARLIER_BATCH_DIGESTS = {
    "classes_one_block": ("ca63d9919bb51b3d9bfa58dd96a85b47c78b49fa47d804e15d53dda853dafb87", 170),
    "classes_blocks": ("fa12306460515321985ea2e5b0558fe4283aca5de1f60fd0726b81227cebe537", 102),
    "prior_factors_zipf": ("9182ae8edfb8b07eedf4ee353a746a81ae39252539442f44f3763acaca479830", 146),
    "padded_blocks": ("a134d128f37bf2faee2351bb2065ae0a0fb9fa49721798443dc689f780ca024f", 436),
}
#: The same per-item streams in format 3 with the fallback flag (the fallback mask and width classes
#: under a batch stream's adaptive models), which this rcc still reads and can still write.
ADAPTIVE_ITEM_DIGESTS = {
    "classes_blocks": ("09ed65fae89f0fcbc031a936e14cf697d530720385bf8fcc8803397c168fd448", 160, [6, 5, 5, 6, 6, 4, 8, 4, 4, 6, 5, 3, 8, 4, 5, 8, 5, 5, 6, 4, 5, 7, 5, 5, 6, 4, 5, 8, 4, 4]),
    "classes_one_block": ("7ae93847945371f47b1b1094076481473b1c822846cb301a47881630c408293c", 247, [6, 5, 7, 5, 7, 6, 6, 14, 6, 5, 6, 7, 6, 6, 7, 7, 7, 5, 6, 6, 6, 6, 6, 5, 6, 6, 6, 5, 6, 5, 6, 5, 6, 5, 7, 6, 6, 6, 7, 6]),
    "padded_blocks": ("5a9b062b9aba0baaf8b5d83391ca42e38b273b42603ce2f2ec3576147c6b312f", 700, [5, 5, 6, 6, 6, 6, 6, 5, 6, 6, 6, 5, 6, 6, 6, 7, 6, 9, 6, 6, 5, 5, 7, 7, 8, 5, 5, 8, 6, 6, 6, 5, 6, 6, 5, 5, 6, 5, 6, 6, 6, 5, 6, 6, 5, 7, 5, 6, 7, 6, 7, 6, 6, 6, 6, 8, 6, 6, 6, 6, 8, 5, 6, 7, 5, 5, 6, 5, 6, 6, 5, 6, 7, 6, 5, 6, 6, 6, 6, 5, 5, 7, 5, 5, 7, 6, 5, 6, 6, 6, 6, 4, 5, 6, 6, 5, 6, 6, 5, 5, 5, 5, 7, 5, 5, 6, 5, 5, 5, 6, 5, 7, 6, 6, 6, 6, 5, 6, 5, 5]),
    "prior_factors_zipf": ("2fe5be3f007fef2335cffb056c382eec23c3eff3026398298bde9f561c6edb3b", 162, [9, 8, 9, 5, 10, 8, 6, 5, 6, 7, 10, 9, 8, 12, 11, 7, 10, 6, 10, 6]),
}
WORD_ITEM_DIGESTS = {
    "classes_one_block": ("dced76fc4acdf08c7d8b769bc015100a05aa1926634d9c6634aaba1579528dc2", 293, [10, 6, 10, 6, 10, 7, 10, 14, 6, 6, 6, 10, 6, 6, 10, 10, 10, 6, 6, 6, 6, 6, 10, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 10, 6, 6, 6, 10, 6]),
    "classes_blocks": ("c3ed367833afe7419e222db2f39e46ed88add8247a5b6664e4609bb97d2fa06f", 201, [6, 6, 6, 7, 6, 6, 10, 6, 6, 6, 6, 6, 10, 6, 6, 10, 6, 6, 6, 6, 6, 10, 6, 6, 6, 6, 6, 10, 6, 6]),
    "prior_factors_zipf": ("0cb6a5873a0321147ad8f29917137d761f33c84ac45574ef24b0c90e83447369", 192, [10, 10, 10, 6, 10, 10, 6, 6, 10, 10, 10, 10, 10, 14, 13, 10, 11, 10, 10, 6]),
    "padded_blocks": ("08d2e93c503f595dc55e150a903d4d157598d39620af2cc4c60420c2d40a28e4", 806, [6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 10, 6, 10, 6, 6, 6, 6, 10, 10, 10, 6, 6, 10, 6, 6, 6, 6, 6, 6, 6, 6, 10, 6, 6, 7, 6, 6, 6, 6, 6, 10, 6, 6, 10, 6, 10, 10, 6, 6, 6, 9, 10, 7, 6, 6, 10, 6, 6, 10, 6, 6, 6, 6, 6, 10, 6, 6, 10, 6, 6, 6, 6, 6, 6, 6, 6, 10, 6, 6, 10, 6, 6, 6, 7, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 10, 6, 6, 6, 6, 6, 6, 6, 6, 10, 6, 6, 6, 6, 6, 6, 6, 6]),
}

#: A batch stream of the first 6 items of "padded_blocks" (seed 5) as the earlier coder wrote it,
#: and the digest of its decoded latents.
EARLIER_STREAM = bytes.fromhex(
    "38206898e93d5243430204010a04f0799d14f9409996c14bdddc6ab62c8c8a81380f4d493381637b27023fd3a5a72ed11822")
EARLIER_DECODED = ("26fcc9ac6db76685d43042f1eed7d324e9a29ec7c8b201d29699a7fd5f5cf785", 168)


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_fallback_streams_are_pinned(name):
    channel, mean, log_scale = drifted_case(name)
    batch, _, stats = channel.compress(mean, log_scale, seed=77, return_stats=True)
    assert stats["fallback_blocks"] > 0
    items, _, item_stats = channel.compress(mean, log_scale, seed=77, per_item=True, return_stats=True)
    z = channel.decompress(batch, 77, mean.shape)
    assert torch.equal(z, stats["latents"])
    assert torch.equal(channel.decompress(items, 77, mean.shape), item_stats["latents"])
    assert (digest(batch), digest(items), digest(z.numpy().tobytes())) == DIGESTS[name]


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_the_earlier_batch_format_decodes(name, monkeypatch):
    channel, mean, log_scale = drifted_case(name)
    current, _, stats = channel.compress(mean, log_scale, seed=77, return_stats=True)
    earlier = compress_batch_in_earlier_format(channel, mean, log_scale, monkeypatch)
    assert digest(earlier) == EARLIER_BATCH_DIGESTS[name]
    assert torch.equal(channel.decompress(earlier, 77, mean.shape), stats["latents"])
    assert len(current) < len(earlier)


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_the_earlier_item_formats_decode(name, monkeypatch):
    channel, mean, log_scale = drifted_case(name)
    current, _, stats = channel.compress(mean, log_scale, seed=77, per_item=True, return_stats=True)
    earlier = compress_items_in_earlier_format(channel, mean, log_scale, monkeypatch)
    assert digest(earlier) == WORD_ITEM_DIGESTS[name]
    assert torch.equal(channel.decompress(earlier, 77, mean.shape), stats["latents"])
    adaptive = compress_items_in_format(channel, mean, log_scale, monkeypatch, 3)
    assert digest(adaptive) == ADAPTIVE_ITEM_DIGESTS[name]
    assert torch.equal(channel.decompress(adaptive, 77, mean.shape), stats["latents"])
    # Items with fallback blocks are written in format 0 now, and cost less in all.
    versions = {blob[0] >> 6 for blob, old in zip(current, adaptive) if blob[0] & 0x08}
    assert versions == {0}
    assert sum(map(len, current)) < sum(map(len, adaptive))


def _earlier_channel():
    """The "padded_blocks" channel as the earlier code calibrated it (its state_dict, saved):
    a stream decodes with the state of the channel that wrote it, and calibration now takes
    the posteriors' exp from the C library, which moved the fitted factor tables by ulps."""
    import pathlib

    state = np.load(pathlib.Path(__file__).parent / "data" / "fallback_padded_blocks_state.npz")
    channel = RCCChannel(7, block_budget_bits=5.0)
    channel.load_state_dict({key: torch.from_numpy(state[key]) for key in state.files})
    return channel.eval()


def test_the_earlier_coders_stream_decodes(monkeypatch):
    _, mean, log_scale = drifted_case("padded_blocks")
    channel = _earlier_channel()
    z = channel.decompress(EARLIER_STREAM, 5, (6, 7))
    assert digest(z.numpy().tobytes()) == EARLIER_DECODED
    assert compress_batch_in_earlier_format(channel, mean[:6], log_scale[:6], monkeypatch, seed=5) == EARLIER_STREAM
    current = channel.compress(mean[:6], log_scale[:6], seed=5)[0]
    assert torch.equal(channel.decompress(current, 5, (6, 7)), z)


# ----------------------------------------------------------------------------------
# The array coders of the fallback mask and the width classes against a symbol-by-symbol
# reference (one constriction model per symbol, as the earlier coder wrote them)
# ----------------------------------------------------------------------------------


def _reference_mask(encoder, mask):
    import constriction

    ones = 0
    for i, symbol in enumerate(mask.tolist()):
        p_one = (ones + 0.5) / (i + 1.0)
        encoder.encode(symbol, constriction.stream.model.Categorical(np.array([1.0 - p_one, p_one]), perfect=False))
        ones += symbol


def _reference_classes(encoder, block_widths, block_dims, modes, shifts):
    import constriction
    from rcc.torch._width_classes import _AdaptiveClassModel, max_class

    model = _AdaptiveClassModel()
    for widths, dims, mode, shift in zip(block_widths, block_dims, modes, shifts):
        encoder.encode(int(mode), constriction.stream.model.Categorical(model.mode(), perfect=False))
        model.update_mode(int(mode))
        if mode != 0:
            continue
        coded = [j for j, w in enumerate(widths.tolist()) if w > 1]
        for j in coded:
            probabilities = model.shift(dims[j], len(coded), max_class(widths[j]))
            encoder.encode(int(shift[j]), constriction.stream.model.Categorical(probabilities, perfect=False))
            model.update_shift(dims[j], int(shift[j]))


@pytest.mark.parametrize("size, p_one, run", [(0, 0.5, 0), (1, 0.5, 0), (9, 0.5, 0), (3000, 0.3, 0),
                                              (5000, 0.02, 400), (5000, 0.97, 1500), (300, 1.0, 0)])
def test_fallback_mask_coder_writes_the_reference_bytes(size, p_one, run):
    import constriction
    from rcc.torch._width_classes import decode_fallback_mask, encode_fallback_mask

    rng = np.random.default_rng(size + run)
    mask = (rng.random(size) < p_one).astype(np.int64)
    mask[size // 3: size // 3 + run] = 1  # a long run of drifted items inside
    reference = constriction.stream.queue.RangeEncoder()
    _reference_mask(reference, mask)
    encoder = constriction.stream.queue.RangeEncoder()
    bits = encode_fallback_mask(encoder, mask)
    assert np.array_equal(encoder.get_compressed(), reference.get_compressed())
    assert bits.shape == (size,) and np.all(bits > 0)
    decoder = constriction.stream.queue.RangeDecoder(reference.get_compressed())
    assert np.array_equal(decode_fallback_mask(decoder, size), mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_width_class_coder_writes_the_reference_bytes(seed):
    import constriction
    from rcc.torch._width_classes import decode_classes, encode_classes, max_class

    rng = np.random.default_rng(seed)
    count, size, latents = 400, 5, 12
    calibrated = rng.choice([1, 2, 3, 5, 17, 40, 300, 70000], size=latents)
    block_dims = np.stack([rng.choice(latents, size, replace=False) for _ in range(count)])
    block_widths = calibrated[block_dims]
    block_widths[:, -1] = np.where(rng.random(count) < 0.3, 1, block_widths[:, -1])  # some padding
    modes = (rng.random(count) < 0.1).astype(np.int64)
    tops = np.vectorize(max_class)(block_widths)
    shifts = np.minimum(rng.geometric(0.6, size=(count, size)) - 1, tops) * (block_widths > 1)
    shifts[modes == 1] = 0
    reference = constriction.stream.queue.RangeEncoder()
    _reference_classes(reference, block_widths, block_dims, modes, shifts)
    encoder = constriction.stream.queue.RangeEncoder()
    bits = encode_classes(encoder, block_widths, block_dims, modes, shifts)
    assert np.array_equal(encoder.get_compressed(), reference.get_compressed())
    assert bits.shape == (count,) and np.all(bits > 0)
    decoded_modes, decoded_shifts = decode_classes(constriction.stream.queue.RangeDecoder(reference.get_compressed()),
                                                   block_widths, block_dims)
    assert np.array_equal(decoded_modes, modes) and np.array_equal(decoded_shifts, shifts)


def test_a_forged_item_header_is_refused_by_name():
    """Format 0 exists only with the fallback flag, and the word formats only with their own flag."""
    channel, mean, log_scale = drifted_case("classes_one_block")
    items = channel.compress(mean, log_scale, seed=77, per_item=True)[0]
    fingerprint = channel._state_fingerprint()
    position = next(i for i, blob in enumerate(items) if blob[0] & 0x08)
    assert items[position][0] >> 6 == 0
    for flags in (items[position][0] & 0xF0, 0x40 | (items[position][0] & 0x38)):  # no flag; word format 1 + flag
        payload = items[position][2:]
        check = channel._item_check(flags, 77, position, payload, fingerprint)
        forged = list(items)
        forged[position] = bytes([flags | (check >> 8), check & 0xFF]) + payload
        with pytest.raises(ValueError, match=rf"data\[{position}\] is not an RCCChannel item stream this rcc reads"):
            channel.decompress(forged, 77, mean.shape)
