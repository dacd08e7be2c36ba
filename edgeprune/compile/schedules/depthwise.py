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

from edgeprune.compile.schedules.common import per_channel_rows
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
    per_channel_rows(sch, block, pads, machine.lanes)
