"""Sensitivity analysis: accuracy against the pruning ratio of one layer at a time, and a proposal.

Every (layer, ratio) run prunes only that layer of the original model and evaluates it, so runs
are independent and go to a process pool (every core). A layer is a channel group, named by the
nodes producing it (structured), or a Conv/Gemm/MatMul weight, named by its node (unstructured).
The proposal picks per-layer ratios greedily: repeatedly take the raise of one layer's ratio that
saves the most MACs (structured) or weights (unstructured) per point of accuracy lost, while the sum of
the measured drops stays within the budget. Drops are assumed additive, which they are only
roughly: the prune cycle (`--layer-ratios`) measures the combined model again at every step.
The proposal is a JSON file `{"mode", "criterion", "ratios": {layer: ratio}}`.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from math import ceil, floor
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.errors import UserError
from edgeprune.graph import top1_accuracy, totals
from edgeprune.graph.runtime import run, session
from edgeprune.prune import apply_removal, build, importance
from edgeprune.prune.importance import evidence_for

Samples = list[dict[str, np.ndarray]]
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MODES = ("structured", "unstructured")


def group_key(producers: list[str], gid: int) -> str:
    return " + ".join(producers) or f"group {gid}"


def group_sizes(model: onnx.ModelProto, protect: tuple[str, ...] = ()) -> dict[str, int]:
    """Prunable channel groups of a model: name -> removable units."""
    return {group_key(g.producers, g.id): g.size for g in build(model, protect).groups if not g.blocked}


def prune_layers(model: onnx.ModelProto, ratios: dict[str, float], criterion: str = "l1", round_to: int = 1,
                 min_channels: int = 1, protect: tuple[str, ...] = (), base_sizes: dict[str, int] | None = None,
                 samples: Samples | None = None) -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    """Structured pruning with a ratio per group (of `base_sizes`, the original's, when the model is
    already pruned): the lowest-importance atoms go. `samples` feed the data criteria. Returns the
    model and the removed channels."""
    dg = build(model, protect)
    removed: dict[str, list[int]] = {}
    groups = {group_key(g.producers, g.id): g for g in dg.groups if not g.blocked}
    unknown = set(ratios) - groups.keys()
    if unknown:
        raise UserError(f"layer ratios: no prunable group named '{sorted(unknown)[0]}' (see `edgeprune groups`)")
    chosen = [groups[key] for key in ratios]
    evidence = evidence_for(criterion, model, chosen, {s.tensor: s.axis for s in dg.spaces.values()}, samples)
    for key, ratio in ratios.items():
        group = groups[key]
        base = (base_sizes or {}).get(key, group.size)
        keep = min(group.size, ceil(max(base - floor(base * ratio), min_channels) / round_to) * round_to)
        drop = np.argsort(importance(group, criterion, evidence), kind="stable")[: group.size - keep]
        for k in drop:
            for tensor, idx in group.atoms[k].items():
                removed.setdefault(tensor, []).extend(int(i) for i in idx)
    removed = {t: sorted(ix) for t, ix in removed.items() if ix}
    return (apply_removal(model, removed) if removed else model), removed


def weight_layers(model: onnx.ModelProto, protect: tuple[str, ...] = ()) -> dict[str, int]:
    """Conv/Gemm/MatMul nodes that unstructured pruning touches: node name -> weights."""
    from edgeprune.passes.magnitude_prune import MagnitudePrune, _prunable

    graph = gs.import_onnx(model)
    return {n.name: int(w.values.size) for n, w in _prunable(graph, set(protect), MagnitudePrune.min_size)}


def sparsify_layers(model: onnx.ModelProto, sparsity: dict[str, float]) -> onnx.ModelProto:
    """Magnitude pruning with a sparsity per node (the magnitude-prune pass, one layer at a time)."""
    from edgeprune.passes.magnitude_prune import MagnitudePrune

    graph = gs.import_onnx(model)
    others = [n.name for n in graph.nodes]
    for name, s in sparsity.items():
        if name not in others:
            raise UserError(f"layer ratios: no node named '{name}'")
        graph = MagnitudePrune(sparsity=s, protect=[o for o in others if o != name]).run(graph, Context())
    return gs.export_onnx(graph)


def evaluator(original: onnx.ModelProto, samples: Samples, labels: np.ndarray | None) -> Callable[[onnx.ModelProto], float]:
    """Top-1 accuracy on labelled data, else top-1 agreement with the original's predictions."""
    if labels is not None:
        return lambda model: top1_accuracy(model, samples, labels)
    sess = session(original)
    first = sess.get_outputs()[0].name
    reference = np.concatenate([run(original, f, sess)[first].reshape(len(next(iter(f.values()))), -1).argmax(1)
                                for f in samples])
    return lambda model: top1_accuracy(model, samples, reference)


