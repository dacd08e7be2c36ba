"""Canonical length-limited Huffman codes: optimality, code properties, round trips, speed-independent."""
from __future__ import annotations

import heapq

import numpy as np
import pytest

from edgeprune.coding import huffman

rng = np.random.default_rng(1234)


def laplacian_int8(n: int, scale: float) -> np.ndarray:
    """Weights of a trained layer after int8 quantization look like this: peaked at 0, long tails."""
    return np.clip(np.round(rng.laplace(0, scale, n)), -128, 127).astype(np.int8)


def huffman_cost(counts: np.ndarray) -> int:
    """Total bits of an unconstrained Huffman code (textbook heap merge): the optimum."""
    heap = [int(c) for c in counts if c > 0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


@pytest.mark.parametrize("n_symbols", [2, 3, 17, 256])
def test_package_merge_is_optimal_without_a_binding_limit(n_symbols):
    for _ in range(20):
        counts = rng.integers(1, 1000, n_symbols) * (rng.random(n_symbols) < 0.8)
        lengths = huffman.code_lengths(counts, max_len=16)
        assert int((counts * lengths).sum()) == huffman_cost(counts)


def test_length_limit_is_kept_and_the_code_stays_complete():
    counts = np.array([1, 1] + [2 ** k for k in range(1, 25)])  # Huffman would need 25 bits
    for max_len in (5, 8, 15, 16):
        lengths = huffman.code_lengths(counts, max_len)
        assert lengths.max() == max_len
        assert np.sum(2.0 ** -lengths) == 1.0  # Kraft equality: a complete code
        assert int((counts * lengths).sum()) >= huffman_cost(counts)
    with pytest.raises(ValueError, match="do not fit"):
        huffman.code_lengths(np.ones(33), max_len=5)


def test_canonical_codes_are_prefix_free_and_complete():
    code = huffman.build_code(np.bincount(laplacian_int8(50_000, 6).view(np.uint8)))
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(code.codes(), code.lengths)]
    assert len(set(words)) == len(words)
    ordered = sorted(words)
    assert not any(b.startswith(a) for a, b in zip(ordered, ordered[1:]))  # a prefix sorts just before
    assert sum(2.0 ** -len(w) for w in words) == 1.0
    # canonical: by length, then symbol value, codes counting up
    assert np.all(np.diff(code.lengths) >= 0)
    assert all(int(a, 2) < int(b, 2) for a, b in zip(words, words[1:]) if len(a) == len(b))


@pytest.mark.parametrize("symbols", [
    np.zeros(0, np.uint8), np.array([7], np.uint8), np.full(5000, 200, np.uint8), np.array([0, 255], np.uint8),
    laplacian_int8(1023, 3).view(np.uint8), laplacian_int8(1025, 30).view(np.uint8),
    rng.integers(0, 256, 70_000).astype(np.uint8), rng.integers(0, 65536, 100_000).astype(np.uint16),
], ids=["empty", "one", "constant", "two", "lap1023", "lap1025", "uniform8", "uniform16"])
def test_round_trip(symbols):
    code, stream = huffman.encode(symbols)
    assert np.array_equal(huffman.decode(code, stream), symbols)
    assert len(stream.data) == -(-huffman.coded_bits(code, symbols) // 8)


def test_round_trip_with_many_short_runs():
    """Sync points every 7 symbols: thousands of lanes, short last run."""
    symbols = laplacian_int8(10_000, 5).view(np.uint8)
    code, stream = huffman.encode(symbols, interval=7)
    assert stream.sync.size == 10_000 // 7
    assert np.array_equal(huffman.decode(code, stream), symbols)


def bits_over_entropy(symbols: np.ndarray) -> float:
    code, _ = huffman.encode(symbols)
    entropy = huffman.entropy_bits(symbols)
    assert huffman.coded_bits(code, symbols) >= entropy
    return huffman.coded_bits(code, symbols) / entropy


@pytest.mark.parametrize("scale", [3.0, 8.0, 40.0])  # 4.0, 5.4 and 7.5 bits of entropy per weight
def test_huffman_is_within_one_percent_of_entropy_on_weight_like_data(scale):
    assert bits_over_entropy(laplacian_int8(200_000, scale).view(np.uint8)) <= 1.01


def test_one_percent_needs_about_four_bits_of_entropy():
    """Narrow weights (Laplace scale 1: 2.5 bits/weight) cost ~3% over the bound: Huffman rounds
    every probability to a power of two, and with few symbols that rounding shows."""
    assert 1.01 < bits_over_entropy(laplacian_int8(200_000, 1.0).view(np.uint8)) < 1.05


def test_one_percent_is_out_of_reach_for_very_skewed_streams():
    """Huffman spends >= 1 bit per symbol: 95% zeros have 0.7 bit of entropy and cost 1.4 bits.

    This is why pruned tensors are coded sparse (index gaps + values), see test_container.
    """
    symbols = np.where(rng.random(100_000) < 0.95, 0, rng.integers(1, 256, 100_000)).astype(np.uint8)
    assert bits_over_entropy(symbols) > 1.8


def test_decoder_rejects_bits_that_disagree_with_the_sync_points():
    symbols = laplacian_int8(5000, 5).view(np.uint8)
    code, stream = huffman.encode(symbols, interval=1000)
    moved = huffman.Stream(stream.n_symbols, stream.interval, stream.sync + 1, stream.data)
    with pytest.raises(ValueError, match="sync points"):
        huffman.decode(code, moved)
    short = huffman.Stream(stream.n_symbols, stream.interval, stream.sync, stream.data[:-1])
    with pytest.raises(ValueError):
        huffman.decode(code, short)


def test_incomplete_or_inconsistent_code_tables_are_rejected():
    with pytest.raises(ValueError, match="Kraft"):
        huffman.Code.from_counts(np.array([1, 1]), np.array([0, 1]), 10)  # lengths 1 and 2: incomplete
    with pytest.raises(ValueError, match="longest"):
        huffman.Code.from_counts(np.array([2, 0]), np.array([0, 1]), 10)
    with pytest.raises(ValueError, match="symbols"):
        huffman.Code.from_counts(np.array([2]), np.array([0]), 10)


def test_a_code_built_for_other_symbols_codes_these_too():
    """Shared tables (container version 4): one code for several streams, as long as it has a word for each symbol."""
    a, b = laplacian_int8(3000, 4).view(np.uint8), laplacian_int8(500, 4).view(np.uint8)
    shared = huffman.build_code(np.bincount(np.concatenate([a, b])))
    code, stream = huffman.encode(b, code=shared)
    assert code is shared and np.array_equal(huffman.decode(shared, stream), b)
    with pytest.raises(ValueError, match="no word"):
        huffman.encode(np.append(b, np.setdiff1d(np.arange(256), b)[0]).astype(np.uint8),
                       code=huffman.build_code(np.bincount(b)))
