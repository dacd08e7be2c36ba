"""A recipe -> ordered passes -> a compiled bundle, every structural step checked and measured."""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeprune import __version__, artifact
from edgeprune.backends import backend_for
from edgeprune.compile.source import OnnxSource, TfliteSource, is_tflite
from edgeprune.compile.tune import TuneOptions, tuned_build
from edgeprune.context import Context, PassRecord
from edgeprune.data import load_calibration, random_samples
from edgeprune.errors import PassError, UserError
from edgeprune.graph import check_structure, compare_outputs, fix_input_shapes, infer_shapes, load_model, model_bytes, run, totals, validate
from edgeprune.graph.runtime import session
from edgeprune.passes import Pass, make_pass
from edgeprune.targets import Target, load_target
from edgeprune.tomlcheck import check_table, read_toml

DEFAULT_PASSES = ("canonicalize",)


@dataclass
class Recipe:
    """What to run: a model, a target, the passes with their options, and the data to check them on."""

    model: str
    target: str | None = None
    output: str | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    calib: str | None = None
    samples: int = 2
    seed: int = 0
    passes: list[dict[str, Any]] = field(default_factory=lambda: [{"name": n} for n in DEFAULT_PASSES])
    tune: dict[str, Any] | None = None  # MetaSchedule tuning: trials, seconds, rpc, tracker, key (compile/tune.py)


RECIPE_KEYS: dict[str, Any] = {key: (typ, key == "model", None) for key, typ in {
    "model": str, "target": str, "output": str, "input_shapes": dict, "calib": str, "samples": int, "seed": int,
    "passes": list, "tune": dict}.items()}


