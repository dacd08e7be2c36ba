"""Fine-tuning with the optional `train` extra (torch): ONNX -> trainable module -> ONNX.

module.py: the interpreter whose parameters are the initializers; ops.py: its op table;
masks.py: pruning masks, splicing and rewinding; finetune.py: the training loop (distillation).
Importing this package without torch raises a UserError that says how to install it.
"""
from edgeprune.errors import UserError

try:
    import torch  # noqa: F401
except ImportError:
    raise UserError("fine-tuning needs torch: pip install 'edgeprune[train]'") from None
