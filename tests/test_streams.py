"""Untrusted bytes: seeded fuzzing of every message stream kind and of saved codes (containers: test_compression.py).

Each fuzz test mutates valid streams (bit flips, byte replacements, truncations,
appended junk, random bytes) and checks that every mutation either raises
``ValueError``/``TypeError`` or decodes to exactly what was sent, that payloads
re-checksummed by a hostile sender raise nothing else, and that numpy's peak
allocation stays far below 64 MiB.
"""

from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
import pytest

import rcc
from rcc import entropy as E

SEED = 11
MEMORY_LIMIT = 64 << 20


def mutations(data, rng, count):
    """``count`` mutated copies of ``data``: flips, replacements, cuts, junk, random bytes."""
    out = []
    n = len(data)
    for i in range(count):
        kind = i % 6
        if kind == 0:  # one bit flip, biased to the header
            pos = int(rng.integers(0, min(n, 40))) if i % 12 == 0 else int(rng.integers(0, n))
            damaged = bytearray(data)
            damaged[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # a replaced byte
            damaged = bytearray(data)
            damaged[int(rng.integers(0, n))] = int(rng.integers(0, 256))
        elif kind == 2:  # truncation
            damaged = data[: int(rng.integers(0, n))]
        elif kind == 3:  # appended junk
            damaged = data + rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif kind == 4:  # random bytes after a valid prefix
            cut = int(rng.integers(0, n))
            damaged = data[:cut] + rng.integers(0, 256, n - cut, dtype=np.uint8).tobytes()
        else:  # two flips
            damaged = bytearray(data)
            for _ in range(2):
                damaged[int(rng.integers(0, n))] ^= 1 << int(rng.integers(0, 8))
        damaged = bytes(damaged)
        if damaged != data:
            out.append(damaged)
    return out


def assert_rejected_or_exact(decode, data, expected, rng, count, equal=None):
    """Every mutation of ``data`` raises ValueError/TypeError or decodes to ``expected``."""
    equal = equal or (lambda a, b: all(np.array_equal(x, y) for x, y in zip(a, b)))
    exact = rejected = 0
    tracemalloc.start()
    try:
        for damaged in mutations(data, rng, count):
            try:
                result = decode(damaged)
            except (ValueError, TypeError):
                rejected += 1
                continue
            assert equal(result, expected), f"silent wrong decode of a mutated stream: {damaged.hex()}"
            exact += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"peak numpy allocation {peak / 2**20:.1f} MiB"
    assert rejected > 0.9 * count
    return exact, rejected


def recheck(stream):
    """``stream`` with its stream CRC32 recomputed (what a hostile or buggy sender could write)."""
    header = E._parse_header(stream)
    end = header["header_bytes"]
    crc = zlib.crc32(stream[end:], zlib.crc32(stream[: end - 4]))
    return stream[: end - 4] + crc.to_bytes(4, "little") + stream[end:]


def hostile(stream, rng, count):
    """Mutations of ``stream`` that keep its CRC valid (header fields and payload alike)."""
    out = []
    for damaged in mutations(stream, rng, count):
        try:
            out.append(recheck(damaged))
        except (ValueError, TypeError):
            continue
    return out


# ----------------------------------------------------------------------------- message streams


def message_cases():
    rng = np.random.default_rng(3)
    plain = rcc.encode_sample(rcc.Normal(rng.normal(0, 0.9, 60), 0.01), SEED)
    code = E.ZipfIndexCode(kl_bits=max(0.0, float(np.mean(plain.kl_bits)) - np.log2(float(np.mean(plain.width)))))
    product = rcc.encode_sample(rcc.Product(rcc.Normal(rng.normal(0, 0.9, (20, 3)), 0.05)), SEED)
    grid = rcc.encode_sample(rcc.Normal(rng.normal(0, 0.9, (4, 5)), 0.02), SEED)
    tabulated = E.TabulatedFactorCode([np.ones(int(m)) for m in np.asarray(product.width)[0]])
    conditioned = E.ConditionedIndexCode.fit(plain.index, plain.factor, plain.width)
    pfr = rcc.encode_sample(rcc.Normal(rng.normal(0, 0.9, 30), 0.3), SEED, method="pfr")
    return [
        ("plain", plain, dict(index_code=code)),
        ("product", product, dict(index_code=E.ZipfIndexCode(3.0))),
        ("grid", grid, dict(index_code=E.ZipfIndexCode(2.0))),
        ("tabulated", product, dict(index_code=E.ZipfIndexCode(3.0), factor_code=tabulated)),
        ("conditioned", plain, dict(index_code=conditioned)),
        ("pfr", pfr, dict(index_code=E.ZipfIndexCode(1.0))),
    ]


@pytest.mark.parametrize("case", range(6))
def test_fuzz_message_streams(case):
    name, enc, codes = message_cases()[case]
    data = E.encode_messages(enc, index_code=codes["index_code"], factor_code=codes.get("factor_code"))
    width = enc.width if enc.method == "hybrid" else None

    def decode(blob):
        return E.decode_messages(blob, seed=SEED, width=width, flat=False, **codes)

    expected = (np.asarray(enc.index), np.asarray(enc.factor))
    assert all(np.array_equal(a, b) for a, b in zip(decode(data), expected))
    rng = np.random.default_rng(case)
    assert_rejected_or_exact(decode, data, expected, rng, 600)
    # Hostile, re-checksummed streams: any valid result, but only ValueError/TypeError and bounded memory.
    tracemalloc.start()
    try:
        for blob in hostile(data, rng, 300):
            try:
                decode(blob)
            except (ValueError, TypeError):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT


def test_huge_header_claims_are_rejected_before_allocation():
    enc = rcc.encode_sample(rcc.Product(rcc.Normal(np.zeros((2, 2)), 0.05)), SEED)
    code = E.ZipfIndexCode(2.0)
    data = E.encode_messages(enc, index_code=code)
    header = E._parse_header(data)
    # Rewrite the batch shape to (2**40,) and the event size to 2**31, then re-checksum.
    forged = data[:5] + bytes([1]) + E._varint(2**40) + E._varint(2**31) + data[header["header_bytes"] - 8:]
    forged = recheck(forged)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="more than"):
            E.decode_messages(forged, seed=SEED, index_code=code, width=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_payload_that_fails_the_model_is_a_value_error():
    """A payload with a valid CRC that the codes cannot have produced (constriction's AssertionError)."""
    enc = rcc.encode_sample(rcc.Normal(np.linspace(-1, 1, 40), 0.01), SEED)
    code = E.ZipfIndexCode(4.0)
    data = E.encode_messages(enc, index_code=code)
    end = E._parse_header(data)["header_bytes"]
    errors = set()
    rng = np.random.default_rng(0)
    for _ in range(200):
        junk = rng.integers(0, 256, len(data) - end, dtype=np.uint8).tobytes()
        try:
            E.decode_messages(recheck(data[:end] + junk), seed=SEED, index_code=code, width=enc.width)
        except ValueError as exc:
            errors.add(type(exc))
    assert errors <= {ValueError}


def test_decode_messages_derives_count_and_shape():
    enc = rcc.encode_sample(rcc.Normal(np.linspace(-1, 1, 12).reshape(3, 4), 0.02), SEED)
    code = E.ZipfIndexCode(2.0)
    data = E.encode_messages(enc, index_code=code)
    index, factor = E.decode_messages(data, seed=SEED, index_code=code, width=enc.width, flat=False)
    assert index.shape == (3, 4) and np.array_equal(index, enc.index) and np.array_equal(factor, enc.factor)
    flat_index, _ = E.decode_messages(data, 12, SEED, index_code=code, width=enc.width.ravel())
    assert np.array_equal(flat_index, enc.index.ravel())
    with pytest.raises(ValueError, match="holds 12 messages"):
        E.decode_messages(data, 11, SEED, index_code=code, width=enc.width)
    with pytest.raises(TypeError, match="seed"):
        E.decode_messages(data, index_code=code, width=enc.width)


def test_version_1_streams_are_still_read():
    enc = rcc.encode_sample(rcc.Normal(np.linspace(-1, 1, 9), 0.02), SEED)
    code = E.ZipfIndexCode(2.0)
    data = E.encode_messages(enc, index_code=code)
    header = E._parse_header(data)
    old = data[:3] + bytes([1, data[4]]) + E._varint(9) + data[header["header_bytes"] - 9:]
    old = recheck(old)
    index, factor = E.decode_messages(old, seed=SEED, index_code=code, width=enc.width)
    assert np.array_equal(index, enc.index) and np.array_equal(factor, enc.factor)


def test_integers_beyond_int64_are_value_errors():
    target = rcc.Normal(0.1, 0.1)
    with pytest.raises(ValueError, match="18446744073709551616"):
        rcc.encode_sample(target, SEED, max_candidates=2**64)
    with pytest.raises(ValueError, match="9223372036854775808"):
        rcc.encode_sample(target, SEED, max_candidates=2**63)
    with pytest.raises(ValueError, match="9223372036854775808"):
        rcc.decode_sample(1, 0, SEED, width=2**63)
    with pytest.raises(ValueError, match="18446744073709551616"):
        rcc.decode_sample([2**64], [0], SEED, width=3)
    with pytest.raises(ValueError, match="9223372036854775808"):
        E.ZipfIndexCode(2.0).bits(2**63)
    with pytest.raises(ValueError, match="int64"):
        E.decode_messages(b"RCC", 2**63, SEED, index_code=E.ZipfIndexCode(2.0))
    with pytest.raises(ValueError, match="int64"):
        E.UniformIndexCode(2**70)


# ----------------------------------------------------------------------------- saved codes


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _empirical(**fields):
    data = E.EmpiricalIndexCode([5, 3, 2], 1, 2.0).to_dict()
    data.update(fields)
    return data


@pytest.mark.parametrize("data, field", [
    (_empirical(head_counts=[10**30, 1]), "head_counts"),
    (_empirical(head_counts=[2**62, 2**62]), "2\\*\\*62"),
    (_empirical(head_counts=[-1, 2]), "head_counts"),
    (_empirical(head_counts=[1.5]), "head_counts"),
    (_empirical(head_counts="abc"), "head_counts"),
    (_empirical(pseudo_count=1e308), "pseudo_count"),
    (_empirical(pseudo_count=True), "pseudo_count"),
    (_empirical(tail_count=2**70), "tail_count"),
    (_empirical(tail_exponent=1.0), "tail_exponent"),
    (_empirical(head_bits=99), "head_bits"),
    ({**E.ZipfIndexCode(2.0).to_dict(), "kl_bits": 1e308, "exponent": 1.0}, "kl_bits"),
    ({**E.ZipfIndexCode(exponent=2.0).to_dict(), "exponent": 1.0 + 1e-15}, "exponent"),
    ({**E.BucketIndexCode(np.ones(63)).to_dict(), "bucket_weights": [1e308] * 63}, "bucket_weights"),
    ({**E.BucketIndexCode(np.ones(63)).to_dict(), "bucket_weights": [1.0] * 62 + [0.0]}, "bucket_weights"),
    ({**E.UniformIndexCode(10).to_dict(), "num_candidates": 2**64}, "num_candidates"),
    ({**E.EmpiricalIndexCode([5, 3], 1, 2.0).to_dict(), "version": 99}, "version"),
    ({**E.ConditionedIndexCode([0.5], [E.ZipfIndexCode(1.0)] * 2, E.ZipfIndexCode(1.0)).to_dict(),
      "edges": [float("nan")]}, "edges"),
])
def test_hostile_saved_index_codes_raise_value_errors_naming_file_and_field(tmp_path, data, field):
    import json

    path = _write(tmp_path, "code.json", json.dumps(data))
    with pytest.raises(ValueError, match=field) as info:
        E.load_index_code(path)
    assert "code.json" in str(info.value)


def test_malformed_code_files(tmp_path):
    deep = _write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="deep.json"):
        E.load_index_code(deep)
    nested = _write(tmp_path, "nested.json", '{"a":' * 40 + "1" + "}" * 40)
    with pytest.raises(ValueError, match="nested"):
        E.load_index_code(nested)
    for text in ("not json", '"a string"', "[]", '{"format": "rcc.IndexCode"}', "\xff"):
        with pytest.raises(ValueError, match="bad.json"):
            E.load_index_code(_write(tmp_path, "bad.json", text))


