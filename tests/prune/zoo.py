"""Small models, one per topology hazard of structured pruning, built in code with random weights.

Every conv is followed by BatchNormalization with random statistics, and weights are far from
uniform, so a channel taken from the wrong index changes the output visibly.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Net:
    """Accumulates nodes and initializers; each method returns its output tensor's name."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, op: str) -> str:
        self.count += 1
        return f"{op.lower()}{self.count}"

    def const(self, values: np.ndarray, name: str | None = None) -> str:
        name = name or self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs) -> str | list[str]:
        name = self._name(op)
        outs = [f"{name}_out{i}" if n_out > 1 else name for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain or None, **attrs))
        return outs if n_out > 1 else outs[0]

    def weights(self, *shape: int) -> np.ndarray:
        return (self.rng.standard_normal(shape) * self.rng.uniform(0.2, 2.0, shape[:1] + (1,) * (len(shape) - 1))
                / np.sqrt(max(1, int(np.prod(shape[1:]))))).astype(np.float32)

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        params = [r.uniform(0.5, 1.5, c), r.normal(0, 0.3, c), r.normal(0, 0.3, c), r.uniform(0.5, 2.0, c)]
        return self.node("BatchNormalization", [x, *(self.const(p.astype(np.float32)) for p in params)])

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1, bn: bool = True,
             act: str | None = "Relu", bias: bool = False) -> str:
        inputs = [x, self.const(self.weights(cout, cin // group, k, k))]
        if bias:
            inputs.append(self.const(self.rng.normal(0, 0.5, cout).astype(np.float32)))
        y = self.node("Conv", inputs, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2, group=group)
        if bn:
            y = self.bn(y, cout)
        return self.node(act, [y]) if act else y

    def gemm(self, x: str, fin: int, fout: int, trans_b: int = 1) -> str:
        w = self.weights(fout, fin)
        return self.node("Gemm", [x, self.const(w if trans_b else w.T.copy()),
                                  self.const(self.rng.normal(0, 0.5, fout).astype(np.float32))], transB=trans_b)

    def head(self, x: str, c: int, classes: int = 5) -> str:
        return self.gemm(self.node("Flatten", [self.node("GlobalAveragePool", [x])]), c, classes)

    def model(self, x_shape: list[int], outputs: dict[str, list[int] | None], opset: int = 17) -> onnx.ModelProto:
        """Output shapes are left to inference unless given (a custom op stops inference)."""
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in outputs.items()]
        graph = helper.make_graph(self.nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  outs, self.inits)
        opsets = [helper.make_opsetid("", opset)]
        if any(n.domain for n in self.nodes):
            opsets.append(helper.make_opsetid("custom.zoo", 1))
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 8
        return onnx.shape_inference.infer_shapes(model)


def chain() -> onnx.ModelProto:
    n = Net(1)
    y = n.conv("x", 3, 8)
    y = n.conv(y, 8, 16, stride=2)
    y = n.conv(y, 16, 12, bias=True)
    return n.model([1, 3, 16, 16], {n.head(y, 12): None})


def resnet_basic(projection: bool) -> onnx.ModelProto:
    n = Net(2)
    x = n.conv("x", 3, 16)
    y = n.conv(x, 16, 24 if projection else 16, stride=2 if projection else 1)
    y = n.conv(y, 24 if projection else 16, 24 if projection else 16, act=None)
    short = n.conv(x, 16, 24, k=1, stride=2, act=None) if projection else x
    y = n.node("Relu", [n.node("Add", [y, short])])
    c = 24 if projection else 16
    y2 = n.conv(n.conv(y, c, c), c, c, act=None)  # a second block: the residual group spans both
    y = n.node("Relu", [n.node("Add", [y, y2])])
    return n.model([1, 3, 16, 16], {n.head(y, c): None})


def resnet_bottleneck(projection: bool) -> onnx.ModelProto:
    n = Net(3)
    x = n.conv("x", 3, 16)
    cout = 32 if projection else 16
    y = n.conv(x, 16, 8, k=1)
    y = n.conv(y, 8, 8, stride=2 if projection else 1)
    y = n.conv(y, 8, cout, k=1, act=None)
    short = n.conv(x, 16, cout, k=1, stride=2, act=None) if projection else x
    y = n.node("Relu", [n.node("Add", [y, short])])
    return n.model([1, 3, 16, 16], {n.head(y, cout): None})


def mobilenet_v2() -> onnx.ModelProto:
    n = Net(4)
    x = n.conv("x", 3, 16, act="Clip")
    y = n.conv(x, 16, 48, k=1, act="HardSwish")  # expand
    y = n.conv(y, 48, 48, group=48, act="Relu")  # depthwise
    y = n.conv(y, 48, 16, k=1, act=None)  # project
    y = n.node("Add", [x, y])
    z = n.conv(y, 16, 32, group=16, act="Relu")  # depthwise with channel multiplier 2
    z = n.conv(z, 32, 24, k=1, act=None)
    return n.model([1, 3, 16, 16], {n.head(z, 24): None})


def squeeze_excite() -> onnx.ModelProto:
    n = Net(5)
    x = n.conv("x", 3, 16)
    x = n.conv(x, 16, 24)
    s = n.node("GlobalAveragePool", [x])
    s = n.conv(s, 24, 6, k=1, bn=False, bias=True)
    s = n.conv(s, 6, 24, k=1, bn=False, bias=True, act="HardSigmoid")
    y = n.node("Mul", [x, s])
    r = n.node("ReduceMean", [y, n.const(np.array([2, 3], np.int64))], keepdims=1)  # SE on ReduceMean
    r = n.conv(r, 24, 8, k=1, bn=False, bias=True, act="Sigmoid")
    r = n.conv(r, 8, 24, k=1, bn=False, bias=True, act="Sigmoid")
    y = n.node("Mul", [r, y])
    y = n.conv(y, 24, 16)
    return n.model([1, 3, 16, 16], {n.head(y, 16): None}, opset=18)


def squeeze_excite_fc() -> onnx.ModelProto:
    """SE with fully connected layers: ReduceSum keepdims=0 -> Gemm -> Gemm -> Unsqueeze -> Mul; InstanceNorm."""
    n = Net(19)
    x = n.conv("x", 3, 16, bn=False, act=None)
    x = n.node("InstanceNormalization", [x, n.const(n.rng.uniform(0.5, 1.5, 16).astype(np.float32)),
                                         n.const(n.rng.normal(0, 0.3, 16).astype(np.float32))])
    x = n.node("Relu", [x])
    s = n.node("ReduceSum", [x, n.const(np.array([-1, 2], np.int64))], keepdims=0)  # (1, 16)
    s = n.node("Relu", [n.gemm(s, 16, 4)])
    s = n.node("Sigmoid", [n.gemm(s, 4, 16, trans_b=0)])
    s = n.node("Unsqueeze", [s, n.const(np.array([2, -1], np.int64))])  # (1, 16, 1, 1)
    y = n.node("Mul", [x, s])
    g = n.node("Squeeze", [n.node("GlobalMaxPool", [y]), n.const(np.array([3, 2], np.int64))])  # (1, 16)
    return n.model([1, 3, 8, 8], {n.gemm(g, 16, 5): None})


def densenet() -> onnx.ModelProto:
    n = Net(6)
    x = n.conv("x", 3, 8)
    a = n.conv(x, 8, 6)
    cat1 = n.node("Concat", [x, a], axis=1)  # 14
    b = n.conv(cat1, 14, 6)
    cat2 = n.node("Concat", [cat1, b], axis=1)  # 20
    y = n.conv(cat2, 20, 10, k=1)
    return n.model([1, 3, 12, 12], {n.head(y, 10): None})


def inception() -> onnx.ModelProto:
    n = Net(7)
    x = n.conv("x", 3, 12)
    b1 = n.conv(x, 12, 6, k=1)
    b2 = n.conv(n.conv(x, 12, 4, k=1), 4, 8)
    b3 = n.conv(n.node("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 12, 5, k=1)
    b4 = n.node("Pad", [x, n.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))])
    b4 = n.conv(n.node("AveragePool", [b4], kernel_shape=[3, 3]), 12, 3, k=1)
    y = n.node("Concat", [b1, b2, b3, b4], axis=1)  # 22
    y = n.conv(y, 22, 10)
    return n.model([1, 3, 12, 12], {n.head(y, 10): None})


def c2f_split() -> onnx.ModelProto:
    """YOLOv8 C2f: Split in two halves, a chain on the second, Concat of all."""
    n = Net(8)
    x = n.conv("x", 3, 16, act="Sigmoid")
    a, b = n.node("Split", [x, n.const(np.array([8, 8], np.int64))], n_out=2, axis=1)
    c = n.conv(b, 8, 8)
    d = n.conv(c, 8, 8)
    d = n.node("Add", [d, c])
    y = n.node("Concat", [a, b, c, d], axis=1)  # 32
    y = n.conv(y, 32, 12, k=1)
    u, v, w = n.node("Split", [y, n.const(np.array([3, 4, 5], np.int64))], n_out=3, axis=1)
    y = n.node("Concat", [n.conv(u, 3, 4), v, n.conv(w, 5, 6)], axis=1)  # 14
    return n.model([1, 3, 12, 12], {n.head(y, 14): None})


def concat_split_misaligned() -> onnx.ModelProto:
    """Split boundaries that cut through Concat inputs, and a tensor concatenated twice."""
    n = Net(23)
    x = n.conv("x", 3, 8)
    a, b = n.conv(x, 8, 6), n.conv(x, 8, 6)
    cat = n.node("Concat", [a, b, a], axis=1)  # 18: a[0:6] b[0:6] a[0:6]
    s0, s1, s2 = n.node("Split", [cat, n.const(np.array([4, 10, 4], np.int64))], n_out=3, axis=1)
    y = n.node("Concat", [n.conv(s0, 4, 5), n.conv(s1, 10, 5), n.conv(s2, 4, 5)], axis=1)
    return n.model([1, 3, 8, 8], {n.head(y, 15): None})


def shufflenet_slice() -> onnx.ModelProto:
    """ShuffleNetV2 unit without the shuffle: Slice halves, branch on one, Concat."""
    n = Net(9)
    x = n.conv("x", 3, 16)
    i64 = lambda *v: n.const(np.array(v, np.int64))  # noqa: E731
    left = n.node("Slice", [x, i64(0), i64(6), i64(1)])
    right = n.node("Slice", [x, i64(6), i64(2**31), i64(1)])  # end clamps
    mid = n.node("Slice", [x, i64(0, 4), i64(1, -4), i64(0, 1)])  # channels 4..11, negative end
    right = n.conv(n.conv(right, 10, 10, k=1), 10, 10, group=10, act=None)
    y = n.node("Concat", [left, right, mid], axis=1)  # 6 + 10 + 8
    y = n.conv(y, 24, 12)
    return n.model([1, 3, 12, 12], {n.head(y, 12): None})


def resnext() -> onnx.ModelProto:
    n = Net(10)
    x = n.conv("x", 3, 16)
    y = n.conv(x, 16, 16, group=4)
    y = n.conv(y, 16, 24, group=2)
    y = n.conv(y, 24, 16, k=1, act=None)
    y = n.node("Relu", [n.node("Add", [x, y])])
    return n.model([1, 3, 12, 12], {n.head(y, 16): None})


def conv_flatten_gemm() -> onnx.ModelProto:
    n = Net(11)
    y = n.conv("x", 3, 6)
    y = n.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = n.conv(y, 6, 8)
    f = n.node("Flatten", [y])  # 8 * 4 * 4
    r = n.node("Reshape", [y, n.const(np.array([1, -1], np.int64))])
    y = n.node("Add", [n.gemm(f, 128, 20), n.gemm(r, 128, 20, trans_b=0)])
    y = n.gemm(n.node("Relu", [y]), 20, 5)
    return n.model([1, 3, 8, 8], {y: None})


def mlp() -> onnx.ModelProto:
    n = Net(12)
    y = n.node("Flatten", ["x"])
    y = n.node("Relu", [n.gemm(y, 48, 32)])
    y = n.node("MatMul", [y, n.const(n.weights(32, 24).T.copy().T)])
    y = n.node("Add", [y, n.const(n.rng.normal(0, 0.5, 24).astype(np.float32))])
    y = n.node("Tanh", [y])
    y = n.node("Mul", [y, n.const(n.rng.uniform(0.5, 2, (1, 24)).astype(np.float32))])
    y = n.node("PRelu", [y, n.const(n.rng.uniform(0.05, 0.3, 24).astype(np.float32))])
    y = n.node("MatMul", [y, n.const(n.weights(24, 16))])
    y = n.gemm(n.node("Sigmoid", [y]), 16, 10, trans_b=0)
    return n.model([1, 3, 4, 4], {y: None})


def fpn() -> onnx.ModelProto:
    n = Net(13)
    c1 = n.conv("x", 3, 8)
    c2 = n.conv(c1, 8, 16, stride=2)
    c3 = n.conv(c2, 16, 24, stride=2)
    p3 = n.conv(c3, 24, 12, k=1, act=None)
    up = n.node("Resize", [p3, "", n.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    p2 = n.node("Add", [n.conv(c2, 16, 12, k=1, act=None), up])
    w = n.const(n.weights(12, 10, 2, 2))
    t = n.node("ConvTranspose", [p2, w, n.const(n.rng.normal(0, 0.5, 10).astype(np.float32))], strides=[2, 2])
    t = n.node("Relu", [n.bn(t, 10)])
    up2 = n.node("Resize", [p2, "", "", n.const(np.array([1, 12, 16, 16], np.int64))], mode="linear")
    y = n.node("Concat", [t, up2, c1], axis=1)  # 10 + 12 + 8
    y = n.conv(y, 30, 4)
    return n.model([1, 3, 16, 16], {n.head(y, 4): None})


def elementwise() -> onnx.ModelProto:
    """Unary ops, per-channel and scalar constants, a broadcast spatial gate, Pad, ReduceMean keepdims=0."""
    n = Net(17)
    f32 = lambda *shape: n.rng.uniform(0.5, 1.5, shape).astype(np.float32)  # noqa: E731
    x = n.conv("x", 3, 12, act="LeakyRelu")
    y = n.node("Sub", [x, n.const(n.rng.normal(0, 1, (1, 12, 1, 1)).astype(np.float32))])
    y = n.node("Div", [y, n.const(np.float32(1.7))])
    y = n.node("Pad", [y, n.const(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)), n.const(np.float32(0.3))])
    y = n.node("Dropout", [y])
    y = n.node("Clip", [y, n.const(np.float32(-1.5)), n.const(np.float32(2.0))])
    y = n.node("Erf", [n.node("Mul", [n.const(f32(12, 1, 1)), y])])
    y = n.node("Add", [y, n.const(f32(1, 1, 15, 15))])  # varies along space only: passes
    gate = n.conv(y, 12, 1, k=1, bn=False, bias=True, act="Sigmoid")  # (N,1,H,W) spatial attention
    y = n.node("Mul", [y, gate])
    y = n.node("Neg", [n.node("Exp", [n.node("Tanh", [n.node("HardSwish", [y])])])])
    y = n.conv(y, 12, 10, act="Elu")
    y = n.node("Sqrt", [n.node("Abs", [y])])
    y = n.node("Max", [y, n.const(f32(10, 1, 1))])
    y = n.node("ReduceMean", [y, n.const(np.array([2, 3], np.int64))], keepdims=0)
    y = n.node("Mul", [y, n.const(f32(1, 10))])
    y = n.gemm(n.node("Softplus", [y]), 10, 5)
    return n.model([1, 3, 12, 12], {y: None}, opset=18)


def upsample_opset9() -> onnx.ModelProto:
    n = Net(18)
    y = n.conv("x", 3, 8)
    y = n.node("Upsample", [y, n.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    y = n.conv(y, 8, 6)
    return n.model([1, 3, 6, 6], {n.head(y, 6): None}, opset=9)


def shared_constants() -> onnx.ModelProto:
    """Exporters deduplicate equal initializers: BN statistics and per-channel scales read by several nodes."""
    n = Net(24)
    x = n.conv("x", 3, 8, bn=False, act=None)
    y = n.conv(x, 8, 8, bn=False, act=None)
    stats = [n.const(n.rng.uniform(0.5, 1.5, 8).astype(np.float32)) for _ in range(4)]
    scale = n.const(n.rng.uniform(0.5, 1.5, (1, 8, 1, 1)).astype(np.float32))
    x = n.node("Mul", [n.node("BatchNormalization", [x, *stats]), scale])
    y = n.node("Mul", [n.node("BatchNormalization", [y, *stats]), scale])
    z = n.conv(n.node("Relu", [y]), 8, 6)
    x = n.conv(n.node("Relu", [x]), 8, 6)
    return n.model([1, 3, 8, 8], {n.head(n.node("Add", [x, z]), 6): None})


def graph_outputs() -> onnx.ModelProto:
    """A feature map is a graph output: its channels (and everything tied to them) stay."""
    n = Net(14)
    x = n.conv("x", 3, 8)
    feat = n.conv(x, 8, 10)
    y = n.conv(feat, 10, 6)
    return n.model([1, 3, 8, 8], {feat: None, n.head(y, 6): None})


def unknown_op() -> onnx.ModelProto:
    """A custom-domain op and an op without a rule (Softmax over channels) block what they touch."""
    n = Net(15)
    x = n.conv("x", 3, 8)
    a = n.conv(x, 8, 8)
    s = n.node("Softmax", [a], axis=1)
    b = n.conv(s, 8, 6)
    c = n.conv(b, 6, 6)
    return n.model([1, 3, 8, 8], {n.head(c, 6): None})


def custom_domain() -> onnx.ModelProto:
    n = Net(16)
    x = n.conv("x", 3, 8)
    y = n.node("Mystery", [x], domain="custom.zoo")
    y = n.conv(n.conv(y, 8, 6), 6, 6)
    return n.model([1, 3, 8, 8], {n.head(y, 6): [1, 5]})


ZOO: dict[str, Callable[[], onnx.ModelProto]] = {
    "chain": chain,
    "resnet_basic": lambda: resnet_basic(False),
    "resnet_basic_projection": lambda: resnet_basic(True),
    "resnet_bottleneck": lambda: resnet_bottleneck(False),
    "resnet_bottleneck_projection": lambda: resnet_bottleneck(True),
    "mobilenet_v2": mobilenet_v2,
    "squeeze_excite": squeeze_excite,
    "squeeze_excite_fc": squeeze_excite_fc,
    "densenet": densenet,
    "inception": inception,
    "c2f_split": c2f_split,
    "shufflenet_slice": shufflenet_slice,
    "concat_split_misaligned": concat_split_misaligned,
    "resnext": resnext,
    "conv_flatten_gemm": conv_flatten_gemm,
    "mlp": mlp,
    "fpn": fpn,
    "elementwise": elementwise,
    "upsample_opset9": upsample_opset9,
    "shared_constants": shared_constants,
    "graph_outputs": graph_outputs,
    "unknown_op": unknown_op,
}
