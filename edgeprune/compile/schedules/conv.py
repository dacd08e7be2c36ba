"""Convolutions in NCHW: output channels across vector lanes, output pixels across registers.

For a dense (or grouped) conv the inner loop broadcasts one input pixel and multiplies it by a vector
of output channels' weights, so the weights are repacked at compile time to [K/lanes, KH, KW, C, lanes]
(zero-padded when K is not a multiple of lanes) and the accumulators of a `vecs x pixels` tile stay in
registers for the whole reduction. int8 convs on x86 (int16 data x int8 weights after the integer lowering)
take the pair intrinsic instead: two input channels per lane and instruction (pmaddwd), with channel pairs
made adjacent in the data and the weights. Float 1x1 convs and convs with short reductions (RGB stems, int8
1x1 convs over few channels) put pixels in the lanes instead (pointwise.py); depthwise convs have a rule of
their own (depthwise.py).
"""
from __future__ import annotations

import tvm
from tvm import s_tir

from edgeprune.compile.schedules.common import (inline_epilogue, inline_producers, parallel_vectorize, prepack,
                                                read_index, worth_parallel)
from edgeprune.compile.schedules.kinds import Anchor
from edgeprune.compile.schedules.machine import Machine
from edgeprune.compile.schedules.pointwise import applies as pointwise, schedule_pointwise


CHAINS = 8  # independent accumulators that hide the FMA latency: 4 cycles x 2 pipes (Zen, Skylake, Cortex-A76)
# ... and 12 hide Zen 2's 5 cycles too: 3x4 and 2x6 tiles, where the loads stay at most 3 per 4 FMAs, beat every
# 8-accumulator tile (96->96 3x3 at 48x48: 3x4 1.00x onnxruntime, 2x6 1.04x, 2x4 1.18x; 1x12 and 1x14, with a
# load per FMA, do not)
WIDE = 12


def _register_tile(channels: int, width: int, lanes: int, registers: int, integer: bool = False) -> tuple[int, int]:
    """(channel vectors, pixels) of the accumulator tile. Float tiles: enough accumulators to hide the FMA
    latency (CHAINS, or WIDE where few loads allow it), then the fewest loads per FMA, in the registers next to
    the weight vectors and one broadcast (measured on 256x14x14: 1x14 17% faster than 1x7, whose 7 chains leave
    the FMA pipes idle; on 64x56x56, 2x4 6% faster than 1x14, which loads more). Pixel counts divide the row (a
    ragged tile puts a branch in the inner loop); at most three weight vectors (two for integers), since deep
    layers stream their weights from L2 and a tile of fewer pixels reuses each less (measured: 256x14x14 ran
    1.8x faster as 1x7 than as 4x2).
    Integer tiles take the most multiply-adds and keep every pixel's broadcast in a register of its own (LLVM
    hoists them: seen in the assembly, a 2x14 int tile spilled on AArch64 where 2x8 did not)."""
    def fits(vecs: int, pixels: int) -> bool:
        return vecs * pixels + vecs + (pixels + 1 if integer else 1) <= registers

    def rank(tile: tuple[int, int]) -> tuple:
        vecs, pixels = tile
        if integer:
            return vecs * pixels, -vecs - pixels
        loads = (vecs + pixels) / (vecs * pixels)
        return min(vecs * pixels, CHAINS) + (vecs * pixels >= WIDE and loads <= 0.75), -loads

    tiles = [(vecs, pixels) for vecs in (1, 2, 3) if channels % (vecs * lanes) == 0 and (vecs < 3 or not integer)
             for pixels in range(1, width + 1) if width % pixels == 0 and fits(vecs, pixels)]
    return max(tiles, key=rank, default=(1, 1))


def _pairs(sch: s_tir.Schedule, anchor: Anchor, machine: Machine) -> bool:
    """Whether the conv is an int16 x int8 one the pair intrinsic can run: an even channel reduction (the
    padding pass makes it so) over the data's channel axis itself, i.e. not grouped."""
    block = sch.get(anchor.block)
    data = next(r for r in block.reads if not r.source.same_as(anchor.weight.source))
    rc = block.iter_vars[4]
    return (machine.pair_dot is not None and str(data.source.dtype) == "int16"
            and str(anchor.weight.source.dtype) == "int8" and int(rc.dom.extent) % 2 == 0
            and data.region[1].min.same_as(rc.var))


