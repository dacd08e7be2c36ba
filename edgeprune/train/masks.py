"""Weight surgery around training: pruning masks, splicing (dynamic network surgery) and rewinding.

A structurally pruned model needs no mask (its tensors are smaller); an unstructured one keeps its
zeros through training because every use of a weight multiplies it by its mask. Splicing (Guo et
al. 2016) lets a pruned weight return: the forward pass uses the masked weight, the gradient
updates all of them (straight-through), and every few steps weights are re-sorted with hysteresis
so the layer's sparsity holds. Rewinding (Frankle et al.; Renda et al. 2020) resets the surviving
weights to their values before pruning, so training restarts from the trained model's values, not
from what pruning and recovery left.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from edgeprune.train.module import OnnxModule, weight_names


def set_sparse_masks(module: OnnxModule, model: onnx.ModelProto) -> dict[str, float]:
    """Mask every Conv/Gemm/MatMul weight that holds zeros; returns each one's sparsity."""
    sparsity = {}
    with torch.no_grad():
        for name in weight_names(model):
            mask = (module.tensor(name) != 0).to(torch.float32)
            if mask.numel() and float(mask.mean()) < 1.0:
                module.masks[name] = mask
                sparsity[name] = 1.0 - float(mask.mean())
    return sparsity


def _top_k(magnitude: torch.Tensor, sparsity: float) -> torch.Tensor:
    keep = magnitude.numel() - round(sparsity * magnitude.numel())
    mask = torch.zeros(magnitude.numel())
    mask[torch.topk(magnitude.reshape(-1), keep).indices] = 1.0
    return mask.reshape(magnitude.shape)


class Splicer:
    """Re-sort masked weights every `every` steps: out below (1 - margin) t, back above (1 + margin) t,
    where t is the magnitude at the layer's sparsity; `finish` leaves exactly that sparsity."""

    def __init__(self, module: OnnxModule, sparsity: dict[str, float], every: int = 25, margin: float = 0.1):
        self.module, self.sparsity, self.every, self.margin = module, sparsity, every, margin
        self.changed = 0  # weights that switched side, over the whole run
        module.straight_through = True

    def _raw(self, name: str) -> torch.Tensor:
        key = self.module.names[name]
        return self.module.weights[key].detach().abs()

    def step(self, iteration: int) -> None:
        if iteration % self.every:
            return
        for name, s in self.sparsity.items():
            magnitude, mask = self._raw(name), self.module.masks[name]
            t = magnitude.reshape(-1).kthvalue(max(1, round(s * magnitude.numel()))).values
            new = torch.where(magnitude > (1 + self.margin) * t, 1.0, torch.where(magnitude < (1 - self.margin) * t, 0.0, mask))
            self.changed += int((new != mask).sum())
            self.module.masks[name] = new

    def finish(self) -> None:
        for name, s in self.sparsity.items():
            self.module.masks[name] = _top_k(self._raw(name), s)
        self.module.straight_through = False


def rewind(pruned: onnx.ModelProto, reference: onnx.ModelProto) -> onnx.ModelProto:
    """`pruned` with every initializer that `reference` holds at the same name and shape taken from it,
    zeros of `pruned`'s weights kept. `reference` is the original with the same channels removed
    (prune.apply_removal), or the original itself after unstructured pruning."""
    values = {i.name: numpy_helper.to_array(i) for i in reference.graph.initializer}
    weights = set(weight_names(pruned))
    out = onnx.ModelProto()
    out.CopyFrom(pruned)
    for init in out.graph.initializer:
        old = values.get(init.name)
        current = numpy_helper.to_array(init)
        if old is None or old.shape != current.shape or old.dtype != current.dtype:
            continue
        new = np.where(current == 0, 0, old).astype(old.dtype) if init.name in weights else old
        init.CopyFrom(numpy_helper.from_array(new, init.name))
    return out
