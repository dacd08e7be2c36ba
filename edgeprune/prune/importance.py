"""Importance of every removable unit (atom) of a group, from every parameter coupled to it.

A criterion scores the atoms of one group; the table CRITERIA maps the user's name to it. Weight
criteria (l1, l2, bn-scale) read the parameters only; data criteria (activation, redundancy,
reconstruction) read `Evidence`: statistics of the unpruned model on calibration samples, gathered
in one onnxruntime pass. Scores are normalized per group (divided by the group's mean) so that global
ranking compares "how weak is this channel in its own layer" instead of "which layer has larger
weights"; the reconstruction criterion's scores are already comparable (a fraction of the consumers'
output energy) and stay as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil
from typing import Callable

import numpy as np
import onnx

from edgeprune.errors import UserError
from edgeprune.prune.depgraph import Group, ParamSlice

Samples = list[dict[str, np.ndarray]]
LINEAR_OPS = ("Conv", "Gemm", "MatMul")  # consumers whose output error the reconstruction criterion measures


FOLD_ROWS = 512  # sampled input rows a consumer buffers before they go into its Gram
WIDEST_GRAM = 4096  # wider tensors (a Flatten into a big Gemm) keep squares only: no cross terms


@dataclass
class _ChannelStats:
    """Per channel: count, sum, and the Gram matrix (its diagonal when wide) of a tensor's values."""

    n: int = 0
    total: np.ndarray | None = None
    gram: np.ndarray | None = None

    def add(self, rows: np.ndarray) -> None:
        rows = rows.astype(np.float64)
        self.n += len(rows)
        wide = rows.shape[1] > WIDEST_GRAM
        self.total = rows.sum(axis=0) + (0 if self.total is None else self.total)
        self.gram = (np.sum(rows ** 2, axis=0) if wide else rows.T @ rows) + (0 if self.gram is None else self.gram)

    def covariance(self, m: np.ndarray) -> np.ndarray:
        """Covariance between the sums of channels that `m` ([atoms, channels] 0/1) groups into atoms."""
        mean = self.total / self.n
        if self.gram.ndim == 1:
            return (m * (self.gram / self.n - mean ** 2)) @ m.T
        return m @ (self.gram / self.n - np.outer(mean, mean)) @ m.T

    def power(self) -> np.ndarray:
        return (self.gram if self.gram.ndim == 1 else np.diag(self.gram)) / self.n


@dataclass
class Consumer:
    """A Conv/Gemm/MatMul reading pruned channels, as least squares: Y = [X 1] W over sampled positions."""

    gram: np.ndarray  # [X 1]'[X 1], fan-in (+ bias) squared
    weights: np.ndarray  # W, [fan-in (+ bias), out]
    per_unit: int  # fan-in columns per unit of the weight's input axis (kh*kw for a Conv, 1 for a Gemm)