def load_recipe(path: str | Path) -> Recipe:
    """Parse and check a recipe; relative paths in it are relative to the recipe file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such recipe file")
    data = read_toml(path)
    check_table(data, RECIPE_KEYS, str(path))
    for name, shape in data.get("input_shapes", {}).items():
        if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise UserError(f"{path}: input_shapes.{name} must be a list of positive integers")
    for i, entry in enumerate(data.get("passes", [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise UserError(f"{path}: passes[{i}] must be a table with a 'name'")
        if isinstance(entry.get("train"), str) and entry["train"] and not Path(entry["train"]).is_absolute():
            entry["train"] = str(path.parent / entry["train"])  # a prune-cycle's training data, beside the recipe
        make_pass(entry["name"], {k: v for k, v in entry.items() if k != "name"}, f"{path}: passes[{i}]")
    if "tune" in data:
        TuneOptions.from_table(data["tune"], str(path))
    base = path.parent
    for key in ("model", "calib", "output"):
        if key in data and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    if "target" in data and data["target"].endswith(".toml") and not Path(data["target"]).is_absolute():
        data["target"] = str(base / data["target"])
    return Recipe(**data)


def build_passes(recipe: Recipe, where: str = "recipe") -> list[Pass]:
    return [make_pass(e["name"], {k: v for k, v in e.items() if k != "name"}, f"{where}: passes[{i}]")
            for i, e in enumerate(recipe.passes)]


def _stacked_outputs(model: onnx.ModelProto, samples: list[dict]) -> dict[str, np.ndarray]:
    sess = session(model)
    outs = [run(model, feeds, sess) for feeds in samples]
    return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}


def run_passes(model: onnx.ModelProto, passes: list[Pass], ctx: Context) -> onnx.ModelProto:
    """Run passes in order; after each structural one: shapes, checks, and error vs the model before it."""
    reference = _stacked_outputs(model, ctx.samples) if ctx.samples else None
    for p in passes:
        ctx.progress(f"pass {p.name}")
        before, start = totals(model), time.perf_counter()
        graph = p.run(gs.import_onnx(model), ctx)
        new = _export(graph, model)
        difference = None
        if p.structural:
            new = infer_shapes(new, f"after pass '{p.name}'")
            try:
                validate(new, f"after pass '{p.name}'")
            except UserError as exc:
                raise PassError(f"pass '{p.name}' produced an invalid model: {exc}") from None
            if reference is not None:
                outputs = _stacked_outputs(new, ctx.samples)
                difference = compare_outputs(reference, outputs).as_dict()
                reference = outputs
        ctx.records.append(PassRecord(p.name, p.options(), p.structural, round(time.perf_counter() - start, 4),
                                      before, totals(new), difference, ctx.details))
        ctx.details = {}
        model = new
    return model


def _export(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    model = gs.export_onnx(graph)
    model.producer_name, model.producer_version = "edgeprune", __version__
    del model.opset_import[:]
    model.opset_import.extend(sorted(
        [onnx.helper.make_opsetid(d, v) for d, v in {**{o.domain: o.version for o in like.opset_import},
                                                      **{o.domain: o.version for o in model.opset_import}}.items()],
        key=lambda o: o.domain))
    return model


def tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ["onnx", "onnxruntime", "onnx-graphsurgeon", "apache-tvm", "apache-tvm-ffi", "numpy"]
    return {"edgeprune": __version__, "python": platform.python_version(), **{n: version(n) for n in names}}


@dataclass
class Result:
    """What `compile`/`run` produced: the bundle, its manifest and the pass record (with timings)."""

    bundle: Path
    manifest: dict[str, Any]
    records: list[PassRecord]

    def as_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "target": self.manifest["target"]["name"],
                "passes": [r.as_dict() for r in self.records], "build": self.manifest["build"],
                "files": self.manifest["files"]}


def prepare(model_path: str | Path, *, input_shapes: dict[str, list[int]] | None = None, calib: str | None = None,
            samples: int = 2, seed: int = 0, ctx: Context | None = None) -> tuple[onnx.ModelProto, Context]:
    """Load and check a model, and fill the context with the inputs every pass is checked on."""
    model = load_model(model_path)
    label = str(model_path)
    check_structure(model, label)
    ctx = ctx or Context()
    ctx.input_shapes = dict(input_shapes or {})
    # Checking each pass needs inputs of static shape: fix them on the source model first.
    model = _with_static_inputs(model, ctx.input_shapes, label)
    validate(model, label)
    if calib:
        ctx.samples, ctx.labels = load_calibration(calib, model)
        ctx.calibrated = True
    else:
        ctx.samples = random_samples(model, samples, seed)
    return model, ctx


def _with_canonicalize(passes: list[Pass] | None) -> list[Pass]:
    passes = passes if passes is not None else [make_pass(n) for n in DEFAULT_PASSES]
    return list(passes) if passes and passes[0].name == "canonicalize" else [make_pass("canonicalize"), *passes]


def transform_model(model_path: str | Path, passes: list[Pass], output: str | Path, *, force: bool = False,
                    **prepare_args: Any) -> tuple[onnx.ModelProto, Context]:
    """Run passes (after canonicalize) and write the resulting ONNX file: `prune`, `quantize` and friends."""
    output = Path(output)
    if output.exists() and not force:
        raise UserError(f"{output}: already exists (use --force to replace it)")
    model, ctx = prepare(model_path, **prepare_args)
    final = run_passes(model, _with_canonicalize(passes), ctx)
    artifact.write_file(output, model_bytes(final), force)
    return final, ctx


def compile_model(model_path: str | Path, target: str | Target, output: str | Path, *, passes: list[Pass] | None = None,
                  force: bool = False, ctx: Context | None = None, tune: TuneOptions | None = None,
                  tune_db: str | Path | None = None, **prepare_args: Any) -> Result:
    """Load, run the passes (canonicalize when none are given), build for the target, write the bundle.

    A TFLite model compiles as it is (the passes work on ONNX) and is checked against ai-edge-litert.
    """
    target = target if isinstance(target, Target) else load_target(target)
    backend = backend_for(target)
    output = Path(output)
    artifact.check_destination(output, force)
    backend.check_toolchain(target)
    label = str(model_path)
    if is_tflite(model_path):
        if passes:
            raise UserError(f"{label}: passes run on ONNX models; a TFLite model compiles as it is (drop --recipe)")
        ctx = ctx or Context()
        source = TfliteSource.load(model_path)
        ctx.samples = [source.random_feeds(prepare_args.get("seed", 0) + i) for i in range(prepare_args.get("samples", 2))]
        totals_after: dict[str, int] = {}
    else:
        model, ctx = prepare(model_path, ctx=ctx, **prepare_args)
        passes = _with_canonicalize(passes)
        if not any(p.name == "fold-batchnorm" for p in passes):  # exact, and every back end runs faster for it
            passes.append(make_pass("fold-batchnorm"))
        final = run_passes(model, passes, ctx)
        missing = backend.unsupported_ops(final)
        if missing:
            op, nodes = next(iter(missing.items()))
            raise UserError(f"{label}: target {target.name} cannot compile op {op} (node '{nodes[0]}')")
        source, totals_after = OnnxSource(final), totals(final)
    ctx.target = target
    ctx.progress(f"build for {target.name}")
    with artifact.staging(output, force) as tmp:
        with tuned_build(source, target, tmp, tune, tune_db, ctx.progress) as tuning:
            built = backend.build(source, target, tmp, ctx.samples)
        (tmp / source.filename).write_bytes(source.data())
        manifest = {
            "versions": tool_versions(),
            "source": {"name": Path(model_path).name, "sha256": artifact.sha256_file(Path(model_path))},
            "target": target.as_dict(),
            "inputs": source.inputs(),
            "outputs": source.outputs(),
            "passes": [r.as_dict(timing=False) for r in ctx.records],
            "totals": totals_after,
            "build": built.info | ({"tuning": tuning} if tuning else {}),
            "model": source.filename,
            "library": built.files[0] if built.files else None,
        }
        (tmp / "REPORT.md").write_text(report(manifest))
        manifest = artifact.write_manifest(tmp, manifest)
    return Result(output, manifest, list(ctx.records))


def _with_static_inputs(model: onnx.ModelProto, shapes: dict[str, list[int]], label: str) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    fix_input_shapes(fixed, shapes, label)
    return fixed


def run_recipe(recipe: Recipe, force: bool = False, ctx: Context | None = None, tune_db: str | Path | None = None) -> Result:
    """The whole pipeline a recipe declares (CLI options have already been folded into it)."""
    if not recipe.target:
        raise UserError("recipe: no target (give --target or a 'target' key)")
    if not recipe.output:
        raise UserError("recipe: no output folder (give -o or an 'output' key)")
    return compile_model(recipe.model, recipe.target, recipe.output, passes=build_passes(recipe),
                         input_shapes=recipe.input_shapes, calib=recipe.calib, samples=recipe.samples,
                         seed=recipe.seed, force=force, ctx=ctx,
                         tune=TuneOptions.from_table(recipe.tune, "recipe") if recipe.tune is not None else None,
                         tune_db=tune_db)


def _io_text(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['name']} {r['shape']} {r['dtype']}" for r in rows)


def report(manifest: dict[str, Any]) -> str:
    """The short human report that sits beside the manifest."""
    lines = [
        f"# {manifest['source']['name']} for {manifest['target']['name']}",
        "",
        f"{manifest['target']['description']}",
        "",
        f"- inputs: {_io_text(manifest['inputs'])}",
        f"- outputs: {_io_text(manifest['outputs'])}",
        *([f"- nodes {t['nodes']}, parameters {t['params']:,}, MACs {t['macs']:,}"] if (t := manifest["totals"]) else []),
        f"- library: {manifest['library']}",
        "",
        "| pass | nodes | params | MACs | max abs error | top-1 agreement |",
        "|---|---|---|---|---|---|",
    ]
    for r in manifest["passes"]:
        d = r["difference"] or {}
        lines.append(f"| {r['name']} | {r['before']['nodes']} -> {r['after']['nodes']} | "
                     f"{r['before']['params']:,} -> {r['after']['params']:,} | {r['before']['macs']:,} -> "
                     f"{r['after']['macs']:,} | {d.get('max_abs_error', '-')} | {d.get('top1_agreement', '-')} |")
    build = manifest["build"]
    if "vs_reference" in build:
        lines += ["", f"Built library vs {build['reference']}: max abs error {build['vs_reference']['max_abs_error']:.3g} "
                      f"on {build['samples']} samples."]
    return "\n".join(lines) + "\n"


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=float)
