"""Export torchvision architectures (seeded random weights, no download) to ONNX for the real-model tests.

    python tools/export_torchvision.py resnet18 mobilenet_v2 densenet121 shufflenet_v2_x1_0 [--size 64]
        [--keep-bn] [--out DIR]

Needs torch==2.13.0 and torchvision==0.28.0 from PyPI. That torchvision wheel's compiled extension is
a CUDA build and its import fails ("operator torchvision::nms does not exist") unless the two op
schemas exist first, so they are defined here before the import. The legacy exporter at opset 17
(the dynamo one silently writes opset 18 and is several times slower); `--keep-bn` keeps the
BatchNormalization nodes (training mode PRESERVE) for the bn-scale criterion. Files go to `--out`,
by default $EDGEPRUNE_CACHE/torchvision or ~/.cache/edgeprune/torchvision, never into the repository.
BatchNorm statistics are measured on random images first (see _calibrate_batchnorm).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MODELS = ("resnet18", "mobilenet_v2", "densenet121", "shufflenet_v2_x1_0")
_SCHEMAS = []  # keeps the torch.library.Library alive: the schemas vanish with it


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CACHE") or Path.home() / ".cache" / "edgeprune") / "torchvision"


def _torchvision():
    import torch

    if not _SCHEMAS:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _SCHEMAS.append(lib)
    import torchvision

    return torch, torchvision


def _calibrate_batchnorm(torch, model, size: int) -> None:
    """Running statistics from random images, so activations keep their scale through the depth.

    With the initial statistics (mean 0, variance 1) a random-weight mobilenet_v2's logits are ~1e-9:
    any comparison of outputs would be vacuous.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, size, size))
    model.eval()


def export(name: str, size: int = 64, keep_bn: bool = False, out: Path | None = None) -> Path:
    """The ONNX file of `name` at 1x3xSIZExSIZE (exported once; later calls return the cached file)."""
    path = (out or cache_dir()) / f"{name}-{size}{'-bn' if keep_bn else ''}.onnx"
    if path.exists():
        return path
    torch, torchvision = _torchvision()
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    _calibrate_batchnorm(torch, model, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(model, torch.randn(1, 3, size, size), str(partial), input_names=["input"],
                      output_names=["logits"], dynamo=False, opset_version=17, training=mode,
                      do_constant_folding=True)
    partial.replace(path)  # atomic: a concurrent or interrupted export never leaves half a file
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(MODELS), help=f"torchvision.models names (default: {' '.join(MODELS)})")
    parser.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    parser.add_argument("--keep-bn", action="store_true", help="keep BatchNormalization nodes")
    parser.add_argument("--out", type=Path, help=f"folder (default {cache_dir()})")
    args = parser.parse_args()
    for name in args.names:
        print(export(name, args.size, args.keep_bn, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
