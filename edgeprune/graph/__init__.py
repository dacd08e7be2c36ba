"""The model as a graph: load, canonicalize, check, run, compare, save, count."""
from edgeprune.graph.canonicalize import WORKING_OPSET, canonicalize
from edgeprune.graph.checks import check_structure, validate
from edgeprune.graph.io import load_model, model_bytes, save_model
from edgeprune.graph.runtime import Difference, compare_models, compare_outputs, random_inputs, run, top1_accuracy
from edgeprune.graph.shapes import fix_input_shapes, infer_shapes, parse_shape_arg, value_shapes
from edgeprune.graph.stats import node_stats, totals

__all__ = [
    "WORKING_OPSET", "canonicalize", "check_structure", "validate", "load_model", "model_bytes", "save_model",
    "Difference", "compare_models", "compare_outputs", "random_inputs", "run", "fix_input_shapes",
    "infer_shapes", "parse_shape_arg", "value_shapes", "node_stats", "totals", "top1_accuracy",
]
