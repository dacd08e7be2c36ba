"""Depthwise convs: one channel at a time, a row of output pixels across the vector lanes.

A depthwise conv has no channel reduction to amortize a broadcast over, so the lanes hold neighbouring
output pixels of one channel: each of the KHxKW weights is broadcast once per channel and multiplied into
a vector of pixels. The zero padding is written per channel into a small plane that stays in L1: zeros
first, then the rows copied (one padded copy of the whole tensor, or a bounds check per tap, costs more
than the multiply-adds: measured 1.3 ms of a 1.4 ms 96x112x112 int8 layer). For stride 2 the plane holds
even and odd columns apart. The epilogue (bias, clip, the int8 requantization) is applied to the
accumulator vector as it is stored.
"""
from __future__ import annotations

import tvm
from tvm import s_tir

from edgeprune.compile.schedules.common import inline_epilogue, padded_plane, row_tile, worth_parallel
from edgeprune.compile.schedules.kinds import Anchor
from edgeprune.compile.schedules.machine import Machine


def schedule_depthwise(sch: s_tir.Schedule, anchor: Anchor, machine: Machine) -> None:
    """Loops (n, c | y, x/lanes | window | lanes): the accumulator is one vector, the window's weights
    stay in registers for the whole channel."""
    block = anchor.block
    pads = []
    for producer in sch.get_producers(block):
        if isinstance(sch.get(producer).body.value, tvm.ir.TensorLoad):
            sch.compute_inline(producer)
        else:
            pads.append(producer)
    acc = sch.cache_write(block, 0, "local")
    inline_epilogue(sch, acc)
    n, c, y, x, rc, ry, rx = sch.get_loops(block)
    width = int(sch.get(x).extent)
    whole, tile = row_tile(width, machine.lanes)
    xo, xi = sch.split(x, [None, tile])
    sch.reorder(n, c, y, xo, rc, ry, rx, xi)
    sch.reverse_compute_at(acc, xo)
    for pad in pads:
        padded_plane(sch, pad, c, width, int(sch.get(rx).extent))
    if worth_parallel(sch, block):
        sch.parallel(sch.fuse(n, c))
    sch.unroll(ry)
    sch.unroll(rx)
    if whole:
        sch.vectorize(xi)
    sch.decompose_reduction(block, rc)
    if whole:
        sch.vectorize(sch.get_loops(acc)[-1])
