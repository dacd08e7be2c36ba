"""Convolutions in NCHW: output channels across vector lanes, output pixels across registers.

For a dense (or grouped) conv the inner loop broadcasts one input pixel and multiplies it by a vector
of output channels' weights, so the weights are repacked at compile time to [K/lanes, KH, KW, C, lanes]
(zero-padded when K is not a multiple of lanes) and the accumulators of a `vecs x pixels` tile stay in
registers for the whole reduction. Depthwise convs have no channel reduction to amortize a broadcast
over; they keep TVM's loop nest and only run in parallel.
"""
from __future__ import annotations

from tvm import s_tir

from edgeprune.compile.schedules.common import (inline_epilogue, inline_producers, parallel_outer, prepack, read_index,
                                                worth_parallel)
from edgeprune.compile.schedules.kinds import Anchor
from edgeprune.compile.schedules.machine import Machine


def _register_tile(channels: int, width: int, lanes: int, registers: int) -> tuple[int, int]:
    """(channel vectors, pixels) of the accumulator tile: the most FMAs per step that fit in the registers
    next to the weight vectors and one broadcast, then the fewest loads. Pixel counts divide the row (a
    ragged tile puts a branch in the inner loop); at most two weight vectors, since deep layers stream
    their weights from L2 and a tile of fewer pixels reuses each less (measured: 256x14x14 ran 1.8x
    faster as 1x7 than as 4x2)."""
    tiles = [(vecs, pixels) for vecs in (1, 2) if channels % (vecs * lanes) == 0
             for pixels in range(1, min(width, (registers - 2 - vecs) // vecs) + 1) if width % pixels == 0]
    return max(tiles, key=lambda t: (t[0] * t[1], -t[0] - t[1]), default=(1, 1))


def schedule_conv2d(sch: s_tir.Schedule, anchor: Anchor, machine: Machine) -> None:
    """Dense and grouped convs, any kernel, stride and padding; the epilogue is applied as the tile is stored."""
    block = anchor.block
    lanes = machine.lanes
    out_channels = int(sch.get(block).iter_vars[1].dom.extent)
    inline_producers(sch, block, lanes)
    if not prepack(sch, block, read_index(sch, block, anchor.weight),
                   lambda k, c, y, x: (k // lanes, y, x, c, k % lanes), pad=out_channels % lanes != 0):
        return
    acc = sch.cache_write(block, 0, "local")
    sliced = inline_epilogue(sch, acc)
    n, k, y, x, rc, ry, rx = sch.get_loops(block)
    vecs, pixels = _register_tile(out_channels, int(sch.get(x).extent), lanes, machine.registers)
    po, pi = sch.split(x, [None, pixels])
    ko, kv, ki = sch.split(k, [None, vecs, lanes])
    sch.reorder(n, ko, y, po, ry, rx, rc, kv, pi, ki)  # window outside: LLVM unrolls short inner loops and spills
    sch.reverse_compute_at(acc, po)
    if sliced is not None:  # padded channels: the tile is stored through the slice that drops them
        sch.reverse_compute_at(sliced, po)
        sch.compute_inline(acc)
    if worth_parallel(sch, block):
        sch.parallel(sch.fuse(n, ko, y, po))
    sch.unroll(pi)
    sch.unroll(kv)
    sch.vectorize(ki)
    sch.decompose_reduction(block, ry)


def schedule_depthwise(sch: s_tir.Schedule, anchor: Anchor, machine: Machine) -> None:
    """Memory-bound, and LLVM vectorizes TVM's own loop nest well (measured: an explicit row tile with the
    epilogue folded in was no faster, and slower on ragged rows), so channels only go across cores."""
    parallel_outer(sch, 2)
