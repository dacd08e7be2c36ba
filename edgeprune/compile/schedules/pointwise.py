"""1x1 convs and convs with short reductions (RGB stems) with output PIXELS across the lanes.

conv.py's rule puts output channels in the lanes, so every accumulator vector holds one pixel of 8
channels and its store to NCHW is a transpose: 8 scalar stores and the epilogue done lane by lane. A 3x3
conv amortizes that over 9*C multiply-adds per output; a 1x1 conv with few input channels (MobileNet's
expansions: 16, 24, 32) does not, and ran 3x slower than onnxruntime (16->96 at 112x112, measured).
Here out[k, p:p+lanes] += w[k, c] * x[c, p:p+lanes] over the flattened pixels p = y*W + x: the data is loaded as
vectors straight from its NCHW planes, one weight is broadcast per output channel, and each accumulator is stored
(epilogue included) as one vector. Pixels go in blocks whose input channels fit in L1 and every block is finished
for all output channels before the next, so the input is read from memory once and the output is written as a few
sequential streams. Wide reductions too: a block is then one tile of 16-24 pixels, whose input channels (36 KiB at
576) and weights stream from L2 like a GEMM's packed panels (1x1 384->96 at 14x14 1.78x -> 0.96x onnxruntime,
256->512 2.11x -> 1.09x, 512->128 at 28x28 1.17x -> 0.87x, measured one layer at a time). The flat axis matters at
56x56 too: by rows of 56 (7 vectors) the tiles were 12 channels x 1 vector, which LLVM spilled (96->24: 1.13x ->
0.69x onnxruntime). int8 convs (int16 data x int8 weights after the integer lowering) take the same loops on x86
with the pair instruction turned around: a vector of pixels' channel pairs times one broadcast weight pair (16->96
at 112x112: 2.1x -> 0.86x onnxruntime's int8, measured under load), the requantization applied to a vector of pixels
of one channel; they stay with at most MAX_REDUCTION inputs (384->96 ran 1.40x -> 1.74x onnxruntime's int8 as pixels
in the lanes). Float convs with a window and at most MAX_REDUCTION multiply-adds per output (a 3->32 3x3 stem, 27)
go the same way over rows of whole vectors, at stride 2 through a copy of the data with even and odd columns apart
(mobilenet_v2's stem 1.97x -> 0.88x onnxruntime, resnet18's 7x7 stem 1.32x -> 0.99x, under load).
"""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from edgeprune.compile.schedules.common import (domain, inline_epilogue, inline_producers, parallel_vectorize,
                                                prepack, read_index, worth_parallel)
from edgeprune.compile.schedules.kinds import Anchor
from edgeprune.compile.schedules.machine import Machine

# For convs with a window (and int8 1x1 convs): above this many multiply-adds per output (input channels x
# window) the channels-in-lanes rule is as fast or faster (measured: 3x3 64->64 at 56x56 about even); below it,
# its transposed stores dominate (a 3->32 3x3 stem: 1.9x). Float 1x1 convs take this rule at any width.
MAX_REDUCTION = 192
BLOCK_BYTES = 32 * 1024  # input channels x pixels of one block: an L1 data cache (32-64 KiB on Zen, Cortex-A7x)


def _loads(expr: tvm.ir.Expr, buffer: tirx.Buffer) -> list[tvm.ir.TensorLoad]:
    """The loads of `buffer` in a multiply-accumulate's value (through its adds, products and casts)."""
    if isinstance(expr, tvm.ir.TensorLoad):
        return [expr] if expr.source.same_as(buffer) else []
    return [load for part in ("a", "b", "value") if isinstance(getattr(expr, part, None), tvm.ir.Expr)
            for load in _loads(getattr(expr, part), buffer)]


def _stride(block: s_tir.SBlock, data: tirx.Buffer) -> int | None:
    """The conv's stride along the row, if the data column it reads is stride * x + rx (no dilation)."""
    _, _, _, x, _, _, rx = block.iter_vars
    loads = _loads(block.body.value, data)
    if len(loads) != 1:
        return None
    coefficients = tvm.sym.detect_linear_equation(loads[0].indices[-1], [x.var, rx.var])
    if len(coefficients) != 3 or not all(isinstance(c, tirx.IntImm) for c in coefficients):
        return None
    stride, dilation, offset = (int(c) for c in coefficients)
    return stride if dilation == 1 and offset == 0 else None


