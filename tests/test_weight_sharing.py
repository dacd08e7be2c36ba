"""Weight sharing: at most 2^bits values per tensor, zeros exact, small loss on a real model."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO
from edgeprune.context import Context
from edgeprune.data import load_npz
from edgeprune.graph import load_model, top1_accuracy
from edgeprune.passes import make_pass
from edgeprune.pipeline import run_passes
from edgeprune.quant.sharing import relative_error, share


@pytest.mark.parametrize("bits", [1, 2, 4, 6])
def test_codebook_size_and_zeros(bits):
    rng = np.random.default_rng(bits)
    w = rng.laplace(0, 0.1, 50_000).astype(np.float32)
    w[rng.random(w.size) < 0.7] = 0
    shared = share(w, bits)
    values = shared.values()
    assert shared.codebook.size <= 2**bits and np.unique(values).size <= 2**bits
    assert np.array_equal(values == 0, w == 0)  # pruned weights stay pruned, no others become zero
    assert values.dtype == np.float32 and values.shape == w.shape


def test_error_falls_with_bits_and_extremes_survive():
    w = np.random.default_rng(0).standard_normal(20_000).astype(np.float32)
    errors = [relative_error(w, share(w, b).values()) for b in (2, 3, 4, 5, 6)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 0.05
    codebook = share(w, 4).codebook  # linear initialization keeps a centroid near each extreme
    assert codebook.max() > 0.7 * w.max() and codebook.min() < 0.7 * w.min()


def test_int8_weights_stay_integer():
    q = np.random.default_rng(1).integers(-127, 128, (32, 16, 3, 3)).astype(np.int8)
    shared = share(q, 4)
    assert shared.codebook.dtype == np.int8 and np.unique(shared.values()).size <= 16
    assert np.array_equal(shared.values() == 0, q == 0)


def test_few_values_are_kept_exactly():
    w = np.array([0.5, -0.25, 0.5, 0.0, 3.0], np.float32)
    assert np.array_equal(share(w, 3).values(), w)


FIXTURE = REPO / "tests" / "fixtures" / "lenet300.onnx"


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture made by tools/train_reference.py")
def test_lenet300_keeps_its_accuracy_at_5_bits():
    model = load_model(FIXTURE)
    samples, labels = load_npz(REPO / "tests" / "fixtures" / "mnist_test256.npz", model)
    ctx = Context(samples=samples, labels=labels, calibrated=True)
    shared = run_passes(model, [make_pass("canonicalize"), make_pass("share-weights", {"bits": 5})], ctx)
    layers = ctx.records[-1].details["layers"]
    assert set(layers) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert all(layer["distinct"] <= 32 for layer in layers.values())
    assert top1_accuracy(shared, samples, labels) >= top1_accuracy(model, samples, labels) - 0.01
