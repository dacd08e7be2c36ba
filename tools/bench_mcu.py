"""Microcontroller firmware for the Fashion-MNIST reference CNN: instructions, flash and RAM under QEMU.

    /work/venv/bin/python tools/bench_mcu.py [--boards cortex-m7-qemu cortex-m4-qemu] [--json]

For each board: fp32 and int8 (the QDQ model `edgeprune quantize` writes, calibrated on 64 test images),
each with edgeprune's micro schedules and with TVM's naive loop nests, int8 on DSP cores also without the
SMLAD micro-kernels, and int8 with Huffman-coded weights
(decoded per layer into the arena by edgeprune/coding/c). The model goes through the same
passes as `edgeprune compile` (canonicalize, fold-batchnorm); every firmware is checked against onnxruntime
on the way (int8 bit-exact). Instructions come from `qemu-system-arm -icount shift=0` and are exact and
repeatable, so a busy machine does not change them; they are not cycles (QEMU models no pipeline or memory).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MODEL = REPO / "tests" / "fixtures" / "fmnist-cnn.onnx"
DATA = REPO / "tests" / "fixtures" / "fmnist_test256.npz"
SHAPES = {"input": [1, 1, 28, 28]}
# (micro schedules, Huffman-coded weights, DSP micro-kernels) per precision; coding applies to int8 weights only,
# the DSP kernels to int8 on cores whose target file says device.dsp (the "no DSP" row shows what they bring)
VARIANTS = {"fp32": [(True, False, None), (False, False, None)],
            "int8": [(True, False, None), (True, False, False), (True, True, None), (False, False, None)]}


def models(work: Path) -> dict[str, str]:
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import transform_model

    np.savez(work / "calib.npz", input=np.load(DATA)["input"][:64])
    int8 = work / "fmnist-int8.onnx"
    transform_model(MODEL, [make_pass("quantize", {"method": "minmax", "per_channel": True, "pow2": False})], int8,
                    calib=str(work / "calib.npz"), input_shapes=SHAPES)
    return {"fp32": str(MODEL), "int8": str(int8)}


def measure(path: str, board: str, schedule: bool, work: Path, coded: bool = False, dsp: bool | None = None) -> dict:
    from edgeprune.backends.micro import MicroBackend
    from edgeprune.compile.source import OnnxSource
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import prepare, run_passes
    from edgeprune.targets import load_target

    model, ctx = prepare(path, input_shapes=SHAPES, samples=1)
    model = run_passes(model, [make_pass("canonicalize"), make_pass("fold-batchnorm")], ctx)
    out = Path(tempfile.mkdtemp(dir=work))
    backend = MicroBackend(schedule=schedule, coded_weights=coded, dsp=dsp)
    info = backend.build(OnnxSource(model), load_target(board), out, ctx.samples).info
    return {k: info[k] for k in ("instructions", "flash_bytes", "ram_bytes", "arena_bytes", "weight_bytes")} | {
        "max_abs_error": info["vs_reference"]["max_abs_error"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=["cortex-m7-qemu", "cortex-m4-qemu", "cortex-m3-qemu"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from edgeprune.targets import load_target

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = models(work)
        for board in args.boards:
            for precision, path in paths.items():
                for schedule, coded, dsp in VARIANTS[precision]:
                    if dsp is False and not load_target(board).device.get("dsp", False):
                        continue  # the same firmware as the default row
                    r = measure(path, board, schedule, work, coded, dsp)
                    kernels = "edgeprune" + (" (no DSP)" if dsp is False else "") if schedule else "naive (TVM)"
                    rows.append({"board": board, "precision": precision + (" Huffman" if coded else ""),
                                 "kernels": kernels, **r})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Fashion-MNIST CNN firmware under QEMU (instructions per inference)")
    for col in ("board", "precision", "kernels", "instructions", "flash bytes", "RAM bytes", "arena bytes", "max abs error"):
        table.add_column(col, justify="right" if col not in ("board", "precision", "kernels") else "left")
    for r in rows:
        table.add_row(r["board"], r["precision"], r["kernels"], f"{r['instructions']:,}", f"{r['flash_bytes']:,}",
                      f"{r['ram_bytes']:,}", f"{r['arena_bytes']:,}", f"{r['max_abs_error']:.3g}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
