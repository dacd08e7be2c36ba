"""Fine-tune an ONNX model in torch and write the weights back, checked against onnxruntime.

Data: the arrays of a `.npz` exactly as the model takes them (one array per model input, samples
on axis 0, float32 already normalized: no preprocessing happens here) and `labels` (int class
per sample). Images for a flat model are flattened per sample (edgeprune.data.load_npz).
Loss: cross-entropy on the labels; with a teacher (distillation, Hinton et al. 2015)
alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy, or the KL term alone
when there are no labels. SGD with Nesterov momentum and a cosine learning rate by default.
Shared weights (after weight sharing) can train as their codebooks: centroid fine-tuning, indices fixed.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import onnx
import torch
from torch.nn import functional as F

from edgeprune.errors import PassError, UserError
from edgeprune.train.masks import Splicer, set_sparse_masks
from edgeprune.train.module import OnnxModule, max_difference, write_back

OPTIMIZERS = {
    "sgd": lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=0.9, nesterov=True, weight_decay=o.weight_decay),
    "adam": lambda params, o: torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay),
}
CHECK_TOLERANCE = 1e-3  # |onnxruntime - torch| relative to the output's scale after write-back


@dataclass
class FinetuneOptions:
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.01
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    temperature: float = 4.0  # distillation softening
    alpha: float = 0.7  # weight of the distillation term (1.0 when there are no labels)
    splice: bool = False  # dynamic network surgery on unstructured masks
    splice_every: int = 25  # steps between re-sorting
    bn: str = "train"  # "train": batch statistics (running ones re-estimated); "frozen": running statistics
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    progress: bool = False  # rich progress bars on stderr

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError(f"fine-tuning: epochs {self.epochs}, batch size {self.batch_size} and lr {self.lr} "
                            "must be positive")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"fine-tuning: optimizer '{self.optimizer}': expected one of {', '.join(OPTIMIZERS)}")
        if not 0 <= self.alpha <= 1 or self.temperature <= 0:
            raise UserError(f"distillation: alpha {self.alpha} must be in [0, 1], temperature {self.temperature} > 0")
        if self.bn not in ("train", "frozen"):
            raise UserError(f"fine-tuning: bn '{self.bn}': expected train or frozen")


@dataclass
class EpochReport:
    epoch: int
    loss: float
    train_accuracy: float | None  # on the batches as they were trained (None without labels)
    seconds: float


@dataclass
class FinetuneReport:
    samples: int
    epochs: list[EpochReport] = field(default_factory=list)
    distilled: bool = False
    masked: dict[str, float] = field(default_factory=dict)  # weight -> sparsity held through training
    spliced_changes: int = 0
    shared: dict[str, int] = field(default_factory=dict)  # weight -> codebook size trained as centroids
    onnx_vs_torch: float = 0.0  # max |onnxruntime - torch| after write-back

    def as_dict(self) -> dict:
        return asdict(self)


def stack(samples: list[dict[str, np.ndarray]], names: list[str]) -> list[np.ndarray]:
    """Per-run feeds (edgeprune.data) -> one array per input with all samples on axis 0."""
    return [np.concatenate([s[n] for s in samples]) for n in names]


def _batches(count: int, size: int, rng: np.random.Generator):
    order = rng.permutation(count)
    return [order[k:k + size] for k in range(0, count, size)]


def logits_of(model: onnx.ModelProto, inputs: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """The first output over all samples (torch, eval mode): a teacher's soft targets, computed once."""
    module = OnnxModule(model, trainable=set()).eval()
    with torch.no_grad():
        parts = [module(*(torch.from_numpy(a[k:k + batch_size]) for a in inputs))
                 for k in range(0, len(inputs[0]), batch_size)]
    return torch.cat([p[0] if isinstance(p, tuple) else p for p in parts]).numpy()


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]}"), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)


