"""Recovery without training: least-squares reconstruction of the layers that read pruned channels.

He et al. 2017 / ThiNet: a layer that lost input channels is refit so that its output on calibration
data matches the original model's (pre-activation) output from what the pruned model now feeds it.
Layers go in topological order, each seeing the already refit ones before it. Only a few output
positions per sample are used, and only the normal equations (X'X, X'Y) are kept, so memory grows
with the layer's fan-in, not with the data. A solution that fits worse than the pruned weights on
those positions is not taken, so no layer's error grows at that point.

With `relu=True`, a layer whose output goes only through a BatchNormalization into a Relu is fit
where it matters: where the original's ReLU outputs zero, any value below the ReLU's threshold is
as good as the original's, so those targets are replaced by the fit's own value when it stays
below the threshold, else by the threshold (iterated least squares on the ReLU's output error).

`recover` is the whole recovery: reconstruction, BatchNorm re-estimation, then the layers that write
a graph output (a classifier) refit once more, last, on every calibration sample (module doc of
`recover`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import ceil

import numpy as np
import onnx
from onnx import numpy_helper

from edgeprune.graph.runtime import session

Samples = list[dict[str, np.ndarray]]


@dataclass
class LayerReport:
    node: str
    op: str
    error_pruned: float  # ||Y - Y_orig|| / ||Y_orig|| of plain pruning, on the sampled positions
    error_reconstructed: float  # the same after reconstruction (equal to error_pruned when skipped)
    skipped: str = ""  # why the layer was left as pruned
    relu: bool = False  # fit on the output of the Relu after it (reconstruct(relu=True)); errors stay pre-ReLU

    def as_dict(self) -> dict:
        return asdict(self)


class _Layer:
    """A Conv/Gemm/MatMul as `groups` blocks of y = W x + b over rows of patches or features."""

    def __init__(self, model: onnx.ModelProto, node: onnx.NodeProto, removed_out: list[int]):
        self.node, self.op, self.removed_out = node, node.op_type, removed_out
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self.inits = {i.name: i for i in model.graph.initializer}
        self.groups = int(self.attrs.get("group", 1))

    def why_not(self, model: onnx.ModelProto) -> str:
        """Empty when the layer can be refit in place."""
        if self.node.input[1] not in self.inits or _readers(model, self.node.input[1]) != 1:
            return "weight is not a constant of its own"
        if self.op == "Conv" and (len(self.inits[self.node.input[1]].dims) != 4
                                  or self.attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
            return "only 2-D convolutions with explicit pads"
        if self.op == "Gemm" and (self.attrs.get("transA", 0) or self.attrs.get("alpha", 1.0) != 1.0
                                  or self.attrs.get("beta", 1.0) != 1.0):
            return "Gemm with transA, alpha or beta"
        if self.bias and (self.bias not in self.inits or _readers(model, self.bias) != 1
                          or int(np.prod(self.inits[self.bias].dims)) != self.outputs):
            return "bias is not a per-channel constant of its own"
        return ""

    @property
    def has_bias(self) -> bool:
        return self.op != "MatMul"

    @property
    def bias(self) -> str:
        return self.node.input[2] if len(self.node.input) > 2 else ""

    @property
    def transposed(self) -> bool:
        """The weight is stored [fan-in, out]."""
        return self.op == "MatMul" or (self.op == "Gemm" and not self.attrs.get("transB", 0))

    @property
    def outputs(self) -> int:
        return int(self.inits[self.node.input[1]].dims[1 if self.transposed else 0])

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(W [out, fan-in], b [out]) in the row layout the solver uses."""
        w = numpy_helper.to_array(self.inits[self.node.input[1]]).astype(np.float64)
        w = w.T if self.transposed else w.reshape(len(w), -1)
        b = numpy_helper.to_array(self.inits[self.bias]).reshape(-1) if self.bias else np.zeros(len(w))
        return w, b.astype(np.float64)

    def set_weights(self, model: onnx.ModelProto, w: np.ndarray, b: np.ndarray) -> None:
        old = self.inits[self.node.input[1]]
        dtype = numpy_helper.to_array(old).dtype
        shaped = w.T if self.transposed else w.reshape(old.dims)
        old.CopyFrom(numpy_helper.from_array(shaped.astype(dtype), old.name))
        if not self.has_bias:
            return
        if self.bias:
            bias = self.inits[self.bias]
            bias.CopyFrom(numpy_helper.from_array(b.reshape(bias.dims).astype(dtype), bias.name))
            return
        taken = {i.name for i in model.graph.initializer} | {t for n in model.graph.node for t in [*n.input, *n.output]}
        name = f"{old.name}.bias"
        while name in taken:
            name += "_"
        model.graph.initializer.append(numpy_helper.from_array(b.astype(dtype), name))
        self.node.input.append(name)

    def rows(self, y: np.ndarray) -> np.ndarray:
        """Output as [positions, channels]."""
        return (np.moveaxis(y, 1, -1) if self.op == "Conv" else y).reshape(-1, y.shape[1 if self.op == "Conv" else -1])

    def inputs(self, x: np.ndarray, out_shape: tuple[int, ...], picked: np.ndarray) -> np.ndarray:
        """Fan-in rows [picked, C*kh*kw] (im2col at the picked output positions), as W's rows read them."""
        if self.op != "Conv":
            return x.reshape(-1, x.shape[-1])[picked].astype(np.float64)
        kh, kw = self.inits[self.node.input[1]].dims[2:]
        sh, sw = self.attrs.get("strides", [1, 1])
        dh, dw = self.attrs.get("dilations", [1, 1])
        top, left, bottom, right = self.attrs.get("pads", [0, 0, 0, 0])
        n, oh, ow = np.unravel_index(picked, (out_shape[0], *out_shape[2:]))
        xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        hh = oh[:, None] * sh + np.arange(kh) * dh
        ww = ow[:, None] * sw + np.arange(kw) * dw
        patches = xp[n[:, None, None], :, hh[:, :, None], ww[:, None, :]]  # [P, kh, kw, C]
        return patches.transpose(0, 3, 1, 2).reshape(len(picked), -1).astype(np.float64)


def _readers(model: onnx.ModelProto, name: str) -> int:
    return sum(t == name for n in model.graph.node for t in n.input)


RELU_ITERATIONS = 4  # refits on the ReLU-aware targets; the error falls most in the first two
RELU_MAX_ROWS = 1 << 24  # fan-in x sampled rows kept in memory (float32) for those refits; larger layers skip them


def _only_reader(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    if any(o.name == name for o in model.graph.output):
        return None
    readers = [n for n in model.graph.node if name in n.input]
    return readers[0] if len(readers) == 1 else None


def _relu_floor(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray | None:
    """Per output channel, the layer's value below which the Relu after it (via one BatchNormalization or
    none) outputs 0; None when the output goes anywhere else (a residual Add, several readers)."""
    after = _only_reader(model, node.output[0])
    if after is None or after.op_type not in ("BatchNormalization", "Relu"):
        return None
    if after.op_type == "Relu":
        return np.zeros(1)
    inits = {i.name: i for i in model.graph.initializer}
    relu = _only_reader(model, after.output[0])
    if relu is None or relu.op_type != "Relu" or not all(n in inits for n in after.input[1:5]):
        return None
    gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in after.input[1:5])
    eps = next((a.f for a in after.attribute if a.name == "epsilon"), 1e-5)
    return mean - beta * np.sqrt(var + eps) / gamma if np.all(gamma > 0) else None


def _relu_fit(x: np.ndarray, y: np.ndarray, floor: np.ndarray, gram: np.ndarray, candidates: list[np.ndarray],
              ridge: float, bias: bool) -> np.ndarray:
    """Of the candidates and the last one refit to ReLU-aware targets, the weights whose ReLU output is closest."""
    dead = y <= floor
    w = candidates[-1]
    for _ in range(RELU_ITERATIONS):
        w = _solve(gram, x.T @ np.where(dead, np.minimum(x @ w, floor), y), ridge, bias)
    errors = [float(np.sum((np.maximum(x @ v, floor) - np.maximum(y, floor)) ** 2)) for v in [*candidates, w]]
    return [*candidates, w][int(np.argmin(errors))]


def _outputs_of(model: onnx.ModelProto, names: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy that also returns the named intermediate tensors."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    out.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                            for n in dict.fromkeys(names) if n not in present)
    return out, list(dict.fromkeys(names))


def _stream(model: onnx.ModelProto, samples: Samples, names: list[str]):
    """Per sample: the named tensors (as a dict)."""
    extended, names = _outputs_of(model, names)
    sess = session(extended)
    for feeds in samples:
        yield dict(zip(names, sess.run(names, feeds)))


def _solve(gram: np.ndarray, cross: np.ndarray, ridge: float, bias: bool) -> np.ndarray:
    """Ridge least squares from the normal equations; the bias column is not shrunk."""
    fan_in = len(gram) - bias
    scale = float(np.trace(gram[:fan_in, :fan_in])) / max(fan_in, 1)
    reg = np.zeros(len(gram))
    reg[:fan_in] = ridge * scale
    return np.linalg.lstsq(gram + np.diag(reg), cross, rcond=None)[0]


def _sq_error(gram: np.ndarray, cross: np.ndarray, w: np.ndarray) -> float:
    """||X w - Y||^2 without ||Y||^2, from X'X and X'Y."""
    return float(np.sum(w * (gram @ w)) - 2 * np.sum(w * cross))


@dataclass
class _Target:
    """Per sample: the picked output positions, the output's shape, the original's rows there (kept channels)."""

    picked: list[np.ndarray] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    plain: list[np.ndarray] = field(default_factory=list)  # plain pruning's rows, for the error before


def _targets(original: onnx.ModelProto, pruned: onnx.ModelProto, layers: list[_Layer], samples: Samples, rows: int,
             seed: int) -> list[_Target]:
    rng = np.random.default_rng(seed)
    per_sample = max(1, ceil(rows / len(samples)))
    names = [layer.node.output[0] for layer in layers]
    targets = [_Target() for _ in layers]
    for ref, got in zip(_stream(original, samples, names), _stream(pruned, samples, names)):
        for layer, target in zip(layers, targets):
            name = layer.node.output[0]
            flat = layer.rows(ref[name])
            picked = np.sort(rng.choice(len(flat), min(per_sample, len(flat)), replace=False))
            target.picked.append(picked)
            target.shapes.append(got[name].shape)
            target.rows.append(np.delete(flat[picked], layer.removed_out, axis=1).astype(np.float64))
            target.plain.append(layer.rows(got[name])[picked].astype(np.float64))
    return targets


def _refit(model: onnx.ModelProto, layer: _Layer, target: _Target, samples: Samples, ridge: float,
           relu: bool = False) -> LayerReport:
    """Solve the layer (per group) on what `model` feeds it now; write the weights if they fit better
    (on the ReLU's output, with `relu`, where one follows)."""
    node = layer.node
    y_all = np.concatenate(target.rows)
    norm = float(np.sum(y_all ** 2)) or 1.0
    before = float(np.sqrt(np.sum((np.concatenate(target.plain) - y_all) ** 2) / norm))
    why = layer.why_not(model)
    if why:
        return LayerReport(node.name, node.op_type, before, before, why)
    w, b = layer.weights()
    groups, fan_in = layer.groups, w.shape[1]
    out = len(w) // groups
    dim = fan_in + layer.has_bias
    gram, cross = np.zeros((groups, dim, dim)), np.zeros((groups, dim, out))
    floor = _relu_floor(model, node) if relu and groups == 1 and len(y_all) * dim <= RELU_MAX_ROWS else None
    kept = []
    for k, values in enumerate(_stream(model, samples, [node.input[0]])):
        x = layer.inputs(values[node.input[0]], target.shapes[k], target.picked[k])
        x = x.reshape(len(x), groups, fan_in)
        if layer.has_bias:
            x = np.concatenate([x, np.ones((len(x), groups, 1))], axis=2)
        y = target.rows[k].reshape(len(x), groups, out)
        gram += np.einsum("pgi,pgj->gij", x, x)
        cross += np.einsum("pgi,pgo->gio", x, y)
        if floor is not None:
            kept.append(x[:, 0].astype(np.float32))
    current = np.concatenate([w.reshape(groups, out, fan_in), b.reshape(groups, out, 1)], axis=2)
    current = current[:, :, :dim].transpose(0, 2, 1)  # as the solver's [fan-in (+ bias), out] per group
    solved = np.stack([_solve(gram[g], cross[g], ridge, layer.has_bias) for g in range(groups)])
    best = solved if _sq_error(gram, cross, solved) < _sq_error(gram, cross, current) else current
    if floor is not None:
        best = _relu_fit(np.concatenate(kept), y_all, floor, gram[0], [current[0], best[0]], ridge,
                         layer.has_bias)[None]
    if best is not current:
        new_w = best[:, :fan_in].transpose(0, 2, 1).reshape(len(w), fan_in)
        layer.set_weights(model, new_w, best[:, fan_in].reshape(-1) if layer.has_bias else b)
    error = _sq_error(gram, cross, best) + norm
    return LayerReport(node.name, node.op_type, before, float(np.sqrt(max(error, 0.0) / norm)), relu=floor is not None)


def reconstruct(original: onnx.ModelProto, pruned: onnx.ModelProto, removed: dict[str, list[int]], samples: Samples,
                rows: int = 16384, ridge: float = 1e-3, seed: int = 0, relu: bool = False,
                outputs_only: bool = False) -> tuple[onnx.ModelProto, list[LayerReport]]:
    """Refit every Conv/Gemm/MatMul of `pruned` whose input lost channels (`removed`, as PruneReport.removed).

    `rows`: output positions sampled per layer over all `samples`; `ridge`: shrinkage relative to the
    mean input energy, which keeps nearly collinear channels from blowing up the weights; `relu`:
    layers followed by (BatchNormalization and) Relu are fit on the ReLU's output (module doc);
    `outputs_only`: only those of the layers that write a graph output.
    """
    model = onnx.ModelProto()
    model.CopyFrom(pruned)
    outputs = {o.name for o in model.graph.output}
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[0] in removed
             and (not outputs_only or n.output[0] in outputs)]
    if not nodes or not samples:
        return model, []
    layers = [_Layer(model, n, removed.get(n.output[0], [])) for n in nodes]
    targets = _targets(original, model, layers, samples, rows, seed)
    return model, [_refit(model, layer, target, samples, ridge, relu) for layer, target in zip(layers, targets)]


@dataclass
class BatchNormReport:
    node: str
    shift: float  # mean |change of the normalized mean| over channels, in units of the original std
    scale: float  # mean |log of the change of std| over channels


def _moments(model: onnx.ModelProto, samples: Samples, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (axis 1): mean and standard deviation of a tensor over the samples."""
    n, total, square = 0, 0.0, 0.0
    for values in _stream(model, samples, [name]):
        x = np.moveaxis(values[name], 1, 0).reshape(values[name].shape[1], -1).astype(np.float64)
        n, total, square = n + x.shape[1], total + x.sum(axis=1), square + (x ** 2).sum(axis=1)
    mean = total / n
    return mean, np.sqrt(np.maximum(square / n - mean ** 2, 0.0))


def reestimate_batchnorm(original: onnx.ModelProto, pruned: onnx.ModelProto, removed: dict[str, list[int]],
                         samples: Samples, limit: int = 512) -> tuple[onnx.ModelProto, list[BatchNormReport]]:
    """Re-estimate every BatchNorm's mean/variance so its output keeps the original's statistics.

    Pruning shifts what each BN normalizes; with the running statistics rewritten so that every
    kept channel's output has the same mean and standard deviation on calibration data as in the
    original model, the layers after it see the distribution they were trained on (a no-op when
    nothing changed). BNs go in topological order, each on the already corrected ones before it.
    """
    model = onnx.ModelProto()
    model.CopyFrom(pruned)
    samples = samples[:limit]
    inits = {i.name: i for i in model.graph.initializer}
    reports = []
    for node in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        mean_name, var_name = node.input[3], node.input[4]
        if mean_name not in inits or var_name not in inits or _readers(model, mean_name) + _readers(model, var_name) != 2:
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        mu_o, sd_o = _moments(original, samples, node.input[0])
        kept = np.setdiff1d(np.arange(len(mu_o)), removed.get(node.output[0], []))
        mu_o, sd_o = mu_o[kept], sd_o[kept]
        mu_p, sd_p = _moments(model, samples, node.input[0])
        mean = numpy_helper.to_array(inits[mean_name]).astype(np.float64)
        var = numpy_helper.to_array(inits[var_name]).astype(np.float64)
        ok = (sd_o > 1e-6 * (np.abs(mu_o) + 1)) & (sd_p > 0)
        ratio = np.where(ok, sd_p / np.where(ok, sd_o, 1), 1.0)
        new_mean = np.where(ok, mu_p - (mu_o - mean) * ratio, mean)
        new_var = np.where(ok, np.maximum((var + eps) * ratio ** 2 - eps, 0.0), var)
        for init, values in ((inits[mean_name], new_mean), (inits[var_name], new_var)):
            init.CopyFrom(numpy_helper.from_array(values.astype(numpy_helper.to_array(init).dtype), init.name))
        reports.append(BatchNormReport(node.name, float(np.mean(np.abs(new_mean - mean) / np.sqrt(var + eps))),
                                       float(np.mean(np.abs(np.log(ratio))))))
    return model, reports


OUTPUT_ROWS = 1 << 16  # positions the last refit of the output layers samples: every sample of a classifier
RECONSTRUCT_SAMPLES = 1024  # samples the other layers' fits and BatchNorm statistics read: 16,384 positions and more


@dataclass
class Recovery:
    layers: list[LayerReport]  # reconstruction, in topological order
    batchnorm: list[BatchNormReport]
    outputs: list[LayerReport]  # the output layers' last refit

    def as_dict(self) -> dict:
        return asdict(self)


def recover(original: onnx.ModelProto, pruned: onnx.ModelProto, removed: dict[str, list[int]], samples: Samples,
            relu: bool = False, limit: int = RECONSTRUCT_SAMPLES) -> tuple[onnx.ModelProto, Recovery]:
    """Recovery without training: reconstruction and BatchNorm re-estimation on the first `limit` samples,
    then the layers that write a graph output (a classifier) refit last, on every sample.

    BatchNorm re-estimation changes every activation after the first pruned layer, so the output layers
    no longer see what `reconstruct` fit them on; fit after it, their least squares is against the
    original model's outputs themselves, on the final network. A convolution gets thousands of positions
    from a few images, a classifier after global pooling one per image: with 1,024 images it fits 10
    outputs on that few rows, and more calibration images are what it gains from (10,240 training images:
    +0.16 points held out on the Fashion-MNIST CNN at half the MACs, README "Choosing channels"), at the
    cost of one more pass over them.
    """
    first = samples[:limit]
    model, layers = reconstruct(original, pruned, removed, first, relu=relu)
    model, norms = reestimate_batchnorm(original, model, removed, first)
    model, last = reconstruct(original, model, removed, samples, rows=OUTPUT_ROWS, outputs_only=True)
    return model, Recovery(layers, norms, last)
