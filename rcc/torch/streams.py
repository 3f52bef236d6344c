"""The bitstream formats of :class:`~rcc.torch.RCCChannel`: one stream per batch or one per item.

Every message goes through :mod:`rcc.entropy`; the headers carry the fallback
positions and checks of the bytes, the seed and the receiver's state.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..entropy import _read_varint, _varint
from ._common import _CODE_DTYPES, _constriction
from ..targets import Normal
from ._calibration import _PRIOR
from ._item_classes import decode_item_mask, encode_item_mask
from ._width_classes import decode_fallback_mask, encode_fallback_mask

__all__ = []

#: Format of RCCChannel's batch stream (1, without header checksums, is no longer read).
_FORMAT_VERSION = 2
#: Format of batch streams with fallback blocks (2 coded them dimension by dimension with width 1).
_FALLBACK_FORMAT_VERSION = 3
#: Format of batch streams written now, with or without fallback blocks: a header byte, one
#: CRC32 over the header, seed, shape, channel state and payload, and one range-coded payload
#: (fallback mask, joint messages, fallback sections) ending at its shortest decodable bytes.
#: Formats 2 and 3 (a complete rcc.entropy message stream inside, a separate fallback section
#: with its own check) are still read; they cost 20-30 bytes more per stream.
_SINGLE_PAYLOAD_FORMAT_VERSION = 4


_HAS_FALLBACK = 0x08


#: Format of RCCChannel's per-item streams without fallback blocks, and their header: 2 bits
#: version, 2 bits dtype, 1 bit fallback flag and an 11-bit check.  Version 3 ends the payload
#: at the shortest byte string that decodes (:func:`_shortest_payload`).
_ITEM_FORMAT_VERSION = 3
#: Format of per-item streams with fallback blocks: version 3's payload, with the fallback mask
#: and width classes under the fixed models of :mod:`rcc.torch._item_classes`.  Version 3 with
#: the fallback flag (the adaptive models of a batch stream) is still read.
_ITEM_CLASSES_FORMAT_VERSION = 0
#: Earlier formats, still read: payload = the range coder's words, trailing zero bytes dropped;
#: version 1 without fallback blocks, 2 with them (width classes).
_ITEM_WORD_FORMAT_VERSION = 1
_ITEM_WORD_FALLBACK_FORMAT_VERSION = 2


_ITEM_HAS_FALLBACK = 0x08


_ITEM_CHECK_BITS = 11


#: Item i of per-item streams draws its randomness from _derive_seed(seed, _ITEM_SEED_TAG + i).
_ITEM_SEED_TAG = 3


#: The buffers the decoder reads; a stream's check covers their CRC32.
_DECODER_BUFFERS = ("latent_shape_buffer", "widths", "prior_scales", "wide_prior_scale", "block_dims",
                    "index_code_json", "fallback_index_kl_bits", "factor_tables")


_MASK64 = (1 << 64) - 1


#: Tags of the seeds derived for the two message streams of a bitstream.
_STREAM_JOINT = 1


_STREAM_FALLBACK = 2
#: Tag of the seed of the fallback blocks coded with width classes.
_STREAM_CLASSED = 0


def _range_encoder():
    return _constriction().stream.queue.RangeEncoder()


def _final_interval(encoder, bits):
    """``[low, high)``: the values (``bits``-bit integers, the stream's bytes zero-padded) that
    decode every symbol written to ``encoder``.

    After ``position`` emitted words the coder's state ``(lower, range)`` is a 64-bit window below
    them; a carry out of ``lower + range`` runs into the emitted words, which big integers absorb.
    """
    words = np.asarray(encoder.get_compressed(), dtype=np.uint32)
    position, (lower, size) = encoder.pos()
    emitted = int.from_bytes(words[:position].astype(">u4").tobytes(), "big")
    low = (emitted << 64) + int(lower)
    shift = bits - (32 * position + 64)
    return low << shift, (low + int(size)) << shift


def _shortest_payload(encoder):
    """The shortest bytes from which a range decoder reads back all of ``encoder``'s symbols.

    The range coder ends its output with whole 32-bit words that name a point inside its final
    interval; any shorter string whose zero-padded value lies inside that interval decodes the
    same symbols.  On the grid of ``m``-byte strings the candidates are the point rounded down
    and rounded up (if the interval holds an ``m``-byte point, it holds one of these two), and
    an interval that holds an ``m``-byte point holds an ``m + 1``-byte one, so the search walks
    down from the full length and stops at the first length where neither candidate lies in
    the interval.  The interval comes from the coder's final state, so the cost does not grow
    with the number of symbols.  Saves about 2.6 of the last word's 4 bytes: what a one-item
    stream pays for termination.  A deterministic function of the symbols and their models, so
    the receiver, re-encoding what it decoded, obtains the same bytes.
    """
    from .. import entropy

    full = best = entropy._words_to_bytes(encoder.get_compressed())
    bits = max(32 * encoder.pos()[0] + 64, 8 * len(full))
    low, high = _final_interval(encoder, bits)
    point = int.from_bytes(full, "big") << (bits - 8 * len(full))
    if not low <= point < high:
        raise AssertionError("the range coder's output lies outside its final interval")
    for length in range(len(full) - 1, -1, -1):
        scale = bits - 8 * length
        down = point >> scale
        found = None
        for value in (down, down + 1):
            if value >> (8 * length):
                continue  # rounding up overflowed the m-byte grid
            if low <= value << scale < high:
                found = value.to_bytes(length, "big")
                break
        if found is None:
            break
        best = found
    return best


def _derive_seed(seed, tag):
    """Seed of stream ``tag`` of ``seed``: one splitmix64 step (bijective per tag)."""
    z = (int(seed) + 0x9E3779B97F4A7C15 * (int(tag) + 1)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _encode_message_stream(enc, seed, index_code, width, factor_code=None, factor_context=None):
    """Bytes of the messages ``(enc.index, enc.factor)`` (:func:`rcc.entropy.encode_messages`)."""
    from .. import entropy

    return entropy.encode_messages(enc, seed=seed, index_code=index_code, width=width, factor_code=factor_code,
                                   factor_context=factor_context)


def _decode_message_stream(data, count, seed, index_code, width, factor_code=None, factor_context=None):
    """``(index, factor)`` of ``count`` messages (:func:`rcc.entropy.decode_messages`)."""
    from .. import entropy

    return entropy.decode_messages(data, count=count, seed=seed, index_code=index_code, width=width,
                                   factor_code=factor_code, factor_context=factor_context)


def _message_record(index, factor, widths, seed):
    """Decoded messages as an :class:`rcc.EncodedSample` (for re-encoding; no samples)."""
    from ..coding import EncodedSample

    zeros = np.zeros(np.shape(index))
    return EncodedSample(index=index, factor=factor, sample=zeros, candidates=zeros, width=widths, tail_mass=zeros,
                         kl_bits=zeros, method="hybrid", seed=int(seed))


def _message_bits(enc, seed, index_code, width, factor_code=None, factor_context=None):
    """Ideal bits of each message as :func:`rcc.entropy.encode_messages` codes it."""
    from ..entropy import message_bits

    bits = message_bits(enc, seed, index_code=index_code, width=width, factor_code=factor_code,
                        factor_context=factor_context)
    return np.asarray(bits.total, dtype=np.float64)


def _item_version(has_fallback, item_format=None):
    """The format version of a per-item stream: the current one (``item_format`` None), version 3
    for every item (``item_format=3``), or the word formats 1 and 2 (``item_format=1``)."""
    if item_format == _ITEM_WORD_FORMAT_VERSION:
        return _ITEM_WORD_FALLBACK_FORMAT_VERSION if has_fallback else _ITEM_WORD_FORMAT_VERSION
    if has_fallback and item_format is None:
        return _ITEM_CLASSES_FORMAT_VERSION
    return _ITEM_FORMAT_VERSION


def _item_payload(encoder, version):
    """The payload of a per-item stream of format ``version``: the shortest one, or the range
    coder's words as the word formats wrote them."""
    from .. import entropy

    if version in (_ITEM_WORD_FORMAT_VERSION, _ITEM_WORD_FALLBACK_FORMAT_VERSION):
        return entropy._words_to_bytes(encoder.get_compressed())
    return _shortest_payload(encoder)


class _StreamCoding:
    """The stream formats of :class:`~rcc.torch.RCCChannel` (its compress/decompress internals)."""

    def _state_fingerprint(self):
        """CRC32 of every buffer the decoder reads (a stream checks it: a receiver with another state fails)."""
        crc = zlib.crc32(b"rcc.torch.RCCChannel")
        for name in _DECODER_BUFFERS:
            arr = np.ascontiguousarray(getattr(self, name).detach().cpu().numpy())
            crc = zlib.crc32(repr((name, arr.dtype.str, arr.shape)).encode() + arr.tobytes(), crc)
        return crc

    def _header_check(self, header, seed, batch_shape):
        """CRC32 of the batch stream's header bytes and of what the receiver must share."""
        crc = zlib.crc32(bytes(header), zlib.crc32(b"rcc.torch.RCCChannel.stream"))
        crc = zlib.crc32(int(seed).to_bytes(8, "little") + repr(tuple(batch_shape)).encode(), crc)
        return zlib.crc32(self._state_fingerprint().to_bytes(4, "little"), crc)

    @staticmethod
    def _item_check(flags, seed, item, payload, fingerprint):
        """The per-item check: the low ``_ITEM_CHECK_BITS`` bits of a CRC32 of everything the item depends on."""
        crc = zlib.crc32(b"rcc.torch.RCCChannel.item" + bytes([flags]))
        crc = zlib.crc32(int(seed).to_bytes(8, "little") + int(item).to_bytes(8, "little")
                         + fingerprint.to_bytes(4, "little"), crc)
        return zlib.crc32(payload, crc) & ((1 << _ITEM_CHECK_BITS) - 1)

    def _section_check(self, payload, seed):
        crc = zlib.crc32(b"rcc.torch.RCCChannel.fallback" + int(seed).to_bytes(8, "little"))
        return zlib.crc32(payload, zlib.crc32(self._state_fingerprint().to_bytes(4, "little"), crc))

    # -- batch stream --------------------------------------------------------------------

    def _compress_batch(self, plan, dtype_code, seed, batch_shape, latents, item_bits, candidates, progress,
                        earlier_format=False):
        """One stream for the whole batch (see :meth:`compress`); fills the per-item outputs.

        Writes format 4 (:data:`_SINGLE_PAYLOAD_FORMAT_VERSION`), or with ``earlier_format`` the
        layout of formats 2 and 3, which this rcc still reads.
        """
        if earlier_format:
            return self._compress_batch_earlier(plan, dtype_code, seed, batch_shape, latents, item_bits, candidates,
                                                progress)
        from .. import entropy

        block_code, fallback_code = self._index_codes()
        codes = (block_code, fallback_code, None)
        joint, fallback = plan["positions_joint"], plan["positions_fallback"]
        encoder = _range_encoder()
        if fallback.size:
            # Which item-blocks fall back comes first: the receiver needs it to find the joint ones.
            mask = np.zeros(plan["items"] * self.num_blocks, dtype=np.int64)
            mask[fallback] = 1
            mask_bits = encode_fallback_mask(encoder, mask)
            np.add.at(item_bits, np.arange(mask.size) // self.num_blocks, mask_bits)
        if joint.size:
            seed_joint = _derive_seed(seed, _STREAM_JOINT)
            enc = self._encode_joint(plan, joint, seed_joint, progress)
            widths = plan["block_widths"][joint % self.num_blocks]
            factor_code = entropy._check_factor_code(self._factor_code())
            context = self._factor_context(plan, joint)
            entropy._encode_symbols(encoder, enc, seed_joint, block_code, widths, factor_code, context)
            self._scatter(latents, plan, joint, np.asarray(enc.sample))
            items = joint // self.num_blocks
            np.add.at(item_bits, items, _message_bits(enc, seed_joint, block_code, widths, factor_code, context))
            np.add.at(candidates, items, np.asarray(enc.candidates, dtype=np.int64))
        if fallback.size:
            section = self._encode_section(plan, fallback, seed, progress)
            bits = self._write_section(encoder, plan, section, codes)
            items = fallback // self.num_blocks
            np.add.at(item_bits, items, bits)
            np.add.at(candidates, items, self._section_samples(plan, section, latents, decode=False))
        payload = _shortest_payload(encoder)
        header = bytes([(_SINGLE_PAYLOAD_FORMAT_VERSION << 4) | (_HAS_FALLBACK if fallback.size else 0) | dtype_code])
        check = zlib.crc32(payload, self._header_check(header, seed, batch_shape))
        return header + check.to_bytes(4, "little") + payload

    def _compress_batch_earlier(self, plan, dtype_code, seed, batch_shape, latents, item_bits, candidates, progress):
        """The batch stream of formats 2 and 3 (see :meth:`_compress_batch`)."""
        from .. import entropy

        block_code, fallback_code = self._index_codes()
        joint, fallback = plan["positions_joint"], plan["positions_fallback"]
        joint_data = b""
        fallback_data = b""
        if joint.size:
            seed_joint = _derive_seed(seed, _STREAM_JOINT)
            enc = self._encode_joint(plan, joint, seed_joint, progress)
            widths = plan["block_widths"][joint % self.num_blocks]
            factor_code, context = self._factor_code(), self._factor_context(plan, joint)
            joint_data = _encode_message_stream(enc, seed_joint, block_code, widths, factor_code, context)
            self._scatter(latents, plan, joint, np.asarray(enc.sample))
            items = joint // self.num_blocks
            np.add.at(item_bits, items, _message_bits(enc, seed_joint, block_code, widths, factor_code, context))
            np.add.at(candidates, items, np.asarray(enc.candidates, dtype=np.int64))
        if fallback.size:
            section = self._encode_section(plan, fallback, seed, progress)
            encoder = _constriction().stream.queue.RangeEncoder()
            mask = np.zeros(plan["items"] * self.num_blocks, dtype=np.int64)
            mask[fallback] = 1
            mask_bits = encode_fallback_mask(encoder, mask)
            np.add.at(item_bits, np.arange(mask.size) // self.num_blocks, mask_bits)
            bits = self._write_section(encoder, plan, section, (block_code, fallback_code, None))
            payload = entropy._words_to_bytes(encoder.get_compressed())
            fallback_data = payload + self._section_check(payload, seed).to_bytes(4, "little")
            items = fallback // self.num_blocks
            np.add.at(item_bits, items, bits)
            np.add.at(candidates, items, self._section_samples(plan, section, latents, decode=False))
        version = _FALLBACK_FORMAT_VERSION if fallback.size else _FORMAT_VERSION
        header = bytearray([(version << 4) | (_HAS_FALLBACK if fallback.size else 0) | dtype_code])
        if fallback.size:
            # Which item-blocks fall back is the first thing in the fallback section.
            header += _varint(len(joint_data))
        check = self._header_check(header, seed, batch_shape).to_bytes(4, "little")
        return bytes(header) + check + joint_data + fallback_data

    def _decompress_batch(self, data, seed, batch_shape, n, latents):
        from .. import entropy
        from ..coding import decode_sample

        if not data:
            raise ValueError("data is empty (not an RCCChannel bitstream)")
        flags = data[0]
        if flags >> 4 == _SINGLE_PAYLOAD_FORMAT_VERSION:
            return self._decompress_single_payload(data, seed, batch_shape, n, latents)
        if flags >> 4 == 1:
            raise ValueError("data is an RCCChannel stream of format 1 (without header checksums), which this "
                             "rcc no longer reads; compress the latents again")
        if flags >> 4 == _FORMAT_VERSION and flags & _HAS_FALLBACK:
            raise ValueError("data is an RCCChannel stream of format 2 with fallback blocks (coded dimension by "
                             "dimension), which this rcc no longer reads; compress the latents again")
        expected = _FALLBACK_FORMAT_VERSION if flags & _HAS_FALLBACK else _FORMAT_VERSION
        if flags >> 4 != expected or flags & 0x04:
            raise ValueError("data is not an RCCChannel bitstream (bad header byte)")
        dtype = _CODE_DTYPES[flags & 0x03]
        total = n * self.num_blocks
        pos = 1
        fallback = np.zeros(0, dtype=np.int64)
        if flags & _HAS_FALLBACK:
            joint_length, pos = _read_varint(data, pos)
        if len(data) < pos + 4:
            raise ValueError("data is truncated inside its header")
        if int.from_bytes(data[pos : pos + 4], "little") != self._header_check(data[:pos], seed, batch_shape):
            raise ValueError(
                "RCCChannel header checksum mismatch: the data is corrupted, or the seed, the shape or the "
                "channel's state differs from the sender's"
            )
        pos += 4
        if flags & _HAS_FALLBACK:
            if pos + joint_length > len(data):
                raise ValueError("data is truncated")
            joint_data, fallback_data = data[pos: pos + joint_length], data[pos + joint_length:]
        else:
            joint_data, fallback_data = data[pos:], b""
        block_code, fallback_code = self._index_codes()
        plan = self._layout()
        cons = _constriction()
        if flags & _HAS_FALLBACK:
            if len(fallback_data) < 4:
                raise ValueError("data is truncated inside its fallback section")
            payload = fallback_data[:-4]
            if int.from_bytes(fallback_data[-4:], "little") != self._section_check(payload, seed):
                raise ValueError("RCCChannel fallback section checksum mismatch: the data is corrupted")
            try:
                decoder = cons.stream.queue.RangeDecoder(entropy._bytes_to_words(payload))
                mask = decode_fallback_mask(decoder, total)
            except entropy._DECODE_ERRORS as exc:
                raise ValueError(f"data is corrupted: its fallback section does not decode ({exc})") from None
            fallback = np.flatnonzero(mask)
            if fallback.size == 0:
                raise ValueError("data is corrupted: a fallback section without fallback blocks")
        is_joint = np.ones(total, dtype=bool)
        is_joint[fallback] = False
        joint = np.flatnonzero(is_joint)
        if joint.size:
            seed_joint = _derive_seed(seed, _STREAM_JOINT)
            blocks = joint % self.num_blocks
            widths = plan["block_widths"][blocks]
            index, factor = _decode_message_stream(joint_data, joint.size, seed_joint, block_code, widths,
                                                   self._factor_code(), self._factor_context(plan, joint))
            transform = Normal(0.0, plan["block_scales"][blocks])
            sample = decode_sample(index, np.reshape(factor, widths.shape), seed_joint, prior=_PRIOR, width=widths,
                                   transform=transform)
            self._scatter(latents, plan, joint, np.asarray(sample))
        elif joint_data:
            raise ValueError("data holds a joint message stream where its header says there is none")
        if fallback.size:
            codes = (block_code, fallback_code, None)
            try:
                section = self._read_section(decoder, plan, fallback, seed, codes)
                # Canonical bytes: what the sender's coder writes for these symbols, and nothing else.
                encoder = cons.stream.queue.RangeEncoder()
                encode_fallback_mask(encoder, mask)
                self._write_section(encoder, plan, section, codes)
            except entropy._DECODE_ERRORS as exc:
                raise ValueError(f"data is corrupted: its fallback section does not decode ({exc})") from None
            if entropy._words_to_bytes(encoder.get_compressed()) != payload:
                raise ValueError("data is corrupted: its fallback section is not what the sender's coder writes")
            self._section_samples(plan, section, latents)
        return dtype

    def _decompress_single_payload(self, data, seed, batch_shape, n, latents):
        """Read a format-4 batch stream (:meth:`_compress_batch`); returns the dtype."""
        from .. import entropy

        flags = data[0]
        if flags & 0x04:
            raise ValueError("data is not an RCCChannel bitstream (bad header byte)")
        if len(data) < 5:
            raise ValueError("data is truncated inside its header")
        header, payload = data[:1], data[5:]
        if int.from_bytes(data[1:5], "little") != zlib.crc32(payload, self._header_check(header, seed, batch_shape)):
            raise ValueError(
                "RCCChannel checksum mismatch: the data is corrupted or truncated, or the seed, the shape or the "
                "channel's state differs from the sender's"
            )
        dtype = _CODE_DTYPES[flags & 0x03]
        total = n * self.num_blocks
        block_code, fallback_code = self._index_codes()
        codes = (block_code, fallback_code, entropy._check_factor_code(self._factor_code()))
        plan = self._layout()
        cons = _constriction()
        mask = None
        try:
            decoder = cons.stream.queue.RangeDecoder(entropy._bytes_to_words(payload))
            fallback = np.zeros(0, dtype=np.int64)
            if flags & _HAS_FALLBACK:
                mask = decode_fallback_mask(decoder, total)
                fallback = np.flatnonzero(mask)
                if fallback.size == 0:
                    raise ValueError("data is corrupted: its header announces fallback blocks and it has none")
            is_joint = np.ones(total, dtype=bool)
            is_joint[fallback] = False
            joint = np.flatnonzero(is_joint)
            enc_joint, section = self._read_messages(decoder, plan, joint, fallback, seed, codes)
            # Canonical bytes: what the sender's coder writes for these symbols, and nothing else.
            encoder = _range_encoder()
            if mask is not None:
                encode_fallback_mask(encoder, mask)
            if enc_joint is not None:
                entropy._encode_symbols(encoder, enc_joint, enc_joint.seed, block_code, enc_joint.width, codes[2],
                                        self._factor_context(plan, joint))
            if section is not None:
                self._write_section(encoder, plan, section, codes)
            canonical = _shortest_payload(encoder)
        except entropy._DECODE_ERRORS as exc:
            raise ValueError(f"data is corrupted: its payload does not decode ({exc})") from None
        if canonical != payload:
            raise ValueError("data is corrupted: its payload is not what the sender's coder writes")
        self._decode_messages(plan, joint, enc_joint, section, latents)
        return dtype

    def _read_messages(self, decoder, plan, joint, fallback, seed, codes, per_item=False):
        """Read the joint messages of item-blocks ``joint`` (as an :class:`rcc.EncodedSample` record, or
        None) and the fallback section of ``fallback`` (or None) from ``decoder``; every payload stores them
        in this order, with the joint seed derived from ``seed`` (``per_item``: see :meth:`_read_section`)."""
        from .. import entropy

        block_code, _, factor_code = codes
        enc_joint = section = None
        if joint.size:
            seed_joint = _derive_seed(seed, _STREAM_JOINT)
            widths = plan["block_widths"][joint % self.num_blocks]
            context = self._factor_context(plan, joint)
            entropy._check_marginal_widths(factor_code, widths, context)
            index, factor = entropy._decode_payload(decoder, joint.size, widths, seed_joint, "hybrid", block_code,
                                                    factor_code, context)
            enc_joint = _message_record(index, factor, widths, seed_joint)
        if fallback.size:
            section = self._read_section(decoder, plan, fallback, seed, codes, per_item)
        return enc_joint, section

    def _decode_messages(self, plan, joint, enc_joint, section, latents):
        """Decode what :meth:`_read_messages` read into ``latents`` (after the bytes were checked)."""
        from ..coding import decode_sample

        if enc_joint is not None:
            transform = Normal(0.0, plan["block_scales"][joint % self.num_blocks])
            sample = decode_sample(enc_joint.index, enc_joint.factor, enc_joint.seed, prior=_PRIOR,
                                   width=enc_joint.width, transform=transform)
            self._scatter(latents, plan, joint, np.asarray(sample))
        if section is not None:
            self._section_samples(plan, section, latents)

    # -- per-item streams ----------------------------------------------------------------

    def _item_symbols(self, encoder, plan, item, seed, codes, is_joint, enc_joint, section, version):
        """Write item ``item``'s symbols (fallback mask, joint messages, fallback section) to ``encoder``
        as format ``version`` codes them; returns the fallback section's bits per block (empty without one)."""
        from .. import entropy

        block_code, fallback_code, factor_code = codes
        positions = item * self.num_blocks + np.arange(self.num_blocks)
        per_item = version == _ITEM_CLASSES_FORMAT_VERSION
        if per_item:
            encode_item_mask(encoder, is_joint)
        elif not is_joint.all():
            encoder.encode(np.where(is_joint, 0, 1).astype(np.int32), _constriction().stream.model.Uniform(2))
        if enc_joint is not None:
            joint = positions[is_joint]
            entropy._encode_symbols(encoder, enc_joint, _derive_seed(seed, _STREAM_JOINT), block_code,
                                    plan["block_widths"][joint % self.num_blocks], factor_code,
                                    self._factor_context(plan, joint))
        if section is not None:
            return self._write_section(encoder, plan, section, codes, per_item)
        return np.zeros(0)

    def _compress_items(self, plan, dtype_code, seed, latents, item_bits, candidates, item_format=None):
        """One ``bytes`` per item (see :meth:`compress`); fills the per-item outputs.

        Writes the current formats, or with ``item_format`` an earlier one this rcc still reads
        (:func:`_item_version`)."""
        from .. import entropy

        block_code, fallback_code = self._index_codes()
        codes = (block_code, fallback_code, entropy._check_factor_code(self._factor_code()))
        fingerprint = self._state_fingerprint()
        out = []
        for item in range(plan["items"]):
            item_seed = _derive_seed(seed, _ITEM_SEED_TAG + item)
            positions = item * self.num_blocks + np.arange(self.num_blocks)
            is_joint = plan["joint"][item]
            joint, fallback = positions[is_joint], positions[~is_joint]
            enc_joint = section = None
            if joint.size:
                seed_joint = _derive_seed(item_seed, _STREAM_JOINT)
                enc_joint = self._encode_joint(plan, joint, seed_joint)
                self._scatter(latents, plan, joint, np.asarray(enc_joint.sample))
                widths = plan["block_widths"][joint % self.num_blocks]
                item_bits[item] += _message_bits(enc_joint, seed_joint, block_code, widths, codes[2],
                                                 self._factor_context(plan, joint)).sum()
                candidates[item] += int(np.sum(enc_joint.candidates))
            if fallback.size:
                section = self._encode_section(plan, fallback, item_seed)
                candidates[item] += int(self._section_samples(plan, section, latents, decode=False).sum())
            version = _item_version(bool(fallback.size), item_format)
            encoder = _range_encoder()
            item_bits[item] += float(np.sum(self._item_symbols(encoder, plan, item, item_seed, codes, is_joint,
                                                               enc_joint, section, version)))
            payload = _item_payload(encoder, version)
            flags = (version << 6) | (dtype_code << 4) | (_ITEM_HAS_FALLBACK if fallback.size else 0)
            check = self._item_check(flags, seed, item, payload, fingerprint)
            out.append(bytes([flags | (check >> 8), check & 0xFF]) + payload)
        return out

    def _decompress_items(self, data, seed, n, latents):
        from .. import entropy

        if len(data) != n:
            raise ValueError(f"got {len(data)} per-item streams for a batch of {n} items")
        block_code, fallback_code = self._index_codes()
        factor_code = entropy._check_factor_code(self._factor_code())
        codes = (block_code, fallback_code, factor_code)
        plan = self._layout()
        fingerprint = self._state_fingerprint()
        dtype_code = None
        cons = _constriction()
        blocks = np.arange(self.num_blocks)
        for item, blob in enumerate(data):
            if not isinstance(blob, (bytes, bytearray, memoryview)):
                raise TypeError(f"data[{item}] must be bytes, got {type(blob).__name__}")
            blob = bytes(blob)
            if len(blob) < 2:
                raise ValueError(f"data[{item}] is too short ({len(blob)} bytes) to be an RCCChannel item")
            flags = blob[0] & 0xF8
            version = flags >> 6
            readable = ((_ITEM_CLASSES_FORMAT_VERSION, _ITEM_FORMAT_VERSION, _ITEM_WORD_FALLBACK_FORMAT_VERSION)
                        if flags & _ITEM_HAS_FALLBACK else (_ITEM_FORMAT_VERSION, _ITEM_WORD_FORMAT_VERSION))
            if version not in readable:
                raise ValueError(f"data[{item}] is not an RCCChannel item stream this rcc reads (format "
                                 f"{flags >> 6}{' with fallback blocks' if flags & _ITEM_HAS_FALLBACK else ''})")
            payload = blob[2:]
            if ((blob[0] & 0x07) << 8 | blob[1]) != self._item_check(flags, seed, item, payload, fingerprint):
                raise ValueError(
                    f"data[{item}]: checksum mismatch: the bytes are corrupted, out of order, or the seed or the "
                    "channel's state differs from the sender's"
                )
            code = (flags >> 4) & 0x03
            if dtype_code is not None and code != dtype_code:
                raise ValueError(f"data[{item}] was written for another dtype than data[0]")
            dtype_code = code
            item_seed = _derive_seed(seed, _ITEM_SEED_TAG + item)
            positions = item * self.num_blocks + blocks
            try:
                decoder = cons.stream.queue.RangeDecoder(entropy._bytes_to_words(payload))
                is_joint = np.ones(self.num_blocks, dtype=bool)
                per_item = version == _ITEM_CLASSES_FORMAT_VERSION
                if per_item:
                    is_joint = decode_item_mask(decoder, self.num_blocks)
                elif flags & _ITEM_HAS_FALLBACK:
                    is_joint = np.asarray(decoder.decode(cons.stream.model.Uniform(2), self.num_blocks)) == 0
                    if is_joint.all():
                        raise ValueError("a fallback flag without fallback blocks")
                joint, fallback = positions[is_joint], positions[~is_joint]
                enc_joint, section = self._read_messages(decoder, plan, joint, fallback, item_seed, codes, per_item)
                # Canonical bytes: what the sender's coder writes for these symbols, and nothing else.
                encoder = _range_encoder()
                self._item_symbols(encoder, plan, item, item_seed, codes, is_joint, enc_joint, section, version)
                canonical = _item_payload(encoder, version)
            except entropy._DECODE_ERRORS as exc:
                raise ValueError(f"data[{item}] is corrupted: its payload does not decode ({exc})") from None
            if canonical != payload:
                raise ValueError(f"data[{item}] is corrupted: its payload is not what the sender's coder writes")
            self._decode_messages(plan, joint, enc_joint, section, latents)
        return _CODE_DTYPES[0 if dtype_code is None else dtype_code]
