"""int8 convolutions on cores with the DSP extension (Cortex-M4/M7): SMLAD dual 16-bit multiply-accumulates.

The integer lowering computes conv2d(int16 x - zx, int8 W) -> int32. On a DSP core:
- the weights are stored widened to int16 (`widen_weights`, a Relax rewrite): one 32-bit load then feeds
  one SMLAD with no unpacking (SXTB16 + PKHBT per weight pair measured 2.25 instructions per MAC against
  1.6), for twice the weights' flash;
- per output pixel, the window is copied into a contiguous column (a TIR `cache_read` placed at the pixel,
  in the weights' own (channel, row, column) order, so TVM's buffer compaction makes it contiguous);
- the reduction over that column, for a block of output channels at once, is tensorized into a call of a
  C micro-kernel (`files/ep_dsp.h`). TVM's LowerMatchBuffer refuses the call unless both operands really
  are contiguous, so a layout this schedule did not foresee fails the build instead of computing garbage;
  a kernel whose shape does not fit keeps the plain loops.
"""
from __future__ import annotations

import tvm
from tvm import relax, s_tir
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.script import tirx as T

from edgeprune.compile.schedules.kinds import DATA_PAR

OC_BLOCKS = (4, 2)  # output channels per micro-kernel call (the first that divides the count): they share x loads
# A column shorter than this (a first layer's 1x3x3) runs faster as TVM's unrolled loops: the call, its tail loop
# and the copy cost more than they save (measured: 1.13 M instructions against 0.99 M for the 1->16 3x3 stem).
MIN_COLUMN = 16
UNROLL_MAX = 7  # as the schedules' window loops
COLUMN = "ep_dsp_column"  # the annotation that marks the per-pixel column copy
# (data, weight, accumulator) dtypes a micro-kernel computes, and its C name (suffixed with the channel block)
KERNELS = {("int16", "int16", "int32"): "ep_dot_s16s16"}
CONV2D = tvm.ir.Op.get("relax.nn.conv2d")
_registered: set[str] = set()


def _dtypes(sch: s_tir.Schedule, block) -> tuple[str, str, str] | None:
    """(data, weight, accumulator) dtypes of a multiply-accumulate block, when a micro-kernel computes them."""
    out = sch.get(block).writes[0].source
    operands = [str(r.source.dtype) for r in sch.get(block).reads if not r.source.same_as(out)]
    if len(operands) != 2:
        return None
    for a, b in (operands, operands[::-1]):
        if (a, b, str(out.dtype)) in KERNELS:
            return a, b, str(out.dtype)
    return None


def _intrinsic(shape: tuple[int, ...], oc: int, dtypes: tuple[str, str, str]) -> str:
    """A tensor intrinsic for acc[oc] += sum over (c, kh, kw) of x[c, kh, kw] * w[oc, c, kh, kw], this shape."""
    xd, wd, ad = dtypes
    c, kh, kw = shape
    name = f"{KERNELS[dtypes]}_{oc}x{c}x{kh}x{kw}"
    if name in _registered:
        return name

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, d: T.handle):
        X = T.match_buffer(a, (1, c, kh, kw), xd, offset_factor=1)
        W = T.match_buffer(b, (oc, c, kh, kw), wd, offset_factor=1)
        Acc = T.match_buffer(d, (1, oc, 1, 1), ad, offset_factor=1)
        with T.sblock("root"):
            T.reads(Acc[0, 0:oc, 0, 0], X[0, 0:c, 0:kh, 0:kw], W[0:oc, 0:c, 0:kh, 0:kw])
            T.writes(Acc[0, 0:oc, 0, 0])
            for o, rc, ry, rx in T.grid(oc, c, kh, kw):
                with T.sblock("update"):
                    vo, vc, vy, vx = T.axis.remap("SRRR", [o, rc, ry, rx])
                    Acc[0, vo, 0, 0] = Acc[0, vo, 0, 0] + T.Cast(ad, X[0, vc, vy, vx]) * T.Cast(ad, W[vo, vc, vy, vx])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, d: T.handle):
        X = T.match_buffer(a, (1, c, kh, kw), xd, offset_factor=1)
        W = T.match_buffer(b, (oc, c, kh, kw), wd, offset_factor=1)
        Acc = T.match_buffer(d, (1, oc, 1, 1), ad, offset_factor=1)
        with T.sblock("root"):
            T.reads(Acc[0, 0:oc, 0, 0], X[0, 0:c, 0:kh, 0:kw], W[0:oc, 0:c, 0:kh, 0:kw])
            T.writes(Acc[0, 0:oc, 0, 0])
            T.evaluate(T.call_extern("int32", f"{KERNELS[dtypes]}_{oc}", T.address_of(X[0, 0, 0, 0]),
                                     T.address_of(W[0, 0, 0, 0]), c * kh * kw, T.address_of(Acc[0, 0, 0, 0])))

    s_tir.TensorIntrin.register(name, desc, impl, override=True)
    _registered.add(name)
    return name


