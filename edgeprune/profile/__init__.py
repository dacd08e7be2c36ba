"""Run a bundle where it is meant to run, check its outputs and measure it against the baselines."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.artifact import verify
from edgeprune.errors import UserError
from edgeprune.compile.source import OnnxSource, load_source
from edgeprune.graph import compare_outputs
from edgeprune.profile.baselines import onnxruntime_latency, tflite_latency
from edgeprune.profile.device import connect
from edgeprune.profile.latency import operator_breakdown, time_vm


def profile_bundle(bundle: str | Path, *, rpc: str | None = None, tracker: str | None = None, key: str | None = None,
                   repeat: int = 50, warmup: int = 5, threads: int | None = None, original: str | None = None,
                   timeout: float = 10.0, retries: int = 0, seed: int = 0, simulate: bool = False,
                   emulate: bool = False, per_layer: bool = False, serial: str | None = None,
                   baud: int = 115200) -> dict[str, Any]:
    """Latency statistics, outputs vs onnxruntime on this machine, sizes; baselines and per-kernel times when local.

    With `simulate` (VTA bundles): the whole model in the VTA simulator, checked bit for bit, with estimated time."""
    bundle = Path(bundle)
    manifest = verify(bundle)
    if simulate or manifest["target"]["kind"] == "vta":
        return _simulate(bundle, manifest, simulate, seed)
    if emulate or serial or manifest["target"]["kind"] == "micro":  # firmware: under QEMU, or on a board (--serial)
        from edgeprune.backends.micro.profile import check_profile_options, profile_firmware

        if manifest["target"]["kind"] != "micro":
            raise UserError(f"{bundle}: --emulate and --serial run microcontroller firmware; this bundle is for "
                            f"{manifest['target']['name']}")
        check_profile_options(rpc, tracker, serial, emulate, per_layer)
        if serial:
            from edgeprune.backends.micro.serial_link import profile_serial

            return profile_serial(bundle, manifest, serial, baud=baud, repeat=repeat, timeout=timeout, seed=seed)
        return profile_firmware(bundle, manifest, per_layer=per_layer, seed=seed)
    if not manifest.get("library"):
        raise UserError(f"{bundle}: the bundle has no library to profile")
    if repeat < 1 or warmup < 0:
        raise UserError("--repeat must be at least 1 and --warmup at least 0")
    local = not (rpc or tracker)
    threads = threads or os.cpu_count() or 1
    if local:
        os.environ["TVM_NUM_THREADS"] = str(threads)  # read when TVM's thread pool starts
    device = connect(rpc=rpc, tracker=tracker, key=key, timeout=timeout, retries=retries)
    source = load_source(bundle / manifest["model"])
    feeds = source.random_feeds(seed)
    vm = device.load(bundle / manifest["library"])
    inputs = [device.tensor(feeds[i["name"]]) for i in manifest["inputs"]]
    out = vm["main"](*inputs)
    items = out if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
    got = {o["name"]: np.asarray(t.numpy()) for o, t in zip(manifest["outputs"], items)}
    check = compare_outputs(source.reference(feeds), got)
    result: dict[str, Any] = {
        "bundle": str(bundle), "device": device.name, "target": manifest["target"]["name"],
        "threads": threads if local else None, "warmup": warmup,
        **time_vm(vm, device.dev, inputs, repeat, warmup),
        "max_abs_error": check.max_abs, "reference": source.reference_name,
        "sizes": {"library_bytes": manifest["files"][manifest["library"]]["bytes"],
                  "model_bytes": manifest["files"][manifest["model"]]["bytes"]},
    }
    if local:
        result["operators"] = operator_breakdown(vm, inputs, result["median_ms"])
        result["baselines"] = {"onnxruntime": onnxruntime_latency(bundle / manifest["model"], feeds, threads, repeat, warmup)
                               } if isinstance(source, OnnxSource) else {
                               "tflite": tflite_latency(source, feeds, threads, repeat, warmup)}
        if original:
            result["baselines"]["onnxruntime (original)"] = onnxruntime_latency(Path(original), feeds, threads, repeat, warmup)
    return result


def _simulate(bundle: Path, manifest: dict[str, Any], simulate: bool, seed: int) -> dict[str, Any]:
    """Dispatch on the bundle's target kind: only VTA bundles have a simulator."""
    if manifest["target"]["kind"] != "vta":
        raise UserError(f"{bundle}: --simulate runs VTA bundles; this one is for {manifest['target']['name']} "
                        f"(kind {manifest['target']['kind']})")
    if not simulate:
        raise UserError(f"{bundle}: a VTA bundle is profiled in simulation here (add --simulate); on the board, run "
                        f"its driver.py")
    from edgeprune.backends.vta.simulate import simulate_bundle

    return simulate_bundle(bundle, manifest, seed)
