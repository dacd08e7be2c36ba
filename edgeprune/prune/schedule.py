"""The prune cycle: sparsity rises along a schedule, each step recovers and is measured, and the cycle
stops before the user's accuracy budget is spent.

AGP (Zhu & Gupta 2017): at step k of n the pruned fraction is final * (1 - (1 - k/n)^3): big
steps while the network has slack, small ones near the end. Each step prunes the model the
previous step left (structured: channels by group; unstructured: magnitudes), then recovers:
least-squares reconstruction of the layers after the cut (structured, no training) or
fine-tuning in torch (edgeprune.train, optional: distillation from the unpruned model,
rewinding, splicing). The step is evaluated on the user's data (accuracy with labels, top-1
agreement with the original without), and the first step past the budget ends the cycle: the
last model within the budget is returned with a table of every step.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from edgeprune.context import Context
from edgeprune.errors import UserError
from edgeprune.graph import totals
from edgeprune.prune import apply_removal, build, prune
from edgeprune.prune.sensitivity import evaluator, group_sizes, prune_layers, sparsify_layers

if TYPE_CHECKING:
    from edgeprune.passes.prune_cycle import PruneCycle

Samples = list[dict[str, np.ndarray]]

# name -> fraction of the final pruning reached after step k of n
SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "agp": lambda k, n: 1.0 - (1.0 - k / n) ** 3,
    "linear": lambda k, n: k / n,
    "oneshot": lambda k, n: 1.0,  # a single cut (steps = 1), for comparison
}
RECOVERIES = ("auto", "none", "reconstruct", "finetune")
CRITERION_SAMPLES = 256  # calibration runs the data criteria rank channels on
RECOVERY_SAMPLES = 10240  # runs the recovery reads: the first 1,024 for most layers, all for the classifier


@dataclass
class Step:
    step: int
    fraction: float  # of the final pruning, from the schedule
    target: str  # what this step asked for
    params: int  # non-zero parameters (unstructured) or all parameters (structured)
    macs: int
    sparsity: float  # fraction of the prunable weights that are zero (unstructured) or removed params (structured)
    metric: float
    drop: float  # points below the unpruned model
    within_budget: bool
    recovery: str
    seconds: float
    details: dict = field(default_factory=dict)


@dataclass
class CycleReport:
    metric: str  # "accuracy" or "agreement"
    baseline: float
    budget: float
    params: int
    macs: int
    steps: list[Step] = field(default_factory=list)
    chosen: int = 0  # step whose model is returned (0: the unpruned model)
    stopped: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _check(o: PruneCycle) -> str:
    """The recovery to use, after checking the options."""
    if o.schedule not in SCHEDULES:
        raise UserError(f"--schedule {o.schedule}: expected one of {', '.join(SCHEDULES)}")
    if o.steps < 1 or (o.schedule == "oneshot" and o.steps != 1):
        raise UserError(f"--steps {o.steps}: expected >= 1 (exactly 1 with the oneshot schedule)")
    if o.budget < 0:
        raise UserError(f"--budget {o.budget}: expected accuracy points >= 0")
    targets = [k for k in ("sparsity", "ratio", "target_macs", "target_params", "layer_ratios") if getattr(o, k)]
    allowed = {"sparsity", "layer_ratios"} if o.unstructured else {"ratio", "target_macs", "target_params", "layer_ratios"}
    if len(targets) != 1 or targets[0] not in allowed:
        raise UserError("prune --schedule: give exactly one final target: " + (
            "--sparsity or --layer-ratios with --unstructured" if o.unstructured else
            "--ratio, --target-macs, --target-params or --layer-ratios"))
    if o.unstructured and not 0 < o.sparsity < 1 and not o.layer_ratios:
        raise UserError(f"--sparsity {o.sparsity}: expected a fraction in (0, 1)")
    for name in ("ratio", "target_macs", "target_params"):
        if not 0 <= getattr(o, name) < (1 if name == "ratio" else 1.0 + 1e-9):
            raise UserError(f"--{name.replace('_', '-')} {getattr(o, name)}: expected a fraction")
    if o.recovery not in RECOVERIES:
        raise UserError(f"--recovery {o.recovery}: expected one of {', '.join(RECOVERIES)}")
    recovery = o.recovery if o.recovery != "auto" else "finetune" if o.epochs else \
        "none" if o.unstructured else "reconstruct"
    if recovery == "finetune" and o.epochs < 1:
        raise UserError("--recovery finetune: give the epochs per step (--finetune EPOCHS)")
    if recovery == "reconstruct" and o.unstructured:
        raise UserError("--recovery reconstruct refits layers after removed channels: structured pruning only "
                        "(unstructured recovers by fine-tuning, --finetune EPOCHS)")
    if (o.distill or o.splice or o.rewind) and recovery != "finetune":
        raise UserError("--distill, --splice and --rewind are fine-tuning options: add --finetune EPOCHS")
    if o.splice and not o.unstructured:
        raise UserError("--splice lets pruned weights return: unstructured pruning only")
    return recovery


def _nonzero(model: onnx.ModelProto) -> int:
    return sum(int(np.count_nonzero(numpy_helper.to_array(i))) for i in model.graph.initializer)


class _Removal:
    """Channels removed so far, in the original model's indices (for rewinding a structured model)."""

    def __init__(self, original: onnx.ModelProto):
        self.sizes = {t: s.size for t, s in build(original).spaces.items()}
        self.kept = {t: np.arange(size) for t, size in self.sizes.items()}

    def add(self, removed: dict[str, list[int]]) -> None:
        for tensor, idx in removed.items():
            self.kept[tensor] = np.delete(self.kept[tensor], idx)

    def total(self) -> dict[str, list[int]]:
        return {t: np.setdiff1d(np.arange(self.sizes[t]), k).tolist() for t, k in self.kept.items()
                if len(k) < self.sizes[t]}