def test_loaded_codes_are_usable(tmp_path):
    codes = [E.ZipfIndexCode(3.0), E.EmpiricalIndexCode([2**40, 3, 1], 5, 1.5, pseudo_count=1e6),
             E.BucketIndexCode(np.linspace(1.0, 1e300, 63)), E.UniformIndexCode(2**62)]
    for i, code in enumerate(codes):
        path = tmp_path / f"code{i}.json"
        code.save(path)
        loaded = E.load_index_code(path)
        n = np.array([1, 2, 1000, 2**40, 2**62])
        n = n[np.isfinite(loaded.bits(n))]
        bits = loaded.bits(n)
        assert np.all(np.isfinite(bits)) and np.all(bits >= 0)
        enc = rcc.encode_sample(rcc.Normal(np.linspace(-1, 1, 20), 0.3), SEED, method="pfr")
        data = E.encode_messages(enc, index_code=loaded)
        assert np.array_equal(E.decode_messages(data, seed=SEED, index_code=code)[0], enc.index)


def test_tabulated_factor_code_load(tmp_path):
    import json

    code = E.TabulatedFactorCode([[1.0, 2.0, 3.0], [1.0]])
    path = tmp_path / "factor.json"
    code.save(path)
    assert E.TabulatedFactorCode.load(path).to_dict() == code.to_dict()
    for tables, widths, field in (([[1e308, 1e308]], None, "tables"), ([[1.0, -1.0]], None, "tables"),
                                  ([[1.0, 2.0]], [2**64], "widths"), ("x", None, "tables"),
                                  ([[1.0, "a"]], None, "tables"), ([[1.0, 2.0]], [True], "widths")):
        path.write_text(json.dumps({"type": "TabulatedFactorCode", "tables": tables, "widths": widths}))
        with pytest.raises(ValueError, match=field) as info:
            E.TabulatedFactorCode.load(path)
        assert "factor.json" in str(info.value)
