"""edgeprune: make ONNX models smaller and faster, compile them with TVM for edge devices."""
from __future__ import annotations

__version__ = "0.1.0"