def _cut(model: onnx.ModelProto, o: PruneCycle, f: float, base: dict, base_sizes: dict[str, int], samples: Samples
         ) -> tuple[onnx.ModelProto, dict[str, list[int]], str]:
    """One step's pruning at fraction `f` of the final target: (model, removed channels, description);
    `samples` feed the data criteria (activation, redundancy, reconstruction)."""
    if o.unstructured:
        if o.layer_ratios:
            return sparsify_layers(model, {k: f * v for k, v in o.layer_ratios.items()}), {}, \
                f"{f:.0%} of the layer ratios"
        from edgeprune.passes.magnitude_prune import MagnitudePrune

        s = f * o.sparsity
        graph = MagnitudePrune(sparsity=s, scope=o.scope, protect=list(o.protect)).run(gs.import_onnx(model), Context())
        return gs.export_onnx(graph), {}, f"sparsity {s:.3f}"
    common = {"criterion": o.criterion, "round_to": o.round_to, "min_channels": o.min_channels,
              "protect": tuple(o.protect), "samples": samples}
    allocation = {"allocate_by": o.allocate_by} if o.allocate_by else {}  # prune_layers takes counts as given
    if o.layer_ratios or (o.ratio and o.scope == "local"):
        ratios = {k: f * v for k, v in o.layer_ratios.items()} if o.layer_ratios else \
            dict.fromkeys(base_sizes, f * o.ratio)
        pruned, removed = prune_layers(model, ratios, base_sizes=base_sizes, **common)
        return pruned, removed, f"{f:.0%} of the layer ratios" if o.layer_ratios else f"channel ratio {f * o.ratio:.3f}"
    if o.ratio:  # global: the share of channels still to remove, relative to what is left
        left = sum(g.size for g in build(model, o.protect).groups if not g.blocked) / max(sum(base_sizes.values()), 1)
        relative = max(0.0, 1 - (1 - f * o.ratio) / left) if left else 0.0
        pruned, report = prune(model, ratio=min(relative, 0.99), scope="global", **common, **allocation)
        return pruned, report.removed, f"channel ratio {f * o.ratio:.3f}"
    key = "macs" if o.target_macs else "params"
    keep = 1 - f * (1 - (o.target_macs or o.target_params))
    goal = int(keep * base[key])
    if totals(model)[key] <= goal:
        return model, {}, f"{key} {keep:.0%}"
    pruned, report = prune(model, scope=o.scope, **{f"target_{key}": goal}, **common, **allocation)
    return pruned, report.removed, f"{key} {keep:.0%}"


