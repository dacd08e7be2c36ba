"""Pad a conv's output channels up to a multiple of the vector width before legalization.

Pruned models have channel counts like 61 or 93. The conv rule puts output channels across vector
lanes; a ragged last vector would need a per-lane bounds check in the inner loop, which TVM only
compiles as scalar code (measured 13x slower). Padding the constant weight with zero filters and
slicing the extra channels off afterwards costs at most lanes - 1 wasted filters instead; FuseOps keeps
the slice in the conv's function, where the conv rule stores each tile through it.

The int8 pair intrinsic (intrinsics.py) reduces input channels two at a time: an int16 x int8 conv with
an odd channel count (an RGB stem, a pruned layer) gets one zero input channel and one zero weight
channel, which FuseOps also keeps inside the conv's function.

A conv that pointwise.py's rule takes needs whole vectors of pixels; at 14x14 (MobileNet's fourth stage)
or 28x28 the rows get two or four zero columns (14% more work; the rule is 1.5-2x faster than the
channel-lane one there: 96->576 1.37x -> 0.82x onnxruntime), sliced off the same way.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from edgeprune.compile.schedules.pointwise import MAX_REDUCTION

MAX_EXTRA_COLUMNS = 0.15  # of the row: 14 -> 16 and 28 -> 32 with 8 lanes


def pad_conv_channels(lanes: int, pairs: bool = False) -> tvm.transform.Pass:
    """The pass, for a given vector width in elements; `pairs`: also make int16 x int8 reductions even."""
    data, weight = wildcard(), is_const()
    pattern = is_op("relax.nn.conv2d")(data, weight)

    def rewrite(call: relax.Call, matches: dict) -> relax.Expr:
        attrs = call.attrs
        w = matches[weight].value.numpy()
        x = matches[data]
        extra = -w.shape[0] % lanes
        odd = pairs and w.shape[1] % 2 and str(x.ty.dtype) == "int16" and str(w.dtype) == "int8"
        layouts = (attrs.data_layout, attrs.kernel_layout, attrs.out_layout)
        if not (extra or odd) or attrs.groups != 1 or layouts != ("NCHW", "OIHW", "NCHW"):
            return call
        w = np.pad(w, [(0, extra), (0, int(odd)), (0, 0), (0, 0)])
        x = relax.op.nn.pad(x, [0, 0, 0, int(odd), 0, 0, 0, 0]) if odd else x
        conv = relax.op.nn.conv2d(x, relax.const(w), attrs.strides, attrs.padding, attrs.dilation, 1,
                                  "NCHW", "OIHW", "NCHW", attrs.out_dtype)
        return relax.op.strided_slice(conv, axes=[1], begin=[0], end=[w.shape[0] - extra]) if extra else conv

    @relax.transform.function_pass(opt_level=0, name="edgeprune.PadConvChannels")
    def run(func: relax.Function, _mod, _ctx) -> relax.Function:
        return rewrite_call(pattern, rewrite, func)

    return run


def pad_pointwise_columns(lanes: int, pairs: bool = False) -> tvm.transform.Pass:
    """The pass: convs that pointwise.py's rule takes but for a row that is not whole vectors (float 1x1 convs over
    at most MAX_REDUCTION inputs whose pixels do not fill whole vectors; float convs with a window, stride 1 or 2,
    at most MAX_REDUCTION multiply-adds per output) get zero columns on the right, up to a multiple of `lanes`, when
    that adds at most MAX_EXTRA_COLUMNS and makes rows of two vectors or more (7 -> 8 columns with 8 lanes gave
    one-vector tiles, measured slower than before). `pairs`: int16 x int8 1x1 convs too (the pair intrinsic's
    pointwise form). What the padded columns hold does not matter: they are sliced off."""
    data, weight = wildcard(), is_const()
    pattern = is_op("relax.nn.conv2d")(data, weight)

    def rewrite(call: relax.Call, matches: dict) -> relax.Expr:
        attrs, w = call.attrs, matches[weight].value.numpy()
        height, width = (int(d) for d in list(call.ty.shape)[2:])
        extra = -width % lanes
        strides, padding = [int(v) for v in attrs.strides], [int(v) for v in attrs.padding]
        dtypes = (str(matches[data].ty.dtype), str(w.dtype))
        pointwise = w.shape[2:] == (1, 1) and strides == [1, 1] and not any(padding)
        kinds = (("float32", "float32"), ("int16", "int8")) if pairs else (("float32", "float32"),)
        fits = height * width % lanes != 0 and dtypes in kinds if pointwise else \
            dtypes == ("float32", "float32") and strides in ([1, 1], [2, 2])
        if (not fits or w[0].size > MAX_REDUCTION or w.shape[0] % lanes or attrs.groups != 1
                or any(int(v) != 1 for v in attrs.dilation)
                or (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW")
                or not 0 < extra <= MAX_EXTRA_COLUMNS * width or width + extra < 2 * lanes):
            return call
        conv = relax.op.nn.conv2d(matches[data], call.args[1], attrs.strides,
                                  [*padding[:3], padding[3] + extra * strides[1]], attrs.dilation, 1,
                                  "NCHW", "OIHW", "NCHW", attrs.out_dtype)
        return relax.op.strided_slice(conv, axes=[3], begin=[0], end=[width])

    @relax.transform.function_pass(opt_level=0, name="edgeprune.PadPointwiseColumns")
    def run(func: relax.Function, _mod, _ctx) -> relax.Function:
        return rewrite_call(pattern, rewrite, func)

    return run