def applies(sch: s_tir.Schedule, anchor: Anchor, machine: Machine, pairs: bool = False) -> bool:
    """A float conv (or with `pairs`, one conv.py found fit for the pair intrinsic) over exactly the reduction's
    channels (not grouped), and either a one-pixel window whose data has the output's height and width (stride
    1, no padding but padding.py's extra pixels) and whole vectors of pixels, or (float only) a window at stride
    1 or 2 over rows of whole vectors; windows and int8 convs with at most MAX_REDUCTION multiply-adds per output."""
    block = sch.get(anchor.block)
    _, _, y, x, rc, ry, rx = block.iter_vars
    data = next(r.source for r in block.reads if not r.source.same_as(anchor.weight.source))
    window = int(ry.dom.extent) * int(rx.dom.extent)
    if not (pairs or str(block.body.value.ty) == "float32" and str(data.dtype) == "float32") \
            or (window > 1 or pairs) and int(rc.dom.extent) * window > MAX_REDUCTION \
            or int(data.shape[1]) != int(rc.dom.extent):
        return False
    if window == 1 and [int(d) for d in data.shape[2:]] == [int(y.dom.extent), int(x.dom.extent)]:
        return int(y.dom.extent) * int(x.dom.extent) % machine.lanes == 0
    return not pairs and int(x.dom.extent) % machine.lanes == 0 and _stride(block, data) in (1, 2)


def _tile(channels: int, pixels: int, lanes: int, registers: int, row: int = 0) -> tuple[int, int]:
    """(output channels, pixel vectors) of the accumulator tile: the most multiply-adds per step that fit in
    the registers next to the data vectors and one broadcast weight; then the fewest loads. `row`: the
    padded row of a map stored through a slice, which a tile must cover whole or lie within (the slice's
    region is a tile's bounding box in rows and columns)."""
    tiles = [(kt, pv) for kt in range(1, 13) for pv in (1, 2, 3, 4)
             if channels % kt == 0 and pixels % (pv * lanes) == 0 and kt * pv + pv + 1 <= registers
             and (not row or pv * lanes % row == 0 or row % (pv * lanes) == 0)]
    return max(tiles, key=lambda t: (t[0] * t[1], -t[0] - t[1], t[0]))


def _rows(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, kt: int, pv: int, lanes: int, pair: int) -> tuple:
    """Rows of whole vectors (W a multiple of the lanes, after padding.py's width padding): loops
    (row block | channel tile | row | pixel tile | ...), the store through the slice that drops padded columns."""
    n, k, y, x, rc, ry, rx = sch.get_loops(block)
    height, width = int(sch.get(y).extent), int(sch.get(x).extent)
    inputs = int(sch.get(rc).extent)
    rows = max(r for r in range(1, height + 1) if height % r == 0 and (inputs * r * width * 4 <= BLOCK_BYTES or r == 1))
    yb, yi = sch.split(y, [None, rows])
    xo, pvl, pl = sch.split(x, [None, pv, lanes])
    ko, ki = sch.split(k, [None, kt])
    rc, *rci = sch.split(rc, [None, pair]) if pair > 1 else [rc]  # the pair intrinsic's reduction innermost
    sch.reorder(n, yb, ko, yi, xo, rc, ry, rx, ki, pvl, pl, *rci)
    return n, yb, xo, rc, ki, pvl, pl