@dataclass
class Point:
    layer: str
    ratio: float
    metric: float
    drop: float  # points (percent) below the unpruned model
    params: int
    macs: int


@dataclass
class SensitivityReport:
    mode: str
    metric: str  # "accuracy" (labels) or "agreement" (top-1 agreement with the original)
    baseline: float
    params: int
    macs: int
    criterion: str
    points: list[Point] = field(default_factory=list)
    proposal: dict[str, float] = field(default_factory=dict)
    budget: float | None = None
    predicted_drop: float = 0.0
    proposed_params: int | None = None
    proposed_macs: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def proposal_file(self) -> dict:
        return {"mode": self.mode, "criterion": self.criterion, "budget": self.budget, "ratios": self.proposal}


_WORKER: dict = {}


def _init(model_bytes: bytes, samples: Samples, labels, mode: str, criterion: str, protect: tuple[str, ...],
          calib: Samples | None) -> None:
    """Per process: the model and its evaluator, built once (sessions do not cross processes)."""
    model = onnx.load_model_from_string(model_bytes)
    _WORKER.update(model=model, evaluate=evaluator(model, samples, labels), mode=mode, criterion=criterion,
                   protect=protect, calib=calib, samples=samples)


def _point(job: tuple[str, float]) -> tuple[str, float, float, int, int]:
    layer, ratio = job
    w = _WORKER
    if w["mode"] == "structured":
        pruned, removed = prune_layers(w["model"], {layer: ratio}, w["criterion"], protect=w["protect"],
                                       samples=w["calib"] or w["samples"])
        if w["calib"]:
            from edgeprune.prune.reconstruct import reconstruct

            pruned, _ = reconstruct(w["model"], pruned, removed, w["calib"])
    else:
        pruned = sparsify_layers(w["model"], {layer: ratio})
    counts = totals(pruned)
    if w["mode"] == "unstructured":  # zeros do not shrink tensors: count the non-zero weights
        counts["params"] = sum(int(np.count_nonzero(onnx.numpy_helper.to_array(i))) for i in pruned.graph.initializer)
    return layer, ratio, w["evaluate"](pruned), counts["params"], counts["macs"]


