"""`edgeprune profile BUNDLE --simulate` for VTA bundles: the whole model, VTA parts in our simulator (from the
bundle's own instruction, micro-op and weight files), CPU parts with onnxruntime on this host, checked bit for
bit against the numpy integer reference of the same quantized model, with costs and an estimated time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeprune.backends.vta.config import VTAConfig
from edgeprune.backends.vta.partition import Plan, VtaStep, partition, reference_vta, run_plan
from edgeprune.backends.vta.part import PartImage
from edgeprune.backends.vta.sim import AXI_BYTES_PER_CYCLE, ISSUE_CYCLES, Counters
from edgeprune.errors import UserError

INSN_FETCH_BYTES = 16
TIMING_MODEL = (f"event timing of the load, compute and store queues through their dependency tokens: an "
                f"instruction starts when its queue is free and every token it pops was pushed; LOAD/STORE move "
                f"{AXI_BYTES_PER_CYCLE} B per cycle (one 64-bit AXI beat, padding included), GEMM/ALU take one "
                f"cycle per micro-op iteration, every instruction {ISSUE_CYCLES} more to issue; no DRAM latency or "
                f"contention; launches in sequence at the target clock; CPU parts not included")


def simulate_bundle(bundle: Path, manifest: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Run the bundle's model on one seeded random input; the result dict of `profile --simulate --json`."""
    from edgeprune.compile.source import load_source

    info = manifest["build"].get("vta")
    if not info:
        raise UserError(f"{bundle}: not a VTA bundle (its manifest has no build.vta)")
    config = VTAConfig.from_dict(info["config"], f"{bundle}/manifest.json: build.vta.config")
    model = onnx.load(str(bundle / manifest["model"]))
    plan = partition(model, str(bundle / manifest["model"]), config)
    kinds = {p["step"]: "vta" for p in info["parts"]} | {c["step"]: "cpu" for c in info["cpu_parts"]}
    if kinds != {n: "vta" if isinstance(s, VtaStep) else "cpu" for n, s in enumerate(plan.steps)}:
        raise UserError(f"{bundle}: its model no longer cuts into the parts its manifest lists (built by another "
                        f"edgeprune version?): compile it again")
    for cpu in info["cpu_parts"]:  # run the bundle's own CPU sub-models, not a fresh cut of the model
        plan.steps[cpu["step"]].model = onnx.load(str(bundle / cpu["file"]))
    feeds = load_source(bundle / manifest["model"]).random_feeds(seed)
    parts = {p["step"]: PartImage(bundle, p, config) for p in info["parts"]}
    launches: list[tuple[str, Counters]] = []

    def on_vta(index: int, step, env: dict[str, np.ndarray]) -> None:
        launches.extend(parts[index].run(env).launches)

    got = run_plan(plan, feeds, on_vta)
    ref = run_plan(plan, feeds, reference_vta)
    vs_ort = _vs_onnxruntime(model, feeds, got)
    bit_exact = all(np.array_equal(got[k], ref[k]) for k in plan.outputs)
    return _report(bundle, manifest, info, config, launches, bit_exact, vs_ort, plan)


def _vs_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    """Largest difference from onnxruntime running the QDQ model in float: 0 unless its float sums are inexact."""
    from edgeprune.graph import run

    ort = run(model, feeds)
    return max(float(np.abs(got[k].astype(np.float64) - ort[k].astype(np.float64)).max()) for k in got)


def _report(bundle: Path, manifest: dict, info: dict, config: VTAConfig, launches: list[tuple[str, Counters]],
            bit_exact: bool, vs_ort: float, plan: Plan) -> dict[str, Any]:
    clock = info["board"]["clock_mhz"]
    depth = config.depth
    high = {b: max(c.high_water[b] for _, c in launches) for b in ("inp", "wgt", "acc", "uop")}
    layers = []
    for name, c in launches:
        layers.append({"name": name, "instructions": sum(c.insns.values()), "gemm_ops": c.gemm_uops,
                       "alu_ops": c.alu_uops, "dram_bytes": _dram(c), "cycles": c.cycles})
    cycles = sum(l["cycles"] for l in layers)
    return {
        "bundle": str(bundle), "target": manifest["target"]["name"], "device": "VTA simulator (edgeprune)",
        "bit_exact": bit_exact, "reference": "numpy integer reference of the same quantized model",
        "max_abs_error_vs_onnxruntime": vs_ort,
        "instructions": sum(l["instructions"] for l in layers), "launches": len(layers),
        "gemm_ops": sum(c.gemm_uops for _, c in launches), "gemm_macs": sum(c.gemm_macs for _, c in launches),
        "alu_ops": sum(c.alu_uops for _, c in launches), "dram_bytes": sum(l["dram_bytes"] for l in layers),
        "buffer_utilization": {b: round(high[b] / depth[b], 4) for b in high},
        "estimated_ms": round(cycles / (clock * 1e3), 4), "cycles": cycles, "clock_mhz": clock,
        "timing_model": TIMING_MODEL, "vta_layers": len(layers),
        "cpu_parts": len(info["cpu_parts"]), "layers": layers,
    }


def _dram(c: Counters) -> int:
    return sum(c.bytes_loaded.values()) + c.bytes_stored + sum(c.insns.values()) * INSN_FETCH_BYTES
