"""Schedules for a single in-order core without SIMD: fewer passes over memory and less loop overhead.

TVM's legalized kernels materialize every stage: the padded input, the raw accumulator, then bias,
activation and requantization each in a full buffer, with the zero-initialisation tested inside the
multiply-accumulate loop. Per fused kernel with one reduction (found by `kinds.classify`), STEPS by kind:
- copies feeding the reduction are inlined; padding is computed per output row, only the input rows the
  window needs (a few rows of workspace, and no bounds test per multiply-accumulate: inlined padding
  measured 1.9x the instructions of the int8 Fashion-MNIST CNN);
- the epilogue (bias, activation, the whole requantization) folds into the accumulator's store, which
  moves under the output loops: the accumulator is a C local, not a buffer;
- the initialisation leaves the reduction loops, and the kernel window's short loops are unrolled.
A step that does not fit a kernel is skipped; the kernel keeps what the earlier steps gave it.
"""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from edgeprune.backends.micro import dsp
from edgeprune.compile.schedules.common import inline_epilogue
from edgeprune.compile.schedules.kinds import DATA_PAR, classify


def _inline_copies(sch: s_tir.Schedule, block) -> None:
    for producer in sch.get_producers(block):
        if isinstance(sch.get(producer).body.value, tvm.ir.TensorLoad):
            sch.compute_inline(producer)


def _pad_by_rows(sch: s_tir.Schedule, block) -> None:
    """Padding computed per output row, just the input rows the window needs: a workspace of a few rows, and no
    bounds test in the multiply-accumulate loop (inlined, the test cost 1.9x the instructions of the int8 CNN)."""
    pads = [p for p in sch.get_producers(block) if not isinstance(sch.get(p).body.value, tvm.ir.TensorLoad)]
    spatial = sum(1 for iv in sch.get(block).iter_vars if iv.iter_type == DATA_PAR)
    if not pads or spatial != 4:
        return
    _, channel, row, _ = sch.get_loops(block)[:4]
    sch.reorder(row, channel)  # the rows serve every output channel before they are replaced
    for pad in pads:
        sch.compute_at(pad, row)


def _fold_epilogue(sch: s_tir.Schedule, block) -> None:
    spatial = sum(1 for iv in sch.get(block).iter_vars if iv.iter_type == DATA_PAR)
    loops = sch.get_loops(block)
    if spatial == 0 or spatial >= len(loops):
        return
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    position = next(i for i, b in enumerate(blocks) if sch.get(b).same_as(sch.get(block)))
    out_domain = [int(iv.dom.extent) for iv in sch.get(block).iter_vars if iv.iter_type == DATA_PAR]
    if any([int(iv.dom.extent) for iv in sch.get(tail).iter_vars] != out_domain for tail in blocks[position + 1:]):
        return  # an epilogue over another domain (padded channels): TVM would compute only the anchor's part of it
    for tail in blocks[position + 1:-1]:  # requantization reads one value twice: a chain only once inlined
        try:
            sch.compute_inline(tail)
        except s_tir.ScheduleError:
            pass
    # "global" scope: a small buffer becomes a C local the compiler keeps in a register ("local" goes to a workspace)
    acc = sch.cache_write(block, 0, "global")
    sliced = inline_epilogue(sch, acc)
    sch.reverse_compute_at(acc, loops[spatial - 1])
    if sliced is not None:
        sch.reverse_compute_at(sliced, loops[spatial - 1])
        sch.compute_inline(acc)
    sch.decompose_reduction(block, loops[spatial])


def _unroll_window(sch: s_tir.Schedule, block) -> None:
    """The kernel window's short loops (3x3) as straight code: no counter, branch or index update per MAC."""
    spatial = sum(1 for iv in sch.get(block).iter_vars if iv.iter_type == DATA_PAR)
    for loop in sch.get_loops(block)[spatial + 1:]:
        if int(sch.get(loop).extent) <= UNROLL_MAX:
            sch.unroll(loop)


UNROLL_MAX = 7
# Per kind of anchor. Max-reductions are not unrolled: TVM's C printer binds `max` operands to locals keyed by
# their text, and in straight-line code reuses a local across the store that changed it (wrong results).
COMMON = (_inline_copies, _pad_by_rows, _fold_epilogue)
STEPS = {"conv2d": (*COMMON, _unroll_window), "depthwise": (*COMMON, _unroll_window), "matmul": (*COMMON, _unroll_window),
         "pool": COMMON, "other": COMMON}
# Cores with the DSP extension: convolutions reduce a per-pixel column with an SMLAD micro-kernel (dsp.py); when
# its steps do not fit, the window loops are unrolled as above.
DSP_STEPS = STEPS | {"conv2d": (_inline_copies, _pad_by_rows, dsp.column_per_pixel, _fold_epilogue, dsp.tensorize_dot,
                                _unroll_window)}


def _apply(func: tirx.PrimFunc, steps: list) -> tuple[s_tir.Schedule, s_tir.schedule.SBlockRV]:
    sch = s_tir.Schedule(func)
    block = classify(sch).block
    for step in steps:
        step(sch, block)
    return sch, block


def schedule_kernel(func: tirx.PrimFunc, dsp_core: bool = False) -> tirx.PrimFunc:
    """The steps of the kernel's kind that apply, in order. A failed step may leave half its changes: the schedule
    is then rebuilt from the steps before it (TVM 0.27 cannot copy a schedule once it has tensorized)."""
    sch, block = _apply(func, [])
    done: list = []
    for step in (DSP_STEPS if dsp_core else STEPS).get(classify(sch).kind, ()):
        try:
            step(sch, block)
        except (s_tir.ScheduleError, tvm.error.InternalError, ValueError):  # ValueError: block tensorized away
            sch, block = _apply(func, done)
            continue
        done.append(step)
    return sch.mod["main"]
