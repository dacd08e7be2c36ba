"""Importance criteria: every one prunes every hazard exactly, and each picks the channels it claims to."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import zoo
from edgeprune.errors import UserError
from edgeprune.graph import canonicalize, random_inputs
from edgeprune.prune import CRITERIA, build, importance, prune
from edgeprune.prune.schedule import prune_cycle
from oracle import assert_pruned

HAZARDS = ["resnet_basic_projection", "mobilenet_v2", "densenet", "resnext", "conv_flatten_gemm", "mlp", "fpn"]


def _samples(model: onnx.ModelProto, count: int = 8) -> list[dict[str, np.ndarray]]:
    return [random_inputs(model, seed) for seed in range(count)]


@pytest.mark.parametrize("criterion", list(CRITERIA))
@pytest.mark.parametrize("name", HAZARDS)
def test_every_criterion_prunes_exactly(name, criterion):
    model = canonicalize(zoo.ZOO[name]())
    assert_pruned(model, ratio=0.5, scope="global", criterion=criterion, samples=_samples(model, 4))


@pytest.mark.parametrize("criterion", [c for c, spec in CRITERIA.items() if spec.data])
def test_data_criteria_need_samples(criterion):
    with pytest.raises(UserError, match=f"'{criterion}'.*calibration"):
        prune(canonicalize(zoo.chain()), ratio=0.5, criterion=criterion)


def _two_convs(tweak) -> tuple[onnx.ModelProto, str]:
    """x -> conv1 (8 channels, BN, Relu) -> conv2 -> head; `tweak(arrays)` edits conv1/BN1/conv2 first."""
    n = zoo.Net(11)
    y = n.conv("x", 3, 8)
    n.conv(y, 8, 6)
    conv1, bn1, conv2 = [node for node in n.nodes if node.op_type in ("Conv", "BatchNormalization")][:3]
    arrays = {i.name: numpy_helper.to_array(i).copy() for i in n.inits}
    tweak({"w1": arrays[conv1.input[1]], "gamma": arrays[bn1.input[1]], "beta": arrays[bn1.input[2]],
           "mean": arrays[bn1.input[3]], "var": arrays[bn1.input[4]], "w2": arrays[conv2.input[1]]})
    n.inits = [numpy_helper.from_array(arrays[i.name], i.name) for i in n.inits]
    out = n.nodes[-1].output[0]
    return n.model([1, 3, 8, 8], {n.head(out, 6): None}), conv1.output[0]


def _removed(model: onnx.ModelProto, tensor: str, criterion: str) -> set[int]:
    _, report = prune(model, ratio=0.5, criterion=criterion, samples=_samples(model, 16))
    return set(report.removed[tensor])


def test_bn_scale_removes_the_smallest_gammas():
    def tweak(a):
        a["gamma"][[1, 3, 5, 7]] = 0.01
        a["w1"][[1, 3, 5, 7]] *= 10  # the largest filters: magnitude would keep them
    model, tensor = _two_convs(tweak)
    assert _removed(model, tensor, "bn-scale") == {1, 3, 5, 7}
    assert _removed(model, tensor, "l1") != {1, 3, 5, 7}


def test_activation_removes_dead_channels():
    def tweak(a):
        a["beta"][[0, 2, 4, 6]] = -50.0  # Relu never lets these through
        a["w1"][[0, 2, 4, 6]] *= 10
    model, tensor = _two_convs(tweak)
    assert _removed(model, tensor, "activation") == {0, 2, 4, 6}
    assert _removed(model, tensor, "l2") != {0, 2, 4, 6}


def test_redundancy_keeps_one_of_each_copy():
    """Channels 3, 4, 5 repeat 0, 1, 2 exactly; 6 and 7 are weak. Half must go: one of each copy pair."""
    def tweak(a):
        for src, dst in ((0, 3), (1, 4), (2, 5)):
            for key in ("w1", "gamma", "beta", "mean", "var"):
                a[key][dst] = a[key][src]
        a["gamma"][[0, 1, 2, 3, 4, 5]] *= 4
        a["beta"][[0, 1, 2, 3, 4, 5]] = np.abs(a["beta"][[0, 1, 2, 3, 4, 5]]) + 1
    model, tensor = _two_convs(tweak)
    gone = _removed(model, tensor, "redundancy")
    assert all(len(gone & {i, i + 3}) == 1 for i in range(3)), gone
    assert any(len(_removed(model, tensor, "activation") & {i, i + 3}) == 0 for i in range(3))


def test_reconstruction_removes_what_the_consumer_ignores():
    def tweak(a):
        a["w1"][[0, 2, 4, 6]] *= 10  # loud channels...
        a["gamma"][[0, 2, 4, 6]] *= 3
        a["w2"][:, [0, 2, 4, 6]] *= 1e-3  # ...that the next layer barely reads
    model, tensor = _two_convs(tweak)
    assert _removed(model, tensor, "reconstruction") == {0, 2, 4, 6}
    assert _removed(model, tensor, "activation") != {0, 2, 4, 6}


def test_allocate_by_sets_the_counts_and_the_criterion_picks():
    """Counts per group from one criterion's global ranking, the atoms inside each group from another's."""
    model = canonicalize(zoo.ZOO["resnet_basic_projection"]())
    samples = _samples(model)
    _, by_activation = prune(model, target_macs=0.5, scope="global", criterion="activation", samples=samples)
    _, by_l1 = prune(model, target_macs=0.5, scope="global", criterion="l1")
    _, mixed = prune(model, target_macs=0.5, scope="global", criterion="l1", allocate_by="activation", samples=samples)
    kept = [g.kept for g in mixed.groups]
    assert kept == [g.kept for g in by_activation.groups] != [g.kept for g in by_l1.groups]
    assert mixed.macs_after == by_activation.macs_after
    for group in (g for g in build(model).groups if not g.blocked):
        gone = np.argsort(importance(group, "l1"), kind="stable")[: group.size - kept[group.id]]
        tensor = next(iter(group.atoms[0]))
        want = sorted(int(i) for k in gone for i in group.atoms[k][tensor])
        assert mixed.removed.get(tensor, []) == want, group.producers
    assert_pruned(model, scope="global", criterion="l1", allocate_by="activation", samples=samples)
    with pytest.raises(UserError, match="allocate_by 'nope'"):
        prune(model, ratio=0.5, allocate_by="nope")


def test_cli_data_criterion(tmp_path, cli):
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    args = ["prune", fixtures / "fmnist-cnn.onnx", "-o", tmp_path / "p.onnx", "--ratio", "0.3", "--criterion", "redundancy"]
    code, _, err = cli(*args)
    assert code == 2 and "--calib" in err and "redundancy" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.onnx").exists()
    data = np.load(fixtures / "fmnist_test256.npz")
    np.savez(tmp_path / "calib.npz", input=data["input"][:32])
    code, out, err = cli(*args, "--calib", tmp_path / "calib.npz", "--json")
    assert code == 0, err
    assert json.loads(out)["criterion"] == "redundancy" and (tmp_path / "p.onnx").exists()


def test_wide_tensors_keep_squares_only(monkeypatch):
    """A Flatten into a big Gemm would need a features x features Gram: above the limit only squares are kept."""
    module = sys.modules["edgeprune.prune.importance"]  # the package re-exports a function of that name
    model = canonicalize(zoo.conv_flatten_gemm())
    samples = _samples(model, 4)
    _, narrow = prune(model, ratio=0.5, criterion="activation", samples=samples)
    monkeypatch.setattr(module, "WIDEST_GRAM", 16)
    assert_pruned(model, ratio=0.5, criterion="redundancy", samples=samples)
    _, wide = prune(model, ratio=0.5, criterion="activation", samples=samples)
    assert wide.removed == narrow.removed  # the activation criterion reads only the squares anyway


def test_allocate_by_in_the_prune_cycle():
    model = canonicalize(zoo.ZOO["resnet_basic_projection"]())
    samples = _samples(model)

    def cycle(**options) -> onnx.ModelProto:
        return prune_cycle(model, samples, None, target_macs=0.5, steps=1, schedule="oneshot", scope="global",
                           recovery="none", budget=100, **options)[0]

    def shapes(m: onnx.ModelProto) -> dict:
        return {i.name: list(i.dims) for i in m.graph.initializer}

    mixed, by_activation, by_l1 = cycle(criterion="l1", allocate_by="activation"), cycle(criterion="activation"), \
        cycle(criterion="l1")
    assert shapes(mixed) == shapes(by_activation) != shapes(by_l1)
    assert any(a.raw_data != b.raw_data for a, b in zip(mixed.graph.initializer, by_activation.graph.initializer))


def test_pass_ranks_on_the_first_samples_only(monkeypatch):
    """The prune pass gives the criteria RANK_SAMPLES samples (the recovery fits on all): what follows them
    cannot change the choice, here samples 100 times larger that would change it."""
    import onnx_graphsurgeon as gs

    from edgeprune.context import Context
    from edgeprune.passes import channel_prune, make_pass

    monkeypatch.setattr(channel_prune, "RANK_SAMPLES", 4)
    model = canonicalize(zoo.chain())
    first = _samples(model, 4)
    loud = [{k: 100 * v[..., ::-1] for k, v in feeds.items()} for feeds in _samples(model, 12)[4:]]
    step = make_pass("prune", {"ratio": 0.5, "criterion": "activation"})
    out = gs.export_onnx(step.run(gs.import_onnx(model), Context(samples=first + loud, calibrated=True)))
    want, _ = prune(model, ratio=0.5, criterion="activation", samples=first)
    other, _ = prune(model, ratio=0.5, criterion="activation", samples=first + loud)
    weights = {m: {i.name: numpy_helper.to_array(i) for i in g.graph.initializer} for m, g in
               (("pass", out), ("want", want), ("other", other))}
    assert all(np.array_equal(weights["pass"][k], v) for k, v in weights["want"].items())
    assert any(not np.array_equal(weights["other"][k], v) for k, v in weights["want"].items())
