"""Rewrite a QDQ model so every scale is a power of two (requantizing weights and biases to match).

Hardware that can only shift (VTA) needs scales 2^k. Each scale is rounded UP to the next power of
two so that no value that fitted before is clipped now; weights and biases are requantized from
their float values, biases with the product of their input's and weight's new scales.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgeprune.errors import PassError


def pow2_ceil(scale: np.ndarray) -> np.ndarray:
    return np.exp2(np.ceil(np.log2(np.asarray(scale, np.float64)))).astype(np.float32)


def to_power_of_two(model: onnx.ModelProto) -> onnx.ModelProto:
    """Power-of-two scales for activations, weights and biases of a QDQ model from onnxruntime."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    arrays = {name: numpy_helper.to_array(t) for name, t in inits.items()}
    producer = {o: n for n in graph.node for o in n.output}
    new_scale: dict[str, np.ndarray] = {}

    dq_nodes = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    bias_dqs = [n for n in dq_nodes if n.input[0] in arrays and arrays[n.input[0]].dtype == np.int32]
    # Activations and weights first: their scales determine the bias scales.
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node in bias_dqs:
            continue
        scale_name = node.input[1]
        if scale_name in new_scale:
            continue
        new_scale[scale_name] = pow2_ceil(arrays[scale_name])
        if node.op_type == "DequantizeLinear" and node.input[0] in arrays:  # a weight: requantize it
            q, old, new = arrays[node.input[0]], arrays[scale_name], new_scale[scale_name]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [-1 if i == axis else 1 for i in range(q.ndim)] if old.ndim else []
            requant = np.round(q.astype(np.float64) * np.reshape(old / new, shape))
            arrays[node.input[0]] = np.clip(requant, -127, 127).astype(q.dtype)
    for dq in bias_dqs:
        consumer = next((n for n in graph.node if dq.output[0] in n.input), None)
        try:
            act_dq, w_dq = (producer[consumer.input[i]] for i in (0, 1))
        except (KeyError, AttributeError, TypeError):
            raise PassError(f"pow2: cannot find the input and weight scales of bias '{dq.input[0]}'") from None
        scale = new_scale[act_dq.input[1]] * new_scale[w_dq.input[1]]
        q, old = arrays[dq.input[0]], arrays[dq.input[1]]
        arrays[dq.input[0]] = np.round(q.astype(np.float64) * old / scale).astype(np.int32)
        new_scale[dq.input[1]] = scale.astype(np.float32)
    for name, value in new_scale.items():
        arrays[name] = value.reshape(arrays[name].shape)
    for name, tensor in inits.items():
        tensor.CopyFrom(numpy_helper.from_array(arrays[name], name))
    return model
