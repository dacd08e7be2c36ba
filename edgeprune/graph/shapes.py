"""Static shapes: user-given input shapes, shape inference, and reading shapes back."""
from __future__ import annotations

import onnx

from edgeprune.errors import UserError
from edgeprune.graph.runtime import graph_inputs, input_spec


def parse_shape_arg(text: str) -> tuple[str, list[int]]:
    """Parse the CLI form `NAME=1,3,224,224`."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",")] if sep and name else None
    except ValueError:
        shape = None
    if not shape or any(d <= 0 for d in shape):
        raise UserError(f"--input-shape '{text}': expected NAME=D0,D1,... with positive integers")
    return name, shape


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]], label: str = "model") -> None:
    """Set user-given shapes; a symbolic batch dim defaults to 1 (edge inference is batch 1).

    Any other dynamic dim must be given: it changes the compiled code, so guessing it is wrong.
    """
    inputs = {v.name: v for v in graph_inputs(model)}
    for name in shapes:
        if name not in inputs:
            raise UserError(f"--input-shape: {label} has no input '{name}' (inputs: {', '.join(inputs)})")
    for name, value in inputs.items():
        dims, _ = input_spec(value)
        shape = shapes.get(name)
        if shape is not None:
            if len(shape) != len(dims):
                raise UserError(f"--input-shape {name}: {len(shape)} dims given, the model's input has {len(dims)} ({dims})")
            for given, have in zip(shape, dims):
                if isinstance(have, int) and have > 0 and have != given:
                    raise UserError(f"--input-shape {name}={','.join(map(str, shape))}: the model fixes it to {dims}")
        else:
            shape = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(dims)]
            if any(not isinstance(d, int) or d <= 0 for d in shape):
                pretty = ",".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in shape)
                raise UserError(f"{label}: input '{name}' has dynamic dims [{pretty}]: give them with "
                                f"--input-shape {name}=...")
        dim_protos = value.type.tensor_type.shape.dim
        for proto, d in zip(dim_protos, shape):
            proto.Clear()
            proto.dim_value = d


def infer_shapes(model: onnx.ModelProto, label: str = "model") -> onnx.ModelProto:
    """ONNX shape inference with data propagation (so Reshape targets computed from Shape resolve)."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{label}: shape inference failed: {line}") from None


def value_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Every tensor's shape that inference knows: inputs, outputs, intermediates and initializers."""
    shapes: dict[str, list[int | str]] = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                  for d in value.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes
