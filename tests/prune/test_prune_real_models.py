"""The repository's exported reference models (PyTorch exports), canonicalized, prune exactly."""
from pathlib import Path

import onnx
import pytest

from edgeprune.graph import canonicalize
from oracle import assert_identity_at_zero, assert_pruned

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("name", ["fmnist-cnn", "lenet5", "lenet300"])
def test_reference_model(name):
    model = canonicalize(onnx.load(FIXTURES / f"{name}.onnx"))
    assert_identity_at_zero(model)
    _, report = assert_pruned(model, ratio=0.5, scope="global")
    assert report.groups_blocked == 2  # only the input and the logits
    assert report.params_after < 0.6 * report.params_before
