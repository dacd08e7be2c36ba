"""3x3 convs at stride 1 as one flat convolution over padded rows, output pixels across the lanes.

conv.py's rule keeps output channels in the lanes, and the registers AVX2 has (16) leave room for 8
accumulators of a 2x4 tile beside its weights and broadcast: on Zen 2, whose FMA takes 5 cycles, 8 chains
keep the two FMA pipes 80% busy (64->64 at 56x56 ran at 75 GFLOP/s, onnxruntime's kernels at 90). Pixels
in the lanes allow a 4x3 tile (4 output channels x 3 vectors of pixels: 12 accumulators, 3 data vectors,
one broadcast weight), but a 3x3 window over rows of 56 pixels breaks a vector at every row end. Laid out
flat, with each padded row W + 2 long, the window is a shift: out[k, q] = sum w[k, c, i, j] *
x[c, q + i*(W + 2) + j] for q = y*(W + 2) + x, and vectors of q can run across row ends. The two extra
outputs per row (and the rounding of H*(W + 2) up to whole tiles) are computed from neighbouring pixels
and sliced off; that waste limits the rewrite to rows of MIN_WIDTH or more (measured, one layer at a
time: 64->64 at 56x56 2.97 -> 2.49 ms, 128->128 at 28x28 2.83 -> 2.53 ms; at 14x14 the tile
rounding wasted 22% and it lost), and to rows of MIN_WIDTH_WIDE_REDUCTION or more for convs over more than
MAX_REDUCTION inputs, which pixel_runs.py tiles without waste.

The rewrite (`flat_convs`) runs on Relax before legalization: the conv becomes a TE function of ours
(zero padding written into the flat plane, then the conv) and slices that drop the extra outputs; the
bias, activation and residual that followed the conv fuse into those slices' kernel, which the
elementwise rule schedules. The function is opaque to FuseOps, so its one reduction stays the anchor.
"""
from __future__ import annotations

import tvm
from tvm import relax, s_tir, te, tirx

from edgeprune.compile.schedules.common import OPAQUE, call_rewrite, plain_conv, prepack, read_index, worth_parallel
from edgeprune.compile.schedules.kinds import Anchor
from edgeprune.compile.schedules.machine import Machine
from edgeprune.compile.schedules.pointwise import MAX_REDUCTION

TILE = (4, 3)  # output channels x pixel vectors: 12 accumulators + 3 data vectors + 1 broadcast = 16 registers
MIN_WIDTH = 28
MAX_WASTE = 0.10  # computed outputs beyond H*W: 56 -> 4%, 28 -> 7%
# below this width a wide reduction runs faster in pixel_runs.py's tiles, which waste nothing (128->128 at 28x28:
# 2.63 -> 2.49 ms); at 56x56 the flat form stays 2% ahead (64->64: 2.61 vs 2.66 ms)
MIN_WIDTH_WIDE_REDUCTION = 56


