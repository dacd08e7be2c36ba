"""The EPHC container: integer weight tensors, Huffman-coded, with what is needed to dequantize them.

One file holds the coded weights of a model; a device (edgeprune/coding/c/ep_huffman.c) decodes it
tensor by tensor into a scratch buffer, so it is laid out to be read front to back with no seeking
and no allocation. FORMAT.md has the rationale and the validation rules. All integers are
little-endian; f32 is IEEE-754 binary32; u8/u16/u32 unsigned, i8/i32 two's complement.

    container := magic "EPHC" | version u16 (=3; 1, 2 read) | n_tensors u32 | record * n_tensors  (nothing after)
    record    := body_len u32 | body (body_len bytes) | crc u32 (zlib.crc32 of body)
    body      := name_len u16 | name (UTF-8) | dtype u8 | ndim u8 (<= 8) | dims u32 * ndim
                 | quant | coding                                        (nothing after)
    dtype     := 1 int8 | 2 uint8 | 3 int16 | 4 uint16                  (the decoded values)
    quant     := 0                                                       raw integers
               | 1 axis i8 | n u32 | scale f32 * n | zero_point i32 * n  real = (q - zero_point) * scale;
                                                                         axis -1: n = 1, else n = dims[axis]
               | 2 n u32 | value f32 * n                                 real = value[q]; dtype unsigned, q < n
    coding    := 0 stream(values)                                        dense: prod(dims) symbols, row-major
               | 1 fill u16 | stream(gaps) | stream(values)              sparse (Deep Compression's relative
                                                                         indices): the same number of gaps and
                                                                         values; positions not listed hold fill
    stream    := n_symbols u32 | sym_bytes u8 (1|2|0x81|0xC1) | max_len u8 (<= 16) | table
                 | interval u32 (>= 1) | sync u32 * n_sync | n_bytes u32 | bits (n_bytes bytes)
    table     := count u32 * max_len | symbol (u8 or u16 per sym_bytes) * n_used     (flat: 1, 2, 0x81)
               | table_len u32 | compact table (table_len bytes, pair_table.py)    (compact: 0xC1)

A value's symbol is its bit pattern as an unsigned integer of the same width (int8 -1 -> 255).
Sparse decoding: pos = 0; for each (gap, value): pos += gap; out[pos] = value; pos += 1. A run of
zeros (fill values) longer than the largest gap symbol is bridged by filler entries (gap = max,
value = fill), as in Deep Compression.

Stream: count[l-1] symbols have code length l; the symbols follow in canonical order (by length,
then value) and n_used = sum(count); with max_len 0 every symbol equals the one listed symbol
(none for an empty stream) and there are no bits. Codes are canonical (huffman.py), must form a
complete prefix code (Kraft sum 1) and the longest length must be used. Bits are MSB-first and
the last byte is zero-padded; n_bytes = ceil(bits / 8). sync[i] is the bit offset of symbol
(i + 1) * interval; n_sync = ceil(n_symbols / interval) - 1 (0 for an empty stream).

Paired stream (sym_bytes 0x81, version 2): the code's symbols are u16 pairs first * 256 + second of
1-byte symbols; n_symbols still counts the symbols, everything above (n_used, sync points, "decodes
to exactly") counts the ceil(n_symbols / 2) pairs, and an odd stream's last pair ends in a padding
symbol the decoders drop. The encoder pairs a stream only where that makes it smaller.
Compact pair table (sym_bytes 0xC1, version 3): the pair code's lengths over the grid of the symbols
that occur, DEFLATE-style (pair_table.py); a C decoder unpacks it into 2 bytes a pair of the caller's
workspace, so the encoder writes it only within `work_limit`.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeprune.coding import huffman, pair_table
from edgeprune.errors import UserError

MAGIC = b"EPHC"
VERSION = 3  # written; 1 (no paired streams) and 2 (no compact pair tables) are still read
READABLE = (1, 2, 3)
PAIRED = 0x80  # stream flag in sym_bytes (version 2): the code's symbols are pairs of 1-byte symbols
COMPACT = 0x40  # with PAIRED (version 3): the pair code's table is compact (pair_table.py)
MAX_DIMS = 8
DTYPES = {1: np.dtype(np.int8), 2: np.dtype(np.uint8), 3: np.dtype(np.int16), 4: np.dtype(np.uint16)}
DTYPE_CODES = {dtype: code for code, dtype in DTYPES.items()}
QUANT_NONE, QUANT_AFFINE, QUANT_CODEBOOK = 0, 1, 2
DENSE, SPARSE = 0, 1
CODINGS = {"dense": DENSE, "sparse": SPARSE}
MAX_GAP = 256
MAX_STREAM_BYTES = 1 << 29  # bit offsets are u32
MAX_ELEMENTS = 1 << 30


@dataclass(frozen=True, eq=False)
class Affine:
    """real = (q - zero_point) * scale, per tensor (axis None) or per channel along axis."""

    scale: np.ndarray  # float32, (1,) or (dims[axis],)
    zero_point: np.ndarray  # int32, same shape
    axis: int | None = None


@dataclass(frozen=True, eq=False)
class Codebook:
    """real = values[q]: weight sharing, q a cluster index."""

    values: np.ndarray  # float32


@dataclass(frozen=True, eq=False)
class CodedTensor:
    """One tensor of a container: its integer values and how to read them as real numbers.

    coding is "dense", "sparse" or, when encoding, "auto" (whichever record is smaller);
    decoded tensors say which one was used.
    """

    name: str
    values: np.ndarray  # int8, uint8, int16 or uint16, in the tensor's shape
    quant: Affine | Codebook | None = None
    coding: str = "auto"


@dataclass(frozen=True)
class TensorStats:
    """What coding bought for one tensor: Huffman bits next to the entropy bound they approach."""

    name: str
    coding: str
    n_elements: int
    n_symbols: int  # coded entries: elements when dense, non-fill entries plus fillers when sparse
    huffman_bits: int  # all streams' codes, without byte padding; a paired stream's table beyond the single code's too
    entropy_bits: float  # Shannon bound of the same streams, symbol by symbol
    record_bytes: int  # record on disk: header, code tables, sync points, bits, CRC
    paired_streams: int = 0  # streams coded two symbols at a time (version 2)
    work_bytes: int = 0  # workspace a C decoder needs for the compact pair tables (ep_decode_work)


def from_int(name: str, q: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int = 0,
             axis: int | None = None) -> CodedTensor:
    """A quantized tensor (e.g. int8 weights of a QDQ model, per channel along `axis`)."""
    q = np.asarray(q)
    if q.dtype not in DTYPE_CODES:
        raise UserError(f"{name}: quantized weights must be int8, uint8, int16 or uint16, not {q.dtype}")
    if axis is not None and not -q.ndim <= axis < q.ndim:
        raise UserError(f"{name}: no axis {axis} in shape {q.shape}")
    n = 1 if axis is None else q.shape[axis]
    scale = np.broadcast_to(np.asarray(scale, np.float32), (n,)).copy()
    zero_point = np.broadcast_to(np.asarray(zero_point, np.int32), (n,)).copy()
    return CodedTensor(name, q, Affine(scale, zero_point, None if axis is None else axis % q.ndim))


def from_float(name: str, weights: np.ndarray) -> CodedTensor:
    """A float tensor of few distinct values (after weight sharing) as a codebook and indices, exactly."""
    weights = np.asarray(weights, np.float32)
    # Distinct bit patterns, not values: -0.0 stays -0.0, a NaN stays that NaN.
    values, indices = np.unique(weights.view(np.uint32), return_inverse=True)
    if values.size > 1 << 16:
        raise UserError(f"{name}: {values.size} distinct values, at most 65536 can be coded: "
                        "quantize or share weights first")
    dtype = np.uint8 if values.size <= 1 << 8 else np.uint16
    return CodedTensor(name, indices.reshape(weights.shape).astype(dtype), Codebook(values.view(np.float32)))


def to_float(tensor: CodedTensor) -> np.ndarray:
    """The real values a tensor stands for (float32)."""
    q, quant = tensor.values, tensor.quant
    if isinstance(quant, Codebook):
        return quant.values[q]
    if isinstance(quant, Affine):
        shape = [-1 if i == quant.axis else 1 for i in range(q.ndim)]
        scale, zero_point = quant.scale.reshape(shape), quant.zero_point.reshape(shape)
        return ((q.astype(np.int64) - zero_point) * scale.astype(np.float64)).astype(np.float32)
    return q.astype(np.float32)


def encode_tensors(tensors: Sequence[CodedTensor], max_len: int = huffman.MAX_LEN, max_gap: int = MAX_GAP,
                   work_limit: int | None = 0) -> bytes:
    """The container of `tensors`; max_gap is the number of gap symbols of sparse tensors.

    work_limit: the workspace (bytes per tensor) a C decoder may need for compact pair tables, 2 bytes
    a pair; 0 keeps every table readable in place (ep_decode), None sets no limit (ep_decode_work).
    """
    return encode_with_stats(tensors, max_len, max_gap, work_limit)[0]


def encode_with_stats(tensors: Sequence[CodedTensor], max_len: int = huffman.MAX_LEN, max_gap: int = MAX_GAP,
                      work_limit: int | None = 0) -> tuple[bytes, list[TensorStats]]:
    """The container and, per tensor, what its coding cost against the entropy bound."""
    if not 2 <= max_gap <= 1 << 16:
        raise UserError(f"max_gap {max_gap}: must be between 2 and 65536")
    if not 1 <= max_len <= huffman.MAX_LEN:
        raise UserError(f"max_len {max_len}: must be between 1 and {huffman.MAX_LEN}")
    if work_limit is not None and work_limit < 0:
        raise UserError(f"work_limit {work_limit}: must be >= 0 (or None)")
    records = [_record(t, max_len, max_gap, work_limit) for t in tensors]
    head = MAGIC + struct.pack("<HI", VERSION, len(records))
    return head + b"".join(r for r, _ in records), [s for _, s in records]


def decode_container(data: bytes, source: str = "container", max_elements: int = MAX_ELEMENTS) -> list[CodedTensor]:
    """Every tensor of a container; UserError naming `source` and the tensor if anything is wrong.

    A tensor of more than max_elements is refused: a few bytes can describe a constant or sparse
    tensor of billions of elements, and a corrupt header should not exhaust memory.
    """
    r = _Reader(bytes(data), source)
    if r.take(4, "magic") != MAGIC:
        raise UserError(f"{source}: not an EPHC container (bad magic)")
    version, n_tensors = r.unpack("<HI", "header")
    if version not in READABLE:
        raise UserError(f"{source}: unsupported EPHC version {version} (this edgeprune reads {READABLE})")
    tensors = []
    for index in range(n_tensors):
        where = f"{source}: tensor {index}"
        (body_len,) = r.unpack("<I", f"length of tensor {index}")
        body = r.take(body_len, f"tensor {index}")
        (crc,) = r.unpack("<I", f"CRC of tensor {index}")
        if zlib.crc32(body) != crc:
            raise UserError(f"{where}{_name_hint(body)}: CRC mismatch, the data is corrupt")
        tensors.append(_parse_body(_Reader(body, where, malformed=True), max_elements, version))
    if r.pos != len(r.data):
        raise UserError(f"{source}: {len(r.data) - r.pos} unexpected bytes after the last tensor")
    return tensors


class _Reader:
    """Bounds-checked reads: running out is a truncated file, or a malformed record inside a good CRC."""

    def __init__(self, data: bytes, where: str, malformed: bool = False):
        self.data, self.where, self.malformed, self.pos = data, where, malformed, 0

    def error(self, message: str) -> UserError:
        return UserError(f"{self.where}: {message}")

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.error(f"record ends inside its {what}" if self.malformed else f"truncated in the {what}")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        item = np.dtype(dtype)
        return np.frombuffer(self.take(count * item.itemsize, what), item).astype(item.newbyteorder("="))


def _name_hint(body: bytes) -> str:
    """The tensor's name for an error message, if the corrupt body still starts with one."""
    if len(body) < 2:
        return ""
    name = body[2:2 + int.from_bytes(body[:2], "little")]
    return f" ({name.decode('utf-8', 'replace')!r})"


