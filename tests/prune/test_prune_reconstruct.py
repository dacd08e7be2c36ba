"""Least-squares reconstruction after structured pruning: never worse per layer, a no-op at 0%, real recovery."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

import zoo
from edgeprune.context import Context
from edgeprune.data import load_npz
from edgeprune.errors import UserError
from edgeprune.graph import canonicalize, random_inputs, run, top1_accuracy
from edgeprune.passes import make_pass
from edgeprune.prune import prune
from edgeprune.prune.reconstruct import reconstruct, recover, reestimate_batchnorm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def fmnist():
    """The Fashion-MNIST CNN: 128 images to calibrate on, the other 128 to measure on."""
    model = canonicalize(onnx.load(FIXTURES / "fmnist-cnn.onnx"))
    samples, labels = load_npz(FIXTURES / "fmnist_test256.npz", model)
    pruned, report = prune(model, target_macs=0.5, scope="global")
    rebuilt, layers = reconstruct(model, pruned, report.removed, samples[:128])
    return SimpleNamespace(model=model, pruned=pruned, removed=report.removed, rebuilt=rebuilt, layers=layers,
                           samples=samples, labels=labels)


def _layer_errors(original: onnx.ModelProto, model: onnx.ModelProto, nodes: list[str], removed: dict[str, list[int]],
                  samples: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """||Y - Y_original|| / ||Y_original|| at every position of every sample, kept channels only."""
    outputs = {n.name: n.output[0] for n in original.graph.node if n.name in nodes}

    def collect(m: onnx.ModelProto) -> dict[str, np.ndarray]:
        extended = onnx.ModelProto()
        extended.CopyFrom(m)
        extended.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                                     for t in outputs.values() if t not in {o.name for o in m.graph.output})
        runs = [run(extended, feeds) for feeds in samples]
        return {t: np.concatenate([r[t] for r in runs]).astype(np.float64) for t in outputs.values()}

    ref, got = collect(original), collect(model)
    errors = {}
    for node, t in outputs.items():
        axis = 1 if ref[t].ndim == 4 else -1
        want = np.delete(ref[t], removed.get(t, []), axis=axis)
        errors[node] = float(np.linalg.norm(got[t] - want) / np.linalg.norm(want))
    return errors


def test_never_worse_than_plain_pruning(fmnist):
    f = fmnist
    nodes = [layer.node for layer in f.layers]
    assert len(nodes) == 9 and not any(layer.skipped for layer in f.layers)  # 8 convs and the classifier
    plain = _layer_errors(f.model, f.pruned, nodes, f.removed, f.samples[:128])
    rebuilt_err = _layer_errors(f.model, f.rebuilt, nodes, f.removed, f.samples[:128])
    for layer in f.layers:
        assert layer.error_reconstructed <= layer.error_pruned
        assert rebuilt_err[layer.node] <= plain[layer.node], layer.node
    assert rebuilt_err["/fc/Gemm"] < 0.5 * plain["/fc/Gemm"]


@pytest.mark.parametrize("name", ["resnext", "mobilenet_v2", "mlp", "squeeze_excite_fc"])
def test_never_worse_on_zoo(name):
    """Grouped and depthwise convs (per group), MatMul (no bias), Gemm: every reported layer improves or stays."""
    model = canonicalize(zoo.ZOO[name]())
    pruned, report = prune(model, ratio=0.5)
    samples = [random_inputs(model, seed) for seed in range(6)]
    rebuilt, layers = reconstruct(model, pruned, report.removed, samples)
    onnx.checker.check_model(rebuilt, full_check=True)
    assert layers and all(layer.error_reconstructed <= layer.error_pruned for layer in layers)
    plain = _layer_errors(model, pruned, [layer.node for layer in layers], report.removed, samples)
    rebuilt_err = _layer_errors(model, rebuilt, [layer.node for layer in layers], report.removed, samples)
    assert all(rebuilt_err[n] <= plain[n] + 1e-6 for n in plain)


def test_ratio_zero_changes_nothing(fmnist):
    pruned, report = prune(fmnist.model, ratio=0.0)
    rebuilt, layers = reconstruct(fmnist.model, pruned, report.removed, fmnist.samples[:8])
    assert layers == [] and rebuilt.SerializeToString() == pruned.SerializeToString()


def test_untouched_layers_keep_their_numbers(fmnist):
    """Only layers that read pruned channels are refit (the stem reads the image, which is never pruned)."""
    before = {i.name: onnx.numpy_helper.to_array(i) for i in fmnist.pruned.graph.initializer}
    after = {i.name: onnx.numpy_helper.to_array(i) for i in fmnist.rebuilt.graph.initializer}
    assert np.array_equal(before["stem.0.weight"], after["stem.0.weight"])
    assert not np.array_equal(before["fc.weight"], after["fc.weight"])


def test_recovers_accuracy_on_held_out_images(fmnist):
    """Measured: dense 95.3%, pruned to half the MACs 25.0%, reconstructed on the other 128 images 96.1%."""
    f = fmnist
    onnx.checker.check_model(f.rebuilt, full_check=True)
    held, truth = f.samples[128:], f.labels[128:]
    dense, plain, recovered = (top1_accuracy(m, held, truth) for m in (f.model, f.pruned, f.rebuilt))
    assert plain < 0.5
    assert recovered >= plain + 0.5 and recovered >= dense - 0.04


def test_pass_reports_errors_per_layer(fmnist):
    step = make_pass("prune", {"target_macs": 0.5, "scope": "global", "reconstruct": True})
    with pytest.raises(UserError, match="calibration"):
        step.run(gs.import_onnx(fmnist.model), Context(samples=fmnist.samples[:4]))
    ctx = Context(samples=fmnist.samples[:32], calibrated=True)
    step.run(gs.import_onnx(fmnist.model), ctx)
    layers = ctx.details["reconstruction"]
    assert [layer["node"] for layer in layers] == [layer.node for layer in fmnist.layers]
    assert all(layer["error_reconstructed"] < layer["error_pruned"] for layer in layers)
    assert [layer["node"] for layer in ctx.details["output_refit"]] == ["/fc/Gemm"] and ctx.details["batchnorm"]


def test_cli_needs_calibration(tmp_path, cli):
    code, _, err = cli("prune", FIXTURES / "fmnist-cnn.onnx", "-o", tmp_path / "p.onnx", "--ratio", "0.3",
                       "--reconstruct")
    assert code == 2 and "--calib" in err and not (tmp_path / "p.onnx").exists()


def test_cli_reconstruct(tmp_path, cli):
    data = np.load(FIXTURES / "fmnist_test256.npz")
    np.savez(tmp_path / "calib.npz", input=data["input"][:64], labels=data["labels"][:64])
    args = ["prune", FIXTURES / "fmnist-cnn.onnx", "--target-macs", "0.5", "--scope", "global",
            "--calib", tmp_path / "calib.npz", "--json"]
    code, out, err = cli(*args, "-o", tmp_path / "plain.onnx")
    assert code == 0, err
    code, out_rec, err = cli(*args, "-o", tmp_path / "rec.onnx", "--reconstruct")
    assert code == 0, err
    plain, rec = json.loads(out), json.loads(out_rec)
    assert rec["reconstruct"] and rec["macs_after"] == plain["macs_after"]
    assert rec["accuracy_after"] > plain["accuracy_after"] + 0.4
    rebuilt = onnx.load(tmp_path / "rec.onnx")
    onnx.checker.check_model(rebuilt, full_check=True)
    assert run(rebuilt, {"input": data["input"][:1]})["logits"].shape == (1, 10)
    code, out_relu, err = cli(*args, "-o", tmp_path / "relu.onnx", "--reconstruct-relu")
    assert code == 0, err
    relu = json.loads(out_relu)
    assert relu["reconstruct"] and relu["reconstruct_relu"] and relu["macs_after"] == plain["macs_after"]
    assert relu["accuracy_after"] > plain["accuracy_after"] + 0.4
    assert onnx.load(tmp_path / "relu.onnx").SerializeToString() != rebuilt.SerializeToString()


def test_pass_reconstruct_relu_needs_reconstruct():
    step = make_pass("prune", {"ratio": 0.3, "reconstruct_relu": True})
    with pytest.raises(UserError, match="reconstruct_relu"):
        step.run(gs.import_onnx(zoo.chain()), Context())


def _bn_moments(model: onnx.ModelProto, samples, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    extended.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in names)
    runs = [run(extended, feeds) for feeds in samples]
    stacked = {t: np.concatenate([np.moveaxis(r[t], 1, 0).reshape(r[t].shape[1], -1) for r in runs], axis=1)
               for t in names}
    return {t: (x.mean(axis=1), x.std(axis=1)) for t, x in stacked.items()}


def test_batchnorm_reestimation_restores_the_statistics():
    """After pruning, every kept BN channel's output has the original's mean and std on the calibration data."""
    model = canonicalize(zoo.ZOO["resnet_basic_projection"]())
    samples = [random_inputs(model, seed) for seed in range(6)]
    pruned, report = prune(model, ratio=0.5, scope="global")
    fixed, norms = reestimate_batchnorm(model, pruned, report.removed, samples)
    onnx.checker.check_model(fixed, full_check=True)
    names = [n.output[0] for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(norms) == len(names)
    want, plain, got = (_bn_moments(m, samples, names) for m in (model, pruned, fixed))
    moved = 0.0
    for t in names:
        kept = np.setdiff1d(np.arange(len(want[t][0])), report.removed.get(t, []))
        for k in range(2):
            np.testing.assert_allclose(got[t][k], want[t][k][kept], rtol=1e-3, atol=1e-4, err_msg=t)
            moved = max(moved, float(np.max(np.abs(plain[t][k] - want[t][k][kept]))))
    assert moved > 0.05  # pruning really had moved them


def test_batchnorm_reestimation_is_a_no_op_unpruned(fmnist):
    fixed, norms = reestimate_batchnorm(fmnist.model, fmnist.model, {}, fmnist.samples[:16])
    feeds = fmnist.samples[200]
    np.testing.assert_allclose(run(fixed, feeds)["logits"], run(fmnist.model, feeds)["logits"], rtol=1e-4, atol=1e-4)
    assert norms and max(n.shift for n in norms) < 1e-4


def test_batchnorm_reestimation_recovers_accuracy(fmnist):
    """Measured on the 128 held-out images: plain pruning 25.0%, with re-estimated BN statistics 70%+."""
    f = fmnist
    fixed, _ = reestimate_batchnorm(f.model, f.pruned, f.removed, f.samples[:128])
    held, truth = f.samples[128:], f.labels[128:]
    assert top1_accuracy(fixed, held, truth) > top1_accuracy(f.pruned, held, truth) + 0.2


def _relu_outputs(model: onnx.ModelProto, layer: str) -> str:
    """The Relu output after a Conv (through one BatchNormalization)."""
    by_input = {i: n for n in model.graph.node for i in n.input}
    node = next(n for n in model.graph.node if n.name == layer)
    after = by_input[node.output[0]]
    return by_input[after.output[0]].output[0] if after.op_type == "BatchNormalization" else after.output[0]


def test_relu_aware_fits_what_the_relu_passes(fmnist):
    """relu=True: only Conv -> BN -> Relu layers are fit on the ReLU's output, and that output gets closer."""
    f = fmnist
    calib = f.samples[:128]
    rebuilt, layers = reconstruct(f.model, f.pruned, f.removed, calib, relu=True)
    aware = [layer.node for layer in layers if layer.relu]
    assert aware and all("conv1" in name for name in aware)  # residual branches end in an Add, the fc in logits
    first = aware[0]  # its input is the same in both fits: the layers before it are not refit
    tensor = _relu_outputs(f.model, first)

    def relu_output(model: onnx.ModelProto) -> np.ndarray:
        extended = onnx.ModelProto()
        extended.CopyFrom(model)
        extended.graph.output.extend([onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)])
        return np.concatenate([run(extended, feeds)[tensor] for feeds in calib])

    conv_output = next(n.output[0] for n in f.model.graph.node if n.name == first)
    want = np.delete(relu_output(f.model), f.removed.get(conv_output, []), axis=1)
    linear, aware_out = relu_output(f.rebuilt), relu_output(rebuilt)
    assert np.linalg.norm(aware_out - want) < np.linalg.norm(linear - want)
    assert all(not layer.relu for layer in f.layers)


