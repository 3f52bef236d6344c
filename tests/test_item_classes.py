"""The fixed-model coding of one item's fallback mask and width classes (per-item streams)."""

import math

import numpy as np
import pytest

pytest.importorskip("torch")  # rcc.torch, the adapter these coders belong to, needs it
constriction = pytest.importorskip("constriction")

from rcc.torch._item_classes import (decode_item_classes, decode_item_mask, encode_item_classes,  # noqa: E402
                                     encode_item_mask)
from rcc.torch._width_classes import max_class  # noqa: E402


def _random_section(rng, blocks, size):
    """Widths (1 on some slots: padding or width-1 dimensions), modes and classes each width allows."""
    widths = np.where(rng.random((blocks, size)) < 0.2, 1, 2 ** rng.integers(1, 9, (blocks, size)))
    modes = (rng.random(blocks) < 0.2).astype(np.int64)
    shifts = np.zeros((blocks, size), dtype=np.int64)
    for b in range(blocks):
        if modes[b] == 0:
            drift = rng.random(size) < rng.choice([0.0, 0.15, 0.6, 1.0])
            for j in range(size):
                if widths[b, j] > 1 and drift[j]:
                    shifts[b, j] = rng.integers(1, max_class(widths[b, j]) + 1)
    return widths, modes, shifts


@pytest.mark.parametrize("seed", range(3))
def test_masks_and_classes_round_trip(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        blocks, size = int(rng.integers(1, 6)), int(rng.integers(1, 9))
        is_joint = rng.random(blocks) < 0.5
        if is_joint.all():
            is_joint[rng.integers(blocks)] = False
        widths, modes, shifts = _random_section(rng, int((~is_joint).sum()), size)
        encoder = constriction.stream.queue.RangeEncoder()
        encode_item_mask(encoder, is_joint)
        bits = encode_item_classes(encoder, widths, modes, shifts)
        decoder = constriction.stream.queue.RangeDecoder(encoder.get_compressed())
        assert np.array_equal(decode_item_mask(decoder, blocks), is_joint)
        decoded_modes, decoded_shifts = decode_item_classes(decoder, widths)
        assert np.array_equal(decoded_modes, modes) and np.array_equal(decoded_shifts, shifts)
        assert bits.shape == (len(modes),) and np.all(bits > 0)
        # The ideal bits stay within the range coder's termination of what it wrote.
        written = 32 * len(encoder.get_compressed())
        mask_bits = blocks - 1 + ((~is_joint[:-1]).any() if blocks > 1 else 0)
        assert bits.sum() + mask_bits <= written + 1e-9


def test_drifted_latents_cost_their_names_and_their_rarity():
    widths = np.full((1, 8), 64)
    shifts = np.zeros((1, 8), dtype=np.int64)
    shifts[0, 5] = 1
    bits = encode_item_classes(constriction.stream.queue.RangeEncoder(), widths, np.zeros(1, dtype=np.int64), shifts)
    mode = -math.log2(15 / 16)
    count = -math.log2(13 / 16 * 0.5 / (1 - 2.0**-7))
    which = math.log2(8)
    width_class = -math.log2(1 / sum(4.0**-i for i in range(6)))
    assert bits[0] == pytest.approx(mode + count + which + width_class)
    assert 4.7 < bits[0] < 4.9
    # Every dimension drifting: no subset to name, so about 0.8 bits each.
    shifts[0] = 1
    bits = encode_item_classes(constriction.stream.queue.RangeEncoder(), widths, np.zeros(1, dtype=np.int64), shifts)
    assert bits[0] == pytest.approx(mode + 3.0 + 8 * width_class)


def test_a_one_block_item_sends_no_mask():
    encoder = constriction.stream.queue.RangeEncoder()
    encode_item_mask(encoder, np.array([False]))
    assert encoder.num_bits() == 0
    with pytest.raises(ValueError, match="fallback block"):
        encode_item_mask(encoder, np.array([True, True]))