def _record(t: CodedTensor, max_len: int, max_gap: int, work_limit: int | None) -> tuple[bytes, TensorStats]:
    values = np.asarray(t.values)
    if values.dtype not in DTYPE_CODES:
        raise UserError(f"{t.name}: values must be int8, uint8, int16 or uint16, not {values.dtype}")
    if values.ndim > MAX_DIMS or values.size >= 1 << 32 or any(d >= 1 << 32 for d in values.shape):
        raise UserError(f"{t.name}: shape {values.shape} does not fit the container (<= 8 dims, < 2**32 elements)")
    name = t.name.encode()
    if len(name) >= 1 << 16:
        raise UserError(f"{t.name[:40]}...: tensor name longer than 65535 bytes")
    head = (struct.pack("<H", len(name)) + name + struct.pack("<BB", DTYPE_CODES[values.dtype], values.ndim)
            + np.asarray(values.shape, "<u4").tobytes() + _quant_bytes(t.name, values, t.quant))
    symbols = values.ravel().view(f"u{values.itemsize}")
    if t.coding not in ("auto", *CODINGS):
        raise UserError(f"{t.name}: coding {t.coding!r} is not dense, sparse or auto")
    options = [_coded(t.name, c, symbols, values.itemsize, max_len, max_gap, work_limit) for c in CODINGS
               if t.coding in ("auto", c)]
    coding, payload, n_symbols, bits, entropy, paired, work = min(options, key=lambda o: len(o[1]))
    body = head + struct.pack("<B", CODINGS[coding]) + payload
    record = struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body))
    return record, TensorStats(t.name, coding, values.size, n_symbols, bits, entropy, len(record), paired, work)