def _bound_loops(sch: s_tir.Schedule, block) -> list:
    """The loop bound to each spatial iteration variable of the block, in the block's (n, c, h, w) order."""
    realize = sch.get_sref(block).parent.stmt.body  # the innermost loop holds just this block
    if not hasattr(realize, "iter_values"):
        raise s_tir.ScheduleError("the block shares its loop")
    by_var = {sch.get(loop).loop_var: loop for loop in sch.get_loops(block)}
    return [by_var.get(value) for value, iv in zip(realize.iter_values, realize.block.iter_vars)
            if iv.iter_type == DATA_PAR]


def _position(sch: s_tir.Schedule, block, loop) -> int:
    return next(i for i, l in enumerate(sch.get_loops(block)) if sch.get(l).same_as(sch.get(loop)))


def column_per_pixel(sch: s_tir.Schedule, block) -> None:
    """Pixel loops outside the channel loop (split by a channel block), and the window copied per pixel."""
    dtypes = _dtypes(sch, block)
    if dtypes is None:
        raise s_tir.ScheduleError("no DSP micro-kernel for these dtypes")
    n, ff, yy, xx = _bound_loops(sch, block)
    blocks = [b for b in OC_BLOCKS if ff is not None and int(sch.get(ff).extent) % b == 0]
    if None in (n, ff, yy, xx) or not blocks:
        raise s_tir.ScheduleError("not a plain conv2d loop nest")
    length = 1
    for iv in sch.get(block).iter_vars:
        length *= int(iv.dom.extent) if iv.iter_type != DATA_PAR else 1
    if length < MIN_COLUMN:
        raise s_tir.ScheduleError("column too short for the micro-kernel to pay")
    # only the loops below the channel loop move (padding may sit above it, computed per output row)
    below = [loop for loop in (yy, xx) if _position(sch, block, loop) > _position(sch, block, ff)]
    sch.reorder(*below, ff)
    sch.split(ff, [None, blocks[0]])
    data = next(i for i, r in enumerate(sch.get(block).reads) if str(r.source.dtype) == dtypes[0])
    column = sch.cache_read(block, data, "global")  # the reduction's data, per pixel
    sch.compute_at(column, xx)
    sch.annotate(column, COLUMN, True)
    _unroll_short(sch, column, _position(sch, column, xx) + 1)  # window rows and columns: straight copies


def tensorize_dot(sch: s_tir.Schedule, block) -> None:
    """The reduction of a channel block over the column as one micro-kernel call (after the epilogue fold)."""
    dtypes = _dtypes(sch, block)
    if not any(COLUMN in sch.get(p).annotations for p in sch.get_producers(block)):
        raise s_tir.ScheduleError("no contiguous column to hand to the micro-kernel")
    loops = sch.get_loops(block)
    spatial = sum(1 for iv in sch.get(block).iter_vars if iv.iter_type == DATA_PAR)
    inner = loops[spatial]  # the channel block loop, above the (c, kh, kw) reduction
    shape = tuple(int(sch.get(l).extent) for l in loops[spatial + 1:])
    oc = int(sch.get(inner).extent)
    if len(shape) != 3 or oc not in OC_BLOCKS:
        raise s_tir.ScheduleError("unexpected loop nest for the DSP micro-kernel")
    for neighbour in (*sch.get_producers(block), *sch.get_consumers(block)):  # init and requantization per channel
        if COLUMN not in sch.get(neighbour).annotations:
            _unroll_short(sch, neighbour, len(sch.get_loops(neighbour)) - 1)
    sch.tensorize(inner, _intrinsic(shape, oc, dtypes))


def _unroll_short(sch: s_tir.Schedule, block, first: int) -> None:
    """Unroll the block's loops from position `first` on that are at most UNROLL_MAX long."""
    for loop in sch.get_loops(block)[first:]:
        if int(sch.get(loop).extent) <= UNROLL_MAX:
            sch.unroll(loop)


@mutator
class _Widen(PyExprMutator):
    """int8 weights of the convolutions column_per_pixel takes, as int16 constants."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op != CONV2D or not isinstance(call.args[1], tvm.ir.expr.GenericConst):
            return call
        weight, a = call.args[1].value.numpy(), call.attrs
        fits = (str(call.args[0].ty.dtype), str(weight.dtype)) == ("int16", "int8") and int(a.groups) == 1 \
            and (a.data_layout, a.kernel_layout) == ("NCHW", "OIHW") and weight.shape[0] % min(OC_BLOCKS) == 0 \
            and weight[0].size >= MIN_COLUMN
        if not fits:  # TVM's loops keep the int8 weights
            return call
        return relax.Call(call.op, [call.args[0], relax.const(weight.astype("int16"))], call.attrs, call.ty_args)


def widen_weights(mod: tvm.IRModule) -> tvm.IRModule:
    """int8 conv2d weights as int16 constants, for the micro-kernels' one-load-per-SMLAD inner loop."""
    out = tvm.IRModule(mod.functions, attrs=mod.attrs)  # the caller's module stays as it was
    out["main"] = _Widen(out).visit_expr(out["main"])
    return out
