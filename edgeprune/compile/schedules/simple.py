"""Matmul (dense layers), pooling and elementwise tails: the kinds with little arithmetic per byte."""
from __future__ import annotations

import tvm
from tvm import s_tir

from edgeprune.compile.schedules.common import (inline_epilogue, parallel_outer, parallel_vectorize,
                                                per_channel_rows, prepack, read_index, worth_parallel)
from edgeprune.compile.schedules.kinds import Anchor
from edgeprune.compile.schedules.machine import Machine


def schedule_matmul(sch: s_tir.Schedule, anchor: Anchor, machine: Machine) -> None:
    """out[i, j] += a[i, k] * w[k, j] (or w[j, k]): w packed to [J/lanes, K, lanes], j across lanes."""
    block = anchor.block
    lanes = machine.lanes
    j_first = anchor.weight.indices[0].same_as(sch.get(block).body.indices[-1])
    pack = (lambda j, k: (j // lanes, k, j % lanes)) if j_first else (lambda k, j: (j // lanes, k, j % lanes))
    width = int(sch.get(block).iter_vars[-2].dom.extent)
    if not prepack(sch, block, read_index(sch, block, anchor.weight), pack, pad=width % lanes != 0):
        return
    acc = sch.cache_write(block, 0, "local")
    inline_epilogue(sch, acc)
    *batch, i, j, k = sch.get_loops(block)
    vecs = min(4, -(-width // lanes))
    jo, jv, ji = sch.split(j, [None, vecs, lanes])
    sch.reorder(*batch, i, jo, k, jv, ji)
    sch.reverse_compute_at(acc, jo)
    if worth_parallel(sch, block):
        sch.parallel(sch.fuse(*batch, i, jo))
    sch.unroll(jv)
    sch.vectorize(ji)
    sch.decompose_reduction(block, k)


def schedule_pool(sch: s_tir.Schedule, anchor: Anchor, machine: Machine) -> None:
    """Padded 2-d window pools go like depthwise convs: per channel a padded plane in L1, a vector of output pixels per
    step, the window unrolled (resnet18's 3x3/2 max pool in the model: 0.44 -> 0.31 ms, onnxruntime 0.21 ms; TVM's
    loop nest padded the whole tensor first, with a branch per value). Other window reductions (global mean,
    unpadded pools) are memory-bound and LLVM vectorizes TVM's loop nest (measured: reordering the window loops
    outward was slower); batch and channels run in parallel."""
    block = anchor.block
    loops = sch.get_loops(block)
    pads = [p for p in sch.get_producers(block) if not isinstance(sch.get(p).body.value, tvm.ir.TensorLoad)]
    if len(loops) != 6 or len(pads) != 1 or len(sch.get_producers(block)) != 1:
        return parallel_outer(sch, 2)
    per_channel_rows(sch, block, pads, machine.lanes)


def schedule_elementwise(sch: s_tir.Schedule, anchor: Anchor, machine: Machine) -> None:
    """Chains of injective ops: inlined into the last one, which runs parallel and vectorized."""
    for block in sch.get_child_blocks(sch.get_sblock("root"))[:-1]:
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        parallel_vectorize(sch, block, machine.lanes)
