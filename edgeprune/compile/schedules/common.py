"""Schedule steps more than one rule takes, and what the Relax rewrites share."""
from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax, s_tir, tirx

PREPACK = "meta_schedule.layout_rewrite_preproc"  # the mark relax.transform.SplitLayoutRewritePreproc looks for
# Below this many block iterations (~0.2 ms on one core) a kernel runs on one thread: every parallel
# region ends in a barrier, which costs microseconds on an idle machine and milliseconds when another
# process holds a core (measured: tinycnn took 15 ms on 2 threads vs 0.24 ms on 1, with a busy core).
PARALLEL_MIN_WORK = 1 << 22


OPAQUE = 8  # relax's OpPatternKind kOpaque: FuseOps leaves a function of ours alone


Rewrite = Callable[[relax.BlockBuilder, relax.Call], relax.Expr | None]


def call_rewrite(name: str, rewrite: Rewrite) -> tvm.transform.Pass:
    """A module pass offering every Relax call (its arguments rewritten first) to `rewrite(builder, call)`, which
    returns the replacement or None. The rewrites that emit TE functions of ours (flat.py, pixel_runs.py) need the
    builder, which pattern rewriting (rewrite_call) does not give."""

    @relax.expr_functor.mutator
    class Mutator(relax.PyExprMutator):
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = super().visit_call_(call)
            replacement = rewrite(self.builder_, call)
            return call if replacement is None else replacement

    @tvm.transform.module_pass(opt_level=0, name=name)
    def run(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mutator = Mutator(mod)
        for gvar, func in mod.functions.items():
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gvar, mutator.visit_expr(func))
        return mutator.builder_.get()

    return run


def plain_conv(attrs) -> bool:
    """Whether a Relax conv2d is the kind every rewrite here assumes: one group, no dilation, NCHW and OIHW."""
    return attrs.groups == 1 and all(int(v) == 1 for v in attrs.dilation) \
        and (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) == ("NCHW", "OIHW", "NCHW")


def worth_parallel(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether the block iterates enough (its whole domain, reductions included) to pay for a barrier."""
    work = 1
    for iv in sch.get(block).iter_vars:
        work *= int(iv.dom.extent)
    return work >= PARALLEL_MIN_WORK


def prepack(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, read: int, index_map, pad: bool = False) -> bool:
    """Give a constant operand the layout the inner loop wants; the copy runs once, at compile time.

    Only buffers the Relax caller passes as constants qualify (the `layout_free_buffers` attribute that
    AttachAttrLayoutFreeBuffers sets); SplitLayoutRewritePreproc lifts the marked copy out of the kernel
    and FoldConstant evaluates it.
    """
    func = sch.mod["main"]
    buffer = sch.get(block).reads[read].source
    free = [int(i) for i in func.attrs.get("layout_free_buffers", [])] if func.attrs else []
    if not any(func.params[i].same_as(buffer) for i in free):
        return False
    copy = sch.cache_read(block, read, "global")
    sch.transform_layout(block, ("read", read), index_map, pad_value=tirx.const(0, buffer.dtype) if pad else None)
    sch.annotate(copy, PREPACK, True)
    return True


def read_index(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, load) -> int:
    """Position of a load's buffer among the block's reads (what cache_read and transform_layout take)."""
    return next(i for i, r in enumerate(sch.get(block).reads) if r.source.same_as(load.source))


def domain(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list[int]:
    return [int(iv.dom.extent) for iv in sch.get(block).iter_vars]


def _tail(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list[s_tir.schedule.SBlockRV]:
    """Every block downstream of `block`, in program order."""
    seen, frontier = set(), [block]
    while frontier:
        for consumer in sch.get_consumers(frontier.pop()):
            name = sch.get(consumer).name_hint
            if name not in seen:
                seen.add(name)
                frontier.append(consumer)
    return [b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint in seen]


def inline_epilogue(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> s_tir.schedule.SBlockRV | None:
    """Fold the elementwise consumer chain (bias, relu, clip, residual add, requantization) into `block`'s store.

    The tail is first collapsed into its last block: a step read twice (the requantization's product, by
    the rounding and by the shift) cannot be folded into the accumulator's store directly, and left alone
    it runs as loop nests over int64 tensors (measured: 80% of an int8 stem conv's time).
    A consumer over a smaller domain (the slice that drops padded channels) cannot be folded in (TVM
    would store out of bounds): the chain folds into it instead, and it is returned so the caller can
    place it next to `block`.
    """
    tail = _tail(sch, block)
    names = {sch.get(b).name_hint for b in tail} | {sch.get(block).name_hint}
    side = [p for step in tail for p in sch.get_producers(step) if sch.get(p).name_hint not in names]
    for step in [*side, *tail[:-1]]:  # side inputs first (a residual's dequantize): they must sit in the tile
        try:
            sch.compute_inline(step)
        except s_tir.ScheduleError:
            pass
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            return None
        if domain(sch, consumers[0]) != domain(sch, block):
            inline_epilogue(sch, consumers[0])
            return consumers[0]
        try:
            sch.reverse_compute_inline(consumers[0])
        except s_tir.ScheduleError:
            return None


def inline_producers(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """Inline the copies feeding `block`; a padding stage stays a loop nest of its own (inlined, it would put
    a branch into the inner loop), scheduled as an elementwise one."""
    for producer in sch.get_producers(block):
        if not isinstance(sch.get(producer).body.value, tvm.ir.TensorLoad):
            parallel_vectorize(sch, producer, lanes)
            continue
        try:
            sch.compute_inline(producer)
        except s_tir.ScheduleError:
            pass


def parallel_vectorize(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """Elementwise loops: the last axis vectorized when whole vectors fit, the others fused and parallel.

    The last axis stays its own loop: vectorizing a fused one makes every lane divide its index back
    into coordinates, in 64-bit integers, which costs more than the copy itself.
    """
    parallel = worth_parallel(sch, block)
    *outer, inner = sch.get_loops(block)
    extent = int(sch.get(inner).extent)
    if extent % lanes == 0:
        sch.vectorize(sch.split(inner, [None, lanes])[1])
    if outer and parallel:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def parallel_outer(sch: s_tir.Schedule, depth: int) -> None:
    """Every root loop nest: its outer `depth` loops (batch, channels) fused and run in parallel."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(block)[:depth]
        if loops and worth_parallel(sch, block):
            sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])