def _quant_bytes(name: str, values: np.ndarray, quant: Affine | Codebook | None) -> bytes:
    if quant is None:
        return struct.pack("<B", QUANT_NONE)
    if isinstance(quant, Codebook):
        if values.dtype.kind != "u" or not 1 <= quant.values.size <= 1 << 16:
            raise UserError(f"{name}: a codebook needs unsigned indices and 1 to 65536 values")
        if values.size and values.max() >= quant.values.size:
            raise UserError(f"{name}: index {values.max()} outside a codebook of {quant.values.size} values")
        return struct.pack("<BI", QUANT_CODEBOOK, quant.values.size) + np.asarray(quant.values, "<f4").tobytes()
    if quant.axis is not None and not 0 <= quant.axis < values.ndim:
        raise UserError(f"{name}: quantization axis {quant.axis} is not an axis of shape {values.shape}")
    n = 1 if quant.axis is None else values.shape[quant.axis]
    if np.shape(quant.scale) != (n,) or np.shape(quant.zero_point) != (n,):
        raise UserError(f"{name}: {n} scales and zero-points expected for axis {quant.axis}")
    return (struct.pack("<BbI", QUANT_AFFINE, -1 if quant.axis is None else quant.axis, n)
            + np.asarray(quant.scale, "<f4").tobytes() + np.asarray(quant.zero_point, "<i4").tobytes())


