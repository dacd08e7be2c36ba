"""The `edgeprune` command. Exit codes: 0 ok, 2 the user's mistake (one line), 1 ours."""
from __future__ import annotations

import argparse
import sys
import traceback
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgeprune import __version__
from edgeprune.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit 2 like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A spinner on stderr naming the current step; pipeline code reports through ctx.progress."""
    from edgeprune.context import Context

    ctx = Context()
    if not enabled:
        yield ctx
        return
    with _console().status("starting") as status:
        ctx.progress = lambda message: status.update(message)
        yield ctx


def _shapes(args: argparse.Namespace) -> dict[str, list[int]]:
    from edgeprune.graph import parse_shape_arg

    return dict(parse_shape_arg(s) for s in args.input_shape or [])


def _emit(args: argparse.Namespace, data: dict, render) -> None:
    if args.json:
        from edgeprune.pipeline import dumps

        print(dumps(data))
    else:
        render(data)


def _table(title: str, columns: list[str], rows: list[list[Any]]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, justify="right" if c in {"params", "MACs", "count", "bytes", "nodes"} else "left")
    for row in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in row])
    return table


def _print(*items) -> None:
    from rich.console import Console

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)  # logs and pipes: no wrapping
    for item in items:
        console.print(item)


# ---- commands -------------------------------------------------------------------------------------

def cmd_inspect(args: argparse.Namespace) -> int:
    from edgeprune.backends import backend_for
    from edgeprune.graph import canonicalize, check_structure, load_model, node_stats
    from edgeprune.graph.runtime import graph_inputs, input_spec
    from edgeprune.targets import all_targets, load_target

    model = load_model(args.model)
    check_structure(model, args.model)
    canonical = canonicalize(model, _shapes(args), args.model)
    rows = node_stats(canonical)
    targets = [load_target(args.target)] if args.target else all_targets()
    data = {
        "model": args.model,
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "inputs": [{"name": v.name, "shape": input_spec(v)[0]} for v in graph_inputs(model)],
        "outputs": [o.name for o in model.graph.output],
        "ops": dict(sorted(Counter(n.op_type for n in canonical.graph.node).items())),
        "params": sum(int(__import__("numpy").prod(i.dims)) for i in canonical.graph.initializer),
        "macs": sum(r.macs for r in rows),
        "nodes": [vars(r) for r in rows],
        "unsupported": {t.name: backend_for(t).unsupported_ops(canonical) for t in targets if _has_backend(t)},
    }

    def render(d: dict) -> None:
        _print(f"[bold]{d['model']}[/bold]  opset {d['opset']}  inputs "
               + ", ".join(f"{i['name']}{i['shape']}" for i in d["inputs"]) + f"  outputs {', '.join(d['outputs'])}",
               f"parameters {d['params']:,}   MACs {d['macs']:,}")
        _print(_table("ops", ["op", "count"], [[k, v] for k, v in d["ops"].items()]))
        heavy = sorted(d["nodes"], key=lambda r: -r["macs"])
        shown = heavy if args.verbose else [r for r in heavy if r["macs"] or r["params"]][:10]
        _print(_table("nodes by MACs" + ("" if args.verbose else " (top 10; -v for all)"), ["node", "op", "params", "MACs"],
                      [[r["name"], r["op"], r["params"], r["macs"]] for r in shown]))
        for name, missing in d["unsupported"].items():
            _print(f"{name}: " + ("all ops supported" if not missing else
                                  "unsupported: " + ", ".join(f"{op} ({len(n)})" for op, n in missing.items())))

    _emit(args, data, render)
    return 0


def _has_backend(target) -> bool:
    from edgeprune.backends import BACKENDS

    return target.kind in BACKENDS


def _render_result(result) -> None:
    d = result.as_dict()
    rows = []
    for r in d["passes"]:
        diff = r["difference"] or {}
        err = diff.get("max_abs_error")
        rows.append([r["name"], f"{r['seconds']:.2f}", f"{r['before']['nodes']} -> {r['after']['nodes']}",
                     f"{r['before']['params']:,} -> {r['after']['params']:,}", f"{r['before']['macs']:,} -> {r['after']['macs']:,}",
                     "-" if err is None else f"{err:.3g}", "-" if diff.get("top1_agreement") is None else f"{diff['top1_agreement']:.3f}"])
    if rows:
        _print(_table("passes", ["pass", "s", "nodes", "params", "MACs", "max abs err", "top-1 agree"], rows))
    check = d["build"].get("vs_reference")
    extra = f"; library vs {d['build']['reference']} max abs error {check['max_abs_error']:.3g}" if check else ""
    _print(f"bundle [bold]{d['bundle']}[/bold] for {d['target']}: {len(d['files'])} files + manifest{extra}")
    if "instructions" in d["build"]:  # microcontroller firmware, run under QEMU by the build
        b = d["build"]
        _print(f"firmware: flash {b['flash_bytes']:,} of {b['budget']['flash_bytes']:,} bytes, RAM {b['ram_bytes']:,} of "
               f"{b['budget']['ram_bytes']:,} (arena {b['arena_bytes']:,}); {b['instructions']:,} instructions per "
               f"inference under {b['emulator']}")


def _tune_options(args: argparse.Namespace, table: dict | None = None):
    """--tune and its flags over a recipe's [tune] table; None when neither asks for tuning."""
    from edgeprune.compile.tune import TuneOptions

    flags = {k: v for k, v in {"trials": args.tune_trials, "seconds": args.tune_seconds, "rpc": args.rpc,
                               "tracker": args.tracker, "key": args.key}.items() if v is not None}
    if not (args.tune or flags.keys() & {"trials", "seconds"} or table is not None):
        if flags:
            raise UserError("--rpc/--tracker/--key: only with --tune (tuning measures the kernels there)")
        return None
    return TuneOptions.from_table({**(table or {}), **flags}, "--tune")


