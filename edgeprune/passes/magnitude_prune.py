"""Unstructured magnitude pruning: the smallest weights become exact zeros.

Per layer (`local`: every layer at the same sparsity) or with one threshold over all layers
(`global`: layers with many small weights give more), or N:M (in every group of M consecutive
weights along the input axis, keep the N largest; what sparse tensor cores and some NPUs run).
Shapes do not change, so the model is never faster on a dense kernel: the zeros pay off in the
Huffman-coded size (`edgeprune compress`), and in speed only where a sparse kernel exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.errors import UserError
from edgeprune.passes.base import Pass

WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 0, "Gemm": None, "MatMul": 0}  # op -> input-feature axis of the weight


def _prunable(graph: gs.Graph, protect: set[str], min_size: int) -> list[tuple[gs.Node, gs.Constant]]:
    seen, found = set(), []
    for node in graph.nodes:
        if node.op in WEIGHT_OPS and len(node.inputs) > 1 and node.name not in protect:
            weight = node.inputs[1]
            if isinstance(weight, gs.Constant) and weight.values.size >= min_size and weight.name not in seen:
                seen.add(weight.name)
                found.append((node, weight))
    return found


def _input_axis(node: gs.Node) -> int:
    if node.op == "Gemm":
        return 1 if node.attrs.get("transB", 0) else 0
    return WEIGHT_OPS[node.op]


def nm_mask(weights: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """Keep the n largest magnitudes in each group of m consecutive weights along `axis`."""
    moved = np.moveaxis(np.abs(weights), axis, -1)
    length = moved.shape[-1]
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, (-length) % m)], constant_values=-1.0)
    groups = padded.reshape(*padded.shape[:-1], -1, m)
    ranks = np.argsort(np.argsort(-groups, axis=-1, kind="stable"), axis=-1, kind="stable")
    keep = (ranks < n).reshape(padded.shape)[..., :length]
    return np.moveaxis(keep, -1, axis)


@dataclass
class MagnitudePrune(Pass):
    name = "magnitude-prune"
    sparsity: float = 0.5
    scope: str = "local"
    nm: str = ""  # "2:4" for N:M sparsity (then sparsity is n/m's complement)
    protect: list = field(default_factory=list)
    min_size: int = 64  # tiny tensors (the first conv of a gray image) cost accuracy and save nothing

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        if self.scope not in ("local", "global"):
            raise UserError(f"--scope {self.scope}: expected local or global")
        if not self.nm and not 0.0 <= self.sparsity < 1.0:
            raise UserError(f"--sparsity {self.sparsity}: expected a fraction in [0, 1)")
        layers = _prunable(graph, set(self.protect), self.min_size)
        missing = set(self.protect) - {n.name for n in graph.nodes}
        if missing:
            raise UserError(f"--protect: no node named {sorted(missing)[0]!r}")
        masks = self._masks(layers)
        report = {}
        for (node, weight), keep in zip(layers, masks):
            weight.values = np.where(keep, weight.values, np.zeros_like(weight.values))
            report[node.name or weight.name] = {"size": int(keep.size), "sparsity": round(1 - float(keep.mean()), 4)}
        total = sum(r["size"] for r in report.values())
        ctx.report(layers=report, sparsity=round(sum(r["size"] * r["sparsity"] for r in report.values()) / max(total, 1), 4))
        return graph

    def _masks(self, layers) -> list[np.ndarray]:
        if self.nm:
            try:
                n, m = (int(v) for v in self.nm.split(":"))
                assert 0 < n < m
            except (ValueError, AssertionError):
                raise UserError(f"--nm {self.nm}: expected N:M with 0 < N < M, e.g. 2:4") from None
            return [nm_mask(w.values, _input_axis(node), n, m) for node, w in layers]
        if self.scope == "local":
            return [np.abs(w.values) > np.quantile(np.abs(w.values), self.sparsity) if self.sparsity else
                    np.ones(w.values.shape, bool) for _, w in layers]
        magnitudes = np.concatenate([np.abs(w.values).ravel() for _, w in layers]) if layers else np.zeros(0)
        threshold = np.quantile(magnitudes, self.sparsity) if magnitudes.size and self.sparsity else -1.0
        return [np.abs(w.values) > threshold for _, w in layers]