def _coded(name: str, coding: str, symbols: np.ndarray, sym_bytes: int, max_len: int, max_gap: int,
           work_limit: int | None) -> tuple[str, bytes, int, int, float, int, int]:
    """(coding, payload, value symbols, Huffman bits, entropy bits, paired streams, work bytes) of one way
    to code a tensor."""
    if coding == "dense":
        payload, bits, entropy, paired, work = _stream_bytes(name, symbols, sym_bytes, max_len, work_limit)
        return coding, payload, symbols.size, bits, entropy, int(paired), work
    fill, gaps, entries = sparse_entries(symbols, max_gap)
    gap_stream, gap_bits, gap_entropy, gaps_paired, gap_work = _stream_bytes(
        name, gaps, 1 if max_gap <= 256 else 2, max_len, work_limit)
    value_stream, value_bits, value_entropy, values_paired, value_work = _stream_bytes(
        name, entries, sym_bytes, max_len, None if work_limit is None else work_limit - gap_work)
    return (coding, struct.pack("<H", fill) + gap_stream + value_stream, entries.size, gap_bits + value_bits,
            gap_entropy + value_entropy, gaps_paired + values_paired, gap_work + value_work)


def sparse_entries(symbols: np.ndarray, max_gap: int = MAX_GAP) -> tuple[int, np.ndarray, np.ndarray]:
    """(fill, gaps, values) of a sparse coding: fill is the most frequent symbol, fillers bridge long runs."""
    fill = int(np.argmax(np.bincount(symbols))) if symbols.size else 0
    listed = np.flatnonzero(symbols != fill)
    skipped = np.diff(listed, prepend=-1) - 1
    fillers = skipped // max_gap  # each filler entry covers max_gap positions
    real = np.cumsum(fillers + 1) - 1
    gaps = np.full(int(real[-1]) + 1 if real.size else 0, max_gap - 1, np.int64)
    entries = np.full(gaps.size, fill, symbols.dtype)
    gaps[real], entries[real] = skipped - fillers * max_gap, symbols[listed]
    return fill, gaps, entries


