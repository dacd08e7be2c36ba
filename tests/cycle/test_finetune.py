"""Fine-tuning: zeros stay zeros, training helps, distillation and splicing work, rewinding restores."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import numpy_helper

from cycle_setup import FIXTURES, fixture

torch = pytest.importorskip("torch")

from edgeprune.context import Context  # noqa: E402
from edgeprune.data import load_npz  # noqa: E402
from edgeprune.errors import UserError  # noqa: E402
from edgeprune.graph import top1_accuracy  # noqa: E402
from edgeprune.passes.magnitude_prune import MagnitudePrune  # noqa: E402
from edgeprune.prune import apply_removal, prune  # noqa: E402
from edgeprune.train.finetune import FinetuneOptions, finetune, logits_of, stack  # noqa: E402
from edgeprune.train.masks import rewind  # noqa: E402


@pytest.fixture(scope="module")
def lenet():
    model = fixture("lenet300")
    samples, labels = load_npz(FIXTURES / "mnist_test256.npz", model)
    sparse = gs.export_onnx(MagnitudePrune(sparsity=0.95).run(gs.import_onnx(model), Context()))
    return model, sparse, samples, labels, stack(samples, ["input"])


def _weights(model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_training_recovers_and_zeros_stay_zero(lenet):
    model, sparse, samples, labels, inputs = lenet
    before = top1_accuracy(sparse, samples, labels)
    tuned, report = finetune(sparse, inputs, labels, FinetuneOptions(epochs=3, batch_size=32, lr=0.02))
    assert top1_accuracy(tuned, samples, labels) > before + 0.02  # the 256 samples it trained on
    assert report.epochs[-1].loss < report.epochs[0].loss
    assert report.onnx_vs_torch < 1e-4
    old, new = _weights(sparse), _weights(tuned)
    for name in report.masked:
        np.testing.assert_array_equal(new[name] == 0, old[name] == 0)
    assert any(not np.array_equal(old[n], new[n]) for n in old)


def test_distillation_without_labels(lenet):
    model, sparse, samples, labels, inputs = lenet
    teacher = logits_of(model, inputs)
    tuned, report = finetune(sparse, inputs, None, FinetuneOptions(epochs=2, batch_size=32, lr=0.02), teacher)
    assert report.distilled and report.epochs[0].train_accuracy is None
    agree = np.mean(logits_of(tuned, inputs).argmax(1) == teacher.argmax(1))
    assert agree > np.mean(logits_of(sparse, inputs).argmax(1) == teacher.argmax(1))


def test_no_labels_and_no_teacher_is_a_user_error(lenet):
    _, sparse, _, _, inputs = lenet
    with pytest.raises(UserError, match="labels"):
        finetune(sparse, inputs, None)


def test_splicing_moves_weights_and_keeps_the_sparsity(lenet):
    _, sparse, _, labels, inputs = lenet
    tuned, report = finetune(sparse, inputs, labels, FinetuneOptions(epochs=2, batch_size=16, lr=0.05, splice=True,
                                                                    splice_every=4))
    assert report.spliced_changes > 0
    old, new = _weights(sparse), _weights(tuned)
    for name, s in report.masked.items():
        assert abs(float(np.mean(new[name] == 0)) - s) < 1e-3  # the same sparsity per layer
    assert any(np.any((old[n] == 0) & (new[n] != 0)) for n in report.masked)  # some pruned weights returned


def test_rewind_unstructured_restores_survivors(lenet):
    model, sparse, _, labels, inputs = lenet
    tuned, _ = finetune(sparse, inputs, labels, FinetuneOptions(epochs=1))
    back = _weights(rewind(tuned, model))
    orig, now = _weights(model), _weights(tuned)
    for name in orig:
        np.testing.assert_array_equal(back[name], np.where(now[name] == 0, 0, orig[name]) if "weight" in name else orig[name])


def test_rewind_structured_takes_the_original_channels():
    model = fixture("fmnist-cnn")
    pruned, report = prune(model, ratio=0.5)
    reference = apply_removal(model, report.removed)
    noisy = _weights(pruned)
    changed = pruned.__class__()
    changed.CopyFrom(pruned)
    for init in changed.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(noisy[init.name] * 1.5, init.name))
    back = _weights(rewind(changed, reference))
    for name, value in _weights(reference).items():
        np.testing.assert_array_equal(back[name], value)


def test_progress_bars_do_not_change_the_result(lenet):
    _, sparse, _, labels, inputs = lenet
    quiet, _ = finetune(sparse, inputs, labels, FinetuneOptions(epochs=1, seed=3))
    shown, _ = finetune(sparse, inputs, labels, FinetuneOptions(epochs=1, seed=3, progress=True))
    assert _weights(quiet).keys() == _weights(shown).keys()
    for name, value in _weights(quiet).items():
        np.testing.assert_array_equal(value, _weights(shown)[name])  # seeded: the same run twice
