"""Default CPU schedules for the PrimFuncs a CNN spends its time in.

TVM 0.27's default CPU build legalizes every op into a naive loop nest and schedules nothing. Here the
Relax pipeline fuses ops (conv + bias + relu + residual become one PrimFunc), each PrimFunc is
classified by its iteration structure (`kinds.classify`) and handed to the rule for its kind; a
function no rule recognizes, or one whose rule fails, keeps TVM's loop nest (correct, slow). Weights
that a rule repacks are transformed once at compile time.
"""
from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax, s_tir, tirx

from edgeprune.compile.schedules.conv import schedule_conv2d
from edgeprune.compile.schedules.depthwise import schedule_depthwise
from edgeprune.compile.schedules.flat import flat_convs, schedule_flat_conv
from edgeprune.compile.schedules.kinds import Anchor, classify
from edgeprune.compile.schedules.machine import Machine, machine_for
from edgeprune.compile.schedules.pixel_runs import leaves_to_runs, pixel_runs
from edgeprune.compile.schedules.padding import pad_conv_channels, pad_pointwise_pixels
from edgeprune.compile.schedules.requant import float64_requant
from edgeprune.compile.schedules.simple import schedule_elementwise, schedule_matmul, schedule_pool
from edgeprune.targets import Target

Rule = Callable[[s_tir.Schedule, Anchor, Machine], None]

RULES: dict[str, Rule] = {
    "conv2d": schedule_conv2d,
    "flat_conv": schedule_flat_conv,
    "depthwise": schedule_depthwise,
    "matmul": schedule_matmul,
    "pool": schedule_pool,
    "elementwise": schedule_elementwise,
}


def schedule_module(mod: tvm.IRModule, machine: Machine) -> tvm.IRModule:
    """Apply the rule table to every PrimFunc of a legalized, fused module."""
    for gvar, func in list(mod.functions.items()):
        if not isinstance(func, tirx.PrimFunc) or func.attrs and func.attrs.get("tirx.is_scheduled"):
            continue  # a tuned schedule from a MetaSchedule database is kept
        sch = s_tir.Schedule(func)
        anchor = classify(sch)
        rule = RULES.get(anchor.kind)
        if rule is None:
            continue
        try:
            rule(sch, anchor, machine)
        except (RuntimeError, ValueError):  # ScheduleError and TVM's errors: an unforeseen shape keeps TVM's loops
            continue
        mod[gvar] = sch.mod["main"]
    return mod


def prepare_passes(target: Target) -> list[tvm.transform.Pass]:
    """From a Relax model to the fused, legalized PrimFuncs the rules (and MetaSchedule tuning) work on."""
    from tvm.relax.backend.cpu_generic import pipeline as stages  # the package hides dataflow_lower_passes

    tvm_target = target.tvm_target()
    machine = machine_for(target)
    avx2 = (machine.registers, machine.lanes) == (16, 8)  # what flat.py's and pixel_runs.py's tiles are made for
    return [
        *stages.library_dispatch_passes(tvm_target),
        *([float64_requant()] if machine.float64 else []),
        *([flat_convs(machine.lanes)] if avx2 else []),
        pad_pointwise_pixels(machine.lanes, pairs=machine.pair_dot is not None,
                             leave=leaves_to_runs(machine) if avx2 else None),
        pad_conv_channels(machine.lanes, pairs=machine.pair_dot is not None),
        *([pixel_runs(machine)] if avx2 else []),  # after the channel padding: pruned channels are whole vectors
        *stages.legalize_passes(tvm_target),
        relax.transform.AttachAttrLayoutFreeBuffers(),
    ]


def pipeline(target: Target) -> tvm.transform.Pass | str:
    """The Relax pipeline for an edgeprune Target: TVM's CPU passes with our schedules after fusion.

    When a MetaSchedule database is current (`with database:`, see compile/tune.py), its tuned
    schedules replace the rules for the kernels it holds. LLVM targets only: a C target is a
    microcontroller, where threads and wide vectors do not exist.
    """
    if target.tvm.get("kind") != "llvm":
        return "default"
    from tvm.relax.backend.cpu_generic import pipeline as stages
    from tvm.s_tir import meta_schedule as ms

    tvm_target = target.tvm_target()
    machine = machine_for(target)

    @tvm.transform.module_pass(opt_level=0, name="edgeprune.ScheduleCPU")
    def schedule(mod, _ctx):
        return schedule_module(mod, machine)

    with tvm_target:  # the pass takes its target when it is made
        tuned = [relax.transform.MetaScheduleApplyDatabase()] if ms.database.Database.current() is not None else []
    passes = [
        *prepare_passes(target),
        *tuned,
        schedule,
        relax.transform.SplitLayoutRewritePreproc(),
        relax.transform.FoldConstant(),
        *stages.dataflow_lower_passes(tvm_target),
        *stages.finalize_passes(tvm_target),
    ]

    @tvm.transform.module_pass(opt_level=0, name="edgeprune.CPUPipeline")
    def run(mod, _ctx):
        with tvm_target:
            return tvm.transform.Sequential(passes)(mod)

    return run