@dataclass
class Evidence:
    """What the data criteria measure on the unpruned model; filled by `gather` for the groups at hand.

    `channels`: per tensor, channel statistics at `rows` sampled positions; `consumers`: per Conv/Gemm/
    MatMul node reading the groups, its least-squares normal equations on the same kind of sample.
    """

    model: onnx.ModelProto
    samples: Samples
    rows: int = 4096
    seed: int = 0
    max_fan_in: int = 4096  # larger layers are left out of the reconstruction criterion (memory)
    channels: dict[str, _ChannelStats] = field(default_factory=dict)
    consumers: dict[str, Consumer] = field(default_factory=dict)

    def gather(self, groups: list[Group], axes: dict[str, int], consumers: bool) -> None:
        """One pass over the samples; `axes`: the channel axis of every tensor (DepGraph spaces)."""
        from edgeprune.prune.reconstruct import _Layer, _stream  # reconstruct reads layers the same way

        nodes = {n.name or n.output[0]: n for n in self.model.graph.node}
        tensors = sorted({p.tensor for g in groups for p in _readers(g)})
        layers = [_Layer(self.model, nodes[name], []) for name in sorted({p.node for g in groups for p in _readers(g)})
                  if consumers and nodes[name].op_type in LINEAR_OPS]
        layers = [layer for layer in layers if not layer.why_not(self.model) and layer.groups == 1
                  and layer.weights()[0].shape[1] <= self.max_fan_in]
        names = list(dict.fromkeys([*tensors, *(t for layer in layers for t in (layer.node.input[0], layer.node.output[0]))]))
        rng = np.random.default_rng(self.seed)
        per_sample = max(1, ceil(self.rows / len(self.samples)))
        grams = {id(layer): 0.0 for layer in layers}
        rows = {id(layer): [] for layer in layers}  # folded into the Gram in blocks: per-sample products cost more

        def fold(layer) -> None:
            if not rows[id(layer)]:
                return
            x = np.concatenate(rows[id(layer)])
            x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
            grams[id(layer)], rows[id(layer)] = grams[id(layer)] + x.T @ x, []

        for values in _stream(self.model, self.samples, names):
            for t in tensors:
                flat = np.moveaxis(values[t], axes[t], -1).reshape(-1, values[t].shape[axes[t]])
                picked = rng.choice(len(flat), min(per_sample, len(flat)), replace=False)
                self.channels.setdefault(t, _ChannelStats()).add(flat[picked])
            for layer in layers:
                out = values[layer.node.output[0]]
                count = len(layer.rows(out))
                picked = np.sort(rng.choice(count, min(per_sample, count), replace=False))
                rows[id(layer)].append(layer.inputs(values[layer.node.input[0]], out.shape, picked))
                if len(rows[id(layer)]) * len(picked) >= FOLD_ROWS:
                    fold(layer)
        for layer in layers:
            fold(layer)
            w, b = layer.weights()
            self.consumers[layer.node.name or layer.node.output[0]] = Consumer(
                grams[id(layer)], np.concatenate([w, b[:, None]], axis=1).T, w.shape[1] // _units(layer))


def _readers(group: Group) -> list[ParamSlice]:
    """The parameters that read the group's channels: where its activations matter."""
    return [p for p in group.params if p.role == "in"]


def _units(layer) -> int:
    """Input units of a layer's weight: input channels of a Conv, features of a Gemm/MatMul."""
    dims = layer.inits[layer.node.input[1]].dims
    return int(dims[1] if layer.op == "Conv" else dims[0 if layer.transposed else 1])


def _membership(group: Group, p: ParamSlice, width: int) -> np.ndarray:
    """[atoms, width] 0/1: which of the parameter's units (along its axis) each atom owns."""
    m = np.zeros((group.size, width))
    for k, atom in enumerate(group.atoms):
        for channel in atom.get(p.tensor, ()):
            m[k, np.atleast_1d(p.index[channel])] = 1
    return m


def _magnitude(power: int) -> Callable[[Group, Evidence | None], np.ndarray]:
    """L-p norm over the out-filters, BN gammas and in-slices of each atom, each slice counted once."""

    def score(group: Group, evidence: Evidence | None = None, roles: tuple[str, ...] = ("out", "in", "scale")) -> np.ndarray:
        per_param = []
        params = [p for p in group.params if p.role in roles]
        for p in params:
            values = np.abs(np.asarray(p.const.values, dtype=np.float64)) ** power
            axes = tuple(a for a in range(values.ndim) if a != p.axis)
            per_param.append(values.sum(axis=axes) if axes else values)
        scores = np.zeros(group.size)
        for k, atom in enumerate(group.atoms):
            seen: set[tuple[int, int, int]] = set()
            for pid, p in enumerate(params):
                for channel in atom.get(p.tensor, ()):
                    key = (id(p.const), p.axis, int(p.index[channel]))
                    if key not in seen:
                        seen.add(key)
                        scores[k] += per_param[pid][p.index[channel]]
        return scores ** (1.0 / power)

    return score


def _bn_scale(group: Group, evidence: Evidence | None = None) -> np.ndarray:
    """|gamma| of the BatchNorms on the group's channels (Network Slimming); L2 magnitude without one."""
    if not any(p.role == "scale" for p in group.params):
        return _magnitude(2)(group)
    return _magnitude(1)(group, roles=("scale",))


def _channel_moments(group: Group, evidence: Evidence) -> tuple[np.ndarray, np.ndarray]:
    """Per atom: mean square of its activations, and the covariance between atoms, over what consumers read."""
    power, cov = np.zeros(group.size), np.zeros((group.size,) * 2)
    for tensor in sorted({p.tensor for p in _readers(group)}):
        stats = evidence.channels[tensor]
        m = np.zeros((group.size, len(stats.total)))
        for k, atom in enumerate(group.atoms):
            m[k, atom.get(tensor, [])] = 1
        power += m @ stats.power()
        cov += stats.covariance(m)
    return power, cov


def _activation(group: Group, evidence: Evidence) -> np.ndarray:
    """Root mean square of the channel's activation where its consumers read it."""
    if not _readers(group):
        return _magnitude(2)(group)
    return np.sqrt(_channel_moments(group, evidence)[0])


def _redundancy(group: Group, evidence: Evidence) -> np.ndarray:
    """mRMR: greedily keep the channel with the most activation not already carried by a kept one.

    Value of a candidate: its RMS activation times (1 - its largest |correlation| with those kept);
    the score is that value when picked, non-increasing along the picks so the ranking follows them.
    """
    if not _readers(group):
        return _magnitude(2)(group)
    power, cov = _channel_moments(group, evidence)
    std = np.sqrt(np.maximum(np.diag(cov), 1e-12))
    corr = np.abs(cov / np.outer(std, std))
    relevance = np.sqrt(power)
    carried, left = np.zeros(group.size), np.ones(group.size, bool)
    scores = np.zeros(group.size)
    for _ in range(group.size):
        value = np.where(left, relevance * (1 - carried), -np.inf)
        pick = int(np.argmax(value))
        scores[pick], left[pick] = value[pick], False
        carried = np.maximum(carried, corr[pick])
    order = np.argsort(-scores, kind="stable")
    scores[order] = np.minimum.accumulate(np.maximum(scores[order], 0)) + 1e-9 * np.arange(group.size, 0, -1)
    return scores


class _Refit:
    """One consumer during greedy removal: the inverse Gram and the least-squares weights of what is left."""

    def __init__(self, consumer: Consumer, columns: list[np.ndarray], ridge: float = 1e-3):
        gram = consumer.gram
        fan_in = len(gram) - 1
        damp = np.zeros(len(gram))
        damp[:fan_in] = ridge * float(np.trace(gram[:fan_in, :fan_in])) / max(fan_in, 1)
        self.inverse = np.linalg.pinv(gram + np.diag(damp), hermitian=True)
        self.weights = consumer.weights.copy()
        self.energy = max(float(np.sum(consumer.weights * (gram @ consumer.weights))), 1e-30)
        self.columns = columns  # per atom: its fan-in columns in this consumer (empty: not read here)

    def cost(self, k: int) -> float:
        """Error added (relative to the output energy) by removing atom k and refitting the rest (OBS)."""
        cols = self.columns[k]
        if not len(cols):
            return 0.0
        block = np.linalg.pinv(self.inverse[np.ix_(cols, cols)], hermitian=True)
        w = self.weights[cols]
        return float(np.sum(w * (block @ w))) / self.energy

    def remove(self, k: int) -> None:
        cols = self.columns[k]
        if not len(cols):
            return
        block = np.linalg.pinv(self.inverse[np.ix_(cols, cols)], hermitian=True)
        link = self.inverse[:, cols] @ block
        self.weights -= link @ self.weights[cols]
        self.inverse -= link @ self.inverse[cols]
        self.weights[cols] = 0


def _reconstruction(group: Group, evidence: Evidence) -> np.ndarray:
    """Greedily remove the atom whose loss the consumers' least-squares refit compensates best.

    Every consumer is a least-squares problem on calibration inputs; removing an atom's columns and
    refitting the rest costs w_B' (H^-1_BB)^-1 w_B (Optimal Brain Surgeon for a block), relative to
    the consumer's output energy; after each pick the inverse and the weights are updated as a refit
    would. The score is the summed error once the atom is gone (non-decreasing along the greedy
    order), so it compares across groups as it is. Groups no modelled consumer reads: activation.
    """
    refits = []
    for p in _readers(group):
        consumer = evidence.consumers.get(p.node)
        if consumer is None:
            continue
        units = _membership(group, p, (len(consumer.gram) - 1) // consumer.per_unit)
        columns = [(np.flatnonzero(row)[:, None] * consumer.per_unit + np.arange(consumer.per_unit)).ravel()
                   for row in units]
        refits.append(_Refit(consumer, columns))
    if not refits:
        return _activation(group, evidence)
    left = np.ones(group.size, bool)
    scores, error = np.zeros(group.size), 0.0
    for step in range(group.size):
        costs = np.array([sum(r.cost(k) for r in refits) if left[k] else np.inf for k in range(group.size)])
        pick = int(np.argmin(costs))
        error = max(error, error + float(costs[pick]))
        scores[pick], left[pick] = error + 1e-12 * step, False
        for r in refits:
            r.remove(pick)
    return scores


@dataclass(frozen=True)
class Criterion:
    score: Callable[[Group, Evidence | None], np.ndarray]
    data: bool = False  # measured on calibration samples (Evidence)
    consumers: bool = False  # needs the consumers' least-squares problems (costlier)
    normalize: bool = True  # divide by the group's mean so that global ranking compares groups fairly


CRITERIA: dict[str, Criterion] = {
    "l1": Criterion(_magnitude(1)),
    "l2": Criterion(_magnitude(2)),
    "bn-scale": Criterion(_bn_scale),
    "activation": Criterion(_activation, data=True),
    "redundancy": Criterion(_redundancy, data=True),
    "reconstruction": Criterion(_reconstruction, data=True, consumers=True),
}


def evidence_for(criterion: str | list[str], model: onnx.ModelProto, groups: list[Group], axes: dict[str, int],
                 samples: Samples | None) -> Evidence | None:
    """The calibration statistics the criterion (or all of several) needs; None for weight criteria."""
    names = [criterion] if isinstance(criterion, str) else criterion
    specs = [_criterion(name) for name in names]
    data = [name for name, spec in zip(names, specs) if spec.data]
    if not data:
        return None
    if not samples:
        raise UserError(f"criterion '{data[0]}' ranks channels on calibration data: give calibration samples (--calib)")
    evidence = Evidence(model, samples)
    evidence.gather(groups, axes, any(spec.consumers for spec in specs))
    return evidence


def _criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise UserError(f"criterion '{name}': expected one of {', '.join(CRITERIA)}")
    return CRITERIA[name]


def importance(group: Group, criterion: str = "l1", evidence: Evidence | None = None) -> np.ndarray:
    """Per-atom scores of a group, normalized to mean 1 (all zeros stay zeros) unless the criterion is not."""
    spec = _criterion(criterion)
    if spec.data and evidence is None:
        raise UserError(f"criterion '{criterion}' ranks channels on calibration data: give calibration samples (--calib)")
    scores = spec.score(group, evidence)
    mean = float(scores.mean()) if scores.size else 0.0
    return scores / mean if spec.normalize and mean > 0 else scores
