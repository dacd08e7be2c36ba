"""Optional MetaSchedule tuning of a model's kernels, measured here or on a board over TVM RPC.

The tasks are the PrimFuncs the default rules see (`schedules.prepare_passes`), so a database record
matches the build's kernel exactly; only the kinds the time goes into are tuned (convolutions, dense
layers, pooling), the elementwise tails keep the rules. Our rule's schedule of each tuned kernel is measured
by the same builder and runner and stored as a record too (its trace replays it exactly), so the build
applies whichever of ours and MetaSchedule's measured faster, kernel by kernel. The database (two JSON
files) is written into the bundle's `tuning/` folder and into a cache keyed by the model's bytes and the
target, and a later build of the same model for the same target applies it (`MetaScheduleApplyDatabase`)
with no new trials.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgeprune.errors import UserError
from edgeprune.targets import Target
from edgeprune.tomlcheck import check_table

FOLDER = "tuning"  # in the bundle
FILES = ("database_workload.json", "database_tuning_record.json")
TUNED_KINDS = ("conv2d", "flat_conv", "depthwise", "matmul", "pool")
TRIALS_PER_TASK = 64  # the default budget when neither trials nor seconds are given
# A builder worker re-imports TVM (seconds) before it compiles; under load 30 s (TVM's default) is not enough.
BUILD_TIMEOUT_S = 300
RUN_TIMEOUT_S = 120
FAILED_RUN_S = 1e9  # MetaSchedule records a candidate that failed to build or run as taking 1e10 s


@dataclass(frozen=True)
class TuneOptions:
    """`--tune` and its budget (trials, seconds, or both: whichever ends first), and where to measure."""

    trials: int | None = None
    seconds: float | None = None
    rpc: str | None = None
    tracker: str | None = None
    key: str | None = None
    timeout: float = 10.0  # seconds to wait for the board's connection

    @classmethod
    def from_table(cls, table: dict[str, Any], where: str) -> "TuneOptions":
        """A recipe's `[tune]` table, checked key by key."""
        types = {"trials": int, "seconds": float, "rpc": str, "tracker": str, "key": str, "timeout": float}
        check_table(table, {name: (typ, False, None) for name, typ in types.items()}, where, "tune.")
        options = cls(**table)
        options.check(where)
        return options

    def check(self, where: str = "--tune") -> None:
        if self.trials is not None and self.trials < 1:
            raise UserError(f"{where}: trials must be at least 1 (got {self.trials})")
        if self.seconds is not None and self.seconds <= 0:
            raise UserError(f"{where}: seconds must be positive (got {self.seconds})")
        if self.rpc and self.tracker:
            raise UserError(f"{where}: give --rpc or --tracker, not both")
        if self.tracker and not self.key:
            raise UserError(f"{where}: --tracker needs --key (the device key the boards registered with)")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def cache_key(model: bytes, target: Target) -> str:
    """Model bytes and the TVM target (CPU, features, cores): what a record's speed depends on."""
    spec = json.dumps({"tvm": target.tvm_target_dict(), "vector_bits": target.vector_bits}, sort_keys=True)
    return hashlib.sha256(model + spec.encode()).hexdigest()[:24]


def cache_folder(key: str) -> Path:
    from edgeprune.profile.emulator import cache_dir

    return cache_dir() / "tuning" / key


