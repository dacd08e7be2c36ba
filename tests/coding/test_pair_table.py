"""Compact pair tables: every canonical pair code comes back exactly, and broken tables are refused."""
from __future__ import annotations

import numpy as np
import pytest

from edgeprune.coding import huffman, pair_table
from edgeprune.coding.pair_table import REPEAT, ZEROS_LONG, ZEROS_SHORT


def random_pair_code(rng: np.random.Generator) -> huffman.Code:
    n_alpha = int(rng.integers(2, 257))
    alphabet = np.sort(rng.choice(256, n_alpha, replace=False))
    cells = rng.choice(n_alpha ** 2, int(rng.integers(2, min(n_alpha ** 2, 3000) + 1)), replace=False)
    counts = np.zeros(1 << 16, np.int64)
    pairs = alphabet[cells // n_alpha] << 8 | alphabet[cells % n_alpha]
    counts[pairs] = rng.geometric(rng.uniform(0.01, 0.9), cells.size)
    return huffman.build_code(counts)


def test_every_code_comes_back_exactly():
    rng = np.random.default_rng(0)
    for _ in range(200):
        code = random_pair_code(rng)
        back = pair_table.decode_table(pair_table.encode_table(code), code.max_len)
        assert np.array_equal(back.symbols, code.symbols) and np.array_equal(back.lengths, code.lengths)


def test_runs_are_single_tokens():
    lengths = np.array([0] * 300 + [4] * 8 + [0] * 5 + [3, 3])
    tokens = pair_table._tokens(lengths)
    assert tokens == [(ZEROS_LONG, 127), (ZEROS_LONG, 127), (ZEROS_LONG, 13), (4, 0), (REPEAT, 3), (4, 0),
                      (ZEROS_SHORT, 2), (3, 0), (3, 0)]
    decoded = []
    for token, extra in tokens:
        shortest = pair_table.RUNS.get(token, (0, 1, 1))[1]
        decoded += [decoded[-1] if token == REPEAT else 0 if token in pair_table.RUNS else token] * (shortest + extra)
    assert decoded == lengths.tolist()


def fields(*pairs: tuple[int, int]) -> bytes:
    """A table written field by field: (value, bits) pairs."""
    words, widths = zip(*pairs)
    return huffman.pack_bits(np.array(words), np.array(widths))[0]


def header(alphabet: list[int], token_lengths: dict[int, int]) -> list[tuple[int, int]]:
    return ([(int(i in alphabet), 1) for i in range(256)]
            + [(token_lengths.get(t, 0), pair_table.TOKEN_LEN_BITS) for t in range(pair_table.TOKENS)])


# Two symbols (4 pairs); tokens 0, 1, 2 and REPEAT, each with a 2-bit code: 00, 01, 10, 11.
TOKEN_CODE = {0: 2, 1: 2, 2: 2, REPEAT: 2}


def test_a_hand_written_table():
    table = fields(*header([7, 9], TOKEN_CODE), (1, 2), (0, 2), (2, 2), (2, 2))  # lengths 1, 0, 2, 2
    code = pair_table.decode_table(table, 2)
    assert code.symbols.tolist() == [7 << 8 | 7, 9 << 8 | 7, 9 << 8 | 9] and code.lengths.tolist() == [1, 2, 2]


@pytest.mark.parametrize("table, max_len, message", [
    (fields(*header([7, 9], TOKEN_CODE), (1, 2), (0, 2)), 2, "ends inside"),  # 2 of 4 cells, no padding bits
    (fields(*header([7, 9], TOKEN_CODE), (3, 2), (0, 2)), 2, "before the first"),  # REPEAT first
    (fields(*header([7, 9], TOKEN_CODE), (1, 2), (3, 2), (1, 2)), 2, "runs past"),  # REPEAT 4 with 3 cells left
    (fields(*header([7, 9], {0: 1, 1: 2}), (1, 2)), 2, "Kraft"),  # incomplete token code
    (fields(*header([], TOKEN_CODE)), 2, "at least one symbol"),
    (fields(*header([7, 9], TOKEN_CODE), (1, 2), (0, 2), (2, 2), (2, 2)), 3, "longest code has 2 bits"),
    (fields(*header([7, 9], TOKEN_CODE), (1, 2), (0, 2), (2, 2), (2, 2)) + b"\0", 2, "ends at bit"),
    (fields(*header([7, 9], TOKEN_CODE), (1, 2), (1, 2), (2, 2), (2, 2)), 2, "Kraft"),  # 1, 1, 2, 2: over-full
])
def test_broken_tables_are_refused(table, max_len, message):
    with pytest.raises(ValueError, match=message):
        pair_table.decode_table(table, max_len)
