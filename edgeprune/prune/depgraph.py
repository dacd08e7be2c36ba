"""The channel dependency graph: which channel positions must be removed together.

Every tensor axis that carries channels is a space; every channel of every space is an element of
one union-find. Rules (prune/rules.py) tie elements: a residual Add ties channel i of both operands
and of the sum, a Concat ties input channel i to output channel offset+i, a depthwise Conv ties its
input channel i to its outputs i*m..i*m+m-1, Flatten ties channel c to features c*HW..c*HW+HW-1.
A connected component is an atom: the smallest set of channel positions that can go, across all
tensors. Atoms that span the same tensors form a group: what Torch-Pruning calls a dependency
group and a user calls "the channels of layer X". Elementwise ties make index bugs impossible by
construction: an index is never translated by hand, only tied.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeprune.errors import UserError
from edgeprune.prune.rules import GROUPED_CONV, RULES, Rule


@dataclass
class Space:
    tensor: str
    axis: int
    size: int
    base: int  # id of channel 0 in the union-find


@dataclass
class ParamSlice:
    """Channel i of `tensor` owns `const` at `index[i]` along `axis`: for importance and masks."""

    node: str
    role: str  # "out": filters that produce the channel; "in": weights that read it; "scale": BN gamma
    tensor: str
    axis: int
    index: np.ndarray
    const: gs.Constant = field(repr=False)


@dataclass
class Group:
    id: int
    atoms: list[dict[str, np.ndarray]]  # per removable unit: its channel indices on every tensor it spans
    params: list[ParamSlice]
    blocked: list[str]  # why it cannot be pruned; empty when it can

    @property
    def size(self) -> int:
        return len(self.atoms)

    @property
    def producers(self) -> list[str]:
        return sorted({p.node for p in self.params if p.role == "out"})

    @property
    def consumers(self) -> list[str]:
        return sorted({p.node for p in self.params if p.role == "in"})


class DepGraph:
    """Channel spaces, ties and groups of one gs.Graph; also applies a removal to that graph."""

    def __init__(self, graph: gs.Graph, protect: tuple[str, ...] | list[str] = (), rules: dict[str, Rule] = RULES,
                 grouped_conv: str = "equal"):
        if grouped_conv not in GROUPED_CONV:
            raise UserError(f"grouped conv '{grouped_conv}': expected one of {', '.join(GROUPED_CONV)}")
        self.graph, self.opset, self.rules, self.grouped_conv = graph, graph.opset, rules, grouped_conv
        self.spaces: dict[str, Space] = {}
        self.params: list[ParamSlice] = []
        self.reasons: dict[str, list[str]] = {}
        self.removed: dict[str, np.ndarray] = {}
        self._parent: list[int] = []
        self._build(set(protect))
        self.groups = self._groups()

    # --- the API rules use ------------------------------------------------------------------

    def space(self, tensor: gs.Tensor) -> Space | None:
        return self.spaces.get(tensor.name) if isinstance(tensor, gs.Variable) else None

    def new_space(self, tensor: gs.Tensor, axis: int) -> Space | None:
        """A channel space on `axis`; None when the channel count is unknown (those channels never move).

        Other dims may be symbolic (a dynamic batch); rules that need them check for themselves.
        """
        if tensor.name in self.spaces:
            return self.spaces[tensor.name]
        shape = tensor.shape
        if (not isinstance(tensor, gs.Variable) or not shape or len(shape) < 2 or not -len(shape) <= axis < len(shape)
                or not isinstance(shape[axis], int)):
            return None
        space = Space(tensor.name, axis % len(shape), int(shape[axis]), len(self._parent))
        self._parent.extend(range(space.base, space.base + space.size))
        self.spaces[tensor.name] = space
        return space

    def tie(self, a: gs.Tensor, a_idx: np.ndarray, b: gs.Tensor, b_idx: np.ndarray) -> None:
        """Channel a_idx[k] of `a` and b_idx[k] of `b` are removed together.

        A side whose channel count is unknown, or too small for the indices, cannot follow: both are
        blocked rather than tied to the wrong channels.
        """
        sa, sb = self.space(a), self.space(b)
        a_idx, b_idx = np.asarray(a_idx, dtype=np.int64), np.asarray(b_idx, dtype=np.int64)
        if sa is None or sb is None or (a_idx.size and (a_idx.max() >= sa.size or b_idx.max() >= sb.size)):
            for tensor in (a, b):
                self.block(tensor, f"channels of '{a.name}' and '{b.name}' cannot be matched")
            return
        for i, j in zip(a_idx.tolist(), b_idx.tolist()):
            self._union(sa.base + i, sb.base + j)

    def tie_all(self, a: gs.Tensor, b: gs.Tensor) -> None:
        """Channel i of `a` is channel i of `b`, for every i (unequal counts: tie() blocks both)."""
        size = max((s.size for s in (self.space(a), self.space(b)) if s is not None), default=0)
        self.tie(a, np.arange(size), b, np.arange(size))

    def param(self, node: gs.Node, const: gs.Constant, tensor: gs.Tensor, axis: int, role: str,
              index: np.ndarray | None = None) -> None:
        space = self.space(tensor)
        if space is not None:
            index = np.arange(space.size) if index is None else np.asarray(index)
            self.params.append(ParamSlice(_name(node), role, space.tensor, axis, index, const))

    def block(self, tensor: gs.Tensor, reason: str) -> None:
        if self.space(tensor) is not None:
            self.reasons.setdefault(tensor.name, []).append(reason)

    def opaque(self, node: gs.Node, reason: str) -> None:
        """The node is not understood: none of the channels it reads or writes may move."""
        for tensor in node.outputs:
            self.new_space(tensor, 1)
        for tensor in [*node.inputs, *node.outputs]:
            self.block(tensor, f"{node.op} '{_name(node)}': {reason}")

    def readers(self, tensor: gs.Tensor) -> int:
        return len(tensor.outputs) + sum(t is tensor for t in self.graph.outputs)

    def kept(self, tensor: gs.Tensor) -> np.ndarray | None:
        """Kept channel indices, or None when the tensor loses none (then nothing about it changes)."""
        space = self.space(tensor)
        if space is None or space.tensor not in self.removed:
            return None
        return np.setdiff1d(np.arange(space.size), self.removed[space.tensor])

    def kept_all(self, tensor: gs.Tensor) -> np.ndarray:
        """Kept channel indices of a tensor that has a space, whether it loses channels or not."""
        kept = self.kept(tensor)
        return np.arange(self.space(tensor).size) if kept is None else kept

    # --- building -------------------------------------------------------------------------------

    def _find(self, i: int) -> int:
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def _union(self, i: int, j: int) -> None:
        ri, rj = self._find(i), self._find(j)
        if ri != rj:
            self._parent[max(ri, rj)] = min(ri, rj)

    def _build(self, protect: set[str]) -> None:
        known = {_name(n) for n in self.graph.nodes}
        for name in sorted(protect - known):
            raise UserError(f"protect: the model has no node '{name}'")
        for tensor in self.graph.inputs:
            self.new_space(tensor, 1)
            self.block(tensor, f"graph input '{tensor.name}'")
        self.graph.toposort()
        for node in self.graph.nodes:
            rule = self.rules.get(node.op) if node.domain in (None, "", "ai.onnx") else None
            if rule is None:
                self.opaque(node, f"no coupling rule for {node.domain + ':' if node.domain else ''}{node.op}")
                for name in _captured(node):  # If/Loop bodies read outer tensors without listing them
                    if name in self.spaces:
                        self.reasons.setdefault(name, []).append(f"{node.op} '{_name(node)}': read by its subgraph")
                continue
            rule.couple(node, self)
            if _name(node) in protect:
                self.opaque(node, "protected")
        for tensor in self.graph.outputs:
            self.block(tensor, f"graph output '{tensor.name}'")

    def _groups(self) -> list[Group]:
        atoms: dict[int, dict[str, list[int]]] = {}
        for space in self.spaces.values():
            for i in range(space.size):
                atoms.setdefault(self._find(space.base + i), {}).setdefault(space.tensor, []).append(i)
        by_signature: dict[tuple[str, ...], list[dict[str, np.ndarray]]] = {}
        for atom in atoms.values():
            by_signature.setdefault(tuple(atom), []).append({t: np.array(ix) for t, ix in atom.items()})
        groups = []
        for signature, members in by_signature.items():
            tensors = set(signature)
            params = [p for p in self.params if p.tensor in tensors]
            reasons = sorted({r for t in signature for r in self.reasons.get(t, [])})
            if not reasons and not any(p.role == "out" for p in params):
                reasons = ["no parameter produces these channels"]
            groups.append(Group(len(groups), members, params, reasons))
        return groups

    # --- applying a removal ---------------------------------------------------------------------

    def check_removal(self, removed: dict[str, list[int]], closed: bool = True) -> None:
        """Indices in range; with `closed`, whole atoms only and nothing blocked (else the model breaks)."""
        ids = set()
        for tensor, idx in removed.items():
            space = self.spaces.get(tensor)
            if space is None:
                raise UserError(f"removed: tensor '{tensor}' carries no prunable channel axis")
            if len(idx) and (min(idx) < 0 or max(idx) >= space.size):
                raise UserError(f"removed: tensor '{tensor}' has {space.size} channels, index {max(idx)} is out of range")
            ids.update(space.base + int(i) for i in idx)
        if not closed:
            return
        roots = {self._find(i) for i in ids}
        for space in self.spaces.values():
            for i in range(space.size):
                if self._find(space.base + i) not in roots:
                    continue
                if space.base + i not in ids:
                    raise UserError(f"removed: channel {i} of '{space.tensor}' is tied to removed channels, "
                                    "but is not removed")
                if space.tensor in self.reasons:
                    raise UserError(f"removed: channel {i} of '{space.tensor}' cannot go: "
                                    f"{self.reasons[space.tensor][0]}")

    def apply(self, removed: dict[str, np.ndarray]) -> None:
        """Shrink every parameter and attribute for `removed` (tensor -> channel indices), in place."""
        self.removed = {t: np.asarray(ix, dtype=np.int64) for t, ix in removed.items() if len(ix)}
        for node in self.graph.nodes:
            rule = self.rules.get(node.op) if node.domain in (None, "", "ai.onnx") else None
            if rule is not None and any(t.name in self.removed for t in [*node.inputs, *node.outputs]):
                rule.rewrite(node, self)
        outputs = {t.name for t in [*self.graph.inputs, *self.graph.outputs]}
        for tensor in self.graph.tensors().values():
            if isinstance(tensor, gs.Variable) and tensor.name not in outputs:
                tensor.shape = None

    def mask(self, removed: dict[str, np.ndarray]) -> None:
        """Zero the weights that read `removed` channels: same architecture, the pruned model's numbers."""
        for p in self.params:
            if p.role == "in" and len(removed.get(p.tensor, [])):
                values = np.array(p.const.values)
                idx = [slice(None)] * values.ndim
                idx[p.axis] = np.unique(p.index[np.asarray(removed[p.tensor])])
                values[tuple(idx)] = 0
                p.const.values = values


