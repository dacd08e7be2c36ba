"""Canonical, length-limited Huffman codes over small non-negative integer symbols.

The last stage of Deep Compression (Han et al., ICLR 2016): int8 weights, weight-sharing cluster
indices and sparse index gaps all have skewed histograms, and a Huffman code takes them to within
a fraction of a bit per symbol of their entropy.

Choices, and why:
- Lengths come from package-merge, which is optimal under a length limit. The limit (16 bits)
  bounds the decoder: a table of 2**16 entries here, a loop of at most 16 steps in the C decoder.
- Codes are canonical, so a code is fully described by how many symbols have each length and the
  symbols in order; that is what the container stores, and the decoders rebuild everything else.
- A stream whose symbols are all equal gets a code of length 0 and no bits at all.
- Huffman decoding is sequential: a symbol's position depends on every length before it. The
  stream therefore records the bit offset of every 1024th symbol ("sync points"), and the numpy
  decoder walks all runs between sync points side by side: 1024 vector steps for any n. That
  costs 32 bits per 1024 symbols (0.03 bit a symbol) and decodes 10-40 M symbols/s for n >= 1e5
  (tools/bench_coding.py); longer runs make fewer lanes and more steps, and measure slower.

Functions raise ValueError on inconsistent input; the container turns that into a UserError that
names the tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_LEN = 16
SYNC_INTERVAL = 1024


@dataclass(frozen=True)
class Code:
    """A canonical code: symbols sorted by (length, value) and their lengths."""

    symbols: np.ndarray  # any integer dtype; decoded streams have it
    lengths: np.ndarray  # int64, non-decreasing; a single symbol has length 0

    @property
    def max_len(self) -> int:
        return int(self.lengths[-1]) if self.lengths.size else 0

    def length_counts(self) -> np.ndarray:
        """How many symbols have each length 1..max_len: with the symbols, the whole code."""
        return np.bincount(self.lengths, minlength=self.max_len + 1)[1:]

    def codes(self) -> np.ndarray:
        """Canonical code words: a code's value left-aligned to max_len bits is the Kraft sum so far."""
        if self.max_len == 0:
            return np.zeros(self.symbols.size, np.int64)
        span = np.left_shift(1, self.max_len - self.lengths)
        return (np.cumsum(span) - span) >> (self.max_len - self.lengths)

    @classmethod
    def from_counts(cls, length_counts: np.ndarray, symbols: np.ndarray, n_symbols: int) -> Code:
        """The code a container describes, checked: it must be complete (Kraft sum exactly 1)."""
        length_counts = np.asarray(length_counts, np.int64)
        symbols = np.asarray(symbols)
        if length_counts.size == 0:
            if symbols.size != (n_symbols > 0):
                raise ValueError("a code without lengths must have one symbol (none for an empty stream)")
            return cls(symbols, np.zeros(symbols.size, np.int64))
        if length_counts.size > MAX_LEN or length_counts[-1] == 0:
            raise ValueError(f"code length limit {length_counts.size} is not the longest length used")
        max_len = length_counts.size
        if int(np.sum(length_counts << (max_len - np.arange(1, max_len + 1)))) != 1 << max_len:
            raise ValueError("code lengths are not a complete prefix code (Kraft sum != 1)")
        if symbols.size != int(length_counts.sum()):
            raise ValueError(f"code lists {symbols.size} symbols, its lengths count {int(length_counts.sum())}")
        return cls(symbols, np.repeat(np.arange(1, max_len + 1), length_counts))


@dataclass(frozen=True)
class Stream:
    """Coded symbols: MSB-first bits, and the bit offset of symbols interval, 2*interval, ..."""

    n_symbols: int
    interval: int
    sync: np.ndarray  # int64
    data: bytes


