"""Convs over short or strided rows as convolutions over runs of output pixels that cross row ends.

conv.py's tile is `vecs` output-channel vectors x `pixels` output pixels of one row, and the pixels must
divide the row (a ragged tile puts a branch in the inner loop). The tiles that keep Zen 2's FMA pipes
busy (2x6 and 3x4: 12 accumulators, at most 3 loads per 4 FMAs) then fit few rows: 7 and 14 pixels
leave 1x7 and 1x14 tiles (7 chains, or a load per FMA), 28 leaves 2x4 (8 chains). Inside resnet18
those convs ran 1.2-1.4x onnxruntime's (512->512 at 7x7: 68 GFLOP/s vs 82).

Here the output pixels are one axis q = y * W + x, cut into runs of RUN pixels: the conv becomes
out[n, k, t, p] = sum w[k, c, i, j] * x[n, c, (q // W) * s + i, (q % W) * s + j] with q = t * RUN + p,
which conv.py's rule tiles as it tiles rows of RUN pixels (the pixels of a tile are broadcast one by one,
so they need not be adjacent in memory; each pixel's address is computed once per tile). The pixels past
H * W (at most RUN - 1) recompute the last one and are sliced off; the bias, activation and residual
fuse into the slice's kernel, which the elementwise rule schedules. The data is always copied in the function
(padded or not), and conv.py's rule makes that copy with the channels blocked in cache lines.

1x1 convs are pointwise.py's (pixels in the lanes), but its maps must be whole pairs of vectors: 7x7 becomes
8x8, 31% more work. Over wide reductions (more than MAX_REDUCTION inputs) runs of 5 waste 2% and ran faster
(960->320 at 7x7: 1.26x -> 1.03x onnxruntime), so those 1x1 convs come here; padding.py leaves them alone.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from edgeprune.compile.schedules.common import OPAQUE, call_rewrite, plain_conv
from edgeprune.compile.schedules.conv import WIDE, _register_tile
from edgeprune.compile.schedules.machine import Machine
from edgeprune.compile.schedules.padding import map_padding
from edgeprune.compile.schedules.pointwise import MAX_REDUCTION

# pixels per run -> speed of its tile (2x6, 2x5) per pixel computed, measured on Zen 2 at 0.92-0.97 for 2x5: at
# 7x7, where runs of 6 round 49 pixels up to 54 and 5 up to 50, 5 won (512->512 2.79 -> 2.65 ms); at 14x14 6 did
RUNS = {6: 1.0, 5: 0.95}
# 1x1 convs over wide reductions whose maps pointwise.py pads by this much more run here (7x7 -> 8x8, 31%: 960->320
# 0.44 -> 0.36 ms, 1.26x -> 1.03x onnxruntime; at 14x14, padded to 14x16, both ran alike)
MIN_MAP_PADDING = 0.25
MAX_EXTRA_FILTERS = 0.2  # 40 -> 48: a 2x6 tile runs ~1.3x faster than the 1x7 or 1x14 the rows allow


def _wide(vecs: int, pixels: int) -> bool:
    """Whether a tile keeps the FMA pipes busy: WIDE accumulators, at most 3 loads per 4 FMAs."""
    return vecs * pixels >= WIDE and vecs + pixels <= 0.75 * vecs * pixels


def _run(channels: int, height: int, width: int, machine: Machine) -> tuple[int, int] | None:
    """(pixels per run, output channels with zero filters added) for a conv whose rows take no wide tile, or None
    when they do. A run's tile takes 2 vectors of channels, so an odd count of vectors (a pruned layer's 40 or
    88) gets zero filters, up to MAX_EXTRA_FILTERS of its own, sliced off with the extra pixels."""
    lanes, registers = machine.lanes, machine.registers
    if _wide(*_register_tile(channels, width, lanes, registers)):
        return None
    padded = channels + -channels % (2 * lanes)
    if padded > (1 + MAX_EXTRA_FILTERS) * channels:
        return None
    pixels = height * width
    costs = {run: -(-pixels // run) * run / speed for run, speed in RUNS.items()
             if _register_tile(padded, run, lanes, registers) == (2, run)}
    run = min(costs, key=costs.get, default=None)
    return None if run is None else (run, padded)


def _pixel_runs(data: te.Tensor, weight: te.Tensor, strides: tuple[int, int], padding: tuple[int, ...],
                height: int, width: int, run: int) -> te.Tensor:
    n, c, h, w = (int(d) for d in data.shape)
    k, _, kh, kw = (int(d) for d in weight.shape)
    top, left, bottom, right = padding
    # the data is always copied (padded or not): conv.py's rule makes the copy with channels blocked in lines
    padded = te.compute((n, c, h + top + bottom, w + left + right), lambda b, ch, y, x: tirx.if_then_else(
        tirx.all(y >= top, y < top + h, x >= left, x < left + w), data[b, ch, y - top, x - left],
        tirx.const(0, data.dtype)), name="pad") if any(padding) else te.compute(data.shape, data, name="plane")
    rc, ry, rx = te.reduce_axis((0, c), "rc"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    last = height * width - 1

    def conv(b, o, t, p):
        q = tirx.min(t * run + p, last)
        return te.sum(padded[b, rc, q // width * strides[0] + ry, q % width * strides[1] + rx] * weight[o, rc, ry, rx],
                      axis=[rc, ry, rx])

    return te.compute((n, k, -(-height * width // run), run), conv, name="conv2d_runs")


def _eligible(call: relax.Call, machine: Machine) -> tuple[int, int] | None:
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d" \
            or not isinstance(call.args[1], tvm.ir.GenericConst) \
            or not all(isinstance(d, tirx.IntImm) for d in call.ty.shape):
        return None
    w = call.args[1].value.numpy()
    if (str(call.args[0].ty.dtype), str(w.dtype)) != ("float32", "float32") or not plain_conv(call.attrs) \
            or str(call.attrs.out_dtype) not in ("None", "", "float32") or w.shape[0] % machine.lanes \
            or w[0].size <= MAX_REDUCTION:  # pointwise.py takes short reductions
        return None
    _, k, height, width = (int(d) for d in call.ty.shape)
    if w.shape[2:] == (1, 1):  # pointwise.py's, unless its map would need MIN_MAP_PADDING more pixels
        rows, columns = map_padding(height, width, machine.lanes)
        whole = height * width % (2 * machine.lanes) == 0 or rows or columns
        if any(int(v) for v in call.attrs.padding) or [int(v) for v in call.attrs.strides] != [1, 1] or whole \
                and (height + rows) * (width + columns) < (1 + MIN_MAP_PADDING) * height * width:
            return None
    return _run(k, height, width, machine)


def leaves_to_runs(machine: Machine):
    """What padding.py must leave alone: the 1x1 convs this pass takes (it runs later, after the channel padding)."""
    return lambda call: _eligible(call, machine) is not None


def pixel_runs(machine: Machine) -> tvm.transform.Pass:
    """The Relax pass: eligible convs to runs of pixels, sliced back to [N, K, H, W]."""

    def rewrite(builder: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
        shape = _eligible(call, machine)
        if shape is None:
            return None
        run, padded = shape
        n, k, height, width = (int(d) for d in call.ty.shape)
        w = call.args[1].value.numpy()
        weight = relax.const(np.pad(w, [(0, padded - k), (0, 0), (0, 0), (0, 0)])) if padded > k else call.args[1]
        runs = builder.call_te(_pixel_runs, call.args[0], weight, tuple(int(v) for v in call.attrs.strides),
                               tuple(int(v) for v in call.attrs.padding), height, width, run,
                               primfunc_name_hint="conv2d_runs", primfunc_attrs={"op_pattern": OPAQUE})
        flat = relax.op.reshape(runs, [n, padded, -(-height * width // run) * run])
        flat = relax.op.strided_slice(flat, axes=[1, 2], begin=[0, 0], end=[k, height * width])
        return relax.op.reshape(flat, [n, k, height, width])

    return call_rewrite("edgeprune.PixelRuns", rewrite)
