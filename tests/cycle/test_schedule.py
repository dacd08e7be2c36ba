"""The prune cycle: the AGP curve, recovery per step, the budget stop, and the CLI around it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import numpy_helper

from cycle_setup import FIXTURES, fixture

import zoo
from edgeprune.data import load_npz
from edgeprune.errors import UserError
from edgeprune.graph import load_model, top1_accuracy, totals
from edgeprune.prune import apply_removal, prune
from edgeprune.passes.prune_cycle import PruneCycle
from edgeprune.prune.schedule import SCHEDULES, _Removal, prune_cycle


@pytest.fixture(scope="module")
def fmnist():
    model = fixture("fmnist-cnn")
    samples, labels = load_npz(FIXTURES / "fmnist_test256.npz", model)
    return model, samples, labels


def test_agp_curve():
    agp = SCHEDULES["agp"]
    values = [agp(k, 5) for k in range(6)]
    assert values[0] == 0 and values[-1] == 1
    assert all(b > a for a, b in zip(values, values[1:]))
    steps = np.diff(values)
    assert all(b < a for a, b in zip(steps, steps[1:]))  # big cuts first, small ones near the end
    assert values[1] == pytest.approx(1 - 0.8 ** 3)


def test_structured_cycle_reaches_the_target_step_by_step(fmnist):
    model, samples, labels = fmnist
    final, report = prune_cycle(model, samples[:128], labels[:128], target_macs=0.5, steps=3, budget=100,
                                scope="global", train=(samples[128:160], labels[128:160]))
    macs = [s.macs for s in report.steps]
    assert len(macs) == 3 and macs == sorted(macs, reverse=True)
    assert macs[-1] <= 0.5 * totals(model)["macs"] < macs[0]
    assert report.chosen == 3 and totals(final)["macs"] == macs[-1]
    assert all(s.recovery == "reconstruct" and s.details["reconstructed_layers"] > 0 for s in report.steps)
    assert report.steps[-1].metric == top1_accuracy(final, samples[:128], labels[:128])


def test_budget_stops_at_the_last_model_within_it(fmnist):
    model, samples, labels = fmnist
    final, report = prune_cycle(model, samples, labels, ratio=0.9, steps=4, budget=2.0, recovery="none")
    over = report.steps[-1]
    assert not over.within_budget and over.drop > 2.0
    assert all(s.within_budget for s in report.steps[:-1])
    assert report.chosen == len(report.steps) - 1 and "over the budget" in report.stopped
    expected = model if report.chosen == 0 else None
    if expected is None:
        assert top1_accuracy(final, samples, labels) == report.steps[report.chosen - 1].metric
    else:
        assert final is model


def test_without_labels_the_metric_is_agreement():
    model = zoo.ZOO["resnet_basic"]()
    from edgeprune.graph import random_inputs

    samples = [random_inputs(model, seed=s) for s in range(16)]
    final, report = prune_cycle(model, samples, None, ratio=0.3, steps=2, budget=100, recovery="none")
    assert report.metric == "agreement" and report.baseline == 1.0
    assert 0 <= report.steps[-1].metric <= 1


def test_unstructured_cycle_with_finetuning(fmnist):
    pytest.importorskip("torch")
    model, samples, labels = fmnist
    final, report = prune_cycle(model, samples[:64], labels[:64], unstructured=True, sparsity=0.8, steps=2, budget=100,
                                epochs=1, train=(samples[64:], labels[64:]), threads=1, distill=True)
    assert [s.recovery for s in report.steps] == ["finetune", "finetune"]
    assert report.steps[0].sparsity < report.steps[1].sparsity
    assert report.steps[-1].details["finetune"]["distilled"]
    assert report.steps[-1].details["finetune"]["onnx_vs_torch"] < 1e-3
    assert totals(final)["macs"] == totals(model)["macs"]  # zeros do not shrink tensors


def test_composed_removal_rewinds_to_original_channels(fmnist):
    model = fmnist[0]
    once, first = prune(model, ratio=0.3)
    twice, second = prune(once, ratio=0.3)
    removal = _Removal(model)
    removal.add(first.removed)
    removal.add(second.removed)
    rebuilt = apply_removal(model, removal.total())
    got = {i.name: numpy_helper.to_array(i) for i in rebuilt.graph.initializer}
    for init in twice.graph.initializer:
        np.testing.assert_array_equal(got[init.name], numpy_helper.to_array(init))


@pytest.mark.parametrize("options,message", [
    ({"ratio": 0.5, "splice": True, "epochs": 1}, "unstructured"),
    ({"ratio": 0.5, "distill": True}, "--finetune"),
    ({"ratio": 0.5, "target_macs": 0.5}, "exactly one"),
    ({"unstructured": True, "ratio": 0.5}, "exactly one"),
    ({"unstructured": True, "sparsity": 0.5, "recovery": "reconstruct"}, "structured pruning only"),
    ({"ratio": 0.5, "schedule": "cubic"}, "--schedule"),
    ({"ratio": 0.5, "steps": 0}, "--steps"),
    ({"layer_ratios": {"nope": 0.5}}, "no prunable group"),
])
def test_bad_options_are_user_errors(fmnist, options, message):
    model, samples, labels = fmnist
    with pytest.raises(UserError, match=message):
        prune_cycle(model, samples[:8], labels[:8], **options)


def test_cli_cycle_json_and_table(tmp_path, cli):
    with np.load(FIXTURES / "fmnist_test256.npz") as full:
        np.savez(tmp_path / "eval.npz", input=full["input"][:48], labels=full["labels"][:48])
    data = tmp_path / "eval.npz"
    code, out, err = cli("prune", FIXTURES / "fmnist-cnn.onnx", "-o", tmp_path / "c.onnx", "--schedule", "agp",
                         "--steps", "2", "--target-macs", "0.6", "--scope", "global", "--eval", data, "--budget", "50",
                         "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["chosen"] == 2 and [s["step"] for s in d["steps"]] == [1, 2]
    written = load_model(tmp_path / "c.onnx")
    assert totals(written)["macs"] == d["steps"][-1]["macs"]
    code, out, err = cli("prune", FIXTURES / "fmnist-cnn.onnx", "-o", tmp_path / "t.onnx", "--schedule", "agp",
                         "--steps", "2", "--ratio", "0.3", "--eval", data)
    assert code == 0, err
    assert "agp cycle" in out and "chosen" in out


def test_cli_cycle_user_errors(tmp_path, cli):
    code, _, err = cli("prune", FIXTURES / "fmnist-cnn.onnx", "-o", tmp_path / "c.onnx", "--schedule", "agp",
                       "--ratio", "0.3")
    assert code == 2 and "--eval" in err and "Traceback" not in err
    assert not (tmp_path / "c.onnx").exists()
    code, _, err = cli("prune", FIXTURES / "fmnist-cnn.onnx", "-o", tmp_path / "c.onnx", "--schedule", "agp",
                       "--ratio", "0.3", "--eval", FIXTURES / "fmnist_test256.npz", "--layer-ratios", tmp_path / "no.json")
    assert code == 2 and "no.json" in err
    assert not (tmp_path / "c.onnx").exists()


def test_pass_records_the_cycle(fmnist):
    from edgeprune.context import Context
    import onnx_graphsurgeon as gs

    model, samples, labels = fmnist
    ctx = Context(samples=samples[:64], labels=labels[:64], calibrated=True)
    PruneCycle(ratio=0.2, steps=1, budget=100).run(gs.import_onnx(model), ctx)
    assert ctx.details["cycle"]["chosen"] == 1
    with pytest.raises(UserError, match="--eval"):
        PruneCycle(ratio=0.2).run(gs.import_onnx(model), Context())


def test_cycle_options_without_schedule_say_so(tmp_path, cli):
    code, _, err = cli("prune", FIXTURES / "fmnist-cnn.onnx", "-o", tmp_path / "c.onnx", "--ratio", "0.3",
                       "--finetune", "1")
    assert code == 2 and "--schedule" in err


def test_data_criterion_in_the_cycle(fmnist):
    model, samples, labels = fmnist
    by_data, _ = prune_cycle(model, samples[:64], labels[:64], ratio=0.3, steps=2, budget=100, recovery="none",
                             criterion="activation", train=(samples[64:96], labels[64:96]))
    by_l1, _ = prune_cycle(model, samples[:64], labels[:64], ratio=0.3, steps=2, budget=100, recovery="none")
    assert totals(by_data)["macs"] == totals(by_l1)["macs"]  # the same ratio per group
    assert any(not np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))  # other channels chosen
               for a, b in zip(by_data.graph.initializer, by_l1.graph.initializer))


def test_a_recipe_names_the_cycle_as_a_pass(tmp_path, cli):
    """`prune-cycle` is in the PASSES table: a recipe runs it on its calib data, then builds for the host."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'model = "{FIXTURES / "fmnist-cnn.onnx"}"\ntarget = "host"\noutput = "bundle"\n'
                      f'calib = "{FIXTURES / "fmnist_test256.npz"}"\n\n[[passes]]\nname = "prune-cycle"\n'
                      'unstructured = true\nsparsity = 0.5\nsteps = 2\nbudget = 100.0\n')
    code, out, err = cli("run", recipe, "--json")
    assert code == 0, err
    record = next(p for p in json.loads(out)["passes"] if p["name"] == "prune-cycle")
    assert len(record["details"]["cycle"]["steps"]) == 2 and record["details"]["cycle"]["metric"] == "accuracy"
