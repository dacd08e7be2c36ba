"""The CPU benchmark matrix: onnxruntime vs edgeprune (default schedules) vs edgeprune (tuned), one machine,
same thread count, batch 1, for each model x {fp32, int8} x {dense, 50%-MAC-pruned}.

    /work/venv/bin/python tools/bench_matrix.py [--quick] [--models fmnist-cnn resnet18 mobilenet_v2]
        [--threads 1] [--repeat 30] [--rounds 1] [--stat median|min] [--tune-trials N | --tune-seconds S]
        [--size 224] [--markdown]

Models: the Fashion-MNIST reference CNN (tests/fixtures, calibrated on fmnist_test256.npz) and resnet18 /
mobilenet_v2 from torchvision (tools/export_torchvision.py: seeded random weights, calibrated on seeded
random images, so their accuracy means nothing and their speed is real). Pruned: `prune --target-macs 0.5
--target host` (structured; channel counts at multiples of the host's fp32 vector lanes); int8: `quantize` of the dense or pruned model. Each variant is
compiled for `host` with an empty tuning cache (default schedules), then tuned (`--tune-trials`, 0 skips it).
onnxruntime runs the same ONNX file (int8: the QDQ model, which it fuses to its own int8 kernels).
GFLOP/s counts 2 FLOPs per MAC; "% of sgemm": of what OpenBLAS's float32 GEMM reaches on the same machine and
thread count (int8 rows count int8 MACs, so they can pass 100%). "pruned/dense" is the latency ratio beside the
MAC ratio (goal: at most 1.25x the MAC ratio). "kernels kept by our rule": of the tuned kernels, how many
kept our rule's schedule because MetaSchedule found nothing faster (compile/tune.py). --stat min takes each
round's fastest run instead of its median: on a machine other jobs share, the estimate of the unloaded time.
--quick: the Fashion-MNIST CNN only, few runs, 4 trials.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from bench_latency import cpu_name  # noqa: E402
from benchtable import print_table  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"


def sgemm_gflops(threads: int) -> float:
    """What this CPU sustains on float32 multiply-adds: numpy's OpenBLAS sgemm (1024^3) on `threads` threads, in
    a process of its own (OpenBLAS reads its thread count once). The nominal clock x lanes x 2 x FMA units
    undercounts a boosting CPU: on the AMD EPYC here it said 78 GFLOP/s per core, OpenBLAS reaches 90."""
    code = ("import numpy as np, time\n"
            "a = np.random.rand(1024, 1024).astype(np.float32); b = a.copy(); np.dot(a, b); best = 1e9\n"
            "for _ in range(7):\n"
            "    t = time.perf_counter(); np.dot(a, b); best = min(best, time.perf_counter() - t)\n"
            "print(2 * 1024 ** 3 / best / 1e9)")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(done.stdout.strip() or 0)


def source_model(name: str, size: int, work: Path) -> tuple[Path, Path]:
    """(float ONNX, calibration .npz) of a model of the matrix."""
    if name == "fmnist-cnn":
        data = np.load(FIXTURES / "fmnist_test256.npz")
        calib = work / "fmnist-calib.npz"
        np.savez(calib, **{k: data[k][:64] for k in data.files})
        return FIXTURES / "fmnist-cnn.onnx", calib
    from export_torchvision import export

    calib = work / f"images-{size}.npz"
    np.savez(calib, input=np.random.default_rng(0).random((8, 3, size, size), dtype=np.float32))
    return export(name, size), calib


def variants(model: Path, calib: Path, work: Path) -> dict[tuple[str, str], Path]:
    """(precision, density) -> ONNX file, made with the same passes `edgeprune prune/quantize` run."""
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import transform_model

    stem = model.stem
    pruned = work / f"{stem}-pruned.onnx"
    from edgeprune.targets import load_target

    lanes = load_target("host").channel_multiple
    transform_model(model, [make_pass("prune", {"target_macs": 0.5, "round_to": lanes})], pruned, force=True,
                    calib=str(calib))
    files = {("fp32", "dense"): model, ("fp32", "pruned"): pruned}
    for density, path in list(files.items()):
        out = work / f"{path.stem}-int8.onnx"
        transform_model(path, [make_pass("quantize")], out, force=True, calib=str(calib))
        files[("int8", density[1])] = out
    return files


def measure(path: Path, work: Path, tag: str, args, tune) -> dict:
    """Compile for host (default schedules, or tuned) and profile with the onnxruntime baseline."""
    from edgeprune.pipeline import compile_model
    from edgeprune.profile import profile_bundle

    os.environ["EDGEPRUNE_CACHE"] = str(work / f"cache-{tag}")  # only this run's own tuning applies
    bundle = work / f"bundle-{tag}"
    result = compile_model(path, "host", bundle, force=True, tune=tune)
    # --rounds alternates edgeprune and onnxruntime blocks of --repeat runs, so a busy machine's load hits both
    rounds = [profile_bundle(bundle, repeat=args.repeat, warmup=3, threads=args.threads) for _ in range(args.rounds)]
    stat = f"{args.stat}_ms"
    tuned = result.manifest["build"].get("tuning", {}).get("tuned", {})
    return {"macs": result.manifest["totals"]["macs"], "ms": float(np.median([p[stat] for p in rounds])),
            "ort_ms": float(np.median([p["baselines"]["onnxruntime"][stat] for p in rounds])),
            "rule_kept": f"{tuned['rule_kept']}/{tuned['tasks']}" if "rule_kept" in tuned else "-"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["fmnist-cnn", "resnet18", "mobilenet_v2"])
    parser.add_argument("--size", type=int, default=224, help="input size of the torchvision models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1, help="alternating edgeprune/onnxruntime rounds (median)")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="each round's statistic: min estimates the unloaded time on a busy machine")
    parser.add_argument("--tune-trials", type=int, default=None, help="trials per tuned build (default 64 per kernel)")
    parser.add_argument("--tune-seconds", type=float, default=None, help="seconds per tuned build")
    parser.add_argument("--quick", action="store_true", help="fmnist-cnn only, 10 runs, 4 trials")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.models, args.repeat = ["fmnist-cnn"], 10
        args.tune_trials = 4 if args.tune_trials is None and args.tune_seconds is None else args.tune_trials
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read once, when TVM's thread pool starts

    from edgeprune.compile.tune import TuneOptions

    tuning = args.tune_trials != 0
    tune = TuneOptions(trials=args.tune_trials, seconds=args.tune_seconds) if tuning else None
    peak = sgemm_gflops(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
        work = Path(tmp)
        for name in args.models:
            model, calib = source_model(name, args.size, work)
            dense_ms: dict[str, tuple[float, int]] = {}
            for (precision, density), path in variants(model, calib, work).items():
                tag = f"{name}-{precision}-{density}"
                print(f"bench_matrix: {tag}", file=sys.stderr, flush=True)
                default = measure(path, work, tag, args, None)
                tuned = measure(path, work, f"{tag}-tuned", args, tune) if tuning else None
                best = min(default["ms"], tuned["ms"]) if tuned else default["ms"]
                macs, ort = default["macs"], default["ort_ms"]
                gflops = [2 * macs / ms / 1e6 for ms in (default["ms"], *([tuned["ms"]] if tuned else []))]
                if density == "dense":
                    dense_ms[precision] = (best, macs)
                base_ms, base_macs = dense_ms[precision]
                rows.append([name, precision, density, f"{macs / 1e6:.1f}", f"{ort:.3f}", f"{default['ms']:.3f}",
                             f"{tuned['ms']:.3f}" if tuned else "-", f"{default['ms'] / ort:.2f}x",
                             f"{tuned['ms'] / ort:.2f}x" if tuned else "-",
                             " / ".join(f"{g:.1f}" for g in gflops),
                             f"{100 * max(gflops) / peak:.0f}%" if peak else "-", tuned["rule_kept"] if tuned else "-",
                             "-" if density == "dense" else f"{best / base_ms:.2f} vs {macs / base_macs:.2f}"])
    header = ["model", "precision", "pruned", "MMACs", "ort ms", "default ms", "tuned ms", "default/ort", "tuned/ort",
              "GFLOP/s default / tuned", "% of sgemm", "kernels kept by our rule", "pruned/dense latency vs MACs"]
    budget = "no tuning" if not tuning else f"tuned {args.tune_trials or 'default'} trials" + (
        f", {args.tune_seconds:g} s" if args.tune_seconds else "")
    budget = f"{args.stat} of {args.repeat} runs, median of {args.rounds} round(s) · {budget}"
    title = (f"{date.today()} · {cpu_name()} · {args.threads} thread(s) · batch 1 · OpenBLAS sgemm {peak:.0f} GFLOP/s · {budget} · "
             f"`python tools/bench_matrix.py {' '.join(sys.argv[1:])}`")
    print_table(header, rows, args.markdown, title, align="right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