def has_database(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def find_database(path: str | Path) -> Path:
    """`--tune-db`: a folder with the two database files, or a bundle that has them in tuning/."""
    path = Path(path)
    for folder in (path, path / FOLDER):
        if has_database(folder):
            return folder
    raise UserError(f"--tune-db {path}: no MetaSchedule database there ({' and '.join(FILES)}, "
                    f"or a bundle with a {FOLDER}/ folder)")


def tuning_target(target: Target):
    """MetaSchedule's CPU rules need the core count in the target."""
    import tvm

    spec = target.tvm_target_dict()
    spec.setdefault("num-cores", os.cpu_count() if target.is_host else int(target.device["cores"]))
    return tvm.target.Target(spec)


def extract_tasks(mod, target: Target) -> list[tuple[str, Any, int]]:
    """(name, single-function IRModule, number of calls) for each distinct kernel worth tuning."""
    import tvm
    import tvm_ffi
    from tvm import relax, s_tir, tirx

    from edgeprune.compile.schedules import classify, prepare_passes

    with target.tvm_target():
        mod = tvm.transform.Sequential(prepare_passes(target))(mod)
    calls: dict[str, int] = {}

    def count(expr) -> None:
        if isinstance(expr, relax.Call) and expr.args and isinstance(expr.args[0], tvm.ir.GlobalVar):
            calls[expr.args[0].name_hint] = calls.get(expr.args[0].name_hint, 0) + 1

    relax.analysis.post_order_visit(mod["main"], count)
    tasks: dict[int, list] = {}
    for gvar, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc) or classify(s_tir.Schedule(func)).kind not in TUNED_KINDS:
            continue
        # as MetaScheduleApplyDatabase will look it up: a "main" with its own symbol
        task = tasks.setdefault(tvm_ffi.structural_hash(func),
                                [gvar.name_hint, tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), 0])
        task[2] += calls.get(gvar.name_hint, 1)
    return [tuple(t) for t in tasks.values()]


def build_kernel(mod, target, _params):
    """The builder's compile: MetaSchedule's default without importing every tensor intrinsic (GPU ones
    included), which costs each worker process tens of seconds and no CPU schedule here uses."""
    import tvm
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    try:
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    except tvm.error.InternalError:  # a zero-padding repack (our rules' ragged channels) is timed with the kernel
        pass
    return tvm_build(mod, target=target)


def export_shared(cxx: str | None, module) -> str:
    """The builder's export: a shared library, cross-linked for a board (picklable for the worker processes)."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="edgeprune-tune-"), "kernel.so")
    module.export_library(path, fcompile=cc.cross_compiler(cxx) if cxx else None)
    return path


def kernel_builder(target: Target):
    """MetaSchedule's builder for the target: worker processes that compile (and cross-link) each candidate."""
    from tvm.s_tir import meta_schedule as ms

    from edgeprune.backends.arm_linux import cross_compiler

    cxx = None if target.is_host else cross_compiler(target)
    return ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S, f_build=build_kernel,
                                   f_export=functools.partial(export_shared, cxx))


def direct_session(host: str, port: int, _config):
    """The runner's session for `--rpc HOST:PORT` (MetaSchedule's own needs a tracker)."""
    from tvm import rpc

    return rpc.connect(host, port, session_timeout=RUN_TIMEOUT_S)


def kernel_runner(target: Target, options: TuneOptions):
    from tvm.s_tir import meta_schedule as ms

    from edgeprune.profile.device import parse_address, probe

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)
    if options.rpc or options.tracker:
        option, address = ("--rpc", options.rpc) if options.rpc else ("--tracker", options.tracker)
        host, port = parse_address(address, option)
        probe(host, port, options.timeout, "RPC server" if options.rpc else "RPC tracker", retries=0)
        # RPCRunner insists on tracker fields even when `direct_session` replaces the tracker: give it the server's.
        config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=options.key or "direct",
                                     session_priority=1, session_timeout_sec=RUN_TIMEOUT_S)
        session = functools.partial(direct_session, host, port) if options.rpc else None
        return ms.runner.RPCRunner(config, evaluator, f_create_session=session), \
            f"rpc {address}" if options.rpc else f"tracker {address} key {options.key}"
    if not target.is_host:
        raise UserError(f"--tune for {target.name}: kernels are measured on the board; give --rpc HOST:PORT or "
                        "--tracker HOST:PORT --key KEY (`edgeprune device emulate` serves one for testing)")
    return ms.runner.LocalRunner(RUN_TIMEOUT_S, evaluator), "local"


