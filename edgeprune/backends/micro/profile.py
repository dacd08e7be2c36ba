"""`edgeprune profile FW/ --emulate`: rebuild the project, run it under QEMU on a fresh input, report.

Instructions, not cycles: under `-icount shift=0` QEMU executes one instruction per virtual
nanosecond and models no pipeline, cache or flash wait states; the count is exact and repeatable.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.backends.micro import check_outputs, emulate
from edgeprune.backends.micro.project import Samples, check_source
from edgeprune.compile.source import load_source
from edgeprune.errors import UserError
from edgeprune.targets import Target


def manifest_target(manifest: dict[str, Any]) -> Target:
    t = manifest["target"]
    return Target(name=t["name"], description=t["description"], kind=t["kind"], tvm=t["tvm"], toolchain=t["toolchain"],
                  device=t["device"], path="manifest.json", raw=t, memory=t.get("memory", {}))


def profile_firmware(bundle: Path, manifest: dict[str, Any], *, per_layer: bool = False, seed: int = 0) -> dict[str, Any]:
    target = manifest_target(manifest)
    emulate.check_tools(target)
    source = load_source(bundle / manifest["model"])
    feeds = source.random_feeds(seed)
    reference = source.reference(feeds)
    inputs, outputs = manifest["inputs"], manifest["outputs"]
    check_h, check_c = check_source(Samples([feeds], [reference]), inputs, outputs)
    fw, run = emulate.build_and_run(bundle, target, outputs, layers=per_layer,
                                    replace={"app/ep_check.h": check_h, "app/ep_check.c": check_c})
    diff = check_outputs([reference], run.outputs, outputs)["diff"]
    per_tick = run.instructions_per_tick
    instructions = int(round(run.ticks[0] * per_tick))
    result: dict[str, Any] = {
        "bundle": str(bundle), "target": target.name, "device": f"qemu {target.device['qemu_machine']} ({target.device['qemu_cpu']})",
        "flash_bytes": fw.flash_bytes, "ram_bytes": fw.ram_bytes, "instructions": instructions,
        "max_abs_error": diff.max_abs, "reference": source.reference_name,
        "arena_bytes": manifest["build"]["arena_bytes"], "weight_bytes": manifest["build"]["weight_bytes"],
        "budget": {"flash_bytes": target.memory["flash_bytes"], "ram_bytes": target.memory["ram_bytes"]},
    }
    if per_layer:
        total = sum(t for _, t in run.layers) or 1
        result["layers"] = [{"name": name, "instructions": int(round(t * per_tick)), "percent": 100.0 * t / total}
                            for name, t in run.layers]
    return result


def check_profile_options(rpc: str | None, tracker: str | None, serial: str | None = None, emulate: bool = False,
                          per_layer: bool = False) -> None:
    if rpc or tracker:
        raise UserError("a microcontroller bundle is profiled with --emulate (QEMU) or --serial PORT, not over TVM RPC")
    if serial and (emulate or per_layer):
        raise UserError("--serial runs the firmware on a board: --emulate and --per-layer are for QEMU runs")
