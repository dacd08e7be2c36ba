"""Speed of the numpy Huffman coder on int8 weight-like streams, and its bits next to the entropy.

    python tools/bench_coding.py [--symbols 1000000 10000000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from edgeprune.coding import huffman


def best_of(runs: int, fn):
    """Fastest of `runs` calls (seconds) and the last result: the least disturbed measurement."""
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--scale", type=float, default=8.0, help="Laplace scale of the int8 weights")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'symbols':>10} {'bits/sym':>8} {'vs entropy':>10} {'encode M/s':>10} {'decode M/s':>10}")
    for n in args.symbols:
        symbols = np.clip(np.round(rng.laplace(0, args.scale, n)), -128, 127).astype(np.int8).view(np.uint8)
        t_enc, (code, stream) = best_of(3, lambda: huffman.encode(symbols))
        t_dec, decoded = best_of(3, lambda: huffman.decode(code, stream))
        assert np.array_equal(decoded, symbols)
        bits = huffman.coded_bits(code, symbols)
        print(f"{n:>10} {bits / n:>8.3f} {bits / huffman.entropy_bits(symbols) - 1:>+10.3%} "
              f"{n / t_enc / 1e6:>10.1f} {n / t_dec / 1e6:>10.1f}")


if __name__ == "__main__":
    main()
