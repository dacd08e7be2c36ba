"""Write examples/tinycnn.onnx, the small model the README compiles.

A Fashion-MNIST-shaped CNN (1x28x28 -> 10 classes) with the structures the pipeline must handle:
Conv + BatchNorm + Relu, a residual block, a strided conv, global pooling and a Gemm head; plus the
exporter debris canonicalization removes (a symbolic batch dim, Identity, Dropout, a Constant node).
Weights are seeded, so the file is reproducible: `python tools/make_example.py` rewrites it unchanged.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "examples" / "tinycnn.onnx"


def build(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv_bn_relu(x: str, cin: int, cout: int, name: str, stride: int = 1, relu: bool = True) -> str:
        w = const(f"{name}.weight", rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9)))
        nodes.append(helper.make_node("Conv", [x, w], [f"{name}.conv"], name=f"{name}.conv", pads=[1, 1, 1, 1],
                                      strides=[stride, stride], kernel_shape=[3, 3]))
        bn = [const(f"{name}.bn.{p}", v) for p, v in (
            ("scale", rng.uniform(0.5, 1.5, cout)), ("bias", rng.normal(0, 0.1, cout)),
            ("mean", rng.normal(0, 0.1, cout)), ("var", rng.uniform(0.5, 1.5, cout)))]
        nodes.append(helper.make_node("BatchNormalization", [f"{name}.conv", *bn], [f"{name}.bn"], name=f"{name}.bn"))
        if not relu:
            return f"{name}.bn"
        nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    x = conv_bn_relu("input", 1, 16, "stem")
    nodes.append(helper.make_node("Identity", [x], ["stem.out"], name="stem.identity"))
    y = conv_bn_relu("stem.out", 16, 16, "block1.a")
    y = conv_bn_relu(y, 16, 16, "block1.b", relu=False)
    nodes.append(helper.make_node("Add", ["stem.out", y], ["block1.add"], name="block1.add"))
    nodes.append(helper.make_node("Relu", ["block1.add"], ["block1.out"], name="block1.relu"))
    y = conv_bn_relu("block1.out", 16, 32, "down", stride=2)
    y = conv_bn_relu(y, 32, 32, "block2")
    nodes.append(helper.make_node("GlobalAveragePool", [y], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1))
    nodes.append(helper.make_node("Dropout", ["flat"], ["drop"], name="dropout"))
    nodes.append(helper.make_node("Constant", [], ["fc.weight"], name="fc.weight",
                                  value=numpy_helper.from_array((rng.standard_normal((10, 32)) * 0.3).astype(np.float32))))
    nodes.append(helper.make_node("Gemm", ["drop", "fc.weight", const("fc.bias", rng.normal(0, 0.1, 10))],
                                  ["logits"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "tinycnn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeprune-tools")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(build().SerializeToString(deterministic=True))
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
