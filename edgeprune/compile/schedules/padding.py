"""Pad a conv's output channels up to a multiple of the vector width before legalization.

Pruned models have channel counts like 61 or 93. The conv rule puts output channels across vector
lanes; a ragged last vector would need a per-lane bounds check in the inner loop, which TVM only
compiles as scalar code (measured 13x slower). Padding the constant weight with zero filters and
slicing the extra channels off afterwards costs at most lanes - 1 wasted filters instead; FuseOps keeps
the slice in the conv's function, where the conv rule stores each tile through it.

The int8 pair intrinsic (intrinsics.py) reduces input channels two at a time: an int16 x int8 conv with
an odd channel count (an RGB stem, a pruned layer) gets one zero input channel and one zero weight
channel, which FuseOps also keeps inside the conv's function.

A conv that pointwise.py's rule takes needs whole vectors of pixels. A 1x1 conv's pixels are one flat axis,
so its map gets zero columns and rows until it holds whole pairs of vectors: 14x14 -> 14x16, 7x7 -> 8x8
(31% more work, yet 576->160 at 7x7 went 1.60x -> 1.09x onnxruntime, 320->1280 1.89x -> 1.21x:
the channel-lane rule's 1x7 tiles ran at 47 GFLOP/s). A conv with a window gets zero columns, up to whole
vectors per row. What the padding computes is sliced off the same way.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from edgeprune.compile.schedules.common import plain_conv
from edgeprune.compile.schedules.pointwise import MAX_REDUCTION

MAX_EXTRA_COLUMNS = 0.15  # of a windowed conv's row: 28 -> 32 with 8 lanes
# A strided 1x1 conv smaller than this keeps the channel-lane rule: the copy's own kernel call costs more than it
# saves (32->64 at 14x14, stride 2: 4 -> 6 us)
MIN_STRIDED_MACS = 1 << 20
MAX_EXTRA_PIXELS = 0.35  # of a 1x1 conv's map: 7x7 -> 8x8 (31%) with 8 lanes; 6x6 -> 6x8 (33%)


def map_padding(height: int, width: int, lanes: int) -> tuple[int, int]:
    """(rows, columns) of zeros that make a 1x1 conv's map whole pairs of vectors in rows of whole vectors (so
    that each tile pointwise.py stores through the slice is whole rows or part of one) at the least extra
    work (columns before rows on a tie), or (0, 0) when that costs more than MAX_EXTRA_PIXELS."""
    pixels = height * width
    if pixels % (2 * lanes) == 0:
        return 0, 0
    options = [(h * w, h - height, w - width) for h in range(height, 2 * height + 1)
               for w in range(width, width + lanes) if w % lanes == 0 and h * w % (2 * lanes) == 0]
    area, rows, columns = min(options)
    return (rows, columns) if area <= (1 + MAX_EXTRA_PIXELS) * pixels else (0, 0)


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


def pad_pointwise_pixels(lanes: int, pairs: bool = False, leave=None) -> tvm.transform.Pass:
    """The pass: strided float 1x1 convs of MIN_STRIDED_MACS or more get their pixels copied out first, so that
    pointwise.py's rule takes them; convs that it takes but for pixels that are not whole vectors get zero pixels
    on the right and at the bottom: float 1x1 convs (`pairs`: int16 x int8 ones too, the pair intrinsic's
    pointwise form) as map_padding says; float convs with a window, stride 1 or 2, at most MAX_REDUCTION
    multiply-adds per output, zero columns up to a multiple of `lanes` when that adds at most
    MAX_EXTRA_COLUMNS and makes rows of two vectors or more (7 -> 8 columns with 8 lanes gave one-vector
    tiles, measured slower than before). What the padding computes does not matter: it is sliced off.
    `leave(call)`: convs a later pass takes instead (pixel_runs.py's)."""
    data, weight = wildcard(), is_const()
    pattern = is_op("relax.nn.conv2d")(data, weight)

    def rewrite(call: relax.Call, matches: dict) -> relax.Expr:
        if leave is not None and leave(call):
            return call
        attrs, w = call.attrs, matches[weight].value.numpy()
        height, width = (int(d) for d in list(call.ty.shape)[2:])
        strides, padding = [int(v) for v in attrs.strides], [int(v) for v in attrs.padding]
        dtypes = (str(matches[data].ty.dtype), str(w.dtype))
        if w.shape[0] % lanes or not plain_conv(attrs):
            return call
        source = matches[data]
        if (w.shape[2:] == (1, 1) and strides != [1, 1] and not any(padding) and dtypes == ("float32", "float32")
                and w.size * height * width >= MIN_STRIDED_MACS):
            # the strided pixels copied out first (a quarter of the data at stride 2), the conv then one at stride 1
            # for pointwise.py (resnet18's downsamples, one layer at a time: 64->128 1.56x -> 0.79x onnxruntime,
            # 256->512 1.49x -> 1.07x)
            source = relax.op.strided_slice(source, axes=[2, 3], begin=[0, 0],
                                            end=[int(d) for d in list(source.ty.shape)[2:]], strides=strides)
            strides = [1, 1]
        if w.shape[2:] == (1, 1) and strides == [1, 1] and not any(padding):
            integer = pairs and dtypes == ("int16", "int8") and w[0].size <= MAX_REDUCTION
            rows, columns = map_padding(height, width, lanes) if integer or dtypes == ("float32", "float32") else (0, 0)
            if integer and rows:  # int8 7x7 -> 8x8 measured slower (160->960: 1.56x -> 2.15x onnxruntime)
                rows, columns = 0, 0
        else:
            rows, columns = 0, -width % lanes
            if (dtypes != ("float32", "float32") or strides not in ([1, 1], [2, 2]) or w[0].size > MAX_REDUCTION
                    or columns > MAX_EXTRA_COLUMNS * width or width + columns < 2 * lanes):
                columns = 0
        if not rows and not columns and source.same_as(matches[data]):
            return call
        conv = relax.op.nn.conv2d(source, call.args[1], strides,
                                  [padding[0], padding[1], padding[2] + rows * strides[0],
                                   padding[3] + columns * strides[1]], attrs.dilation, 1,
                                  "NCHW", "OIHW", "NCHW", attrs.out_dtype)
        return relax.op.strided_slice(conv, axes=[2, 3], begin=[0, 0], end=[height, width]) if rows or columns \
            else conv

    @relax.transform.function_pass(opt_level=0, name="edgeprune.PadPointwisePixels")
    def run(func: relax.Function, _mod, _ctx) -> relax.Function:
        return rewrite_call(pattern, rewrite, func)

    return run
