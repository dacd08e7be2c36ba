"""What the user would run instead, timed on the same inputs with the same thread count."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.graph import load_model
from edgeprune.profile.latency import time_callable


def onnxruntime_latency(model_path: Path, feeds: dict[str, np.ndarray], threads: int, repeat: int, warmup: int) -> dict:
    """onnxruntime as users deploy it: all graph optimizations on, `threads` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(load_model(model_path).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    inputs = {n: feeds[n] for n in names}
    return time_callable(lambda: sess.run(None, inputs), repeat, warmup)


def tflite_latency(source, feeds: dict[str, np.ndarray], threads: int, repeat: int, warmup: int) -> dict:
    """ai-edge-litert (TFLite's interpreter, XNNPACK on by default) with `threads` threads."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=source.data(), num_threads=threads)
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], feeds[d["name"]])
    return time_callable(interpreter.invoke, repeat, warmup)