def _flat(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, stores: list, kt: int, pv: int, lanes: int,
          pair: int) -> tuple:
    """One pixel axis p = y*W + x in the accumulator and in the blocks' iterations, so that every region is a
    plain range (with y and x fused as loops, a store's region was a bounding box of whole rows: wrong pixels
    stored): loops (pixel block | channel tile | pixel tile | ...)."""
    _, _, y, x, rc, _, _ = sch.get(block).iter_vars
    width, pixels, inputs = int(x.dom.extent), int(y.dom.extent) * int(x.dom.extent), int(rc.dom.extent)
    sch.transform_layout(block, ("write", 0), lambda n, o, h, w: (n, o, h * width + w))
    sch.transform_block_layout(block, lambda n, o, h, w, c, r, s: (n, o, h * width + w, c, r, s))
    for store in stores:
        if domain(sch, store)[2:] == [int(y.dom.extent), width]:  # not the slice that drops padded pixels
            sch.transform_block_layout(store, lambda n, o, h, w: (n, o, h * width + w))
    n, k, p, rc, ry, rx = sch.get_loops(block)
    step = pv * lanes
    per_block = max(b for b in range(step, pixels + 1, step)
                    if pixels % b == 0 and (inputs * b * 4 <= BLOCK_BYTES or b == step))
    pb, po, pvl, pl = sch.split(p, [None, per_block // step, pv, lanes])
    ko, ki = sch.split(k, [None, kt])
    rc, *rci = sch.split(rc, [None, pair]) if pair > 1 else [rc]
    sch.reorder(n, pb, ko, po, rc, ry, rx, ki, pvl, pl, *rci)
    return n, pb, po, rc, ki, pvl, pl


def schedule_pointwise(sch: s_tir.Schedule, anchor: Anchor, machine: Machine, pairs: bool = False) -> None:
    """Weights repacked to [K/kt, C, kt] at compile time so each step's broadcasts are adjacent; the
    accumulator tile (kt output channels x pv vectors of pixels) stays in registers over all input channels.
    `pairs`: int16 x int8 on intrinsics.pixel_pair_dot, with a copy of the data that puts each pixel's channel
    pairs side by side ([N, C/2, H*W, 2] or [N, C/2, H, W, 2], made per call) and weights [K/kt, C/2, kt, 2]."""
    from edgeprune.compile.schedules.intrinsics import pixel_pair_dot

    block = anchor.block
    lanes = machine.lanes
    _, k, y, x, _, ry, rx = sch.get(block).iter_vars
    height, width = int(y.dom.extent), int(x.dom.extent)
    rows = int(ry.dom.extent) * int(rx.dom.extent) > 1  # 1x1 convs: the flat pixel axis
    padded_map = [int(d) for d in sch.mod["main"].params[-1].shape[2:]] != [height, width]  # padding.py's pixels
    kt, pv = _tile(int(k.dom.extent), width if rows else height * width, lanes, machine.registers,
                   width if padded_map and not rows else 0)
    weight = read_index(sch, block, anchor.weight)
    if _stride(sch.get(block), sch.get(block).reads[1 - weight].source) == 2:
        # even and odd columns apart in a copy of the (padded) data: a stride-2 row of pixels is one vector load
        copy = sch.cache_read(block, 1 - weight, "global")
        for producer in sch.get_producers(copy):
            sch.compute_inline(producer)
        sch.transform_layout(block, ("read", 1 - weight), lambda n, c, h, w: (n, c, h, w % 2, w // 2))
    inline_producers(sch, block, lanes)
    packed = (lambda o, c, h, w: (o // kt, h, w, c // 2, o % kt, c % 2)) if pairs else \
        (lambda o, c, h, w: (o // kt, h, w, c, o % kt))
    if not prepack(sch, block, weight, packed):
        return
    if pairs:
        copy = sch.cache_read(block, 1 - weight, "global")
        for producer in sch.get_producers(copy):  # the odd-channel padding: a branch in the copy, not in the MACs
            sch.compute_inline(producer)
        sch.transform_layout(block, ("read", 1 - weight), (lambda n, c, h, w: (n, c // 2, h, w, c % 2)) if rows
                             else (lambda n, c, h, w: (n, c // 2, h * width + w, c % 2)))
    acc = sch.cache_write(block, 0, "local")
    sliced = inline_epilogue(sch, acc)
    pair = 2 if pairs else 1
    if rows:
        n, outer, tile, rc, ki, pvl, pl = _rows(sch, block, kt, pv, lanes, pair)
    else:
        n, outer, tile, rc, ki, pvl, pl = _flat(sch, block, [b for b in (acc, sliced) if b], kt, pv, lanes, pair)
    sch.reverse_compute_at(acc, tile)
    store = acc
    if sliced is not None:  # padded channels or columns: the tile is stored through the slice that drops them
        sch.reverse_compute_at(sliced, tile)
        sch.compute_inline(acc)
        store = sliced
    if worth_parallel(sch, block):
        sch.parallel(sch.fuse(n, outer))
    sch.unroll(ki)
    sch.unroll(pvl)
    if pairs:
        sch.decompose_reduction(block, rc)
        sch.tensorize(pl, pixel_pair_dot(machine.vector_bits))
        n, c, *pixel = sch.get_loops(copy)  # written in order: channel pairs, pixels, the pair
        co, ci = sch.split(c, [None, 2])
        sch.reorder(n, co, *pixel, ci)
        parallel_vectorize(sch, copy, 2)
    else:
        sch.vectorize(pl)
        sch.decompose_reduction(block, rc)
    last = sch.get_loops(store)[-1]
    if int(sch.get(last).extent) % lanes == 0:  # a row cut short by the slice is left to LLVM
        sch.vectorize(sch.split(last, [None, lanes])[1])