def sensitivity(model: onnx.ModelProto, samples: Samples, labels: np.ndarray | None, ratios=DEFAULT_RATIOS,
                mode: str = "structured", criterion: str = "l1", protect: tuple[str, ...] = (), jobs: int | None = None,
                budget: float | None = None, progress: Callable[[str], None] = lambda m: None,
                reconstruct_on: Samples | None = None) -> SensitivityReport:
    """Measure every (layer, ratio); with `budget` (points), propose per-layer ratios. With `reconstruct_on`
    (calibration feeds), each structured point is measured after least-squares reconstruction, as the
    cycle without training recovers; the curves are then far less steep."""
    if reconstruct_on and mode != "structured":
        raise UserError("sensitivity: reconstruction refits layers after removed channels: structured mode only")
    if mode not in MODES:
        raise UserError(f"sensitivity: mode '{mode}': expected one of {', '.join(MODES)}")
    ratios = sorted(set(float(r) for r in ratios))
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise UserError(f"--ratios {ratios}: expected fractions in (0, 1)")
    layers = group_sizes(model, protect) if mode == "structured" else weight_layers(model, protect)
    if not layers:
        raise UserError("sensitivity: the model has no prunable layer")
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(layers) * len(ratios)))
    setup = (model.SerializeToString(), samples, labels, mode, criterion, tuple(protect), reconstruct_on or None)
    _init(*setup)
    baseline = _WORKER["evaluate"](model)
    base = totals(model)
    if mode == "unstructured":
        base["params"] = sum(int(np.count_nonzero(onnx.numpy_helper.to_array(i))) for i in model.graph.initializer)
    report = SensitivityReport(mode, "accuracy" if labels is not None else "agreement", baseline, base["params"],
                               base["macs"], criterion, budget=budget)
    work = [(layer, r) for layer in layers for r in ratios]
    if jobs == 1:
        results = map(_point, work)
    else:
        pool = ProcessPoolExecutor(jobs, initializer=_init, initargs=setup)
        results = pool.map(_point, work, chunksize=max(1, len(work) // (4 * jobs)))
    try:
        for k, (layer, ratio, metric, params, macs) in enumerate(results):
            progress(f"sensitivity: {k + 1}/{len(work)} {layer} at {ratio:g}")
            report.points.append(Point(layer, ratio, metric, 100 * (baseline - metric), params, macs))
    finally:
        if jobs > 1:
            pool.shutdown()
    if budget is not None:
        propose(report, budget)
    return report


def propose(report: SensitivityReport, budget: float) -> None:
    """Greedy per-layer ratios whose summed drops stay within `budget` points (see module doc)."""
    key = "macs" if report.mode == "structured" and report.macs else "params"
    total = getattr(report, key)
    curves: dict[str, list[Point]] = {}
    for p in report.points:
        curves.setdefault(p.layer, []).append(p)
    for points in curves.values():
        points.sort(key=lambda p: p.ratio)
    level = dict.fromkeys(curves, -1)  # index into the layer's curve; -1: unpruned

    def drop(layer: str, k: int) -> float:
        return 0.0 if k < 0 else max(curves[layer][k].drop, 0.0)

    def saved(layer: str, k: int) -> int:
        return 0 if k < 0 else total - getattr(curves[layer][k], key)

    spent = 0.0
    while True:
        best, best_score = None, -1.0
        for layer, k in level.items():
            for j in range(k + 1, len(curves[layer])):  # any higher ratio: measured curves are noisy, not monotone
                cost = drop(layer, j) - drop(layer, k)
                gain = saved(layer, j) - saved(layer, k)
                if spent + cost > budget or gain <= 0:
                    continue
                score = gain / max(cost, 1e-3)
                if score > best_score:
                    best, best_score = (layer, j), score
        if best is None:
            break
        layer, j = best
        spent += drop(layer, j) - drop(layer, level[layer])
        level[layer] = j
    report.proposal = {layer: curves[layer][k].ratio for layer, k in level.items() if k >= 0}
    report.predicted_drop = spent
    setattr(report, f"proposed_{key}", total - sum(saved(layer, k) for layer, k in level.items()))


def load_layer_ratios(path: str | Path, mode: str) -> dict[str, float]:
    """Read a proposal (sensitivity -o FILE) or a hand-written {"ratios": {...}}; checks the mode."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--layer-ratios {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--layer-ratios {path}: not valid JSON: {exc}") from None
    ratios = data.get("ratios") if isinstance(data, dict) else None
    if not isinstance(ratios, dict) or not all(isinstance(v, (int, float)) and 0 <= v < 1 for v in ratios.values()):
        raise UserError(f"--layer-ratios {path}: needs \"ratios\": {{layer: fraction in [0, 1)}}")
    if data.get("mode", mode) != mode:
        raise UserError(f"--layer-ratios {path}: a {data['mode']} proposal, used for {mode} pruning")
    return {str(k): float(v) for k, v in ratios.items()}
