"""VTA lowering quality on ResNet-18's layer shapes: what each compiled layer costs on the default 1x16x16 design.

    python tools/bench_vta.py [--clock-mhz 100]

Every layer is compiled, run in edgeprune's simulator (portable mode: any race, deadlock or lint fails it),
checked bit for bit against the numpy integer reference, and reported: tiles, instructions, GEMM micro-ops,
DRAM bytes, estimated cycles and milliseconds (the simulator's event timing through the dependency tokens, as in
`profile --simulate`), and the GEMM core's busy fraction (GEMM micro-ops / cycles). The time column is simulation wall time on this machine.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from edgeprune.backends.vta.eltwise import lower_add, lower_maxpool, reference_add, reference_maxpool
from edgeprune.backends.vta.lower import lower_conv2d, lower_dense, reference_conv2d, reference_dense, simulate

# name, (C, O, H, W, kernel, stride, pad) for convs; residual add and max-pool by shape
CONVS = [("conv1 (3->64, 7x7/2)", (3, 64, 224, 224, 7, 2, 3)), ("layer1 3x3", (64, 64, 56, 56, 3, 1, 1)),
         ("layer2 3x3/2", (64, 128, 56, 56, 3, 2, 1)), ("layer2 1x1/2", (64, 128, 56, 56, 1, 2, 0)),
         ("layer3 3x3", (256, 256, 14, 14, 3, 1, 1)), ("layer4 3x3", (512, 512, 7, 7, 3, 1, 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clock-mhz", type=float, default=100.0, help="VTA clock (Pynq-Z1: 100)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []

    def run(name, prog, inputs, expect):
        start = time.perf_counter()
        y, result = simulate(prog, *inputs)
        wall = time.perf_counter() - start
        assert np.array_equal(y, expect), name
        c = result.counters
        cycles = c.cycles
        dram = sum(c.bytes_loaded.values()) + c.bytes_stored + 16 * sum(c.insns.values())
        rows.append([name, f"{prog.macs:,}", str(prog.tiling.tiles), f"{sum(c.insns.values()):,}", f"{c.gemm_uops:,}",
                     f"{dram:,}", f"{cycles:,}", f"{cycles / (args.clock_mhz * 1e3):.3f}",
                     f"{c.gemm_uops / cycles:.2f}", f"{wall:.2f}"])

    for name, (c, o, h, w, k, s, p) in CONVS:
        x = rng.integers(-128, 128, (1, c, h, w)).astype(np.int8)
        wq = rng.integers(-128, 128, (o, c, k, k)).astype(np.int8)
        b = rng.integers(-1 << 14, 1 << 14, o).astype(np.int32)
        shift = rng.integers(8, 14, o)
        run(name, lower_conv2d(wq, b, (h, w), s, p, shift, True, round_first=True), [x],
            reference_conv2d(x, wq, b, s, p, shift, True, round_first=True))
    a, bb = (rng.integers(-128, 128, (1, 64, 56, 56)).astype(np.int8) for _ in range(2))
    run("residual add 64x56x56", lower_add(a.shape, 1, 0, [(1, True)]), [a, bb], reference_add(a, bb, 1, 0, [(1, True)]))
    x = rng.integers(-128, 128, (1, 64, 112, 112)).astype(np.int8)
    run("max-pool 3x3/2 64x112x112", lower_maxpool(x.shape, (3, 3), 2, 1), [x], reference_maxpool(x, (3, 3), 2, 1))
    xd = rng.integers(-128, 128, (1, 512)).astype(np.int8)
    wd = rng.integers(-128, 128, (1000, 512)).astype(np.int8)
    bd = rng.integers(-1 << 14, 1 << 14, 1000).astype(np.int32)
    run("fc 512->1000", lower_dense(wd, bd, 12, False, round_first=True), [xd],
        reference_dense(xd, wd, bd, 12, False, round_first=True))

    table = Table(title=f"VTA 1x16x16 int8, ResNet-18 layer shapes, estimated at {args.clock_mhz:g} MHz")
    for col in ("layer", "MACs", "tiles", "insns", "GEMM ops", "DRAM bytes", "cycles", "est. ms", "GEMM busy",
                "sim s"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