def cmd_compile(args: argparse.Namespace) -> int:
    from edgeprune.pipeline import build_passes, compile_model, load_recipe

    recipe = load_recipe(args.recipe) if args.recipe else None
    passes = build_passes(recipe, args.recipe) if recipe else None
    tune = _tune_options(args, recipe.tune if recipe else None)
    target = args.target
    if args.coded_weights:
        from dataclasses import replace

        from edgeprune.targets import load_target

        target = load_target(args.target)
        if target.kind != "micro":
            raise UserError(f"--coded-weights: only microcontroller targets decode weights at run time, not {target.name}")
        target = replace(target, memory={**target.memory, "coded_weights": True})
    with _progress(not args.json) as ctx:
        result = compile_model(args.model, target, args.output, passes=passes, input_shapes=_shapes(args),
                               calib=args.calib, samples=args.samples, seed=args.seed, force=args.force, ctx=ctx,
                               tune=tune, tune_db=args.tune_db)
    _emit(args, result.as_dict(), lambda _: _render_result(result))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edgeprune.pipeline import Recipe, load_recipe, run_recipe

    recipe = load_recipe(args.source) if args.source.endswith(".toml") else Recipe(model=args.source)
    for key in ("target", "output", "calib"):
        if getattr(args, key):
            setattr(recipe, key, getattr(args, key))
    recipe.input_shapes = {**recipe.input_shapes, **_shapes(args)}
    if args.samples is not None:
        recipe.samples = args.samples
    tune = _tune_options(args, recipe.tune)
    recipe.tune = tune.as_dict() if tune else None
    with _progress(not args.json) as ctx:
        result = run_recipe(recipe, force=args.force, ctx=ctx, tune_db=args.tune_db)
    _emit(args, result.as_dict(), lambda _: _render_result(result))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from edgeprune.graph import top1_accuracy
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import transform_model

    quant = make_pass("quantize", {"method": args.method, "per_channel": not args.per_tensor, "pow2": args.pow2},
                      "quantize")
    with _progress(not args.json) as ctx:
        final, ctx = transform_model(args.model, [quant], args.output, force=args.force, input_shapes=_shapes(args),
                                     calib=args.calib, ctx=ctx)
    record = ctx.records[-1]
    data = {"output": args.output, "method": args.method, "per_channel": not args.per_tensor, "pow2": args.pow2,
            "samples": len(ctx.samples), **(record.difference or {}),
            "bytes_float": _initializer_bytes(ctx.records, "before"), "bytes_int8": Path(args.output).stat().st_size}
    if ctx.labels is not None:
        from edgeprune.graph import load_model

        source = load_model(args.model)
        data["accuracy_float"] = top1_accuracy(source, ctx.samples, ctx.labels)
        data["accuracy_int8"] = top1_accuracy(final, ctx.samples, ctx.labels)

    def render(d: dict) -> None:
        rows = [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in d.items()]
        _print(_table(f"quantized -> {d['output']}", ["", "value"], rows))

    _emit(args, data, render)
    return 0


def _initializer_bytes(records, when: str) -> int:
    """Float32 bytes of the model's parameters before quantization (4 bytes per parameter)."""
    quant = next(r for r in records if r.name == "quantize")
    return 4 * getattr(quant, when)["params"]


def _op_bits(pairs: list[str]) -> dict[str, int]:
    found = {}
    for pair in pairs:
        op, _, bits = pair.partition("=")
        if not op or not bits.isdigit():
            raise UserError(f"share: --op-bits {pair}: expected OP=BITS, e.g. Conv=8")
        found[op] = int(bits)
    return found


