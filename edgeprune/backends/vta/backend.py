"""The back end for kind "vta": a pow2 QDQ model -> VTA parts + CPU parts + a Pynq driver, checked in simulation.

The build runs the whole model once, VTA parts in our simulator from the files just written and CPU parts in
onnxruntime, and refuses to write a bundle whose output is not bit-exact with the integer reference.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from edgeprune.backends.base import BuildOutput
from edgeprune.backends.vta import driver
from edgeprune.backends.vta.config import Board
from edgeprune.backends.vta.part import build_part
from edgeprune.backends.vta.partition import CpuStep, partition, problems
from edgeprune.compile.source import Source
from edgeprune.errors import PassError, UserError
from edgeprune.targets import Target

DRIVER = "driver.py"
README = "README.md"


@dataclass(frozen=True)
class VtaBackend:
    name: str = "vta"

    def check_toolchain(self, target: Target) -> None:
        Board.from_target(target)  # no compiler needed; the [vta] table must be whole

    def unsupported_ops(self, model: onnx.ModelProto) -> dict[str, list[str]]:
        """Everything else runs on VTA or the board's CPU; see `partition.problems`."""
        return problems(model)

    def build(self, source: Source, target: Target, out_dir: Path, samples: list[dict]) -> BuildOutput:
        from edgeprune.backends.vta.simulate import simulate_bundle

        if not hasattr(source, "model"):
            raise UserError(f"target {target.name}: VTA compiles ONNX QDQ models (a TFLite model: convert it first)")
        board = Board.from_target(target)
        plan = partition(source.model, source.filename, board.config)
        files, parts, cpu_parts = [DRIVER, README], [], []
        for index, step in enumerate(plan.steps):
            if isinstance(step, CpuStep):
                name = f"cpu{len(cpu_parts)}.onnx"
                onnx.save(step.model, str(out_dir / name))
                cpu_parts.append({"step": index, "file": name, "inputs": step.inputs, "outputs": step.outputs,
                                  "nodes": step.nodes})
                files.append(name)
                continue
            built = build_part(f"vta{len(parts)}", step.layers, board.config)
            for name, data in built["files"].items():
                (out_dir / name).write_bytes(data)
                files.append(name)
            parts.append(built["meta"] | {"step": index})
        (out_dir / DRIVER).write_text(Path(driver.__file__).read_text())
        info = {"vta": {"board": {"clock_mhz": board.clock_mhz, "registers": board.registers,
                                  "bitstream": board.config.bitstream},
                        "config": asdict(board.config), "parts": parts, "cpu_parts": cpu_parts,
                        "inputs": plan.inputs, "outputs": plan.outputs,
                        "hardware": "unverified on hardware: simulated only"}}
        (out_dir / README).write_text(readme(target, info["vta"], len(plan.steps)))
        manifest = {"build": info, "model": "model.onnx", "target": target.as_dict()}
        (out_dir / "model.onnx").write_bytes(source.data())  # the pipeline writes it again, identically
        sim = simulate_bundle(out_dir, manifest)
        if not sim["bit_exact"]:
            raise PassError(f"target {target.name}: the simulated VTA program differs from the integer reference")
        info["simulated"] = {k: sim[k] for k in ("bit_exact", "instructions", "gemm_ops", "dram_bytes",
                                                 "estimated_ms", "max_abs_error_vs_onnxruntime")}
        info["vta_layers"] = sum(len(p["layers"]) for p in parts)
        return BuildOutput(files, info)


def readme(target: Target, info: dict, steps: int) -> str:
    """What the bundle is, how to run it on a board, and what it is not."""
    board = info["board"]
    regs = ", ".join(f"{k} {v:#010x}" for k, v in board["registers"].items())
    parts = "\n".join(f"- `{p['insn']}`: {p['insn_count']} instructions, {len(p['layers'])} layers "
                      f"({', '.join(l['op'] for l in p['layers'])}); micro-ops, weights and biases in "
                      f"`{p['name']}.*.bin`, relocations in `{p['relocs']}`" for p in info["parts"])
    cpus = "\n".join(f"- `{c['file']}`: {len(c['nodes'])} ONNX nodes for onnxruntime on the ARM cores"
                     for c in info["cpu_parts"])
    return f"""# VTA bundle for {target.name}

{target.description}. The model runs in {steps} steps, alternating CPU parts and VTA parts.

{parts}
{cpus}

**No bitstream is produced here.** Building one needs Vivado HLS 2020.1 and Vivado, which do not run on
this machine. Use a prebuilt or self-built bitstream of the VTA hardware from the apache/tvm-vta repository
(`hardware/xilinx`, `make` with the configuration `{board['bitstream']}`), or the prebuilt Pynq-Z1/Z2
bitstreams the VTA authors published in github.com/uwsampl/vta-distro (`bitstreams/pynq/`, the file named
after that configuration; TVM's old VTA package downloaded them from there; none is published for Ultra96
or DE10-Nano). The instruction streams only run on a bitstream of exactly that configuration.

## Running on the board (UNVERIFIED ON HARDWARE)

`driver.py` is a host driver for the `pynq` package: it loads the overlay, allocates one contiguous
buffer per region, applies the relocations with the buffers' physical addresses, and for each layer
writes the instruction count and address to the fetch module ({regs}), starts the four modules,
and polls the compute module's done register with a timeout. CPU parts run with onnxruntime
(install it on the board; 32-bit Pynq images need a source build). It has not been run on a board:
treat it as a starting point and check its results against `edgeprune profile BUNDLE --simulate`.
`pynq` serves Xilinx boards (Pynq-Z1/Z2, Ultra96); on Intel boards (DE10-Nano) the same steps (buffers,
relocation, registers) need a contiguous-memory allocator and `/dev/mem` mapping of your own.

    python3 driver.py BITSTREAM.bit input.npy          # prints the outputs

Timing in `edgeprune profile --simulate` is an estimate at {board['clock_mhz']} MHz from a stated model,
not a measurement.
"""


BACKEND = VtaBackend()