def code_lengths(counts: np.ndarray, max_len: int = MAX_LEN) -> np.ndarray:
    """Optimal lengths of at most max_len bits for symbols seen `counts` times (0 for unseen ones).

    Package-merge: list d holds the leaves and the pairwise packages of list d+1, sorted. The
    2n-2 cheapest items of list 1 are expanded down the lists; a symbol's length is the number of
    lists in which it is taken. Leaves stay sorted in every list, so "taken" is always a prefix.
    """
    counts = np.asarray(counts, np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(counts.size, np.int64)
    if used.size < 2:
        return lengths
    if used.size > 1 << max_len:
        raise ValueError(f"{used.size} symbols do not fit codes of at most {max_len} bits")
    order = used[np.argsort(counts[used], kind="stable")]
    leaves = counts[order]
    items, leaf_flags = leaves, []
    for _ in range(max_len - 1):
        half = items.size // 2
        merged = np.concatenate([leaves, items[0:2 * half:2] + items[1:2 * half:2]])
        rank = np.argsort(merged, kind="stable")  # leaves before packages of equal weight
        leaf_flags.append(rank < leaves.size)
        items = merged[rank]
    taken = 2 * used.size - 2
    for flags in reversed(leaf_flags):  # from list 1 down to list max_len - 1
        n_leaves = int(np.count_nonzero(flags[:taken]))
        lengths[order[:n_leaves]] += 1
        taken = 2 * (taken - n_leaves)
    lengths[order[:taken]] += 1  # list max_len holds only leaves
    return lengths


def build_code(counts: np.ndarray, max_len: int = MAX_LEN) -> Code:
    """The canonical code for a histogram (index = symbol)."""
    counts = np.asarray(counts, np.int64)
    lengths = code_lengths(counts, max_len)
    used = np.flatnonzero(counts)
    order = np.lexsort((used, lengths[used]))
    return Code(used[order], lengths[used][order])


def encode(symbols: np.ndarray, max_len: int = MAX_LEN, interval: int = SYNC_INTERVAL,
           code: Code | None = None) -> tuple[Code, Stream]:
    """The canonical code of `symbols` (or the given one, e.g. shared with other streams) and the symbols
    coded with it."""
    if not 1 <= max_len <= MAX_LEN or interval < 1:
        raise ValueError(f"codes of 1 to {MAX_LEN} bits and a sync interval >= 1, not {max_len} and {interval}")
    symbols = np.asarray(symbols).ravel()
    if symbols.size and (not np.issubdtype(symbols.dtype, np.integer) or symbols.min() < 0):
        raise ValueError("Huffman symbols must be non-negative integers")
    if code is None:
        code = build_code(np.bincount(symbols), max_len)
    elif not np.isin(np.unique(symbols), code.symbols).all():
        raise ValueError("the code has no word for some of the symbols")
    if code.max_len == 0:  # one symbol, no bits to synchronize
        interval = max(symbols.size, 1)
    lut_len = np.zeros(int(code.symbols.max(initial=0)) + 1, np.int64)
    lut_code = np.zeros_like(lut_len)
    lut_len[code.symbols], lut_code[code.symbols] = code.lengths, code.codes()
    data, starts = pack_bits(lut_code[symbols], lut_len[symbols])
    return code, Stream(symbols.size, interval, starts[interval::interval], data)


def pack_bits(words: np.ndarray, lengths: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Fields of 0 to 16 bits, MSB first, zero-padded to a byte; and the bit offset of each field."""
    words, lengths = np.asarray(words, np.int64), np.asarray(lengths, np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    n_bits = int(ends[-1]) if ends.size else 0
    # A field of <= 16 bits starting at bit (start % 8) of a byte lies within 3 bytes; its bits do
    # not overlap any other field's, so the bytes are sums of the fields' shifted pieces.
    piece = words << (24 - (starts & 7) - lengths)
    first, n_bytes = starts >> 3, (n_bits + 7) // 8
    data = sum(np.bincount(first + k, weights=(piece >> (16 - 8 * k)) & 0xFF, minlength=n_bytes + 3)
               for k in range(3))
    return data[:n_bytes].astype(np.uint8).tobytes(), starts


def decode(code: Code, stream: Stream) -> np.ndarray:
    """The symbols of `stream`; ValueError if it does not decode to exactly its sync points and size."""
    n, interval, max_len = stream.n_symbols, stream.interval, code.max_len
    n_sync = -(-n // interval) - 1 if n else 0
    if interval < 1 or stream.sync.size != n_sync:
        raise ValueError(f"{stream.sync.size} sync points for {n} symbols every {interval}")
    if max_len == 0:
        if stream.data or np.any(stream.sync):
            raise ValueError("a one-symbol stream has no bits")
        return np.full(n, code.symbols[0] if n else 0, code.symbols.dtype)
    if not 0 < n <= 8 * len(stream.data):  # every symbol takes at least one bit
        raise ValueError(f"{n} symbols cannot be coded in {len(stream.data)} bytes with codes of 1 to {max_len} bits")
    table_sym = np.repeat(code.symbols, np.left_shift(1, max_len - code.lengths))
    table_len = np.repeat(code.lengths, np.left_shift(1, max_len - code.lengths))
    padded = np.frombuffer(stream.data + bytes(3), np.uint8).astype(np.int64)
    words = padded[:-3] << 24 | padded[1:-2] << 16 | padded[2:-1] << 8 | padded[3:]  # 32 bits from each byte
    pos = np.concatenate([[0], stream.sync]).astype(np.int64)
    steps, last_run = min(interval, n), n - n_sync * interval
    out = np.empty((steps, pos.size), code.symbols.dtype)
    mask, last_byte = (1 << max_len) - 1, words.size - 1
    for i in range(steps):
        window = (words[np.minimum(pos >> 3, last_byte)] >> (32 - max_len - (pos & 7))) & mask
        out[i] = table_sym[window]
        pos += table_len[window]
        if i == last_run - 1:
            end = int(pos[-1])
    if np.any(pos[:-1] != stream.sync):
        raise ValueError("the bits do not decode to the recorded sync points")
    if -(-end // 8) != len(stream.data):
        raise ValueError(f"{n} symbols end at bit {end}, the stream has {len(stream.data)} bytes")
    return out.T.ravel()[:n]


def coded_bits(code: Code, symbols: np.ndarray) -> int:
    """Bits of `symbols` under `code`, without the padding of the last byte."""
    counts = np.bincount(np.asarray(symbols).ravel(), minlength=int(code.symbols.max(initial=0)) + 1)
    return int((counts[code.symbols] * code.lengths).sum())


def entropy_bits(symbols: np.ndarray) -> float:
    """Shannon bound for coding `symbols` one by one: n * H(empirical distribution)."""
    counts = np.bincount(np.asarray(symbols).ravel())
    counts = counts[counts > 0]
    return float((counts * np.log2(counts.sum() / counts)).sum())