def cmd_share(args: argparse.Namespace) -> int:
    """Weight sharing (k-means per layer), optionally followed by centroid fine-tuning."""
    from edgeprune.graph import load_model, top1_accuracy
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import transform_model

    if args.finetune and not (args.train or args.calib):
        raise UserError("share --finetune: give the training data (--train DATA.npz with `labels`)")
    options = {"bits": args.bits, "op_bits": _op_bits(args.op_bits or []), "min_size": args.min_size,
               "finetune": args.finetune, "train": args.train or "", "lr": args.lr, "batch_size": args.batch_size,
               "optimizer": args.optimizer, "distill": args.distill, "seed": args.seed, "threads": args.threads or 0}
    with _progress(not args.json) as ctx:
        final, ctx = transform_model(args.model, [make_pass("share-weights", options, "share")], args.output,
                                     force=args.force, input_shapes=_shapes(args), calib=args.calib, ctx=ctx)
    record = ctx.records[-1]
    data = {"output": args.output, **options, "layers": record.details["layers"], **(record.difference or {})}
    if "finetune" in record.details:
        data["finetune_report"] = record.details["finetune"]
    if ctx.labels is not None:
        data["accuracy_before"] = top1_accuracy(load_model(args.model), ctx.samples, ctx.labels)
        data["accuracy_after"] = top1_accuracy(final, ctx.samples, ctx.labels)

    def render(d: dict) -> None:
        _print(_table("shared weights", ["layer", "op", "weights", "values", "bits", "relative error"],
                      [[name, layer["op"], layer["size"], layer.get("distinct_after_finetune", layer["distinct"]),
                        layer["bits"], f"{layer['relative_error']:.4f}"] for name, layer in d["layers"].items()]))
        tuned = d.get("finetune_report")
        if tuned and "accuracy_after" in tuned:
            _print(f"centroid fine-tuning ({d['finetune']} epochs on {tuned['samples']:,} samples): accuracy "
                   f"{tuned['accuracy_before']:.4f} -> {tuned['accuracy_after']:.4f}")
        extra = f"; accuracy {d['accuracy_before']:.4f} -> {d['accuracy_after']:.4f}" if "accuracy_after" in d else ""
        _print(f"{d['output']}: max abs error {d.get('max_abs_error', float('nan')):.3g}, top-1 agreement "
               f"{d.get('top1_agreement')}{extra}")

    _emit(args, data, render)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from edgeprune.graph import load_model, top1_accuracy
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import transform_model
    from edgeprune.targets import load_target

    if args.schedule:
        return cmd_prune_cycle(args)
    if args.layer_ratios or args.finetune:
        raise UserError("prune: --layer-ratios and --finetune run in the prune cycle: add --schedule agp --eval DATA.npz "
                        "(--schedule oneshot --steps 1 for a single cut)")
    if args.unstructured:
        options = {"sparsity": args.sparsity, "scope": args.scope, "nm": args.nm or "", "protect": args.protect or []}
        step = make_pass("magnitude-prune", options)
    else:
        if args.ratio is None and args.target_macs is None and args.target_params is None:
            raise UserError("prune: give --ratio, --target-macs or --target-params (or --unstructured --sparsity)")
        options = {"ratio": args.ratio or 0.0, "target_macs": args.target_macs or 0.0,
                   "target_params": args.target_params or 0.0, "scope": args.scope, "criterion": args.criterion,
                   "allocate_by": args.allocate_by or "",
                   "round_to": args.round_to or 0, "protect": args.protect or [], "min_channels": args.min_channels,
                   "grouped_conv": args.grouped_conv, "reconstruct": args.reconstruct or args.reconstruct_relu,
                   "reconstruct_relu": args.reconstruct_relu}
        step = make_pass("prune", options)
    with _progress(not args.json) as ctx:
        ctx.target = load_target(args.target) if args.target else None
        final, ctx = transform_model(args.model, [step], args.output, force=args.force, input_shapes=_shapes(args),
                                     calib=args.calib, ctx=ctx)
    record = ctx.records[-1]
    details = dict(record.details)
    data = {"output": args.output, "mode": "unstructured" if args.unstructured else "structured", **options,
            "params_before": record.before["params"], "params_after": record.after["params"],
            "macs_before": record.before["macs"], "macs_after": record.after["macs"], **(record.difference or {})}
    if args.unstructured:
        data.update(sparsity_achieved=details["sparsity"], layers=details["layers"])
    else:
        data.update(ratio_used=details["ratio"], groups={"pruned": details["groups_pruned"],
                                                          "blocked": details["groups_blocked"]},
                    group_details=details["groups"])
    if ctx.labels is not None:
        data["accuracy_before"] = top1_accuracy(load_model(args.model), ctx.samples, ctx.labels)
        data["accuracy_after"] = top1_accuracy(final, ctx.samples, ctx.labels)

    def render(d: dict) -> None:
        if args.unstructured:
            _print(_table("sparsity per layer", ["layer", "weights", "sparsity"],
                          [[name, layer["size"], f"{layer['sparsity']:.3f}"] for name, layer in d["layers"].items()]))
        else:
            _print(_table("groups", ["group", "channels", "kept", "removed", "why blocked"],
                          [[" + ".join(g["producers"][:3]) or f"#{g['id']}", g["channels"], g["kept"], g["removed"],
                            "; ".join(g["blocked"])] for g in d["group_details"] if g["removed"] or args.verbose]))
            _print(f"groups pruned {d['groups']['pruned']}, blocked {d['groups']['blocked']}; channel ratio "
                   f"{d['ratio_used']:.3f}")
        extra = (f"; accuracy {d['accuracy_before']:.4f} -> {d['accuracy_after']:.4f}" if "accuracy_after" in d else "")
        _print(f"{d['output']}: params {d['params_before']:,} -> {d['params_after']:,}, MACs {d['macs_before']:,} -> "
               f"{d['macs_after']:,}; max abs error {d.get('max_abs_error', float('nan')):.3g}, top-1 agreement "
               f"{d.get('top1_agreement')}{extra}")

    _emit(args, data, render)
    return 0