def _logits_error(model: onnx.ModelProto, original: onnx.ModelProto, samples: list) -> float:
    got, want = (np.concatenate([run(m, feeds)["logits"] for feeds in samples]) for m in (model, original))
    return float(np.linalg.norm(got - want))


def test_recover_refits_the_classifier_last(fmnist):
    """After BN re-estimation the classifier reads other features than it was fit on: recover fits it again,
    on every calibration sample, so the logits get closer to the original's there; nothing else changes."""
    f = fmnist
    calib = f.samples[:128]
    rebuilt, _ = reconstruct(f.model, f.pruned, f.removed, calib)
    two_steps, _ = reestimate_batchnorm(f.model, rebuilt, f.removed, calib)
    recovered, report = recover(f.model, f.pruned, f.removed, calib)
    assert [layer.node for layer in report.outputs] == ["/fc/Gemm"] and not report.outputs[0].skipped
    assert [layer.node for layer in report.layers] == [layer.node for layer in f.layers] and report.batchnorm
    assert _logits_error(recovered, f.model, calib) < 0.95 * _logits_error(two_steps, f.model, calib)
    before = {i.name: onnx.numpy_helper.to_array(i) for i in two_steps.graph.initializer}
    changed = [i.name for i in recovered.graph.initializer
               if not np.array_equal(onnx.numpy_helper.to_array(i), before[i.name])]
    assert sorted(changed) == ["fc.bias", "fc.weight"]


