"""MetaSchedule tuning: a database in the bundle, re-applied from the cache or --tune-db with no new trials,
and kernels measured on boards reached through a tracker."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from conftest import conv_model
from edgeprune.backends.host import run_library
from edgeprune.compile.tune import FILES, FOLDER, TuneOptions, extract_tasks
from edgeprune.errors import UserError
from edgeprune.graph import random_inputs
from test_profile import _free_port, needs_emulated_pi, tracker_with_servers

pytestmark = pytest.mark.slow  # MetaSchedule's first use imports every tensor intrinsic (a minute under load)


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "conv.onnx"
    onnx.save(conv_model(), path)
    return path


def test_tasks_are_the_kernels_worth_tuning(model):
    from edgeprune.compile.tvm_build import import_onnx
    from edgeprune.targets import load_target

    tasks = extract_tasks(import_onnx(onnx.load(model)), load_target("host"))
    names = [name for name, _, _ in tasks]
    assert len(names) == 3 and all(any(op in n for n in names) for op in ("conv2d", "matmul", "mean")), names


def test_tuned_database_is_reapplied(model, tmp_path, cli):
    code, out, err = cli("compile", model, "--target", "host", "-o", tmp_path / "tuned", "--tune-trials", "2", "--json")
    assert code == 0, err
    tuning = json.loads(out)["build"]["tuning"]
    assert tuning["from"] == "new" and tuning["tuned"]["measured"] == "local" and tuning["tuned"]["tasks"] == 3
    assert 1 <= tuning["tuned"]["trials"] <= 2 and tuning["tuned"]["failed"] == 0
    assert tuning["tuned"]["seeded"] == 3 and tuning["records"] == tuning["tuned"]["trials"] + 3
    _never_slower_than_the_rules(model, tmp_path / "tuned" / FOLDER)
    assert all((tmp_path / "tuned" / FOLDER / name).is_file() for name in FILES)
    library = (tmp_path / "tuned" / "model.so").read_bytes()

    # the same model and target again: the cached database applies, nothing is tuned, the library is the same
    code, out, err = cli("compile", model, "--target", "host", "-o", tmp_path / "again", "--json")
    assert code == 0, err
    again = json.loads(out)["build"]["tuning"]
    assert again["from"] == "cache" and "tuned" not in again and again["records"] == tuning["records"]
    assert (tmp_path / "again" / "model.so").read_bytes() == library

    # no cache: the default schedules; --tune-db brings the tuned library back
    code, _, err = cli("compile", model, "--target", "host", "-o", tmp_path / "default", "--json")
    assert code == 0, err
    for name in FILES:
        (tmp_path / "cache" / "tuning" / tuning["cache_key"] / name).unlink()
    code, out, err = cli("compile", model, "--target", "host", "-o", tmp_path / "plain", "--json")
    assert code == 0 and "tuning" not in json.loads(out)["build"], err
    # the default schedules' library is the tuned one exactly when our rule kept every kernel
    assert ((tmp_path / "plain" / "model.so").read_bytes() == library) == (tuning["tuned"]["rule_kept"] == 3)
    code, out, err = cli("compile", model, "--target", "host", "-o", tmp_path / "given", "--tune-db", tmp_path / "tuned",
                         "--json")
    assert code == 0 and json.loads(out)["build"]["tuning"]["from"] == str(tmp_path / "tuned"), err
    assert (tmp_path / "given" / "model.so").read_bytes() == library
    feeds = random_inputs(onnx.load(model), seed=5)
    np.testing.assert_array_equal(run_library(tmp_path / "given" / "model.so", feeds, ["x"])[0],
                                  run_library(tmp_path / "tuned" / "model.so", feeds, ["x"])[0])
    code, _, err = cli("verify", tmp_path / "given")
    assert code == 0, err


def _never_slower_than_the_rules(model, folder) -> None:
    """Per kernel, from the database's own records: our rule's schedule was measured, and the record the build
    applies (the fastest) is at most as slow."""
    from tvm.s_tir import meta_schedule as ms

    from edgeprune.compile.schedules.machine import machine_for
    from edgeprune.compile.tune import rule_schedule, tuning_target
    from edgeprune.compile.tvm_build import import_onnx
    from edgeprune.targets import load_target

    target = load_target("host")
    database = ms.database.JSONDatabase(work_dir=str(folder))
    mean = lambda record: float(np.mean([float(t) for t in record.run_secs]))  # noqa: E731
    for name, mod, _ in extract_tasks(import_onnx(onnx.load(model)), target):
        trace = str(rule_schedule(mod, machine_for(target)).trace)
        workload = database.commit_workload(mod)
        ours = [r for r in database.get_all_tuning_records() if r.workload.same_as(workload) and str(r.trace) == trace]
        applied = database.query_tuning_record(mod, tuning_target(target), name)
        assert len(ours) == 1 and 0 < mean(applied) <= mean(ours[0]) < 1, name


def test_a_database_of_our_rules_builds_the_default_library(model, tmp_path, cli):
    """Our rules' records replay exactly: a database holding only them builds the default build's bytes."""
    from tvm.s_tir import meta_schedule as ms

    from edgeprune.compile.schedules.machine import machine_for
    from edgeprune.compile.tune import kernel_builder, kernel_runner, rule_schedule, seed_rules, tuning_target
    from edgeprune.compile.tvm_build import import_onnx
    from edgeprune.targets import load_target

    target = load_target("host")
    tasks = extract_tasks(import_onnx(onnx.load(model)), target)
    rules = {name: rule_schedule(mod, machine_for(target)) for name, mod, _ in tasks}
    (tmp_path / "rules").mkdir()
    database = ms.database.JSONDatabase(work_dir=str(tmp_path / "rules"))
    seed = lambda: seed_rules(tasks, rules, tuning_target(target), kernel_builder(target),  # noqa: E731
                              kernel_runner(target, TuneOptions())[0], database)
    assert seed() == len(database) == 3
    assert seed() == 0 and len(database) == 3  # already there: not measured again
    code, _, err = cli("compile", model, "--target", "host", "-o", tmp_path / "default")
    assert code == 0, err
    code, out, err = cli("compile", model, "--target", "host", "-o", tmp_path / "rules-db",
                         "--tune-db", tmp_path / "rules", "--json")
    assert code == 0 and json.loads(out)["build"]["tuning"]["records"] == 3, err
    assert (tmp_path / "rules-db" / "model.so").read_bytes() == (tmp_path / "default" / "model.so").read_bytes()


def test_tuning_through_a_tracker_of_two_servers(model, tmp_path, cli):
    with tracker_with_servers("edge") as tracker:
        code, out, err = cli("compile", model, "--target", "host", "-o", tmp_path / "b", "--tune-trials", "2",
                             "--tracker", f"127.0.0.1:{tracker}", "--key", "edge", "--json")
    assert code == 0, err
    tuned = json.loads(out)["build"]["tuning"]["tuned"]
    assert tuned["measured"] == f"tracker 127.0.0.1:{tracker} key edge" and tuned["trials"] >= 1
    assert tuned["failed"] == 0


@pytest.mark.emulator
@needs_emulated_pi
def test_tuning_an_arm_board_over_rpc(model, tmp_path, cli):
    """Kernels for rpi4 are cross-built and timed on the (emulated) board; the tuned bundle runs right there."""
    from edgeprune.profile import emulator

    port = _free_port()
    server = emulator.start_rpc_server(port)
    try:
        code, out, err = cli("compile", model, "--target", "rpi4", "-o", tmp_path / "pi", "--tune-trials", "2",
                             "--rpc", f"127.0.0.1:{port}", "--json")
        assert code == 0, err
        tuning = json.loads(out)["build"]["tuning"]
        assert tuning["tuned"]["measured"] == f"rpc 127.0.0.1:{port}" and tuning["tuned"]["failed"] == 0
        assert tuning["records"] >= 1
        code, out, err = cli("profile", tmp_path / "pi", "--rpc", f"127.0.0.1:{port}", "--repeat", "2", "--warmup", "1",
                             "--timeout", "30", "--json")
        assert code == 0 and json.loads(out)["max_abs_error"] < 1e-4, err
    finally:
        emulator.stop(server)


def test_tuning_mistakes_are_one_line(model, tmp_path, cli):
    code, _, err = cli("compile", model, "--target", "host", "-o", tmp_path / "b", "--rpc", "127.0.0.1:9")
    assert code == 2 and "only with --tune" in err
    code, _, err = cli("compile", model, "--target", "host", "-o", tmp_path / "b", "--tune-db", tmp_path)
    assert code == 2 and "no MetaSchedule database" in err
    code, _, err = cli("compile", model, "--target", "host", "-o", tmp_path / "b", "--tune", "--tracker", "127.0.0.1:9")
    assert code == 2 and "needs --key" in err
    code, _, err = cli("compile", model, "--target", "rpi4", "-o", tmp_path / "b", "--tune")
    assert code == 2 and "--rpc" in err
    assert not (tmp_path / "b").exists()
    with pytest.raises(UserError, match="tune.budget"):
        TuneOptions.from_table({"budget": 3}, "recipe.toml")