def cmd_prune_cycle(args: argparse.Namespace) -> int:
    """`prune --schedule`: the prune / recover / evaluate cycle that stops before the budget is spent."""
    from edgeprune.passes.channel_prune import default_round_to
    from edgeprune.pipeline import transform_model
    from edgeprune.passes.prune_cycle import PruneCycle
    from edgeprune.prune.sensitivity import load_layer_ratios
    from edgeprune.targets import load_target

    if not args.eval:
        raise UserError("prune --schedule: give the data each step is measured on (--eval DATA.npz)")
    if args.nm:
        raise UserError("prune --schedule: N:M sparsity (--nm) is one fixed pattern, not a schedule; prune it in one go")
    explicit = {"sparsity": args.sparsity} if args.unstructured and not args.layer_ratios else {}
    cycle = PruneCycle(
        schedule=args.schedule, steps=args.steps, budget=args.budget, unstructured=args.unstructured,
        ratio=args.ratio or 0.0, target_macs=args.target_macs or 0.0, target_params=args.target_params or 0.0,
        layer_ratios=load_layer_ratios(args.layer_ratios, "unstructured" if args.unstructured else "structured")
        if args.layer_ratios else {}, scope=args.scope, criterion=args.criterion, allocate_by=args.allocate_by or "",
        min_channels=args.min_channels,
        protect=args.protect or [], recovery=args.recovery, train=args.train or "", epochs=args.finetune,
        batch_size=args.batch_size, lr=args.lr, distill=args.distill, temperature=args.temperature, alpha=args.alpha,
        rewind=args.rewind, splice=args.splice, seed=args.seed, threads=args.threads or 0, bars=not args.json,
        **explicit)
    with _progress(not args.json) as ctx:
        ctx.target = load_target(args.target) if args.target else None
        cycle.round_to = args.round_to or default_round_to(ctx)
        final, ctx = transform_model(args.model, [cycle], args.output, force=args.force, input_shapes=_shapes(args),
                                     calib=args.eval, ctx=ctx)
    report = ctx.records[-1].details["cycle"]
    data = {"output": args.output, "mode": "unstructured" if args.unstructured else "structured", **report}

    def render(d: dict) -> None:
        rows = [["0", "unpruned", d["params"], d["macs"], "0", f"{100 * d['baseline']:.2f}", "0.00", "-", "-",
                 "*" if d["chosen"] == 0 else ""]]
        rows += [[str(s["step"]), s["target"], s["params"], s["macs"], f"{s['sparsity']:.3f}", f"{100 * s['metric']:.2f}",
                  f"{s['drop']:.2f}", s["recovery"], f"{s['seconds']:.1f}", "*" if s["step"] == d["chosen"] else ""]
                 for s in d["steps"]]
        _print(_table(f"{args.schedule} cycle, budget {d['budget']:g} points of {d['metric']}",
                      ["step", "target", "params", "MACs", "sparsity", f"{d['metric']} %", "drop", "recovery", "s",
                       "chosen"], rows))
        _print(f"{d['output']}: step {d['chosen']} ({d['stopped']})")

    _emit(args, data, render)
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from edgeprune.artifact import write_file
    from edgeprune.data import load_calibration
    from edgeprune.graph import canonicalize
    from edgeprune.pipeline import dumps, prepare
    from edgeprune.prune.sensitivity import sensitivity

    try:
        ratios = [float(r) for r in args.ratios.split(",")]
    except ValueError:
        raise UserError(f"--ratios {args.ratios}: expected comma-separated fractions, e.g. 0.2,0.4,0.6") from None
    if args.output and Path(args.output).exists() and not args.force:
        raise UserError(f"{args.output}: already exists (use --force to replace it)")
    with _progress(not args.json) as ctx:
        model, ctx = prepare(args.model, input_shapes=_shapes(args), calib=args.eval, ctx=ctx)
        model = canonicalize(model, {}, args.model)
        calib = load_calibration(args.reconstruct, model)[0] if args.reconstruct else None
        report = sensitivity(model, ctx.samples, ctx.labels, ratios, "unstructured" if args.unstructured else "structured",
                             args.criterion, tuple(args.protect or []), args.jobs, args.budget, ctx.progress, calib)
    if args.output:
        write_file(Path(args.output), (dumps(report.proposal_file()) + "\n").encode(), args.force)
    data = {"model": args.model, "proposal_file": args.output, **report.as_dict()}

    def render(d: dict) -> None:
        grid = sorted({p["ratio"] for p in d["points"]})
        curves: dict[str, dict[float, float]] = {}
        for p in d["points"]:
            curves.setdefault(p["layer"], {})[p["ratio"]] = p["drop"]
        _print(_table(f"{d['metric']} drop (points) per layer and {d['mode']} ratio; unpruned {100 * d['baseline']:.2f}%",
                      ["layer", *(f"{r:g}" for r in grid), "proposed"],
                      [[layer, *(f"{c[r]:.2f}" for r in grid), f"{d['proposal'][layer]:g}" if layer in d["proposal"] else
                        "-"] for layer, c in curves.items()]))
        if d["budget"] is not None:
            key = "macs" if d["proposed_macs"] is not None else "params"
            _print(f"proposal for {d['budget']:g} points: predicted drop {d['predicted_drop']:.2f}, {key} "
                   f"{d[key]:,} -> {d['proposed_' + key]:,}" + (f"; written to {args.output}" if args.output else ""))

    _emit(args, data, render)
    return 0


