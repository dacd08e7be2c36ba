"""Microcontrollers: a C firmware project from TVM's kernels and our ahead-of-time runner, checked under QEMU.

build = Relax lowering to a flat program (plan) -> kernels as plain C (kernels) -> liveness arena (arena)
-> runner, weights and project files (runner, project) -> arm-none-eabi-gcc + qemu-system-arm against
the reference runtime, and flash/RAM against the target's budgets (emulate).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgeprune.backends.base import BuildOutput
from edgeprune.backends.micro import emulate
from edgeprune.backends.micro.arena import plan_arena
from edgeprune.backends.micro.dsp import widen_weights
from edgeprune.backends.micro.kernels import DSP_CALL, Kernels, kernels_to_c
from edgeprune.backends.micro.runner import weight_bytes
from edgeprune.backends.micro.plan import Program, read_program, relax_lower
from edgeprune.backends.micro.project import QEMU_MACHINES, Samples, write_project
from edgeprune.compile.integer import arithmetic_dtypes
from edgeprune.compile.source import Source
from edgeprune.compile.tvm_build import unsupported_ops
from edgeprune.errors import PassError, UserError
from edgeprune.graph.runtime import compare_outputs
from edgeprune.targets import Target

# ONNX ops TVM imports but whose result shape depends on the data: no static arena can hold them.
DYNAMIC_OPS = ("NonZero", "NonMaxSuppression", "Unique", "TopK", "Compress", "RandomNormal", "RandomUniform",
               "RandomNormalLike", "RandomUniformLike", "Multinomial", "Loop", "If", "Scan")
# Keys of a target file the micro back end cannot do without (the schema leaves them optional for other kinds).
REQUIRED = {"memory": ("flash_bytes", "ram_bytes", "flash_origin", "ram_origin"), "toolchain": ("cc", "cflags"),
            "device": ("qemu_machine", "qemu_cpu")}
CODED_MIN_BYTES = 256  # smaller weights cost more in container headers and code tables than they save
TOLERANCE = 1e-4  # relative to the largest reference output, as on the host: float sums in another order


def code_weights(program: Program) -> None:
    """Keep every integer weight (int8, or int8 values widened to int16 for the DSP micro-kernels) Huffman-coded in
    flash when that makes it smaller (decoded per layer at run time)."""
    from edgeprune.coding.container import encode_tensors, from_int

    for t in program.tensors:
        if t.role == "const" and t.dtype in ("int8", "int16") and t.nbytes >= CODED_MIN_BYTES:
            blob = encode_tensors([from_int(f"w{t.index}", t.value, 1.0)])
            if len(blob) < t.nbytes:
                t.coded = blob


def fits(target: Target, flash: int, ram: int, what: str) -> None:
    """Refuse a firmware over the board's budgets, saying by how much."""
    for name, used in (("flash", flash), ("RAM", ram)):
        budget = target.memory[f"{name.lower()}_bytes"]
        if used > budget:
            raise UserError(f"target {target.name}: {what} needs {used:,} bytes of {name}, {used - budget:,} more than "
                            f"the board's {budget:,} ({100 * used / budget:.0f}%)")


def check_outputs(reference: list[dict], got: list[list[np.ndarray]], specs: list[dict]) -> dict:
    """Difference of the firmware's outputs (per sample, per output) from the reference runtime's."""
    ref = {o["name"]: np.concatenate([r[o["name"]] for r in reference]) for o in specs}
    out = {o["name"]: np.concatenate([g[k] for g in got]) for k, o in enumerate(specs)}
    diff = compare_outputs(ref, out)
    scale = max(1.0, max(float(np.abs(v).max()) for v in ref.values()))
    return {"diff": diff, "limit": TOLERANCE * scale}


