"""The committed reference models (made by tools/train_reference.py) are valid and as good as recorded.

Benchmarks trust these files and their JSON records, so each model must still load, check and
classify its committed 256 real test images about as well as its full-test-set accuracy says.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOOLS = FIXTURES.parent.parent / "tools"
MODELS = ["fmnist-cnn", "lenet300", "lenet5"]
EVAL_TOLERANCE = 0.03  # 256 images estimate a 92% accuracy to +-1.7 points (one sigma)


def record(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def eval_set(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's 256 images reshaped to its input (they are stored as [n, 1, 28, 28]) and labels."""
    rec = record(name)
    data = np.load(FIXTURES / rec["eval_set"]["file"])
    x = data[rec["input"]["name"]]
    return x.reshape([-1, *rec["input"]["shape"][1:]]), data["labels"]


def run(name: str, x: np.ndarray) -> np.ndarray:
    rec = record(name)
    session = ort.InferenceSession(str(FIXTURES / rec["onnx"]), providers=["CPUExecutionProvider"])
    return session.run([rec["output"]], {rec["input"]["name"]: x})[0]


@pytest.mark.parametrize("name", MODELS)
def test_fixture_is_a_valid_opset17_model(name: str) -> None:
    rec = record(name)
    model = onnx.load(FIXTURES / rec["onnx"])
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == [rec["input"]["name"]]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == rec["input"]["shape"]


@pytest.mark.parametrize("name", MODELS)
def test_accuracy_on_the_committed_test_images_matches_the_record(name: str) -> None:
    x, labels = eval_set(name)
    assert x.dtype == np.float32 and labels.dtype == np.int64 and len(x) == len(labels) == 256
    accuracy = float((run(name, x).argmax(1) == labels).mean())
    rec = record(name)
    assert abs(accuracy - rec["eval_set"]["accuracy"]) <= 1 / 256 + 1e-9
    assert abs(accuracy - rec["test_accuracy"]) <= EVAL_TOLERANCE


def test_fmnist_cnn_keeps_inference_batchnorm() -> None:
    """BN-scale saliency needs BatchNormalization nodes that carry running statistics, one output each."""
    model = onnx.load(FIXTURES / "fmnist-cnn.onnx")
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) == record("fmnist-cnn")["batchnorm_nodes"] == 9
    assert all(len(n.output) == 1 and not any(a.name == "training_mode" and a.i for a in n.attribute) for n in bns)


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_loads_into_the_model_class_and_matches_onnx(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(TOOLS))
    import train_reference

    rec = record(name)
    model = getattr(train_reference, rec["class"])()
    model.load_state_dict(torch.load(FIXTURES / rec["state_dict"], weights_only=True))
    model.eval()
    x, _ = eval_set(name)
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(), run(name, x), atol=1e-4, rtol=0)