def prune_cycle(model: onnx.ModelProto, samples: Samples, labels: np.ndarray | None, options: PruneCycle | None = None,
                train: tuple[Samples, np.ndarray | None] | None = None,
                progress: Callable[[str], None] = lambda m: None, **kwargs) -> tuple[onnx.ModelProto, CycleReport]:
    """Run the cycle on `model` (canonicalized), measured on `samples`/`labels`; `train` (feeds, labels) is
    the fine-tuning and reconstruction data (the evaluation data when None). Options: PruneCycle's fields,
    as an object or keywords."""
    if options is None:
        from edgeprune.passes.prune_cycle import PruneCycle

        options = PruneCycle(**kwargs)
    o = options
    recovery = _check(o)
    evaluate = evaluator(model, samples, labels)
    base = totals(model)
    base_sizes = group_sizes(model, tuple(o.protect)) if not o.unstructured else {}
    weights = _nonzero(model)
    baseline = evaluate(model)
    report = CycleReport("accuracy" if labels is not None else "agreement", baseline, o.budget, base["params"], base["macs"])
    fit_samples, fit_labels = train if train is not None else (samples, labels)
    tuner = _Tuner(model, fit_samples, fit_labels, o) if recovery == "finetune" else None
    removal = _Removal(model) if o.rewind and not o.unstructured else None
    current, chosen_model = model, model
    for k in range(1, o.steps + 1):
        start = time.perf_counter()
        f = SCHEDULES[o.schedule](k, o.steps)
        progress(f"prune cycle: step {k}/{o.steps}: prune")
        pruned, removed, target = _cut(current, o, f, base, base_sizes, fit_samples[:CRITERION_SAMPLES])
        details: dict = {}
        if removal is not None:
            removal.add(removed)
        if o.rewind:
            from edgeprune.train.masks import rewind

            pruned = rewind(pruned, apply_removal(model, removal.total()) if removal else model)
        if recovery == "reconstruct" and removed:  # as the prune pass's --reconstruct: refit, BN statistics, outputs
            from edgeprune.prune.reconstruct import recover

            progress(f"prune cycle: step {k}/{o.steps}: reconstruct")
            pruned, recovered = recover(current, pruned, removed, fit_samples[:RECOVERY_SAMPLES])
            details["reconstructed_layers"] = sum(1 for layer in recovered.layers if not layer.skipped)
            details["batchnorm_reestimated"] = len(recovered.batchnorm)
        elif recovery == "finetune":
            progress(f"prune cycle: step {k}/{o.steps}: fine-tune")
            pruned, tuned = tuner.run(pruned, k)
            details["finetune"] = tuned.as_dict()
            details["finetune"].pop("masked")
        progress(f"prune cycle: step {k}/{o.steps}: evaluate")
        metric = evaluate(pruned)
        counts = totals(pruned)
        nonzero = _nonzero(pruned)
        drop = 100 * (baseline - metric)
        step = Step(k, round(f, 4), target, nonzero if o.unstructured else counts["params"], counts["macs"],
                    round(1 - nonzero / max(weights, 1), 4), metric, drop, drop <= o.budget + 1e-9, recovery,
                    round(time.perf_counter() - start, 3), details)
        report.steps.append(step)
        if not step.within_budget:
            report.stopped = f"step {k} lost {drop:.2f} points, over the budget of {o.budget:g}"
            break
        current = chosen_model = pruned
        report.chosen = k
    else:
        report.stopped = "all steps within the budget"
    return chosen_model, report


class _Tuner:
    """Fine-tuning for every step: the training arrays and the teacher's soft targets, prepared once."""

    def __init__(self, original: onnx.ModelProto, samples: Samples, labels: np.ndarray | None, o: PruneCycle):
        from edgeprune.train.finetune import FinetuneOptions, logits_of, stack
        from edgeprune.train.module import OnnxModule

        names = OnnxModule(original, trainable=set()).input_names
        self.inputs = stack(samples, names)
        self.labels = None if labels is None else np.asarray(labels).reshape(-1)
        self.check = samples[:2]
        self.teacher = logits_of(original, self.inputs) if o.distill or labels is None else None
        self.options = FinetuneOptions(epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, temperature=o.temperature,
                                       alpha=o.alpha, splice=o.splice, seed=o.seed, threads=o.threads or None,
                                       progress=o.bars)
        self.options.check()

    def run(self, model: onnx.ModelProto, step: int):
        from dataclasses import replace

        from edgeprune.train.finetune import finetune

        return finetune(model, self.inputs, self.labels, replace(self.options, seed=self.options.seed + step),
                        self.teacher, self.check)