def _row_tile(width: int, lanes: int) -> tuple[bool, int]:
    """(whole vectors?, pixels) of a per-channel window kernel's step along the output row (depthwise, pooling).

    One vector of pixels: with more, LLVM hoists the broadcast weights of every tap out of the row and spills.
    Rows of 28 or 14 pixels: up to 4 vectors' worth is one loop that LLVM vectorizes with a short remainder
    (measured 1.3-1.5x faster than TVM's vectors of 7 lanes, the epilogue too); a row shorter than a vector is
    one vector.
    """
    if width % lanes == 0 or width < lanes:
        return True, min(width, lanes)
    return False, max(d for d in range(1, 4 * lanes + 1) if width % d == 0)


def _padded_plane(sch: s_tir.Schedule, pad: s_tir.schedule.SBlockRV, channel: s_tir.schedule.LoopRV, width: int,
                 window: int) -> None:
    """A padding stage made per channel into a plane that stays in L1: the padding value first, then the rows
    copied (one padded copy of the whole tensor, or a bounds check per tap, costs more than the window's
    arithmetic: measured 1.3 ms of a 1.4 ms 96x112x112 int8 depthwise layer). At stride 2 the plane holds even
    and odd columns apart, so a tap reads contiguous vectors, not 8 gathered values."""
    sch.compute_at(pad, channel)
    padded = int(sch.get(pad).writes[0].source.shape[-1])
    stride2 = width > 1 and padded % 2 == 0 and (padded - window) // (width - 1) == 2
    if stride2:
        sch.transform_layout(pad, ("write", 0), lambda *i: (*i[:-1], i[-1] % 2, i[-1] // 2))
    fill = sch.decompose_padding(pad, sch.get_loops(pad)[2])
    if stride2:
        # the copy walks the parities in turn, so LLVM makes each a load and a shuffle; the fill too, so it is
        # stored in order (the zeros cost 2/3 of a 144x56x56 depthwise layer stored column by column)
        for stage in (pad, fill):
            column, parity = sch.split(sch.get_loops(stage)[-1], [None, 2])
            sch.reorder(parity, column)


def per_channel_rows(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, pads: list[s_tir.schedule.SBlockRV],
                     lanes: int) -> None:
    """The loop nest of the window kernels without a channel reduction (depthwise convs, pools): (n, c | y,
    x/tile | window | tile), the accumulator one vector of output pixels stored with the epilogue as the tile
    ends, each padding stage a plane per channel, the window unrolled."""
    acc = sch.cache_write(block, 0, "local")
    inline_epilogue(sch, acc)
    n, c, y, x, *window = sch.get_loops(block)
    width = int(sch.get(x).extent)
    whole, tile = _row_tile(width, lanes)
    xo, xi = sch.split(x, [None, tile])
    sch.reorder(n, c, y, xo, *window, xi)
    sch.reverse_compute_at(acc, xo)
    for pad in pads:
        _padded_plane(sch, pad, c, width, int(sch.get(window[-1]).extent))
    if worth_parallel(sch, block):
        sch.parallel(sch.fuse(n, c))
    for loop in window[-2:]:
        sch.unroll(loop)
    if whole:
        sch.vectorize(xi)
    sch.decompose_reduction(block, window[0])
    if whole:
        sch.vectorize(sch.get_loops(acc)[-1])