def _deadline_callback(seconds: float):
    """A measure callback that ends every task once the time budget is spent."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Deadline(ms.measure_callback.PyMeasureCallback):
        def __init__(self, end: float) -> None:
            self.end = end

        def apply(self, task_scheduler, task_id, candidates, builds, runs) -> None:
            if time.monotonic() >= self.end:
                for i, task in enumerate(task_scheduler.tasks_):
                    if not task.is_terminated:
                        task_scheduler.terminate_task(i)

    return Deadline(time.monotonic() + seconds)


def rule_schedule(mod, machine):
    """Our default rule applied to a task as a traced schedule (its trace replays it), or None where no rule applies."""
    from tvm import s_tir

    from edgeprune.compile.schedules import RULES, classify

    sch = s_tir.Schedule(mod)
    anchor = classify(sch)
    if anchor.kind not in RULES:
        return None
    try:
        RULES[anchor.kind](sch, anchor, machine)
    except (RuntimeError, ValueError):  # as schedule_module: the build keeps TVM's loops, nothing to seed
        return None
    return sch


def _mean_s(record) -> float:
    return sum(float(t) for t in record.run_secs) / len(record.run_secs) if record.run_secs else FAILED_RUN_S


def _rule_record(database, mod, trace: str):
    """The record of our rule's schedule for a task, if the database holds one (same trace, printed)."""
    if not database.has_workload(mod):
        return None
    workload = database.commit_workload(mod)
    return next((r for r in database.get_all_tuning_records()
                 if r.workload.same_as(workload) and str(r.trace) == trace), None)


def _args_info(mod):
    """The kernel's arguments as the runner allocates them: repacked weights in their packed layout, except where
    the repack zero-pads (MetaSchedule cannot lift that copy out; it is then timed with the kernel)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    try:
        return ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True)
    except tvm.error.InternalError:
        return ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=False)


def seed_rules(tasks, rules: dict[str, Any], ttarget, builder, runner, database) -> int:
    """Measure our rules' schedules (task name -> traced schedule) with MetaSchedule's own builder and runner
    (locally or on the board) and commit each as a tuning record, unless the database has it already:
    `MetaScheduleApplyDatabase` then applies the faster of ours and the search's by the same measurements.
    Returns how many were committed."""
    from tvm.s_tir import meta_schedule as ms

    todo = [(mod, rules[name], _args_info(rules[name].mod)) for name, mod, _ in tasks
            if name in rules and _rule_record(database, mod, str(rules[name].trace)) is None]
    builds = builder.build([ms.builder.BuilderInput(sch.mod, ttarget) for _, sch, _ in todo]) if todo else []
    built = [(task, b) for task, b in zip(todo, builds) if b.error_msg is None]
    runs = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", args) for (*_, args), b in built]) if built else []
    committed = 0
    for ((mod, sch, args), b), run in zip(built, runs):
        result = run.result()
        shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
        if result.error_msg is None:
            database.commit_tuning_record(ms.database.TuningRecord(sch.trace, database.commit_workload(mod),
                                                                   result.run_secs, ttarget, args))
            committed += 1
    return committed


def _copy(records, database) -> None:
    from tvm.s_tir import meta_schedule as ms

    for r in records:
        database.commit_tuning_record(ms.database.TuningRecord(r.trace, database.commit_workload(r.workload.mod),
                                                               r.run_secs, r.target, r.args_info))


def choices(tasks, traces: dict[str, str], ttarget, database) -> list[dict[str, Any]]:
    """Per kernel: what the build applies (the fastest record: our rule's or MetaSchedule's) and both times."""
    rows = []
    for name, mod, _ in tasks:
        best = database.query_tuning_record(mod, ttarget, name)
        ours = _rule_record(database, mod, traces[name]) if name in traces else None
        rows.append({"kernel": name, "rule_us": round(_mean_s(ours) * 1e6, 2) if ours else None,
                     "tuned_us": round(_mean_s(best) * 1e6, 2) if best else None,
                     "applied": "rule" if best is None or ours is not None and str(best.trace) == traces[name]
                     else "metaschedule"})
    return rows


def tune(mod, target: Target, folder: Path, options: TuneOptions, progress=lambda message: None) -> dict[str, Any]:
    """Tune the model's kernels into the JSON database in `folder` (records already there are kept), next to our
    rules' schedules measured the same way.

    The search runs on a scratch copy of the database without our rules' records: its evolutionary strategy
    replays the best records as a starting population, and a replay of our schedules (weights already repacked)
    aborts the whole search (seen: "Check failed: args.size() == initial_indices_orig.size()" from its
    parallel candidate loop). Its new records are then added to the bundle's database."""
    from tvm.s_tir import meta_schedule as ms

    from edgeprune.compile.schedules.machine import machine_for

    options.check()
    runner, where = kernel_runner(target, options)
    tasks = extract_tasks(mod, target)
    if not tasks:
        return {"tasks": 0, "trials": 0, "failed": 0, "elapsed_s": 0.0, "measured": where}
    trials = options.trials or (10**6 if options.seconds else TRIALS_PER_TASK * len(tasks))
    ttarget = tuning_target(target)
    contexts = [ms.TuneContext(mod=m, target=ttarget, space_generator="post-order-apply", search_strategy="evolutionary",
                               task_name=name, num_threads="physical", rand_state=i).clone()
                for i, (name, m, _) in enumerate(tasks)]
    builder = kernel_builder(target)
    callbacks = ms.measure_callback.MeasureCallback.create("default")
    if options.seconds:
        callbacks = [*callbacks, _deadline_callback(options.seconds)]
    folder.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(work_dir=str(folder))
    rules = {name: sch for name, m, _ in tasks if (sch := rule_schedule(m, machine_for(target))) is not None}
    traces = {name: str(sch.trace) for name, sch in rules.items()}
    progress(f"measuring our rules' schedules of {len(tasks)} kernels, then tuning them ({where})")
    start = time.perf_counter()
    seeded = seed_rules(tasks, rules, ttarget, builder, runner, database)
    search = ms.database.MemoryDatabase()
    _copy([r for r in database.get_all_tuning_records() if str(r.trace) not in traces.values()], search)
    before = len(search)
    with tempfile.TemporaryDirectory(prefix="edgeprune-tune-") as logs:
        ms.tune_tasks(tasks=contexts, task_weights=[float(w) for *_, w in tasks], work_dir=logs, max_trials_global=trials,
                      num_trials_per_iter=min(16 if options.seconds else 64, trials), builder=builder, runner=runner,
                      database=search, measure_callbacks=callbacks)
    new = search.get_all_tuning_records()[before:]  # a MemoryDatabase keeps records in the order committed
    _copy(new, database)
    kernels = choices(tasks, traces, ttarget, database)
    return {"tasks": len(tasks), "trials": len(new), "failed": sum(_mean_s(r) >= FAILED_RUN_S for r in new),
            "elapsed_s": round(time.perf_counter() - start, 1), "measured": where, "seeded": seeded,
            "rule_kept": sum(k["applied"] == "rule" for k in kernels), "kernels": kernels}


