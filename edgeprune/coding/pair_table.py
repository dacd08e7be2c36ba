"""Compact code tables of paired streams (EPHC version 3): pair code lengths over the alphabet grid.

A paired stream codes two 1-byte symbols at a time. Its flat table lists 2 bytes per distinct pair,
and on broad streams (a few hundred distinct pairs: cluster indices, gaps) that costs more than the
pairs save over single codes. This table holds the code length of every pair of the symbols that
occur instead, row by row, stored as DEFLATE (RFC 1951, 3.2.7) stores its code lengths: runs of
zeros and repeats are single tokens, and the tokens are Huffman-coded with a small code whose
lengths come first. Canonical codes are rebuilt from the lengths (by length, then pair value), so
nothing else is needed. FORMAT.md ("Compact pair tables") has the layout and the rules the decoders check.
"""
from __future__ import annotations

import numpy as np

from edgeprune.coding import huffman

ALPHABET_BITS = 256  # a bit per 1-byte symbol, MSB first: does it occur in the stream
TOKENS = 20  # 0..16: one code length; the others are runs
ZEROS_SHORT, ZEROS_LONG, REPEAT = 17, 18, 19
RUNS = {ZEROS_SHORT: (3, 3, 10), ZEROS_LONG: (7, 11, 138), REPEAT: (2, 3, 6)}  # token: extra bits, shortest, longest
TOKEN_LEN_BITS, TOKEN_MAX_LEN = 3, 7  # the token code's lengths, 3 bits each, 0 = unused


def _tokens(lengths: np.ndarray) -> list[tuple[int, int]]:
    """(token, extra value) for a sequence of code lengths; run tokens where they are shorter."""
    out, n = [], lengths.size
    bounds = np.flatnonzero(np.diff(lengths)) + 1
    for start, end in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [n]])):
        value, run = int(lengths[start]), int(end - start)
        if value:
            out.append((value, 0))
            run -= 1
        while run >= 3:
            token = REPEAT if value else ZEROS_LONG if run >= RUNS[ZEROS_LONG][1] else ZEROS_SHORT
            _, shortest, longest = RUNS[token]
            take = min(run, longest)
            out.append((token, take - shortest))
            run -= take
        out += [(value, 0)] * run
    return out


def encode_table(code: huffman.Code) -> bytes:
    """The compact table of a paired code (symbols first * 256 + second, at least two of them)."""
    first, second = code.symbols >> 8, code.symbols & 0xFF
    alphabet = np.union1d(first, second)
    grid = np.zeros(alphabet.size ** 2, np.int64)
    grid[np.searchsorted(alphabet, first) * alphabet.size + np.searchsorted(alphabet, second)] = code.lengths
    tokens = np.array(_tokens(grid), np.int64).reshape(-1, 2)
    token_code = huffman.build_code(np.bincount(tokens[:, 0], minlength=TOKENS), TOKEN_MAX_LEN)
    token_len, token_word = np.zeros(TOKENS, np.int64), np.zeros(TOKENS, np.int64)
    token_len[token_code.symbols], token_word[token_code.symbols] = token_code.lengths, token_code.codes()
    extra_bits = np.zeros(TOKENS, np.int64)
    for token, (bits, _, _) in RUNS.items():
        extra_bits[token] = bits
    occurs = np.zeros(ALPHABET_BITS, np.int64)
    occurs[alphabet] = 1
    words = [occurs, token_len, np.stack([token_word[tokens[:, 0]], tokens[:, 1]], 1).ravel()]
    widths = [np.ones(ALPHABET_BITS, np.int64), np.full(TOKENS, TOKEN_LEN_BITS),
              np.stack([token_len[tokens[:, 0]], extra_bits[tokens[:, 0]]], 1).ravel()]
    return huffman.pack_bits(np.concatenate(words), np.concatenate(widths))[0]


def decode_table(data: bytes, max_len: int) -> huffman.Code:
    """The paired code a compact table describes, checked; ValueError if the table breaks a rule."""
    bits = np.unpackbits(np.frombuffer(data, np.uint8)).astype(np.int64)
    n_bits = bits.size
    padded = np.concatenate([bits, np.zeros(16, np.int64)])
    window = np.zeros(n_bits + 1, np.int64)  # window[p]: the 16 bits from p on, zero past the end
    for k in range(16):
        window = window << 1 | padded[k:k + n_bits + 1]
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > n_bits:
            raise ValueError(f"the compact table ends inside a field ({len(data)} bytes)")
        pos += n
        return int(window[pos - n]) >> (16 - n)

    alphabet = np.flatnonzero([read(1) for _ in range(ALPHABET_BITS)])
    token_len = np.array([read(TOKEN_LEN_BITS) for _ in range(TOKENS)], np.int64)
    if alphabet.size == 0 or not token_len.any():
        raise ValueError("a compact table needs at least one symbol and one token")
    token_code = huffman.Code.from_counts(np.bincount(token_len, minlength=token_len.max() + 1)[1:],
                                          np.lexsort((np.arange(TOKENS), token_len))[np.count_nonzero(token_len == 0):],
                                          TOKENS)
    width = token_code.max_len
    span = np.left_shift(1, width - token_code.lengths)
    lut_token, lut_len = np.repeat(token_code.symbols, span), np.repeat(token_code.lengths, span)
    cells = alphabet.size ** 2
    grid = np.zeros(cells, np.int64)
    filled = 0
    while filled < cells:
        peek = int(window[pos]) >> (16 - width)
        token, length = int(lut_token[peek]), int(lut_len[peek])
        read(length)
        if token not in RUNS:
            grid[filled] = token
            filled += 1
            continue
        extra, shortest, _ = RUNS[token]
        run = shortest + read(extra)
        if token == REPEAT and filled == 0:
            raise ValueError("the compact table repeats a code length before the first one")
        if run > cells - filled:
            raise ValueError(f"the compact table runs past its {cells} pairs")
        grid[filled:filled + run] = grid[filled - 1] if token == REPEAT else 0
        filled += run
    if -(-pos // 8) != len(data):
        raise ValueError(f"the compact table ends at bit {pos}, it has {len(data)} bytes")
    if not 1 <= max_len == grid.max():
        raise ValueError(f"the compact table's longest code has {grid.max()} bits, its stream says {max_len}")
    used = np.flatnonzero(grid)
    order = used[np.lexsort((used, grid[used]))]  # canonical: by length, then pair value (row-major)
    symbols = alphabet[order // alphabet.size] << 8 | alphabet[order % alphabet.size]
    return huffman.Code.from_counts(np.bincount(grid, minlength=max_len + 1)[1:], symbols.astype(np.uint16), 1)
