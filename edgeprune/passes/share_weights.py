"""Weight sharing as a pass: each large weight tensor keeps at most 2^bits distinct values.

The model stays an ordinary ONNX model (the shared values are written back), so every runtime and
back end reads it unchanged; `edgeprune compress` then stores it as codebook + Huffman-coded indices.
Works on float weights and on the int8 weights of a QDQ model (behind DequantizeLinear). With
`finetune` epochs, the shared float weights then train as codebooks (Deep Compression's centroid
fine-tuning: indices fixed, zeros kept zero), so every weight stays on its layer's codebook.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.errors import UserError
from edgeprune.passes.base import Pass
from edgeprune.passes.magnitude_prune import WEIGHT_OPS
from edgeprune.quant.sharing import relative_error, share


def weight_tensors(graph: gs.Graph) -> list[tuple[str, gs.Constant]]:
    """(op, weight) of every compute op: the constant itself, or the int8 tensor its DequantizeLinear reads."""
    found: dict[str, tuple[str, gs.Constant]] = {}
    for node in graph.nodes:
        if node.op not in WEIGHT_OPS or len(node.inputs) < 2:
            continue
        weight = node.inputs[1]
        if not isinstance(weight, gs.Constant) and weight.inputs and weight.inputs[0].op == "DequantizeLinear":
            weight = weight.inputs[0].inputs[0]
        if isinstance(weight, gs.Constant):
            found.setdefault(weight.name, (node.op, weight))
    return list(found.values())


@dataclass
class ShareWeights(Pass):
    name = "share-weights"
    bits: int = 4
    op_bits: dict = field(default_factory=dict)  # op type -> bits for its weights (e.g. {"Conv": 8}); else `bits`
    min_size: int = 256  # smaller tensors (tiny heads, depthwise kernels) save nothing worth their error
    finetune: int = 0  # epochs of centroid fine-tuning (torch)
    train: str = ""  # .npz of training data (arrays as the model takes them + `labels`); the eval data when empty
    lr: float = 0.001
    batch_size: int = 64
    optimizer: str = "sgd"
    distill: bool = False  # fine-tuning distils from the model before sharing (soft targets + labels)
    seed: int = 0
    threads: int = 0  # torch threads (0: torch's default)

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        for op, bits in {None: self.bits, **self.op_bits}.items():
            if not isinstance(bits, int) or not 1 <= bits <= 16:
                raise UserError(f"share-weights: bits {bits!r}{f' for {op}' if op else ''}: expected 1..16")
        teacher = gs.export_onnx(graph) if self.finetune and self.distill else None
        layers, floats = {}, []
        for op, tensor in weight_tensors(graph):
            values = tensor.values
            if values.size < self.min_size:
                continue
            bits = self.op_bits.get(op, self.bits)
            shared = share(values, bits)
            new = shared.values()
            layers[tensor.name] = {"op": op, "size": int(values.size), "distinct": int(shared.codebook.size),
                                   "bits": int(np.ceil(np.log2(max(shared.codebook.size, 2)))),
                                   "relative_error": round(relative_error(values, new), 6)}
            tensor.values = new
            if np.issubdtype(new.dtype, np.floating):
                floats.append(tensor.name)
        if self.finetune:
            graph = self._finetune(graph, ctx, floats, layers, teacher)
        ctx.report(layers=layers)
        return graph

    def _finetune(self, graph: gs.Graph, ctx: Context, names: list[str], layers: dict, teacher) -> gs.Graph:
        from edgeprune.data import load_npz
        from edgeprune.graph import top1_accuracy
        from edgeprune.train.finetune import FinetuneOptions, finetune, logits_of, stack
        from edgeprune.train.module import OnnxModule

        if not names:
            raise UserError("share --finetune: no shared float weights to fine-tune (int8 codebooks stay as they are)")
        model = gs.export_onnx(graph)
        samples, labels = load_npz(self.train, model) if self.train else (ctx.samples, ctx.labels)
        if labels is None:
            raise UserError("share --finetune: the training data needs `labels` (--train DATA.npz, or --calib with labels)")
        options = FinetuneOptions(epochs=self.finetune, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
                                  weight_decay=0.0, seed=self.seed, threads=self.threads or None)
        inputs = stack(samples, OnnxModule(model, trainable=set()).input_names)
        ctx.progress(f"share-weights: centroid fine-tuning, {self.finetune} epoch(s)")
        soft = logits_of(teacher, inputs) if teacher is not None else None
        tuned, report = finetune(model, inputs, np.asarray(labels).reshape(-1), options, soft, samples[:2], names)
        details = report.as_dict()
        details.pop("masked")
        if ctx.calibrated and ctx.labels is not None:
            details["accuracy_before"] = top1_accuracy(model, ctx.samples, ctx.labels)
            details["accuracy_after"] = top1_accuracy(tuned, ctx.samples, ctx.labels)
        ctx.report(finetune=details)
        tuned_graph = gs.import_onnx(tuned)
        for _, tensor in weight_tensors(tuned_graph):
            if tensor.name in layers:
                layers[tensor.name]["distinct_after_finetune"] = int(np.unique(tensor.values).size)
        return tuned_graph