def _stream_bytes(name: str, symbols: np.ndarray, sym_bytes: int, max_len: int,
                  work_limit: int | None) -> tuple[bytes, int, float, bool, int]:
    """The smallest way to code a stream (single codes on a tie); its Huffman bits, the entropy of its
    symbols one by one, whether it is paired, and the workspace its table needs.

    A Huffman code spends up to a bit per symbol over the entropy when one symbol is likely (p > 0.4
    costs a whole bit), and a few hundredths of a bit on broad histograms; coding pairs halves that
    per symbol, for a larger table. A paired stream's table beyond the single code's is counted in its
    Huffman bits: what the pairs cost, not only their codes.
    """
    options = stream_options(name, symbols, sym_bytes, max_len, work_limit)
    payload, bits, table, paired, work = min(options, key=lambda o: len(o[0]))
    return payload, bits + 8 * max(0, table - options[0][2]), huffman.entropy_bits(symbols), paired, work


def stream_options(name: str, symbols: np.ndarray, sym_bytes: int, max_len: int = huffman.MAX_LEN,
                   work_limit: int | None = None) -> list[tuple[bytes, int, int, bool, int]]:
    """(stream bytes, code bits, table bytes, paired, work bytes) of each way to code a stream, single codes
    first: one by one, and (1-byte symbols) in pairs with a flat table or, within work_limit, a compact one.
    n_symbols always counts the original symbols."""
    options = []
    for paired in (False, True)[:1 + (sym_bytes == 1 and symbols.size >= 2)]:
        coded = pairs_of(symbols) if paired else symbols
        code, stream = huffman.encode(coded, max_len)
        if len(stream.data) >= MAX_STREAM_BYTES:
            raise UserError(f"{name}: {len(stream.data)} coded bytes, a container stream holds less than 2**29")
        bits = huffman.coded_bits(code, coded)
        tail = b"".join([struct.pack("<I", stream.interval), stream.sync.astype("<u4").tobytes(),
                         struct.pack("<I", len(stream.data)), stream.data])
        flat = (code.length_counts().astype("<u4").tobytes()
                + code.symbols.astype(f"<u{2 if paired else sym_bytes}").tobytes())
        tables = [(sym_bytes | (PAIRED if paired else 0), flat, 0)]
        work = 2 * code.symbols.size
        if paired and code.max_len and (work_limit is None or work <= work_limit):
            compact = pair_table.encode_table(code)
            tables.append((sym_bytes | PAIRED | COMPACT, struct.pack("<I", len(compact)) + compact, work))
        options += [(struct.pack("<IBB", symbols.size, flags, code.max_len) + table + tail, bits, len(table), paired,
                     need) for flags, table, need in tables]
    return options