def geometry(height: int, width: int, lanes: int) -> tuple[int, int, int] | None:
    """(row stride, computed outputs, rows of the padded plane) of the flat form, or None when it wastes too much."""
    stride = width + 2
    step = TILE[1] * lanes
    outputs = -(-height * stride // step) * step
    rows = -(-(outputs + 2 * stride + 2) // stride)  # the last tile's window reaches this far
    if width < MIN_WIDTH or outputs > (1 + MAX_WASTE) * height * width:
        return None
    return stride, outputs, rows


def _flat_conv(data: te.Tensor, weight: te.Tensor, stride: int, outputs: int, rows: int) -> te.Tensor:
    n, c, h, w = (int(d) for d in data.shape)
    k = int(weight.shape[0])
    plane = te.compute((n, c, rows, stride), lambda b, ch, y, x: tirx.if_then_else(
        tirx.all(y >= 1, y <= h, x >= 1, x <= w), data[b, ch, y - 1, x - 1], tirx.const(0, data.dtype)),
        name="plane")
    rc, ry, rx = te.reduce_axis((0, c), "rc"), te.reduce_axis((0, 3), "ry"), te.reduce_axis((0, 3), "rx")

    def window(b, o, q):
        at = q + ry * stride + rx
        return te.sum(plane[b, rc, at // stride, at % stride] * weight[o, rc, ry, rx], axis=[rc, ry, rx])

    return te.compute((n, k, outputs), window, name="flat_conv")


def _eligible(call: relax.Call, lanes: int) -> tuple[int, int, int] | None:
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d" \
            or not isinstance(call.args[1], tvm.ir.GenericConst):
        return None
    attrs, data = call.attrs, call.args[0]
    w = call.args[1].value.numpy()
    if (str(data.ty.dtype), str(w.dtype)) != ("float32", "float32") or tuple(w.shape[2:]) != (3, 3) \
            or w.shape[0] % TILE[0] or not plain_conv(attrs) or [int(v) for v in attrs.strides] != [1, 1] \
            or [int(v) for v in attrs.padding] != [1, 1, 1, 1] or str(attrs.out_dtype) not in ("None", "", "float32"):
        return None
    if not all(isinstance(d, tirx.IntImm) for d in data.ty.shape):  # a symbolic size: nothing to lay out
        return None
    _, _, height, width = (int(d) for d in data.ty.shape)
    if w[0].size > MAX_REDUCTION and width < MIN_WIDTH_WIDE_REDUCTION:
        return None  # pixel_runs.py's
    return geometry(height, width, lanes)


def flat_convs(lanes: int) -> tvm.transform.Pass:
    """The Relax pass: eligible 3x3 convs to the flat form, sliced back to [N, K, H, W]."""

    def rewrite(builder: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
        shape = _eligible(call, lanes)
        if shape is None:
            return None
        stride, outputs, rows = shape
        n, k, height, width = (int(d) for d in call.ty.shape)
        flat = builder.call_te(_flat_conv, call.args[0], call.args[1], stride, outputs, rows,
                               primfunc_name_hint="flat_conv2d", primfunc_attrs={"op_pattern": OPAQUE})
        flat = relax.op.strided_slice(flat, axes=[2], begin=[0], end=[height * stride])
        grid = relax.op.reshape(flat, [n, k, height, stride])
        return relax.op.strided_slice(grid, axes=[3], begin=[0], end=[width])

    return call_rewrite("edgeprune.FlatConvs", rewrite)


def schedule_flat_conv(sch: s_tir.Schedule, anchor: Anchor, machine: Machine) -> None:
    """The plane is written flat ([N, C, rows * (W + 2)], zeros and all, in parallel); weights repacked to
    [K/4, C, 3, 3, 4] at compile time; tiles of 4 channels x 3 vectors of q keep their accumulators in
    registers over the whole reduction and are stored as vectors."""
    block = anchor.block
    lanes = machine.lanes
    kt, pv = TILE
    plane = sch.get_producers(block)[0]
    stride = int(sch.get(plane).writes[0].source.shape[-1])
    sch.transform_layout(plane, ("write", 0), lambda b, ch, y, x: (b, ch, y * stride + x))
    b, ch = sch.get_loops(plane)[:2]
    if worth_parallel(sch, plane):
        ch = sch.fuse(b, ch)
        sch.parallel(ch)
    sch.decompose_padding(plane, ch)  # per channel: the zeros (one run), then the rows (vectors, no branch)
    row = sch.get_loops(plane)[-1]
    if int(sch.get(row).extent) % lanes == 0:
        sch.vectorize(sch.split(row, [None, lanes])[1])
    if not prepack(sch, block, read_index(sch, block, anchor.weight),
                   lambda o, c, y, x: (o // kt, c, y, x, o % kt)):
        return
    acc = sch.cache_write(block, 0, "local")
    n, k, q, rc, ry, rx = sch.get_loops(block)
    qo, qv, ql = sch.split(q, [None, pv, lanes])
    ko, ki = sch.split(k, [None, kt])
    sch.reorder(n, qo, ko, rc, ry, rx, ki, qv, ql)  # data vectors loaded once per step, reused by 4 channels
    sch.reverse_compute_at(acc, ko)
    if worth_parallel(sch, block):
        sch.parallel(sch.fuse(n, qo))
    sch.unroll(ki)
    sch.unroll(qv)
    sch.vectorize(ql)
    sch.decompose_reduction(block, rc)
    sch.vectorize(sch.split(sch.get_loops(acc)[-1], [None, lanes])[1])
