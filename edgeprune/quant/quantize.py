"""Int8 post-training static quantization to a QDQ ONNX model.

onnxruntime's quantization tools do the work (a well-kept library: calibration with MinMax,
Percentile and Entropy, per-channel symmetric weights, int32 biases, QDQ placement); we feed them
the user's samples and prepare the model with their own pre-processing (shape inference and the
BASIC optimizer, which folds BatchNorm into Conv). We go beyond them in one place: power-of-two
scales (edgeprune.quant.pow2), which they do not offer and the VTA accelerator needs.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgeprune.errors import UserError
from edgeprune.quant.pow2 import to_power_of_two

CALIBRATION = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}


class _Samples(CalibrationDataReader):
    """Our list of feeds as onnxruntime's calibration reader."""

    def __init__(self, samples: list[dict[str, np.ndarray]]):
        self._it = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]], method: str = "minmax",
             per_channel: bool = True, pow2: bool = False, exclude: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A QDQ int8 model calibrated on `samples`; with pow2, every scale a power of two and zero-points 0."""
    if method not in CALIBRATION:
        raise UserError(f"--method {method}: unknown calibration method (known: {', '.join(CALIBRATION)})")
    if not samples:
        raise UserError("quantize: calibration needs samples (--calib DATA.npz)")
    # The calibrators print progress on stdout, which belongs to our tables and --json.
    with tempfile.TemporaryDirectory(prefix="edgeprune-quant-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        src, prepared, out = (Path(tmp) / n for n in ("float.onnx", "prepared.onnx", "int8.onnx"))
        src.write_bytes(model.SerializeToString())
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out), _Samples(samples), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CALIBRATION[method],
            nodes_to_exclude=list(exclude),
            # Symmetric activations in pow2 mode: VTA has no zero-point arithmetic, only shifts.
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": pow2,
                           "CalibMovingAverage": False, "CalibTensorRangeSymmetric": pow2},
        )
        quantized = onnx.load(str(out))
    return to_power_of_two(quantized) if pow2 else quantized


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
