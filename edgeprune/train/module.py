"""An ONNX graph as a trainable torch module whose parameters ARE the model's initializers.

Our own small interpreter (ops.py holds the op table) rather than onnx2torch: onnx2torch (1.5.15
on PyPI) maps nodes to torch modules with their own parameter names, so writing the trained
weights back into the ONNX file would need a name map per converter; and its torch pins trail
ours. Here an initializer is looked up by its ONNX name both ways, so write-back is exact and
the pruned model's structure, names and non-trained constants are untouched.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edgeprune.errors import UserError
from edgeprune.train.ops import MULTI_OUTPUT, OPS, TRAINING_AWARE

# op -> input positions whose float initializers are trained (weights, biases, BN affine, PReLU slopes).
TRAINABLE: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1), "BatchNormalization": (1, 2),
    "InstanceNormalization": (1, 2), "PRelu": (1,),
    # elementwise constants train only when they are per-channel (a bias after MatMul), never scalars
    "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1),
}
ELEMENTWISE = {"Add", "Sub", "Mul"}
# op -> input position of the weight that masks (pruning) apply to
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def _attrs(node: onnx.NodeProto) -> dict:
    values = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        values[attr.name] = value.decode() if isinstance(value, bytes) else value
    return values


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def trainable_names(model: onnx.ModelProto) -> set[str]:
    """Float initializers read at a TRAINABLE position (per-channel ones only for elementwise ops)."""
    inits = {i.name: i for i in model.graph.initializer}
    names = set()
    for node in model.graph.node:
        for pos in TRAINABLE.get(node.op_type, ()):
            name = node.input[pos] if pos < len(node.input) else ""
            init = inits.get(name)
            if init is None or init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
                continue
            if node.op_type in ELEMENTWISE and int(np.prod(init.dims)) <= 1:
                continue
            names.add(name)
    return names


def weight_names(model: onnx.ModelProto) -> list[str]:
    """Initializers that are the weights of Conv/Gemm/MatMul (what unstructured pruning zeroes)."""
    inits = {i.name for i in model.graph.initializer}
    found = [n.input[WEIGHT_INPUT[n.op_type]] for n in model.graph.node
             if n.op_type in WEIGHT_INPUT and len(n.input) > WEIGHT_INPUT[n.op_type]]
    return list(dict.fromkeys(name for name in found if name in inits))


class OnnxModule(nn.Module):
    """Runs the ONNX graph node by node with torch ops; `masks` multiply weights on every use.

    Parameters live in `self.weights` under keys t0, t1, ... (torch forbids dots in names);
    `self.names` maps ONNX initializer names to those keys.
    """

    def __init__(self, model: onnx.ModelProto, trainable: set[str] | None = None):
        super().__init__()
        graph = model.graph
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
            raise UserError("fine-tuning: models with subgraphs (If, Loop, Scan) cannot be trained")
        self.opset = _opset(model)
        trainable = trainable_names(model) if trainable is None else trainable
        self.weights = nn.ParameterDict()
        self.names: dict[str, str] = {}
        self.initializer_names = [init.name for init in graph.initializer]
        for k, init in enumerate(graph.initializer):
            key, value = f"t{k}", torch.from_numpy(numpy_helper.to_array(init).copy())
            self.names[init.name] = key
            if init.name in trainable:
                self.weights[key] = nn.Parameter(value)
            else:
                self.register_buffer(key, value)
        for k, node in enumerate(n for n in graph.node if n.op_type == "Constant"):
            key = f"c{k}"
            self.names[node.output[0]] = key
            self.register_buffer(key, torch.from_numpy(numpy_helper.to_array(_attrs(node)["value"]).copy()))
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant":
                continue
            if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
                raise UserError(f"fine-tuning: op {node.op_type} (node '{node.name}') has no torch translation "
                                f"(known: {', '.join(sorted(OPS))})")
            self.nodes.append((node.op_type, list(node.input), list(node.output), _attrs(node), node.name))
        feeds = {i.name for i in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in feeds]
        self.output_names = [o.name for o in graph.output]
        self.masks: dict[str, torch.Tensor] = {}  # ONNX name -> 0/1 tensor of the weight's shape
        self.straight_through = False  # splicing: masked forward, gradients reach pruned weights too
        self.codebooks: dict[str, torch.Tensor] = {}  # ONNX name -> 0/1 per centroid (0: the pruned zero, frozen)

    def tie(self, name: str) -> int:
        """Train `name` as shared weights (Deep Compression's centroid fine-tuning): its parameter becomes
        the codebook of its distinct values, each weight a fixed index into it, so autograd sums the
        gradients of a cluster's weights into its centroid; a zero centroid (pruned weights) stays 0.
        Returns the codebook size."""
        key = self.names[name]
        codebook, indices = torch.unique(self.weights[key].detach(), return_inverse=True)
        del self.weights[key]
        self.weights[key] = nn.Parameter(codebook)
        self.register_buffer(f"{key}_index", indices)
        self.codebooks[name] = (codebook != 0).to(codebook.dtype)
        self.masks.pop(name, None)  # the zero centroid already keeps pruned weights at zero
        return codebook.numel()

    def tensor(self, name: str) -> torch.Tensor:
        """An initializer's current value as the graph sees it (masked when a mask is set)."""
        key = self.names[name]
        value = self.weights[key] if key in self.weights else getattr(self, key)
        if name in self.codebooks:
            return (value * self.codebooks[name])[getattr(self, f"{key}_index")]
        mask = self.masks.get(name)
        if mask is None:
            return value
        if self.straight_through:
            return value - (value * (1 - mask)).detach()
        return value * mask

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        env: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs))
        for op, names, outs, attrs, node_name in self.nodes:
            args = [None if not n else env[n] if n in env else self.tensor(n) for n in names]
            extra = {"outputs": len(outs)} if op in MULTI_OUTPUT else {"training": self.training} if op in TRAINING_AWARE else {}
            try:
                result = OPS[op](args, attrs, self.opset, **extra)
            except NotImplementedError as exc:
                raise UserError(f"fine-tuning: node '{node_name}' ({op}): {exc} is not supported") from None
            for name, value in zip(outs, result if isinstance(result, (list, tuple)) else [result]):
                env[name] = value
        outputs = tuple(env[n] if n in env else self.tensor(n) for n in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def initializers(self) -> dict[str, np.ndarray]:
        """Every initializer's current value (masks applied), by ONNX name."""
        with torch.no_grad():
            return {name: self.tensor(name).cpu().numpy() for name in self.initializer_names}


def write_back(model: onnx.ModelProto, module: OnnxModule) -> onnx.ModelProto:
    """A copy of `model` whose initializers hold the module's values, in their original dtypes."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    values = module.initializers()
    for init in out.graph.initializer:
        old = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(values[init.name].astype(old.dtype).reshape(old.shape), init.name))
    return out


def max_difference(model: onnx.ModelProto, module: OnnxModule, feeds: list[dict[str, np.ndarray]]) -> float:
    """Largest |onnxruntime - torch| over all outputs of the given feeds (module in eval mode)."""
    from edgeprune.graph.runtime import run, session

    sess = session(model)
    was_training = module.training
    module.eval()
    worst = 0.0
    with torch.no_grad():
        for feed in feeds:
            ref = run(model, feed, sess)
            got = module(*(torch.from_numpy(np.asarray(feed[n])) for n in module.input_names))
            got = got if isinstance(got, tuple) else (got,)
            for name, value in zip(module.output_names, got):
                worst = max(worst, float(np.max(np.abs(ref[name].astype(np.float64) - value.numpy()), initial=0.0)))
    module.train(was_training)
    return worst