def finetune(model: onnx.ModelProto, inputs: list[np.ndarray], labels: np.ndarray | None,
             options: FinetuneOptions | None = None, teacher_logits: np.ndarray | None = None,
             check_feeds: list[dict[str, np.ndarray]] | None = None,
             shared: Sequence[str] = ()) -> tuple[onnx.ModelProto, FinetuneReport]:
    """Train `model`'s weights on `inputs` (one array per model input) with zeros of sparse weights held.

    `teacher_logits` (from `logits_of` on the unpruned model) turn on distillation. The weights named
    in `shared` train only their distinct values (centroids; each weight keeps its cluster). The returned
    model is `model` with new initializer values, checked against the torch module on `check_feeds`.
    """
    options = options or FinetuneOptions()
    options.check()
    if labels is None and teacher_logits is None:
        raise UserError("fine-tuning needs `labels` in the training data, or distillation from the original model")
    count = len(inputs[0])
    if labels is not None and len(labels) != count:
        raise UserError(f"fine-tuning: {len(labels)} labels for {count} training samples")
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    module = OnnxModule(model)
    masked = set_sparse_masks(module, model)
    for name in shared:
        if module.names.get(name) not in module.weights:
            raise UserError(f"centroid fine-tuning: '{name}' is not a trainable float weight of the model")
        masked.pop(name, None)
    tied = {name: module.tie(name) for name in shared}
    splicer = Splicer(module, masked, options.splice_every) if options.splice and masked else None
    params = list(module.weights.values())
    optimizer = OPTIMIZERS[options.optimizer](params, options)
    steps = options.epochs * -(-count // options.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
    targets = torch.from_numpy(np.asarray(labels, np.int64)) if labels is not None else None
    soft = torch.from_numpy(teacher_logits) if teacher_logits is not None else None
    alpha = 1.0 if targets is None else options.alpha if soft is not None else 0.0
    t = options.temperature
    report = FinetuneReport(count, distilled=soft is not None, masked=masked, shared=tied)
    iteration = 0
    with _progress(options.progress) as bars:
        for epoch in range(options.epochs):
            module.train(options.bn == "train")
            start, total, correct, seen = time.perf_counter(), 0.0, 0, 0
            task = bars.add_task(f"epoch {epoch + 1}/{options.epochs}", total=steps // options.epochs or 1, loss=0.0,
                                 acc="-") if bars else None
            for idx in _batches(count, options.batch_size, rng):
                index = torch.from_numpy(idx)
                out = module(*(x[index] for x in tensors))
                logits = out[0] if isinstance(out, tuple) else out
                loss = torch.zeros(())
                if alpha < 1:
                    loss = loss + (1 - alpha) * F.cross_entropy(logits, targets[index])
                if alpha > 0:
                    loss = loss + alpha * t * t * F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(soft[index] / t, 1),
                                                           reduction="batchmean", log_target=True)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                iteration += 1
                if splicer:
                    splicer.step(iteration)
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
                if targets is not None:
                    correct += int((logits.argmax(1) == targets[index]).sum())
                if bars:
                    bars.update(task, advance=1, loss=total / seen,
                                acc=f"{correct / seen:.3f}" if targets is not None else "-")
            report.epochs.append(EpochReport(epoch + 1, total / seen, correct / seen if targets is not None else None,
                                             round(time.perf_counter() - start, 3)))
    if splicer:
        splicer.finish()
        report.spliced_changes = splicer.changed
    module.eval()
    trained = write_back(model, module)
    feeds = check_feeds or [{n: a[:1] for n, a in zip(module.input_names, inputs)}]
    report.onnx_vs_torch = max_difference(trained, module, feeds)
    scale = max(1.0, float(np.abs(logits_of(trained, [a[:8] for a in inputs])).max()))
    if not report.onnx_vs_torch <= CHECK_TOLERANCE * scale:
        raise PassError(f"fine-tuning: the written ONNX model differs from the trained torch module by "
                        f"{report.onnx_vs_torch:.3g}")
    return trained, report