def test_outputs_only_refits_the_layers_writing_graph_outputs(fmnist):
    _, layers = reconstruct(fmnist.model, fmnist.pruned, fmnist.removed, fmnist.samples[:16], outputs_only=True)
    assert [layer.node for layer in layers] == ["/fc/Gemm"]
    _, layers = reconstruct(fmnist.model, fmnist.model, {}, fmnist.samples[:16], outputs_only=True)
    assert layers == []


def test_recover_fits_the_inner_layers_on_the_first_samples_only(fmnist):
    """`limit`: reconstruction and BN statistics read the first samples; only the classifier reads them all."""
    f = fmnist
    rebuilt, _ = reconstruct(f.model, f.pruned, f.removed, f.samples[:16])
    two_steps, _ = reestimate_batchnorm(f.model, rebuilt, f.removed, f.samples[:16])
    recovered, _ = recover(f.model, f.pruned, f.removed, f.samples[:48], limit=16)
    want = {i.name: onnx.numpy_helper.to_array(i) for i in two_steps.graph.initializer}
    got = {i.name: onnx.numpy_helper.to_array(i) for i in recovered.graph.initializer}
    assert all(np.array_equal(got[k], v) for k, v in want.items() if not k.startswith("fc."))
    assert not np.array_equal(got["fc.weight"], want["fc.weight"])
