"""The exactness oracle shared by the topology tests: pruned == masked, 0% == original."""
from __future__ import annotations

import numpy as np
import onnx

from edgeprune.graph.runtime import random_inputs, run
from edgeprune.prune.pruner import PruneReport, mask, prune

SEEDS = (0, 1)


def shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {i.name: tuple(i.dims) for i in model.graph.initializer}


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def attr(model: onnx.ModelProto, name: str, key: str, default=None):
    found = [a for a in node(model, name).attribute if a.name == key]
    return onnx.helper.get_attribute_value(found[0]) if found else default


def assert_exact(model: onnx.ModelProto, **options) -> tuple[onnx.ModelProto, PruneReport]:
    """Prune, check the model, and compare it with the masked original on random inputs."""
    pruned, report = prune(model, **options)
    onnx.checker.check_model(pruned, full_check=True)
    masked = mask(model, report.removed, report.grouped_conv)
    for seed in SEEDS:
        feeds = random_inputs(model, seed)
        got, want = run(pruned, feeds), run(masked, feeds)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].shape == want[name].shape
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    return pruned, report


def assert_pruned(model: onnx.ModelProto, ratio: float = 0.5, **options) -> tuple[onnx.ModelProto, PruneReport]:
    """Exact, and parameters really dropped, and the outputs really moved (the oracle is not vacuous)."""
    pruned, report = assert_exact(model, ratio=ratio, **options)
    assert report.params_after < report.params_before
    assert report.removed and report.groups_pruned > 0
    feeds = random_inputs(model, 0)
    before, after = run(model, feeds), run(pruned, feeds)
    assert any(not np.allclose(before[k], after[k], atol=1e-3) for k in before)
    return pruned, report


def assert_identity_at_zero(model: onnx.ModelProto, **options) -> None:
    """0% pruning must give the same outputs bit for bit and the same parameter count."""
    pruned, report = prune(model, ratio=0.0, **options)
    onnx.checker.check_model(pruned, full_check=True)
    assert report.removed == {} and report.params_after == report.params_before
    assert sorted(shapes(pruned).values()) == sorted(shapes(model).values())
    for seed in SEEDS:
        feeds = random_inputs(model, seed)
        got, want = run(pruned, feeds), run(model, feeds)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
