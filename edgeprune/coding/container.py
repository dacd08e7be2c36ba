"""The EPHC container: integer weight tensors, Huffman-coded, with what is needed to dequantize them.

One file holds the coded weights of a model; a device (edgeprune/coding/c/ep_huffman.c) decodes it
tensor by tensor into a scratch buffer, so it is laid out to be read front to back with no seeking
and no allocation. FORMAT.md has the rationale and the validation rules. All integers are
little-endian; f32 is IEEE-754 binary32; u8/u16/u32 unsigned, i8/i32 two's complement.

    container := magic "EPHC" | version u16 (=4; 1 to 3 read) | n_tensors u32 | record * n_tensors  (nothing after)
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
    stream    := n_symbols u32 | sym_bytes u8 (1|2|0x81|0xC1, | 0x20 keep or | 0x10 reuse) | [slot u8 if 0x20|0x10]
                 | [max_len u8 (<= 16) | table, not if 0x10] | interval u32 (>= 1) | sync u32 * n_sync
                 | n_bytes u32 | bits (n_bytes bytes)
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
Shared tables (version 4): a stream with 0x20 keeps its table in slot `slot` (0..7) for the streams after it
in the container; one with 0x10 has no table and is coded with the slot's, whose flags it must have.
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
VERSION = 4  # written; 1 (no paired streams), 2 (no compact pair tables) and 3 (no shared tables) are still read
READABLE = (1, 2, 3, 4)
PAIRED = 0x80  # stream flag in sym_bytes (version 2): the code's symbols are pairs of 1-byte symbols
COMPACT = 0x40  # with PAIRED (version 3): the pair code's table is compact (pair_table.py)
KEEP, REUSE = 0x20, 0x10  # version 4: the stream's table is kept in a slot / is the one a slot holds
SYM_BYTES = 0x0F  # the flags' bits that give the symbol size
TABLE_SLOTS = 8  # tables a decoder keeps at once between records (ep_reader: a pointer each)
TABLE_KINDS = {0: "single", PAIRED: "pairs, flat", PAIRED | COMPACT: "pairs, compact"}
# Streams the encoder considers for shared tables (its greedy search is quadratic): at most this many, those
# whose own single table weighs most against their bits, and only where it weighs at least SHARE_WEIGHT.
SHARE_CANDIDATES, SHARE_WEIGHT = 32, 0.005
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
    shared_streams: int = 0  # streams whose code table other tensors' streams share (version 4)
    streams: tuple[tuple[str, int], ...] = ()  # per stream: its table ("single", "pairs, compact, slot 0 kept"...)
    #                                            and its Huffman bits (code, and the table's as above)


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
                   work_limit: int | None = 0, share_tables: bool = True) -> bytes:
    """The container of `tensors`; max_gap is the number of gap symbols of sparse tensors.

    work_limit: the workspace (bytes per tensor) a C decoder may need for compact pair tables, 2 bytes
    a pair; 0 keeps every table readable in place (ep_decode), None sets no limit (ep_decode_work).
    share_tables: see encode_with_stats.
    """
    return encode_with_stats(tensors, max_len, max_gap, work_limit, share_tables)[0]


def encode_with_stats(tensors: Sequence[CodedTensor], max_len: int = huffman.MAX_LEN, max_gap: int = MAX_GAP,
                      work_limit: int | None = 0, share_tables: bool = True) -> tuple[bytes, list[TensorStats]]:
    """The container and, per tensor, what its coding cost against the entropy bound.

    share_tables: streams of different tensors may be coded with one code whose table comes once (version 4),
    where that makes the container smaller; each tensor still picks dense or sparse coding on its own.
    """
    if not 2 <= max_gap <= 1 << 16:
        raise UserError(f"max_gap {max_gap}: must be between 2 and 65536")
    if not 1 <= max_len <= huffman.MAX_LEN:
        raise UserError(f"max_len {max_len}: must be between 1 and {huffman.MAX_LEN}")
    if work_limit is not None and work_limit < 0:
        raise UserError(f"work_limit {work_limit}: must be >= 0 (or None)")
    plans = [_plan(t, max_len, max_gap, work_limit) for t in tensors]
    items = [_Item(i, symbols, sym_bytes, budget, max_len)
             for i, plan in enumerate(plans) for symbols, sym_bytes, budget in plan.streams]
    groups = (_share(items, max_len) if share_tables
              else [((k,), _best([item], max_len)[2]) for k, item in enumerate(items)])
    fields, bits, extra, tables = [b""] * len(items), [0] * len(items), [0] * len(items), [""] * len(items)
    slots = iter(range(TABLE_SLOTS))
    for members, table in groups:
        slot = next(slots) if len(members) > 1 else None
        for k in members:
            fields[k], bits[k] = _stream_field(plans[items[k].tensor].name, items[k].symbols, table, slot,
                                               defines=k == members[0])
            tables[k] = TABLE_KINDS[table.flags & (PAIRED | COMPACT)] + (
                "" if slot is None else f", slot {slot} {'kept' if k == members[0] else 'reused'}")
        # What the table costs beyond the single codes' own tables (not counted, as in Deep Compression),
        # with the slot byte; never less than nothing: shared tables do not flatter the code's bits.
        extra[members[0]] = max(0, 8 * (len(table.field) + (slot is not None)) - sum(items[k].single_table_bits
                                                                                     for k in members))
    records, stats = [], []
    for i, plan in enumerate(plans):
        ks = [k for k, item in enumerate(items) if item.tensor == i]
        body = plan.head + b"".join(fields[k] for k in ks)
        record = struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body))
        records.append(record)
        used = {k: next(t for m, t in groups if k in m) for k in ks}
        stats.append(TensorStats(
            plan.name, plan.coding, plan.n_elements, items[ks[-1]].symbols.size if ks else 0,
            sum(bits[k] + extra[k] for k in ks), sum(huffman.entropy_bits(items[k].symbols) for k in ks), len(record),
            sum(bool(used[k].flags & PAIRED) for k in ks), sum(used[k].work for k in ks),
            sum("slot" in tables[k] for k in ks), tuple((tables[k], bits[k] + extra[k]) for k in ks)))
    head = MAGIC + struct.pack("<HI", VERSION, len(records))
    return head + b"".join(records), stats


@dataclass(frozen=True, eq=False)
class _Table:
    """A code for one or more streams and its table as written (after max_len): count + symbols, or compact."""

    flags: int  # sym_bytes | PAIRED | COMPACT
    code: huffman.Code
    field: bytes

    @property
    def work(self) -> int:
        """Workspace a C decoder needs to unpack it: 2 bytes a pair for compact tables."""
        return 2 * self.code.symbols.size if self.flags & COMPACT else 0


def _tables(counts: np.ndarray, pair_counts: np.ndarray | None, sym_bytes: int, max_len: int,
            budget: int | None) -> list[_Table]:
    """Every table for these symbol (and pair) counts: a single code, pairs with a flat table and, within the
    workspace budget, pairs with a compact one.

    A Huffman code spends up to a bit per symbol over the entropy when one symbol is likely (p > 0.4 costs a
    whole bit), and a few hundredths of a bit on broad histograms; coding pairs halves that per symbol, for a
    larger table, which the report counts: what the pairs cost, not only their codes.
    """
    single = huffman.build_code(counts, max_len)
    out = [_Table(sym_bytes, single, single.length_counts().astype("<u4").tobytes()
                  + single.symbols.astype(f"<u{sym_bytes}").tobytes())]
    if pair_counts is not None:
        code = huffman.build_code(pair_counts, max_len)
        out.append(_Table(sym_bytes | PAIRED, code, code.length_counts().astype("<u4").tobytes()
                          + code.symbols.astype("<u2").tobytes()))
        if code.max_len and (budget is None or 2 * code.symbols.size <= budget):
            compact = pair_table.encode_table(code)
            out.append(_Table(sym_bytes | PAIRED | COMPACT, code, struct.pack("<I", len(compact)) + compact))
    return out


class _Item:
    """A stream to code, with the histograms a shared code is built from."""

    def __init__(self, tensor: int, symbols: np.ndarray, sym_bytes: int, budget: int | None, max_len: int):
        self.tensor, self.symbols = tensor, np.asarray(symbols, np.int64)
        self.sym_bytes, self.budget = sym_bytes, budget
        self.counts = np.bincount(self.symbols, minlength=1 << 8 * sym_bytes)
        self.pair_counts = (np.bincount(pairs_of(self.symbols), minlength=1 << 16)
                            if sym_bytes == 1 and self.symbols.size >= 2 else None)
        single = _tables(self.counts, None, sym_bytes, max_len, 0)[0]
        self.single_table_bits, self.shareable = 8 * len(single.field), single.code.max_len > 0


def _sync_bits(n_codes: int) -> int:
    return 32 * max(-(-n_codes // huffman.SYNC_INTERVAL) - 1, 0)


def _best(items: list[_Item], max_len: int) -> tuple[int, int, _Table]:
    """(bits of code, table and sync points; Huffman bits as reported; table) of the cheapest code for these
    streams together."""
    paired = all(i.pair_counts is not None for i in items)
    budgets = [i.budget for i in items if i.budget is not None]
    options = []
    for table in _tables(sum(i.counts for i in items), sum(i.pair_counts for i in items) if paired else None,
                         items[0].sym_bytes, max_len, min(budgets) if budgets else None):
        pairs = bool(table.flags & PAIRED)
        code_bits = sum(int(((i.pair_counts if pairs else i.counts)[table.code.symbols] * table.code.lengths).sum())
                        + _sync_bits(-(-i.symbols.size // 2) if pairs else i.symbols.size) for i in items)
        table_bits = 8 * len(table.field) + 8 * (len(items) > 1)
        reported = code_bits + max(0, table_bits - sum(i.single_table_bits for i in items))
        options.append((code_bits + table_bits, reported, table))
    return min(options, key=lambda o: o[0])


def _share(items: list[_Item], max_len: int) -> list[tuple[tuple[int, ...], _Table]]:
    """Groups of streams (item indices) and the table each group is coded with: greedy agglomerative, merging
    the two groups whose one table saves the most bits over two, until no merge saves any or every slot is taken.
    A merge must not add to the Huffman bits as reported (code, and table beyond the single codes' own): a
    shared single code is longer than the streams' own, and the tables it saves are not credited, so sharing
    never makes the code look worse for a smaller file. Candidates are the streams whose own tables weigh
    most against their code (SHARE_CANDIDATES)."""
    groups = {(k,): _best([item], max_len) for k, item in enumerate(items)}
    weight = {k: items[k].single_table_bits / max(groups[(k,)][0], 1) for k in range(len(items)) if items[k].shareable}
    weight = {k: w for k, w in weight.items() if w >= SHARE_WEIGHT}
    candidates = set(sorted(weight, key=weight.get, reverse=True)[:SHARE_CANDIDATES])
    merged: dict[tuple[int, ...], tuple[int, int, _Table]] = {}
    while True:
        best = None
        open_slot = sum(len(g) > 1 for g in groups) < TABLE_SLOTS
        keys = [g for g in groups if set(g) <= candidates]
        for a_i, a in enumerate(keys):
            for b in keys[a_i + 1:]:
                if items[a[0]].sym_bytes != items[b[0]].sym_bytes or (len(a) == len(b) == 1 and not open_slot):
                    continue
                key = tuple(sorted(a + b))
                if key not in merged:
                    merged[key] = _best([items[k] for k in key], max_len)
                save = groups[a][0] + groups[b][0] - merged[key][0]
                if (save > 0 and merged[key][1] <= groups[a][1] + groups[b][1] and merged[key][2].code.max_len
                        and (best is None or save > best[0])):
                    best = (save, a, b, key)
        if best is None:
            break
        _, a, b, key = best
        del groups[a], groups[b]
        groups[key] = merged[key]
    return sorted(((g, table) for g, (_, _, table) in groups.items()), key=lambda g: g[0][0])


def _stream_field(name: str, symbols: np.ndarray, table: _Table, slot: int | None = None,
                  defines: bool = True) -> tuple[bytes, int]:
    """A stream coded with `table`'s code, and its code bits. With a slot (version 4), the table is written
    and kept there (defines), or taken from there and not written."""
    coded = pairs_of(symbols) if table.flags & PAIRED else np.asarray(symbols)
    code, stream = huffman.encode(coded, code=table.code)
    if len(stream.data) >= MAX_STREAM_BYTES:
        raise UserError(f"{name}: {len(stream.data)} coded bytes, a container stream holds less than 2**29")
    flags = table.flags | (0 if slot is None else KEEP if defines else REUSE)
    head = struct.pack("<IB", symbols.size, flags) + (b"" if slot is None else struct.pack("<B", slot))
    if slot is None or defines:
        head += struct.pack("<B", code.max_len) + table.field
    return head + b"".join([struct.pack("<I", stream.interval), stream.sync.astype("<u4").tobytes(),
                            struct.pack("<I", len(stream.data)), stream.data]), huffman.coded_bits(code, coded)


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
    tensors, slots = [], {}
    for index in range(n_tensors):
        where = f"{source}: tensor {index}"
        (body_len,) = r.unpack("<I", f"length of tensor {index}")
        body = r.take(body_len, f"tensor {index}")
        (crc,) = r.unpack("<I", f"CRC of tensor {index}")
        if zlib.crc32(body) != crc:
            raise UserError(f"{where}{_name_hint(body)}: CRC mismatch, the data is corrupt")
        tensors.append(_parse_body(_Reader(body, where, malformed=True), max_elements, version, slots))
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


@dataclass(frozen=True)
class _Plan:
    """A tensor's record before its streams are coded: the body up to them, and the streams."""

    name: str
    coding: str
    n_elements: int
    head: bytes  # name, dtype, dims, quant, coding (and a sparse tensor's fill)
    streams: list[tuple[np.ndarray, int, int | None]]  # symbols, sym_bytes, workspace budget


def _plan(t: CodedTensor, max_len: int, max_gap: int, work_limit: int | None) -> _Plan:
    """Checks a tensor and picks dense or sparse coding, whichever is smaller with tables of its own."""
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
    plans = []
    for coding in (c for c in CODINGS if t.coding in ("auto", c)):
        if coding == "dense":
            fill, streams = b"", [(symbols, values.itemsize, work_limit)]
        else:  # the two streams share the workspace
            fill, gaps, entries = sparse_entries(symbols, max_gap)
            budget = None if work_limit is None else work_limit // 2
            fill, streams = struct.pack("<H", fill), [(gaps, 1 if max_gap <= 256 else 2, budget),
                                                      (entries, values.itemsize, budget)]
        size = sum(min(len(o[0]) for o in stream_options(t.name, *stream, max_len)) for stream in streams)
        plans.append((size, _Plan(t.name, coding, values.size, head + struct.pack("<B", CODINGS[coding]) + fill,
                                  streams)))
    return min(plans, key=lambda p: p[0])[1]


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


def stream_options(name: str, symbols: np.ndarray, sym_bytes: int, work_limit: int | None = None,
                   max_len: int = huffman.MAX_LEN) -> list[tuple[bytes, int, int, bool, int]]:
    """(stream bytes, code bits, table bytes, paired, work bytes) of each way to code a stream with a table of
    its own, single codes first: one by one, and (1-byte symbols) in pairs with a flat table or, within
    work_limit, a compact one. n_symbols always counts the original symbols."""
    item = _Item(0, symbols, sym_bytes, work_limit, max_len)
    options = []
    for table in _tables(item.counts, item.pair_counts, sym_bytes, max_len, work_limit):
        data, bits = _stream_field(name, item.symbols, table)
        options.append((data, bits, len(table.field), bool(table.flags & PAIRED), table.work))
    return options


def pairs_of(symbols: np.ndarray) -> np.ndarray:
    """1-byte symbols two by two as first * 256 + second; an odd count pads its last pair with the most
    frequent symbol (the likeliest pair; decoders drop it, n_symbols says where the symbols end)."""
    symbols = np.asarray(symbols, np.int64).ravel()
    if symbols.size % 2:
        symbols = np.append(symbols, np.argmax(np.bincount(symbols)))
    return symbols[0::2] << 8 | symbols[1::2]


def _parse_body(r: _Reader, max_elements: int, version: int, slots: dict[int, tuple[int, huffman.Code]]) -> CodedTensor:
    """One record's tensor; `slots` holds the tables earlier records kept (version 4), and gets this one's."""
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
        values = _parse_stream(r, dtype.itemsize, "values", n_elements, version, slots)
        if values.size != n_elements:
            raise r.error(f"{values.size} values for shape {dims}")
    elif coding == SPARSE:
        (fill,) = r.unpack("<H", "fill value")
        gaps = _parse_stream(r, None, "gaps", n_elements, version, slots)
        entries = _parse_stream(r, dtype.itemsize, "values", n_elements, version, slots)
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


def _parse_stream(r: _Reader, sym_bytes_expected: int | None, what: str, max_symbols: int, version: int,
                  slots: dict[int, tuple[int, huffman.Code]]) -> np.ndarray:
    """One stream's symbols (u1 or u2); no tensor has more symbols in a stream than elements. A table it keeps
    goes into `slots` (slot -> (flags, code)), a table it reuses comes from there."""
    n, flags = r.unpack("<IB", f"{what} stream header")
    paired, compact, keep, reuse = (bool(flags & f) for f in (PAIRED, COMPACT, KEEP, REUSE))
    sym_bytes, kind = flags & SYM_BYTES, flags & ~(KEEP | REUSE)
    (slot,) = r.unpack("<B", f"{what} table slot") if keep or reuse else (None,)
    if reuse and (version < 4 or keep or slot not in slots or slots[slot][0] != kind):
        raise r.error(f"{what} stream: reuses table slot {slot}, which holds no table of its kind"
                      f"{'' if slot in slots else ' (none)'} (version {version})")
    max_len = slots[slot][1].max_len if reuse else r.unpack("<B", f"{what} stream header")[0]
    if (sym_bytes not in (1, 2) or sym_bytes_expected not in (None, sym_bytes) or max_len > huffman.MAX_LEN
            or flags & ~(SYM_BYTES | PAIRED | COMPACT | KEEP | REUSE)
            or (paired and (version < 2 or sym_bytes != 1)) or (compact and (version < 3 or not paired))
            or (keep and (version < 4 or slot >= TABLE_SLOTS or max_len == 0))):
        raise r.error(f"{what} stream: {sym_bytes}-byte symbols{' in pairs' if paired else ''}"
                      f"{' with a compact table' if compact else ''}{f' kept in slot {slot}' if keep else ''}, "
                      f"codes up to {max_len} bits (version {version})")
    if n > max_symbols:
        raise r.error(f"{what} stream: {n} symbols for {max_symbols} elements")
    n_coded = -(-n // 2) if paired else n  # the code, its symbol count and the sync points count pairs
    try:
        code = (slots[slot][1] if reuse
                else _parse_table(r, what, compact, max_len, "<u2" if paired else f"<u{sym_bytes}", n_coded))
    except ValueError as e:
        raise r.error(f"{what} stream: {e}") from None
    if keep:
        slots[slot] = (kind, code)
    (interval,) = r.unpack("<I", f"{what} sync interval")
    if interval == 0:
        raise r.error(f"{what} stream: sync interval 0")
    sync = r.array("<u4", -(-n_coded // interval) - 1 if n else 0, f"{what} sync points")
    (n_bytes,) = r.unpack("<I", f"{what} stream length")
    if n_bytes >= MAX_STREAM_BYTES:
        raise r.error(f"{what} stream: {n_bytes} bytes, at most {MAX_STREAM_BYTES - 1}")
    data = r.take(n_bytes, f"{what} bits")
    try:
        decoded = huffman.decode(code, huffman.Stream(n_coded, interval, sync.astype(np.int64), data))
    except ValueError as e:
        raise r.error(f"{what} stream: {e}") from None
    if not paired:
        return decoded
    return np.stack([decoded >> 8, decoded & 0xFF], axis=1).astype(np.uint8).ravel()[:n]  # the pad dropped


def _parse_table(r: _Reader, what: str, compact: bool, max_len: int, symbol_type: str, n_coded: int) -> huffman.Code:
    """A stream's own code table, checked (ValueError if it breaks a rule)."""
    if compact:
        (table_len,) = r.unpack("<I", f"{what} table length")
        if table_len >= MAX_STREAM_BYTES:
            raise r.error(f"{what} stream: a table of {table_len} bytes, at most {MAX_STREAM_BYTES - 1}")
        return pair_table.decode_table(r.take(table_len, f"{what} compact table"), max_len)
    counts = r.array("<u4", max_len, f"{what} code lengths")
    symbols = r.array(symbol_type, int(counts.sum()) if max_len else int(n_coded > 0), f"{what} code symbols")
    return huffman.Code.from_counts(counts, symbols, n_coded)