@dataclass(frozen=True)
class MicroBackend:
    name: str = "micro"
    schedule: bool = True  # False: TVM's naive loop nests (the baseline of tools/bench_mcu.py)
    coded_weights: bool | None = None  # Huffman-coded int8 weights; None: the target's memory.coded_weights
    dsp: bool | None = None  # SMLAD micro-kernels for int8 convs; None: the target's device.dsp (False: plain C loops)

    def check_toolchain(self, target: Target) -> None:
        needed = [*(f"memory.{k}" for k in REQUIRED["memory"] if k not in target.memory),
                  *(f"toolchain.{k}" for k in REQUIRED["toolchain"] if k not in target.toolchain),
                  *(f"device.{k}" for k in REQUIRED["device"] if k not in target.device)]
        if needed:
            raise UserError(f"target {target.name}: a micro target needs {', '.join(needed)}")
        if target.device["qemu_machine"] not in QEMU_MACHINES:
            raise UserError(f"target {target.name}: device.qemu_machine '{target.device['qemu_machine']}' is not one of "
                            f"{', '.join(QEMU_MACHINES)}")
        emulate.check_tools(target)

    def unsupported_ops(self, model: onnx.ModelProto) -> dict[str, list[str]]:
        missing = unsupported_ops(model)
        for idx, node in enumerate(model.graph.node):
            if node.op_type in DYNAMIC_OPS:
                missing.setdefault(node.op_type, []).append(node.name or f"#{idx}")
        return missing

    def _lower(self, mod, dsp_core: bool) -> tuple[Program, Kernels]:
        lowered = relax_lower(widen_weights(mod) if dsp_core else mod)
        return read_program(lowered), kernels_to_c(lowered, self.schedule, dsp_core)

    def build(self, source: Source, target: Target, out_dir: Path, samples: list[dict]) -> BuildOutput:
        mod = source.relax_module()
        arithmetic = arithmetic_dtypes(mod)
        dsp_core = self.schedule and (self.dsp if self.dsp is not None else target.device.get("dsp", False))
        program, kernels = self._lower(mod, dsp_core)
        if dsp_core and weight_bytes(program) > target.memory["flash_bytes"]:  # int16 weights too big: try int8 ones
            dsp_core = False
            program, kernels = self._lower(mod, dsp_core)
        coded = self.coded_weights if self.coded_weights is not None else target.memory.get("coded_weights", False)
        if coded:
            code_weights(program)
        arena = plan_arena(program, kernels.workspace)
        weights = weight_bytes(program)
        fits(target, weights, arena.size, "the model's weights and arena alone")  # before compiling anything
        inputs, outputs = source.inputs(), source.outputs()
        reference = [source.reference(feeds) for feeds in samples]
        files = write_project(out_dir, target, program, arena, kernels, Samples(samples, reference), inputs, outputs)
        fw, run = emulate.build_and_run(out_dir, target, outputs)
        fits(target, fw.flash_bytes, fw.ram_bytes, "the firmware")
        check = check_outputs(reference, run.outputs, outputs)
        if not check["diff"].max_abs <= check["limit"]:
            raise PassError(f"firmware under {target.device['qemu_machine']} differs from {source.reference_name} "
                            f"by {check['diff'].max_abs:.3g} (limit {check['limit']:.3g})")
        instructions = int(round(float(np.mean(run.ticks)) * run.instructions_per_tick))
        return BuildOutput(["Makefile", *[f for f in files if f != "Makefile"]], {
            "firmware": "Makefile", "arithmetic": arithmetic, "layers": len(program.calls),
            "dsp_calls": len(DSP_CALL.findall(kernels.source)),
            "arena_bytes": arena.size, "peak_live_bytes": arena.peak_live, "workspace_bytes": arena.workspace_peak,
            "weight_bytes": weights, "coded_weights": sum(t.coded is not None for t in program.tensors),
            "flash_bytes": fw.flash_bytes, "ram_bytes": fw.ram_bytes,
            "budget": {"flash_bytes": target.memory["flash_bytes"], "ram_bytes": target.memory["ram_bytes"]},
            "emulator": target.device["qemu_machine"], "instructions": instructions, "compiler_warnings": len(fw.warnings),
            "reference": source.reference_name, "vs_reference": check["diff"].as_dict(), "samples": len(samples)})


BACKEND = MicroBackend()