def pairs_of(symbols: np.ndarray) -> np.ndarray:
    """1-byte symbols two by two as first * 256 + second; an odd count pads its last pair with the most
    frequent symbol (the likeliest pair; decoders drop it, n_symbols says where the symbols end)."""
    symbols = np.asarray(symbols, np.int64).ravel()
    if symbols.size % 2:
        symbols = np.append(symbols, np.argmax(np.bincount(symbols)))
    return symbols[0::2] << 8 | symbols[1::2]


def _parse_body(r: _Reader, max_elements: int, version: int) -> CodedTensor:
    (name_len,) = r.unpack("<H", "name length")
    try:
        name = r.take(name_len, "name").decode()
    except UnicodeDecodeError:
        raise r.error("tensor name is not UTF-8") from None
    r.where = f"{r.where} ({name!r})"
    dtype_code, ndim = r.unpack("<BB", "dtype and rank")
    if dtype_code not in DTYPES or ndim > MAX_DIMS:
        raise r.error(f"unknown dtype {dtype_code} or rank {ndim} > {MAX_DIMS}")
    dtype, dims = DTYPES[dtype_code], tuple(int(d) for d in r.array("<u4", ndim, "dims"))
    n_elements = int(np.prod(dims, dtype=object))
    if n_elements >= 1 << 32:
        raise r.error(f"shape {dims} has 2**32 elements or more")
    if n_elements > max_elements:
        raise r.error(f"shape {dims} has more than {max_elements} elements")
    quant = _parse_quant(r, dtype, dims)
    (coding,) = r.unpack("<B", "coding")
    if coding == DENSE:
        values = _parse_stream(r, dtype.itemsize, "values", n_elements, version)
        if values.size != n_elements:
            raise r.error(f"{values.size} values for shape {dims}")
    elif coding == SPARSE:
        (fill,) = r.unpack("<H", "fill value")
        gaps = _parse_stream(r, None, "gaps", n_elements, version)
        entries = _parse_stream(r, dtype.itemsize, "values", n_elements, version)
        positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if (fill >= 1 << 8 * dtype.itemsize or gaps.size != entries.size
                or (positions.size and positions[-1] >= n_elements)):
            raise r.error(f"sparse entries do not fit shape {dims} "
                          f"(fill {fill}, {gaps.size} gaps, {entries.size} values)")
        if isinstance(quant, Codebook) and n_elements and fill >= quant.values.size:
            raise r.error(f"fill index {fill} outside a codebook of {quant.values.size} values")
        values = np.full(n_elements, fill, f"u{dtype.itemsize}")
        values[positions] = entries
    else:
        raise r.error(f"unknown coding {coding}")
    if r.pos != len(r.data):
        raise r.error(f"{len(r.data) - r.pos} unexpected bytes at the end of the record")
    if isinstance(quant, Codebook) and values.size and values.max() >= quant.values.size:
        raise r.error(f"index {values.max()} outside a codebook of {quant.values.size} values")
    return CodedTensor(name, values.view(dtype).reshape(dims), quant, "dense" if coding == DENSE else "sparse")


