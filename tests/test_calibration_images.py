"""A folder of images as calibration data: the documented preprocessing, class folders as labels, errors."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import EXAMPLE
from edgeprune.cli import main
from edgeprune.data import load_calibration
from edgeprune.errors import UserError
from edgeprune.graph import load_model

Image = pytest.importorskip("PIL.Image")


def save(path, pixels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)


def nhwc_model(h: int = 8, w: int = 6) -> onnx.ModelProto:
    node = helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0)
    graph = helper.make_graph([node], "nhwc", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, h, w, 3])],
                              [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_class_folders_become_labels_and_gray_images_scale_to_unit_range(tmp_path):
    save(tmp_path / "b_cat" / "1.png", np.full((28, 28), 128))
    save(tmp_path / "a_dog" / "x.png", np.full((40, 40, 3), 255))  # RGB to grayscale, resized to 28x28
    save(tmp_path / "a_dog" / "y.png", np.zeros((28, 28)))
    samples, labels = load_calibration(tmp_path, load_model(EXAMPLE))
    assert labels.tolist() == [0, 0, 1]  # sorted class folders, sorted files
    assert [s["input"].shape for s in samples] == [(1, 1, 28, 28)] * 3
    np.testing.assert_allclose([s["input"].mean() for s in samples], [1.0, 0.0, 128 / 255], rtol=1e-6)


def test_shorter_side_resize_center_crops_and_normalizes_per_channel(tmp_path):
    pixels = np.zeros((8, 12, 3), np.uint8)  # 8x12: the crop keeps columns 3..8 of a 6-wide input
    pixels[:, 6:] = (255, 0, 51)
    save(tmp_path / "wide.png", pixels)
    (tmp_path / "preprocess.toml").write_text("mean = [0.5, 0.0, 0.0]\nstd = [0.5, 1.0, 0.2]\n")
    samples, labels = load_calibration(tmp_path, nhwc_model())
    assert labels is None
    x = samples[0]["image"][0]  # NHWC, detected from the size-3 last axis
    assert x.shape == (8, 6, 3)
    np.testing.assert_allclose(x[:, :3], np.broadcast_to([-1.0, 0.0, 0.0], (8, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(x[:, 3:], np.broadcast_to([1.0, 0.0, 1.0], (8, 3, 3)), atol=1e-6)


def test_quantize_calibrates_on_an_image_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for k in range(8):
        save(tmp_path / "images" / f"{k}.png", rng.integers(0, 256, (28, 28)))
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(EXAMPLE), "-o", str(out), "--calib", str(tmp_path / "images"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.is_file() and report["samples"] == 8 and report["max_abs_error"] > 0


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "preprocess.toml").write_text("gamma = 2\n"), "unknown key 'gamma'"),
    (lambda d: (d / "preprocess.toml").write_text("std = [0.0]\n"), "std must not be 0"),
    (lambda d: (d / "broken.png").write_bytes(b"not a png"), "broken.png: not a readable image"),
    (lambda d: (d / "notes.txt").write_text("no images here"), "no images"),
])
def test_bad_folders_are_one_line_errors(tmp_path, make, message):
    folder = tmp_path / "calib"
    folder.mkdir()
    if message != "no images":
        save(folder / "ok.png", np.zeros((28, 28)))
    make(folder)
    with pytest.raises(UserError, match=message):
        load_calibration(folder, load_model(EXAMPLE))
