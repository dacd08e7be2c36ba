"""Sensitivity: one layer at a time, the same in parallel as serially, a proposal within budget."""
from __future__ import annotations

import json

import pytest

from cycle_setup import FIXTURES, fixture

from edgeprune.data import load_npz
from edgeprune.errors import UserError
from edgeprune.graph import top1_accuracy
from edgeprune.prune.sensitivity import group_sizes, load_layer_ratios, prune_layers, sensitivity


@pytest.fixture(scope="module")
def fmnist():
    model = fixture("fmnist-cnn")
    samples, labels = load_npz(FIXTURES / "fmnist_test256.npz", model)
    return model, samples[:96], labels[:96]


@pytest.fixture(scope="module")
def structured(fmnist):
    model, samples, labels = fmnist
    return sensitivity(model, samples, labels, (0.25, 0.5, 0.75), jobs=2, budget=3.0)


def test_parallel_runs_equal_serial_runs(fmnist, structured):
    model, samples, labels = fmnist
    serial = sensitivity(model, samples, labels, (0.25, 0.5, 0.75), jobs=1)
    assert [(p.layer, p.ratio, p.metric, p.macs) for p in serial.points] == \
        [(p.layer, p.ratio, p.metric, p.macs) for p in structured.points]
    assert len(serial.points) == 3 * len(group_sizes(model))


def test_points_are_single_layer_prunings(fmnist, structured):
    model, samples, labels = fmnist
    point = next(p for p in structured.points if p.ratio == 0.5)
    pruned, _ = prune_layers(model, {point.layer: 0.5})
    assert top1_accuracy(pruned, samples, labels) == point.metric
    assert point.drop == pytest.approx(100 * (structured.baseline - point.metric))
    assert max(p.drop for p in structured.points) > 5  # the curves say something


def test_proposal_respects_the_budget(structured):
    points = {(p.layer, p.ratio): p for p in structured.points}
    assert structured.proposal and structured.predicted_drop <= 3.0
    assert sum(max(points[(layer, r)].drop, 0) for layer, r in structured.proposal.items()) == \
        pytest.approx(structured.predicted_drop)
    assert structured.proposed_macs < structured.macs


def test_unstructured_sensitivity(fmnist):
    model, samples, labels = fmnist
    report = sensitivity(model, samples[:48], labels[:48], (0.5, 0.9), mode="unstructured", jobs=2, budget=1.0)
    assert report.mode == "unstructured" and {p.layer for p in report.points} >= {"/fc/Gemm"}
    assert all(p.params < report.params for p in report.points)
    assert report.proposal and report.proposed_params < report.params


def test_cli_proposal_feeds_the_cycle(tmp_path, cli):
    import numpy as np

    with np.load(FIXTURES / "fmnist_test256.npz") as full:
        np.savez(tmp_path / "eval.npz", input=full["input"][:64], labels=full["labels"][:64])
    data = tmp_path / "eval.npz"
    proposal = tmp_path / "ratios.json"
    code, out, err = cli("sensitivity", FIXTURES / "fmnist-cnn.onnx", "--eval", data, "--ratios", "0.3,0.6",
                         "--budget", "4", "-o", proposal, "--jobs", "2", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert json.loads(proposal.read_text())["ratios"] == d["proposal"] != {}
    code, out, err = cli("prune", FIXTURES / "fmnist-cnn.onnx", "-o", tmp_path / "p.onnx", "--schedule", "agp",
                         "--steps", "1", "--layer-ratios", proposal, "--eval", data, "--budget", "100",
                         "--recovery", "none", "--json")
    assert code == 0, err
    assert json.loads(out)["steps"][0]["macs"] == d["proposed_macs"]
    code, _, err = cli("sensitivity", FIXTURES / "fmnist-cnn.onnx", "--eval", data, "--ratios", "0.3,x")
    assert code == 2 and "--ratios" in err


def test_bad_proposal_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"ratios": {"a": 1.5}}')
    with pytest.raises(UserError, match="fraction"):
        load_layer_ratios(bad, "structured")
    bad.write_text('{"mode": "unstructured", "ratios": {"a": 0.5}}')
    with pytest.raises(UserError, match="unstructured proposal"):
        load_layer_ratios(bad, "structured")


def test_reconstructed_points_lose_less(fmnist, structured):
    model, samples, labels = fmnist
    calib, _ = load_npz(FIXTURES / "fmnist_test256.npz", model)
    rebuilt = sensitivity(model, samples, labels, (0.5,), jobs=2, reconstruct_on=calib[128:192])
    plain = {p.layer: p.drop for p in structured.points if p.ratio == 0.5}
    assert sum(p.drop for p in rebuilt.points) < sum(plain.values())
    with pytest.raises(UserError, match="structured"):
        sensitivity(model, samples, labels, (0.5,), mode="unstructured", reconstruct_on=calib[:8])