def _parse_quant(r: _Reader, dtype: np.dtype, dims: tuple[int, ...]) -> Affine | Codebook | None:
    (kind,) = r.unpack("<B", "quantization kind")
    if kind == QUANT_NONE:
        return None
    if kind == QUANT_AFFINE:
        axis, n = r.unpack("<bI", "quantization header")
        if n != (1 if axis == -1 else dims[axis] if 0 <= axis < len(dims) else -1):
            raise r.error(f"{n} scales do not match axis {axis} of shape {dims}")
        scale = r.array("<f4", n, "scales")
        return Affine(scale, r.array("<i4", n, "zero points"), None if axis == -1 else axis)
    if kind == QUANT_CODEBOOK:
        (n,) = r.unpack("<I", "codebook size")
        if dtype.kind != "u" or not 1 <= n <= 1 << 16:
            raise r.error(f"a codebook of {n} values for {dtype} indices")
        return Codebook(r.array("<f4", n, "codebook"))
    raise r.error(f"unknown quantization kind {kind}")


def _parse_stream(r: _Reader, sym_bytes_expected: int | None, what: str, max_symbols: int,
                  version: int) -> np.ndarray:
    """One stream's symbols (u1 or u2); no tensor has more symbols in a stream than elements."""
    n, flags, max_len = r.unpack("<IBB", f"{what} stream header")
    paired, compact, sym_bytes = bool(flags & PAIRED), bool(flags & COMPACT), flags & ~(PAIRED | COMPACT)
    if (sym_bytes not in (1, 2) or sym_bytes_expected not in (None, sym_bytes) or max_len > huffman.MAX_LEN
            or (paired and (version < 2 or sym_bytes != 1)) or (compact and (version < 3 or not paired))):
        raise r.error(f"{what} stream: {sym_bytes}-byte symbols{' in pairs' if paired else ''}"
                      f"{' with a compact table' if compact else ''}, codes up to {max_len} bits (version {version})")
    if n > max_symbols:
        raise r.error(f"{what} stream: {n} symbols for {max_symbols} elements")
    n_coded = -(-n // 2) if paired else n  # the code, its symbol count and the sync points count pairs
    if compact:
        (table_len,) = r.unpack("<I", f"{what} table length")
        if table_len >= MAX_STREAM_BYTES:
            raise r.error(f"{what} stream: a table of {table_len} bytes, at most {MAX_STREAM_BYTES - 1}")
        table = r.take(table_len, f"{what} compact table")
    else:
        counts = r.array("<u4", max_len, f"{what} code lengths")
        symbols = r.array("<u2" if paired else f"<u{sym_bytes}", int(counts.sum()) if max_len else int(n > 0),
                          f"{what} code symbols")
    (interval,) = r.unpack("<I", f"{what} sync interval")
    if interval == 0:
        raise r.error(f"{what} stream: sync interval 0")
    sync = r.array("<u4", -(-n_coded // interval) - 1 if n else 0, f"{what} sync points")
    (n_bytes,) = r.unpack("<I", f"{what} stream length")
    if n_bytes >= MAX_STREAM_BYTES:
        raise r.error(f"{what} stream: {n_bytes} bytes, at most {MAX_STREAM_BYTES - 1}")
    data = r.take(n_bytes, f"{what} bits")
    try:
        code = (pair_table.decode_table(table, max_len) if compact
                else huffman.Code.from_counts(counts, symbols, n_coded))
        decoded = huffman.decode(code, huffman.Stream(n_coded, interval, sync.astype(np.int64), data))
    except ValueError as e:
        raise r.error(f"{what} stream: {e}") from None
    if not paired:
        return decoded
    return np.stack([decoded >> 8, decoded & 0xFF], axis=1).astype(np.uint8).ravel()[:n]  # the pad dropped