@contextmanager
def tuned_build(source, target: Target, bundle: Path, options: TuneOptions | None = None,
                database: str | Path | None = None, progress=lambda message: None) -> Iterator[dict[str, Any] | None]:
    """Around a back end's build: the database it should apply (tuned now, given, or cached), as the current one.

    Yields what the manifest records about it (None when there is none); on success the bundle's copy
    becomes the cache entry for this model and target.
    """
    if target.tvm.get("kind") != "llvm":
        if options or database:
            raise UserError(f"--tune/--tune-db: target {target.name} is not a CPU target (MetaSchedule tunes llvm ones)")
        yield None
        return
    key = cache_key(source.data(), target)
    cached = cache_folder(key)
    found = find_database(database) if database else cached if has_database(cached) else None
    if found is None and options is None:
        yield None
        return
    folder = bundle / FOLDER
    info: dict[str, Any] = {"database": FOLDER, "cache_key": key,
                            "from": str(database) if database else "cache" if found else "new"}
    folder.mkdir()
    for name in FILES if found is not None else ():
        shutil.copyfile(found / name, folder / name)
    if options is not None:
        info["tuned"] = {**options.as_dict(), **tune(source.relax_module(), target, folder, options, progress)}
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(folder))
    info["records"] = len(db)
    with db:
        yield info
    if folder.resolve() != cached.resolve():
        cached.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copyfile(folder / name, cached / name)