def cmd_groups(args: argparse.Namespace) -> int:
    from edgeprune.graph import canonicalize, check_structure, load_model
    from edgeprune.prune import build, format_group

    model = load_model(args.model)
    check_structure(model, args.model)
    dg = build(canonicalize(model, _shapes(args), args.model), protect=tuple(args.protect or []),
               grouped_conv=args.grouped_conv)
    traces = [format_group(g) for g in dg.groups]
    data = {"model": args.model, "groups": len(dg.groups),
            "blocked": sum(1 for g in dg.groups if g.blocked), "traces": traces}

    def render(d: dict) -> None:
        for trace in d["traces"]:
            _print(trace, "")
        _print(f"{d['groups']} groups, {d['blocked']} blocked")

    _emit(args, data, render)
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from edgeprune import artifact
    from edgeprune.coding.compress import compress_to_folder

    out = Path(args.output)
    artifact.check_destination(out, args.force, marker="weights.ephc")
    with artifact.staging(out, args.force, marker="weights.ephc") as tmp:
        report = compress_to_folder(args.model, tmp)
    data = {"output": str(out), **report.as_dict()}

    def render(d: dict) -> None:
        _print(_table("coded tensors", ["tensor", "coding", "elements", "raw bytes", "coded bytes", "bits/weight",
                                        "entropy bits/weight"],
                      [[t["name"], t["coding"], t["elements"], t["raw_bytes"], t["coded_bytes"],
                        f"{t['bits_per_weight']:.3f}", f"{t['entropy_bits_per_weight']:.3f}"] for t in d["tensors"]]))
        _print(f"{d['original_bytes']:,} -> {d['compressed_bytes']:,} bytes ({d['ratio']:.2f}x): weights.ephc "
               f"{d['weights_bytes']:,} + model.onnx {d['skeleton_bytes']:,}; Huffman {d['huffman_bits']:,} bits, "
               f"entropy {d['entropy_bits']:,.0f} bits")

    _emit(args, data, render)
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from edgeprune.artifact import write_file
    from edgeprune.coding.compress import decompress_folder
    from edgeprune.graph import model_bytes, validate

    model = decompress_folder(args.folder)
    validate(model, args.output)
    write_file(Path(args.output), model_bytes(model), args.force)
    _emit(args, {"output": args.output, "initializers": len(model.graph.initializer)},
          lambda d: _print(f"wrote {d['output']} ({d['initializers']} weight tensors)"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edgeprune.artifact import verify

    manifest = verify(args.bundle)
    data = {"bundle": args.bundle, "ok": True, "files": len(manifest["files"]), "target": manifest["target"]["name"]}
    _emit(args, data, lambda d: _print(f"{d['bundle']}: OK, {d['files']} files match their SHA-256 (target {d['target']})"))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from edgeprune.profile import profile_bundle

    with _progress(not args.json) as ctx:
        ctx.progress(f"profiling {args.bundle}")
        data = profile_bundle(args.bundle, rpc=args.rpc, tracker=args.tracker, key=args.key, repeat=args.repeat,
                              warmup=args.warmup, threads=args.threads, original=args.original, timeout=args.timeout,
                              retries=args.retries, simulate=args.simulate, emulate=args.emulate,
                              per_layer=args.per_layer, serial=args.serial, baud=args.baud)
    if args.simulate:
        _emit(args, data, _render_simulation)
        return 0
    if "serial" in data:  # microcontroller firmware on a board over a UART
        _emit(args, data, _render_serial)
        return 0
    if "instructions" in data:  # microcontroller firmware under QEMU
        _emit(args, data, _render_firmware)
        return 0

    def render(d: dict) -> None:
        rows = [["edgeprune (TVM)", d["device"], d["median_ms"], d["mean_ms"], d["p90_ms"], d["p99_ms"], d["std_ms"]]]
        rows += [[name, "local", b["median_ms"], b["mean_ms"], b["p90_ms"], b["p99_ms"], b["std_ms"]]
                 for name, b in d.get("baselines", {}).items()]
        _print(_table(f"latency over {d['runs']} runs after {d['warmup']} warm-up, ms",
                      ["runtime", "device", "median", "mean", "p90", "p99", "std"],
                      [[r[0], r[1], *(f"{v:.3f}" for v in r[2:])] for r in rows]))
        if d.get("operators"):
            ops = d["operators"] if args.verbose else d["operators"][:10]
            _print(_table("kernels" + ("" if args.verbose else " (top 10; -v for all)"), ["kernel", "calls", "ms", "%"],
                          [[o["name"], o["calls"], f"{o['ms']:.3f}", f"{o['percent']:.1f}"] for o in ops]))
        _print(f"outputs vs {d['reference']} on this machine: max abs error {d['max_abs_error']:.3g}; "
               f"library {d['sizes']['library_bytes']:,} bytes, model {d['sizes']['model_bytes']:,} bytes")

    _emit(args, data, render)
    return 0


def _render_firmware(d: dict) -> None:
    """`profile --emulate` of a microcontroller bundle: sizes against the budgets, instructions, per layer."""
    if d.get("layers"):
        _print(_table("instructions per layer", ["layer", "instructions", "%"],
                      [[l["name"], f"{l['instructions']:,}", f"{l['percent']:.1f}"] for l in d["layers"]]))
    b = d["budget"]
    _print(_table(f"{d['target']} firmware under {d['device']}", ["flash bytes", "RAM bytes", "arena bytes",
                                                                    "instructions / inference", f"max abs error vs {d['reference']}"],
                  [[f"{d['flash_bytes']:,} of {b['flash_bytes']:,}", f"{d['ram_bytes']:,} of {b['ram_bytes']:,}",
                    f"{d['arena_bytes']:,}", f"{d['instructions']:,}", f"{d['max_abs_error']:.3g}"]]))


def _render_serial(d: dict) -> None:
    """`profile --serial` of a microcontroller bundle: the board's counter over the runs, outputs vs the reference."""
    count = f"{d['ticks']:,} (min {d['ticks_min']:,}, max {d['ticks_max']:,})"
    extra = (f"{d['instructions']:,} instructions" if "instructions" in d
             else f"{d['latency_ms']:.3f} ms at {d['clock_hz'] / 1e6:g} MHz" if d["latency_ms"] is not None else "")
    _print(_table(f"{d['target']} firmware on {d['device']}, {d['runs']} runs", ["counter", "median per inference", "",
                                                                              f"max abs error vs {d['reference']}"],
                  [[d["counter"], count, extra, f"{d['max_abs_error']:.3g}"]]))
    _print(f"{d['counter']}: {d['counter_meaning']}")


def _render_simulation(d: dict) -> None:
    """`profile --simulate` of a VTA bundle: per-launch costs, totals, and the verdict."""
    _print(_table(f"VTA launches of {d['bundle']} ({d['device']})", ["layer", "insns", "GEMM ops", "ALU ops",
                                                                     "DRAM bytes", "cycles"],
                  [[l["name"], l["instructions"], l["gemm_ops"], l["alu_ops"], f"{l['dram_bytes']:,}", l["cycles"]]
                   for l in d["layers"]]))
    util = ", ".join(f"{b} {100 * u:.1f}%" for b, u in d["buffer_utilization"].items())
    _print(f"{d['instructions']} instructions, {d['gemm_ops']} GEMM ops ({d['gemm_macs']:,} MACs), "
           f"{d['dram_bytes']:,} DRAM bytes; buffers used: {util}")
    _print(f"estimated {d['estimated_ms']:.3f} ms at {d['clock_mhz']} MHz (model: {d['timing_model']})")
    _print(f"bit-exact vs {d['reference']}: {'yes' if d['bit_exact'] else 'NO'}; "
           f"max abs difference from onnxruntime: {d['max_abs_error_vs_onnxruntime']:.3g}")


def cmd_device_emulate(args: argparse.Namespace) -> int:
    from edgeprune.profile import emulator
    from edgeprune.targets import load_target

    target = load_target(args.target)
    arch = target.tvm.get("mtriple", "").split("-")[0]
    if target.device.get("emulator") != "qemu-aarch64" or arch != "aarch64":
        raise UserError(f"device emulate {args.target}: only 64-bit ARM Linux targets can be emulated "
                        "(no aarch64 TVM runtime exists for the others)")
    console = _console()
    if args.prepare_only:
        console.print(f"emulator image ready: {emulator.ensure_image(arch, console.print)}")
        return 0
    server = emulator.start_rpc_server(args.port, args.host, arch, progress=console.print)
    console.print(f"RPC server of an emulated {target.name} on {args.host}:{args.port}; "
                  f"`edgeprune profile BUNDLE --rpc {args.host}:{args.port}`; Ctrl-C stops it")
    try:
        server.wait()
    finally:
        emulator.stop(server)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from edgeprune.targets import all_targets

    targets = [t.as_dict() for t in all_targets()]
    _emit(args, {"targets": targets}, lambda d: _print(_table(
        "targets", ["name", "kind", "cpu", "triple", "profile", "description"],
        [[t["name"], t["kind"], t["tvm"].get("mcpu", ""), t["tvm"].get("mtriple", "arm-none-eabi" if t["kind"] == "micro" else "host"), t["device"]["profile"],
          t["description"]] for t in d["targets"]])))
    return 0


# ---- parser ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgeprune", description="Prune, quantize and compile ONNX models for edge devices.")
    parser.add_argument("--version", action="version", version=f"edgeprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, model: bool = True) -> None:
        p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
        p.add_argument("-v", "--verbose", action="store_true", help="more detail; tracebacks for internal errors")
        if model:
            p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                           help="static shape for a dynamic input (repeatable)")

    def building(p: argparse.ArgumentParser) -> None:
        p.add_argument("--force", action="store_true", help="replace an existing bundle")
        p.add_argument("--calib", metavar="DATA.npz|DIR", help="inputs (.npz, one array per model input, or a folder of "
                       "images) to check passes on")
        p.add_argument("--seed", type=int, default=0, help="seed of the random check inputs when no --calib")
        tune = p.add_argument_group("MetaSchedule tuning (CPU targets): the database goes into the bundle and a "
                                    "cache, and later builds of the same model and target apply it")
        tune.add_argument("--tune", action="store_true", help="tune the kernels (default budget: 64 trials each)")
        tune.add_argument("--tune-trials", type=int, metavar="N", help="at most N trials in all (implies --tune)")
        tune.add_argument("--tune-seconds", type=float, metavar="S", help="stop after S seconds (implies --tune)")
        tune.add_argument("--tune-db", metavar="PATH", help="apply this database (a folder or a tuned bundle)")
        tune.add_argument("--rpc", metavar="HOST:PORT", help="measure on the board's TVM RPC server")
        tune.add_argument("--tracker", metavar="HOST:PORT", help="measure on boards of a TVM RPC tracker (with --key)")
        tune.add_argument("--key", help="device key for --tracker")

    p = sub.add_parser("inspect", help="ops, shapes, parameters, MACs, unsupported ops per target")
    p.add_argument("model")
    p.add_argument("--target", help="only this target's unsupported ops")
    common(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("compile", help="canonicalize (plus a recipe's passes) and build a bundle for a target")
    p.add_argument("model")
    p.add_argument("--target", required=True, help="a name from `edgeprune targets` or a .toml file")
    p.add_argument("-o", "--output", required=True, help="bundle folder to create")
    p.add_argument("--recipe", help="TOML recipe whose passes run before the build")
    p.add_argument("--samples", type=int, default=2, help="random check inputs when no --calib")
    p.add_argument("--coded-weights", action="store_true", help="microcontroller targets: int8 weights Huffman-coded "
                   "in flash, decoded per layer into the arena (the target's memory.coded_weights)")
    building(p)
    common(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="the whole pipeline a recipe (or the default recipe for a model) declares")
    p.add_argument("source", metavar="RECIPE|MODEL")
    p.add_argument("--target", help="overrides the recipe's target")
    p.add_argument("-o", "--output", help="overrides the recipe's output folder")
    p.add_argument("--samples", type=int, default=None, help="random check inputs when no --calib")
    building(p)
    common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("quantize", help="int8 post-training static quantization to a QDQ ONNX model")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help="the quantized .onnx file to write")
    p.add_argument("--calib", required=True, metavar="DATA.npz|DIR",
                   help="calibration data: .npz (one array per model input, samples on axis 0; `labels` for "
                        "accuracy) or a folder of images (README: Calibration data)")
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"], help="activation ranges")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--per-channel", action="store_true", default=True, help="per-channel weight scales (default)")
    group.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor")
    p.add_argument("--pow2", action="store_true", help="power-of-two scales, zero-points 0 (VTA shifts only)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    common(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("share", help="weight sharing: k-means per layer to 2^bits values (Deep Compression), "
                       "then optional centroid fine-tuning")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help="the shared .onnx file to write")
    p.add_argument("--bits", type=int, default=4, help="bits per weight index: 2^bits shared values per layer (default 4)")
    p.add_argument("--op-bits", action="append", metavar="OP=BITS", help="bits for one op type's weights, e.g. "
                   "Conv=8 (repeatable)")
    p.add_argument("--min-size", type=int, default=256, help="leave weight tensors smaller than this as they are")
    p.add_argument("--calib", metavar="DATA.npz|DIR", help="data to measure the error (and accuracy with `labels`) on")
    p.add_argument("--finetune", type=int, default=0, metavar="EPOCHS", help="then train the shared values (centroids) "
                   "for EPOCHS, every weight keeping its cluster and zeros kept zero (torch)")
    p.add_argument("--train", metavar="DATA.npz", help="training data (arrays as the model takes them + `labels`); "
                   "default: the --calib data")
    p.add_argument("--lr", type=float, default=0.001, help="centroid learning rate (default 0.001; a centroid's "
                   "gradient sums its cluster's)")
    p.add_argument("--batch-size", type=int, default=64, help="fine-tuning batch size (default 64)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="fine-tuning optimizer (default sgd)")
    p.add_argument("--distill", action="store_true", help="distil from the model before sharing (soft targets + labels)")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    p.add_argument("--threads", type=int, help="torch threads for fine-tuning (default: torch's)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    common(p)
    p.set_defaults(func=cmd_share)

    p = sub.add_parser("prune", help="structured channel pruning (--ratio/--target-macs) or --unstructured")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help="the pruned .onnx file to write")
    p.add_argument("--ratio", type=float, help="fraction of channels to remove in each group")
    p.add_argument("--target-macs", type=float, metavar="F", help="fraction of MACs to keep (searches the ratio)")
    p.add_argument("--target-params", type=float, metavar="F", help="fraction of parameters to keep")
    p.add_argument("--scope", choices=["local", "global"], default="local",
                   help="local: every group (layer) at the ratio; global: one normalized ranking over all")
    p.add_argument("--criterion", default="l1", help="channel importance: l1, l2, bn-scale (BN kept), or on --calib "
                   "data: activation, redundancy (mRMR), reconstruction (greedy least squares)")
    p.add_argument("--allocate-by", metavar="CRITERION", help="the criterion whose ranking sets how many channels each "
                   "group keeps; --criterion then picks which (default: --criterion for both)")
    p.add_argument("--round-to", type=int, help="keep channel counts at multiples of N (default: the target's "
                   "vector lanes, 1 without --target)")
    p.add_argument("--target", help="the device the model is for (sets --round-to)")
    p.add_argument("--min-channels", type=int, default=1, help="never fewer channels in a group")
    p.add_argument("--grouped-conv", choices=["equal", "whole"], default="equal", help="grouped (ResNeXt) convs: "
                   "the same channels from every group (equal, default) or whole groups (`group` shrinks)")
    p.add_argument("--unstructured", action="store_true", help="zero the smallest weights instead (shapes unchanged)")
    p.add_argument("--sparsity", type=float, default=0.5, help="with --unstructured: fraction of weights to zero")
    p.add_argument("--nm", metavar="N:M", help="with --unstructured: N:M sparsity, e.g. 2:4")
    p.add_argument("--protect", nargs="+", metavar="NODE", help="nodes to leave untouched")
    p.add_argument("--calib", metavar="DATA.npz|DIR", help="inputs to measure the error on (.npz or image folder); "
                   "`labels` for accuracy")
    p.add_argument("--reconstruct", action="store_true", help="refit the layers after pruned channels to the "
                   "original's outputs on --calib (least squares, no training), then re-estimate BatchNorm statistics")
    p.add_argument("--reconstruct-relu", action="store_true", help="--reconstruct, and fit the layers followed by "
                   "(BatchNorm and) ReLU on the ReLU's output: errors where the ReLU outputs zero anyway do not count")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    cycle = p.add_argument_group("prune cycle (--schedule): prune, recover and evaluate in steps within a budget")
    cycle.add_argument("--schedule", choices=["agp", "linear", "oneshot"], help="how pruning rises to the final target")
    cycle.add_argument("--steps", type=int, default=5, help="pruning steps (default 5)")
    cycle.add_argument("--eval", metavar="DATA.npz", help="data each step is measured on: accuracy with `labels`, "
                       "top-1 agreement with the original without")
    cycle.add_argument("--budget", type=float, default=1.0, metavar="POINTS",
                       help="accuracy points the cycle may lose (default 1.0)")
    cycle.add_argument("--layer-ratios", metavar="FILE.json", help="final per-layer ratios (`edgeprune sensitivity -o`)")
    cycle.add_argument("--recovery", choices=["auto", "none", "reconstruct", "finetune"], default="auto",
                       help="after each step (auto: finetune with --finetune, else reconstruct when structured)")
    cycle.add_argument("--finetune", type=int, default=0, metavar="EPOCHS", help="fine-tune EPOCHS per step (torch)")
    cycle.add_argument("--train", metavar="DATA.npz", help="training data (arrays as the model takes them + `labels`); "
                       "default: the --eval data")
    cycle.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (SGD, cosine; default 0.01)")
    cycle.add_argument("--batch-size", type=int, default=64, help="fine-tuning batch size (default 64)")
    cycle.add_argument("--distill", action="store_true", help="distil from the unpruned model (soft targets + labels)")
    cycle.add_argument("--temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    cycle.add_argument("--alpha", type=float, default=0.7, help="weight of the distillation loss (default 0.7)")
    cycle.add_argument("--rewind", action="store_true", help="reset surviving weights to their unpruned values "
                       "before fine-tuning")
    cycle.add_argument("--splice", action="store_true", help="unstructured: pruned weights that grow back return "
                         "(dynamic network surgery)")
    cycle.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    cycle.add_argument("--threads", type=int, help="torch threads for fine-tuning (default: torch's)")
    common(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("sensitivity", help="accuracy vs pruning ratio per layer, and per-layer ratios for a budget")
    p.add_argument("model")
    p.add_argument("--eval", required=True, metavar="DATA.npz", help="evaluation data (`labels` for accuracy, else "
                   "top-1 agreement with the original)")
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", help="comma-separated ratios to try")
    p.add_argument("--unstructured", action="store_true", help="weight sparsity per Conv/Gemm/MatMul instead of "
                   "channel ratio per group")
    p.add_argument("--criterion", default="l1", help="channel importance: l1, l2")
    p.add_argument("--protect", nargs="+", metavar="NODE", help="nodes to leave untouched")
    p.add_argument("--jobs", type=int, help="processes (default: every core)")
    p.add_argument("--reconstruct", metavar="CALIB.npz|DIR", help="measure each structured point after least-squares "
                   "reconstruction on this calibration data (as the cycle without training recovers)")
    p.add_argument("--budget", type=float, metavar="POINTS", help="propose per-layer ratios losing at most POINTS")
    p.add_argument("-o", "--output", metavar="FILE.json", help="write the proposal (for prune --layer-ratios)")
    p.add_argument("--force", action="store_true", help="replace an existing proposal file")
    common(p)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("groups", help="the channel groups structured pruning sees, as readable traces")
    p.add_argument("model")
    p.add_argument("--protect", nargs="+", metavar="NODE", help="nodes to leave untouched")
    p.add_argument("--grouped-conv", choices=["equal", "whole"], default="equal", help="as in `prune`")
    common(p)
    p.set_defaults(func=cmd_groups)

    p = sub.add_parser("compress", help="Huffman-code a model's weights: DIR/weights.ephc + DIR/model.onnx")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help="folder to create")
    p.add_argument("--force", action="store_true", help="replace a folder written by an earlier compress")
    common(p, model=False)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="rebuild the model from a compress folder, bit for bit")
    p.add_argument("folder")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    common(p, model=False)
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("verify", help="check every file of a bundle against its manifest's SHA-256")
    p.add_argument("bundle")
    common(p, model=False)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("profile", help="latency, per-kernel times and output check of a bundle, with baselines")
    p.add_argument("bundle")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--rpc", metavar="HOST:PORT", help="a TVM RPC server on the board (or the emulator)")
    where.add_argument("--tracker", metavar="HOST:PORT", help="a TVM RPC tracker; with --key")
    where.add_argument("--local", action="store_true", help="run here (the default), with onnxruntime baselines")
    p.add_argument("--key", help="device key for --tracker")
    p.add_argument("--repeat", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--threads", type=int, help="threads for TVM and onnxruntime when local (default: all cores)")
    p.add_argument("--original", metavar="MODEL", help="also time onnxruntime on this model (e.g. before pruning)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a connection (default 10)")
    p.add_argument("--retries", type=int, default=0, help="connection attempts after the first (2 s apart)")
    p.add_argument("--simulate", action="store_true", help="VTA bundles: run the whole model in the simulator, "
                   "check it bit for bit, estimate the time")
    p.add_argument("--emulate", action="store_true", help="microcontroller bundles: build the firmware and run it under "
                   "qemu-system-arm (-icount): flash, RAM, instructions, outputs vs onnxruntime (the default for them)")
    p.add_argument("--per-layer", action="store_true", help="with --emulate: instructions per layer")
    p.add_argument("--serial", metavar="PORT", help="microcontroller bundles: run on a board with the EP_SERIAL example "
                   "firmware over this UART (/dev/ttyACM0, or a pyserial URL such as socket://HOST:PORT): DWT cycles, "
                   "outputs vs onnxruntime; --repeat runs, --timeout per reply")
    p.add_argument("--baud", type=int, default=115200, help="with --serial: the UART's baud rate (default 115200)")
    common(p, model=False)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("device", help="devices: `device emulate rpi4` starts an emulated board's RPC server")
    device_sub = p.add_subparsers(dest="device_command", required=True, parser_class=_Parser)
    e = device_sub.add_parser("emulate", help="an emulated 64-bit Raspberry Pi (qemu) serving TVM RPC")
    e.add_argument("target", help="rpi3, rpi4 or rpi5")
    e.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    e.add_argument("--port", type=int, default=9190)
    e.add_argument("--prepare-only", action="store_true", help="build the cached image and exit")
    common(e, model=False)
    e.set_defaults(func=cmd_device_emulate)

    p = sub.add_parser("targets", help="list the built-in targets")
    common(p, model=False)
    p.set_defaults(func=cmd_targets)
    return parser


def main(argv: list[str] | None = None) -> int:
    verbose = "-v" in (argv if argv is not None else sys.argv[1:]) or "--verbose" in (argv or sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as exc:
        print(f"edgeprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeprune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # everything else is our bug: say so, and how to get the details
        if verbose:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"edgeprune: internal error: {type(exc).__name__}: {first} (run with -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