def _captured(node: gs.Node) -> set[str]:
    """Names of tensors a node's subgraphs (at any depth) read."""
    names: set[str] = set()
    for value in node.attrs.values():
        for sub in value if isinstance(value, list) else [value]:
            if isinstance(sub, gs.Graph):
                for inner in sub.nodes:
                    names.update(t.name for t in inner.inputs)
                    names |= _captured(inner)
    return names


def _name(node: gs.Node) -> str:
    return node.name or node.outputs[0].name


def build(model: onnx.ModelProto, protect: tuple[str, ...] | list[str] = (), grouped_conv: str = "equal") -> DepGraph:
    """Dependency graph of a model (shape inference runs on a copy; the model is not changed).

    `grouped_conv` (a key of rules.GROUPED_CONV): equal counts per group, or whole groups.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"structured pruning needs shape inference, which failed: {line}") from None
    return DepGraph(gs.import_onnx(inferred), protect, grouped_conv=grouped_conv)


def _ranges(indices: np.ndarray) -> str:
    """[0,1,2,5,6] -> '0:3,5:7' so a trace of a 512-channel group fits on a line."""
    parts, start = [], None
    values = sorted(int(i) for i in indices)
    for k, v in enumerate(values):
        if start is None:
            start = v
        if k + 1 == len(values) or values[k + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}:{v + 1}")
            start = None
    return ",".join(parts)


def format_group(group: Group) -> str:
    """Human trace of one group, for `edgeprune groups MODEL`."""
    state = "blocked" if group.blocked else "prunable"
    tensors = {t: np.concatenate([a[t] for a in group.atoms]) for t in group.atoms[0]}
    widest = max(len(ix) for ix in tensors.values())
    count = f"{group.size} channels" if widest == group.size else f"{group.size} units ({widest} channels)"
    lines = [f"group {group.id}: {count}, {state}",
             f"  producers: {', '.join(group.producers) or '-'}",
             f"  consumers: {', '.join(group.consumers) or '-'}"]
    lines.append("  tensors:   " + "  ".join(f"{t}[{_ranges(ix)}]" for t, ix in tensors.items()))
    lines += [f"  blocked by {reason}" for reason in group.blocked]
    return "\n".join(lines)
