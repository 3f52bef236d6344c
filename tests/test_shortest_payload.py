"""The shortest payload of a range coder, from its final state, against decoding every candidate."""

import numpy as np
import pytest

pytest.importorskip("torch")  # rcc.torch, the adapter whose streams use it, needs it
constriction = pytest.importorskip("constriction")

from rcc import entropy  # noqa: E402
from rcc.torch.streams import _shortest_payload  # noqa: E402


def _decodes(payload, calls):
    """Whether a range decoder over ``payload`` (zero-padded to whole words) returns every symbol in ``calls``."""
    try:
        decoder = constriction.stream.queue.RangeDecoder(entropy._bytes_to_words(payload))
        for symbols, probabilities in calls:
            decoded = decoder.decode(constriction.stream.model.Categorical(perfect=False), probabilities)
            if not np.array_equal(np.asarray(decoded), symbols):
                return False
    except entropy._DECODE_ERRORS:
        return False
    return True


def _shortest_by_decoding(encoder, calls):
    """The same search as :func:`_shortest_payload`, each candidate tried by decoding it."""
    full = best = entropy._words_to_bytes(encoder.get_compressed())
    for length in range(len(full) - 1, -1, -1):
        down = int.from_bytes(full[:length], "big")
        found = None
        for value in (down, down + 1):
            if value >> (8 * length) == 0 and _decodes(value.to_bytes(length, "big"), calls):
                found = value.to_bytes(length, "big")
                break
        if found is None:
            break
        best = found
    return best


def _random_coder(rng):
    encoder = constriction.stream.queue.RangeEncoder()
    calls = []
    for _ in range(int(rng.integers(0, 4))):
        count, size = int(rng.integers(1, 30)), int(rng.integers(2, 9))
        # Skewed models leave tiny final ranges, where the coder's carry handling matters.
        probabilities = rng.dirichlet(np.full(size, rng.choice([1.0, 0.05, 0.001])), size=count) + 1e-9
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        symbols = np.array([rng.choice(size, p=p) for p in probabilities], dtype=np.int32)
        encoder.encode(symbols, constriction.stream.model.Categorical(perfect=False), probabilities)
        calls.append((symbols, probabilities))
    return encoder, calls


@pytest.mark.parametrize("seed", range(4))
def test_shortest_payload_matches_decoding_every_candidate(seed):
    rng = np.random.default_rng(seed)
    for _ in range(150):
        encoder, calls = _random_coder(rng)
        payload = _shortest_payload(encoder)
        assert payload == _shortest_by_decoding(encoder, calls)
        assert _decodes(payload, calls)


def test_shortest_payload_of_an_empty_coder_is_empty():
    assert _shortest_payload(constriction.stream.queue.RangeEncoder()) == b""
