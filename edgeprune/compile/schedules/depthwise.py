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

from edgeprune.compile.schedules.common import inline_epilogue, worth_parallel
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
    # one vector of pixels: with more, LLVM hoists the broadcast weights of every tap out of the row and spills.
    # Rows of 28 or 14 pixels: up to 4 vectors' worth is one loop that LLVM vectorizes with a short remainder
    # (measured 1.3-1.5x faster than TVM's vectors of 7 lanes, the epilogue too); a row shorter than a vector is
    # one vector.
    whole = width % machine.lanes == 0 or width < machine.lanes
    tile = min(width, machine.lanes) if whole else max(d for d in range(1, 4 * machine.lanes + 1) if width % d == 0)
    xo, xi = sch.split(x, [None, tile])
    sch.reorder(n, c, y, xo, rc, ry, rx, xi)
    sch.reverse_compute_at(acc, xo)
    for pad in pads:
        sch.compute_at(pad, c)
        padded = int(sch.get(pad).writes[0].source.shape[-1])
        stride2 = width > 1 and padded % 2 == 0 and (padded - int(sch.get(rx).extent)) // (width - 1) == 2
        if stride2:  # even and odd columns apart: a stride-2 tap reads contiguous vectors, not 8 gathered ones
            sch.transform_layout(pad, ("write", 0), lambda *i: (*i[:-1], i[-1] % 2, i[-1] // 2))
        fill = sch.decompose_padding(pad, sch.get_loops(pad)[2])
        if stride2:
            # the copy walks the parities in turn, so LLVM makes each a load and a shuffle; the zeros too, so
            # they are stored in order (the plane's zeros cost 2/3 of a 144x56x56 layer stored column by column)
            for stage in (pad, fill):
                column, parity = sch.split(sch.get_loops(stage)[-1], [None, 2])
                sch.reorder(parity, column)
    if worth_parallel(sch, block):
        sch.parallel(sch.fuse(n, c))
    sch.unroll(ry)
    sch.unroll(rx)
    if whole:
        sch.vectorize(xi)
    sch.decompose_reduction(block, rc)
    if whole:
        sch.vectorize(sch.get_loops(acc)[-1])
