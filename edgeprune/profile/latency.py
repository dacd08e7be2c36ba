"""Latency statistics: many timed runs after warm-up, summarized the way people compare runtimes."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def summarize(seconds: list[float]) -> dict[str, float | int]:
    ms = np.asarray(seconds, np.float64) * 1e3
    return {"median_ms": float(np.median(ms)), "mean_ms": float(ms.mean()), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "std_ms": float(ms.std()), "runs": int(ms.size)}


def time_vm(vm, dev, inputs: list, repeat: int, warmup: int) -> dict[str, float | int]:
    """Time the Relax VM's `main` where it runs (TVM's time_evaluator runs on the device, no RPC in the loop)."""
    vm.set_input("main", *inputs)
    timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=repeat + warmup, min_repeat_ms=0)
    results = list(timer("main").results)
    return summarize(results[warmup:])


def time_callable(fn: Callable[[], object], repeat: int, warmup: int) -> dict[str, float | int]:
    """The same statistics for a Python callable (the onnxruntime and TFLite baselines)."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return summarize(seconds)


def operator_breakdown(vm, inputs: list, total_ms: float) -> list[dict]:
    """Per kernel: calls and time, from the VM's instrument hook (local runs only; 0.27 has no VM profiler).

    The hook is a Python callback around each call, so VM builtins (allocation, shape checks) are
    not timed one by one: what the kernels leave of the whole-model median is one row, `(vm)`.
    """
    totals: dict[str, list] = {}
    started: dict[str, float] = {}

    def instrument(func, symbol: str, before: bool, ret, *args) -> int:
        if symbol.startswith("vm.builtin."):
            return 0
        if before:
            started[symbol] = time.perf_counter()
        else:
            entry = totals.setdefault(symbol, [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started.pop(symbol)
        return 0

    vm.set_instrument(instrument)
    try:
        vm["main"](*inputs)
    finally:
        vm.set_instrument(None)
    rows = [{"name": name, "calls": calls, "ms": seconds * 1e3} for name, (calls, seconds) in totals.items()]
    rows.append({"name": "(vm)", "calls": 1, "ms": max(0.0, total_ms - sum(r["ms"] for r in rows))})
    whole = sum(r["ms"] for r in rows) or 1.0
    for r in rows:
        r["percent"] = 100.0 * r["ms"] / whole
    return sorted(rows, key=lambda r: -r["ms"])