def _window(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int:
    return int(sch.get(block).iter_vars[5].dom.extent) * int(sch.get(block).iter_vars[6].dom.extent)


def schedule_conv2d_pairs(sch: s_tir.Schedule, anchor: Anchor, machine: Machine) -> None:
    """int16 x int8 convs on the pair intrinsic: channel pairs adjacent in a copy of the data ([N, H, W, C/2, 2],
    or [N, C/2, H, W, 2] for 1x1 kernels; made per call, padding folded in) and in the weights
    ([K/lanes, KH, KW, C/2, lanes, 2], packed at compile time); the accumulator tile keeps channels innermost
    so each lane vector is contiguous."""
    block = anchor.block
    lanes = machine.lanes
    out_channels = int(sch.get(block).iter_vars[1].dom.extent)
    weight = read_index(sch, block, anchor.weight)
    data = 1 - weight
    inline_producers(sch, block, lanes)
    if not prepack(sch, block, weight, lambda k, c, y, x: (k // lanes, y, x, c // 2, k % lanes, c % 2),
                   pad=out_channels % lanes != 0):
        return
    copy = sch.cache_read(block, data, "global")
    for producer in sch.get_producers(copy):  # the padding stage: a branch in the copy, not in the MACs
        sch.compute_inline(producer)
    if _window(sch, block) > 1:  # a pixel's channel pairs side by side: the reduction walks memory in order
        sch.transform_layout(block, ("read", data), lambda n, c, y, x: (n, y, x, c // 2, c % 2))
        n, c, y, x = sch.get_loops(copy)
        sch.reorder(n, y, x, c)  # written in order, read across channel planes
    else:  # 1x1: the reduction is all channels, and transposing them costs more than it saves (measured)
        sch.transform_layout(block, ("read", data), lambda n, c, y, x: (n, c // 2, y, x, c % 2))
    parallel_vectorize(sch, copy, 2)
    acc = sch.cache_write(block, 0, "local")
    sch.transform_layout(block, ("write", 0), lambda n, k, y, x: (n, y, x, k))
    sliced = inline_epilogue(sch, acc)
    n, k, y, x, rc, ry, rx = sch.get_loops(block)
    vecs, pixels = _register_tile(out_channels, int(sch.get(x).extent), lanes, machine.registers, integer=True)
    po, pi = sch.split(x, [None, pixels])
    ko, kv, ki = sch.split(k, [None, vecs, lanes])
    rco, rci = sch.split(rc, [None, 2])
    sch.reorder(n, ko, y, po, ry, rx, rco, kv, pi, ki, rci)
    sch.reverse_compute_at(acc, po)
    store = acc
    if sliced is not None:
        sch.reverse_compute_at(sliced, po)
        sch.compute_inline(acc)
        store = sliced
    if worth_parallel(sch, block):
        sch.parallel(sch.fuse(n, ko, y, po))
    sch.unroll(pi)
    sch.unroll(kv)
    sch.decompose_reduction(block, ry)
    sch.tensorize(ki, machine.pair_dot)
    channels, pixel = sch.get_loops(store)[-2:]
    if any(str(r.source.dtype) == "float64" for r in sch.get(store).reads):
        # requant.py's float64 form: one multiplier per channel, so a vector of pixels (LLVM scalarized it
        # across channels: measured 3.4x slower on a 96x112x112 1x1 conv)
        sch.vectorize(pixel)
    elif int(sch.get(channels).extent) % lanes == 0:  # the int64 form, a vector of channels at a time
        outer, inner = sch.split(channels, [None, lanes])
        sch.reorder(outer, pixel, inner)
        sch.vectorize(inner)


IF_THEN_ELSE = tvm.ir.Op.get("prim.if_then_else")


def _blocked_plane(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, data: int, lanes: int) -> bool:
    """Make the copy of a float conv's data (its padding stage, or pixel_runs.py's copy) with the channels
    blocked, [N, C/lanes, H, W, lanes], so that the broadcasts of consecutive input channels read one cache line
    (in NCHW each is a plane away, and the planes a tile reads outgrow L1: measured 256->256 at 14x14 2.70 ->
    2.45 ms, 1.11x -> 1.01x onnxruntime). The zeros are written in order, then the rows as vectors. False
    (nothing done) when the data is not copied in the function (a copy of its own would cost a kernel's worth
    of traffic) or its channels, or a group's, are not whole vectors."""
    producers = sch.get_producers(block)
    if len(producers) != 1 or int(sch.get(block).reads[data].source.shape[1]) % lanes \
            or int(sch.get(block).iter_vars[4].dom.extent) % lanes:  # a group's channels: whole lines too
        return False
    copy = sch.get(producers[0])
    value = copy.body.value
    padding = isinstance(value, tvm.ir.Call) and value.op.same_as(IF_THEN_ELSE)
    identity = isinstance(value, tvm.ir.TensorLoad) and len(value.indices) == len(copy.iter_vars) \
        and all(i.same_as(v.var) for i, v in zip(value.indices, copy.iter_vars))
    if not (padding or identity):
        return False
    sch.transform_layout(block, ("read", data), lambda n, c, y, x: (n, c // lanes, y, x, c % lanes))
    n, c, y, x = sch.get_loops(producers[0])
    outer, inner = sch.split(c, [None, lanes])
    sch.reorder(n, outer, y, inner, x)  # rows read as vectors, stored a lane apart
    if worth_parallel(sch, producers[0]):
        outer = sch.fuse(n, outer)
        sch.parallel(outer)
    if padding:
        zeros = sch.decompose_padding(producers[0], outer)
        *_, inner, x = sch.get_loops(zeros)
        sch.reorder(x, inner)
        sch.vectorize(inner)
    row = sch.get_loops(producers[0])[-1]
    if int(sch.get(row).extent) % lanes == 0:
        sch.vectorize(sch.split(row, [None, lanes])[1])
    return True


def schedule_conv2d(sch: s_tir.Schedule, anchor: Anchor, machine: Machine) -> None:
    """Dense and grouped convs, any kernel, stride and padding; the epilogue is applied as the tile is stored."""
    pairs = _pairs(sch, anchor, machine)
    if pointwise(sch, anchor, machine, pairs):
        return schedule_pointwise(sch, anchor, machine, pairs)
    if pairs:
        return schedule_conv2d_pairs(sch, anchor, machine)
    block = anchor.block
    lanes = machine.lanes
    out_channels = int(sch.get(block).iter_vars[1].dom.extent)
    integer = str(sch.get(block).body.value.ty) == "int32"
    weight = read_index(sch, block, anchor.weight)
    blocked = not integer and _blocked_plane(sch, block, 1 - weight, lanes)
    if not blocked:
        inline_producers(sch, block, lanes)
    if not prepack(sch, block, weight, lambda k, c, y, x: (k // lanes, y, x, c, k % lanes),
                   pad=out_channels % lanes != 0):
        return
    acc = sch.cache_write(block, 0, "local")
    sliced = inline_epilogue(sch, acc)
    n, k, y, x, rc, ry, rx = sch.get_loops(block)
    vecs, pixels = _register_tile(out_channels, int(sch.get(x).extent), lanes, machine.registers, integer)
    po, pi = sch.split(x, [None, pixels])
    ko, kv, ki = sch.split(k, [None, vecs, lanes])
    # window outside: LLVM unrolls short inner loops and spills; pixels outside the channel vectors, so that
    # LLVM loads each pixel's broadcast just before its FMAs (in the other order it hoisted all of a 2x6 tile's
    # broadcasts, spilled, and ran 2x slower)
    # blocked data: the channels of one line in a loop of their own (unrolled, LLVM spilled: 15x slower)
    reduction = sch.split(rc, [None, lanes]) if blocked else [rc]
    sch.reorder(n, ko, y, po, ry, rx, *reduction, *((kv, pi) if integer else (pi, kv)), ki)
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
