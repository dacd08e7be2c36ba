"""Data layouts VTA's load unit reads (VTA.md, Layouts).

One DRAM element is a block of channels of one pixel (activations) or one block_out x block_in weight block,
so a tile of a layer is a 2-D strided LOAD. Channels are zero-padded to whole blocks: padded input channels
meet zero weights and padded output channels are dropped on unpacking, so padding never changes a result.
"""
from __future__ import annotations

import numpy as np


def blocks(channels: int, block: int) -> int:
    return -(-channels // block)


def _pad_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - a.shape[axis])
    return np.pad(a, widths)


def pack_activations(x: np.ndarray, block: int) -> np.ndarray:
    """NCHW with N = 1 -> NCHW1n{block}c: (1, C/block, H, W, 1, block) int8."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"activations must be NCHW with batch 1, got shape {x.shape}")
    _, c, h, w = x.shape
    x = _pad_axis(x.astype(np.int8, copy=False), 1, blocks(c, block) * block)
    return np.ascontiguousarray(x.reshape(1, -1, block, h, w).transpose(0, 1, 3, 4, 2)[:, :, :, :, None, :])


def unpack_activations(packed: np.ndarray, channels: int) -> np.ndarray:
    """The inverse of `pack_activations`, dropping the padded channels."""
    _, cb, h, w, _, block = packed.shape
    return np.ascontiguousarray(packed[:, :, :, :, 0, :].transpose(0, 1, 4, 2, 3).reshape(1, cb * block, h, w)
                                [:, :channels])


def pack_weights(w: np.ndarray, block_out: int, block_in: int) -> np.ndarray:
    """OIHW -> OIHW{block_out}o{block_in}i: (O/bo, I/bi, KH, KW, bo, bi) int8, each block stored out-major."""
    if w.ndim != 4:
        raise ValueError(f"weights must be OIHW, got shape {w.shape}")
    o, i, kh, kw = w.shape
    w = _pad_axis(_pad_axis(w.astype(np.int8, copy=False), 0, blocks(o, block_out) * block_out),
                  1, blocks(i, block_in) * block_in)
    return np.ascontiguousarray(w.reshape(-1, block_out, w.shape[1] // block_in, block_in, kh, kw)
                                .transpose(0, 2, 4, 5, 1, 3))


def pack_bias(bias: np.ndarray, block_out: int) -> np.ndarray:
    """int32 per output channel -> accumulator elements: (O/bo, 1, bo) little-endian int32, as DRAM holds them."""
    if bias.ndim != 1:
        raise ValueError(f"bias must be one int32 per output channel, got shape {bias.shape}")
    return _pad_axis(bias.astype("<i4"), 0, blocks(bias.size, block_out) * block_out).reshape(
        -1, 1, block_out)
