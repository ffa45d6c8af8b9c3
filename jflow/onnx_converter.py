"""jax2onnx 0.17 adapted while ``jflow.export_onnx`` converts: :func:`converting`.

Each change keeps jax2onnx's result and is skipped where its internals differ (another version):

- value shapes stamped with JAX dimension expressions (``floordiv(h + 7, 8)``), which onnx_ir
  refuses (it calls ``int()`` on them), become named ONNX dimension parameters (annotations only);
- linear-time conversion of long graphs (unrolled iterations, SEA-RAFT's 49-tap filters with
  symbolic sizes). jax2onnx checks after lowering each equation that its outputs are in the graph
  by scanning every node and initializer, so lowering is quadratic in the graph's size: a value
  whose producer node is in the graph is answered at once (the scan runs otherwise). Its graph
  optimizer's consumer / producer queries each build a set of all node ids and scan every node's
  outputs by name: the set and a first-producer index are kept per node list (snapshot), and a
  hit is checked against the node. Its cast cleanup restarts after each identity ``Cast`` it
  removes (cubic): identity casts (source type = target type, as jax2onnx decides it) are
  removed in one sweep first.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence


@contextlib.contextmanager
def _patched(module, name: str, replacement) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def _symbolic_dims_as_names(stack: contextlib.ExitStack) -> None:
    import jax
    import onnx_ir._core as core

    original = getattr(core, "_maybe_convert_to_symbolic_dim", None)
    if original is None:  # another onnx_ir: nothing to adapt
        return

    def convert(dim):
        if jax.export.is_symbolic_dim(dim):
            return core.SymbolicDim(str(dim))
        return original(dim)

    stack.enter_context(_patched(core, "_maybe_convert_to_symbolic_dim", convert))


def _connected_check_by_producer(stack: contextlib.ExitStack) -> None:
    try:
        from jax2onnx.converter import output_binding
    except ImportError:
        return
    original = getattr(output_binding, "_value_is_graph_connected", None)
    if original is None:
        return

    def connected(ctx, value) -> bool:
        producer = value.producer() if hasattr(value, "producer") else None
        if producer is not None and producer.graph is ctx.builder.nodes:
            return True  # the scan would find it among the graph's nodes
        return original(ctx, value)

    stack.enter_context(_patched(output_binding, "_value_is_graph_connected", connected))


class _Snapshot:
    """A node list's ids and, built on first use, the position of the first node with each
    output (by identity and by name)."""

    def __init__(self, nodes: Sequence[Any]):
        self.nodes = nodes
        self.size = len(nodes)
        self.ids = {id(n) for n in nodes}
        self._by_id: dict[int, int] | None = None
        self._by_name: dict[str, int] = {}

    def first_producer(self, value, name: str | None) -> int | None:
        """Position of the first node with an output that is ``value`` or named ``name``."""
        if self._by_id is None:
            self._by_id = {}
            for i, node in enumerate(self.nodes):
                for out in node.outputs:
                    self._by_id.setdefault(id(out), i)
                    if out.name:
                        self._by_name.setdefault(out.name, i)
        found = [p for p in (None if value is None else self._by_id.get(id(value)),
                             self._by_name.get(name) if name else None) if p is not None]
        return min(found) if found else None


class _Snapshots:
    """:class:`_Snapshot` of the last few node lists the optimizer passes queried."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self.entries: list[_Snapshot] = []

    def __call__(self, nodes: Sequence[Any]) -> _Snapshot | None:
        """None for a live graph (it changes as passes edit it: never cached)."""
        if not isinstance(nodes, (list, tuple)):
            return None
        for snap in self.entries:
            if snap.nodes is nodes and snap.size == len(nodes):
                return snap
        snap = _Snapshot(nodes)
        self.entries = [snap, *self.entries[:self.keep - 1]]
        return snap


def _graph_queries_with_kept_snapshots(stack: contextlib.ExitStack) -> None:
    """jax2onnx's ``_consumer_nodes`` and ``_producer_node`` answered from :class:`_Snapshots`
    (the same answers as their scans)."""
    try:
        from jax2onnx.converter import (conv_transpose_bias_folding, ir_optimizations,
                                        optimizer_graph_utils as utils)
    except ImportError:
        return
    needed = ("_consumer_nodes", "_producer_node", "_value_identity", "_v_name",
              "_has_input_name_or_obj")
    if not all(hasattr(utils, n) for n in needed):
        return
    import onnx_ir as ir

    snapshots = _Snapshots()
    original_producer = utils._producer_node

    def identity(value_or_name):
        ref_value, name = utils._value_identity(value_or_name)
        if name is None and isinstance(value_or_name, ir.Value):
            name = utils._v_name(value_or_name)
        return ref_value, name

    def consumer_nodes(nodes, value_or_name):
        if value_or_name is None:
            return []
        if isinstance(value_or_name, ir.Value):
            consumers = value_or_name.consumers()
            if consumers and all(isinstance(c, ir.Node) for c in consumers):
                snap = snapshots(nodes)
                ids = snap.ids if snap is not None else {id(n) for n in nodes}
                filtered = [c for c in consumers if id(c) in ids]
                if filtered:
                    return filtered
        ref_value, name = identity(value_or_name)
        if ref_value is None and isinstance(value_or_name, ir.Value):
            ref_value = value_or_name
        return [n for n in nodes if utils._has_input_name_or_obj(n, name, ref_value)]

    def producer_node(nodes, value_or_name):
        snap = snapshots(nodes)
        if value_or_name is None or snap is None:
            return original_producer(nodes, value_or_name)
        if isinstance(value_or_name, ir.Value):
            producer = value_or_name.producer()
            if isinstance(producer, ir.Node) and id(producer) in snap.ids:
                return producer
        ref_value, name = identity(value_or_name)
        position = snap.first_producer(ref_value, name)
        if position is None:
            return None
        node = nodes[position]
        if any((ref_value is not None and out is ref_value) or (name and out.name == name)
               for out in node.outputs):
            return node
        return original_producer(nodes, value_or_name)  # renamed since indexed: scan

    for module in (utils, ir_optimizations, conv_transpose_bias_folding):
        for name, replacement in (("_consumer_nodes", consumer_nodes),
                                  ("_producer_node", producer_node)):
            if hasattr(module, name):
                stack.enter_context(_patched(module, name, replacement))


def remove_identity_casts(graph) -> int:
    """Removes every ``Cast`` whose source type (as jax2onnx's cast cleanup determines it) is
    its target type, in one sweep, rerouting its uses; returns how many."""
    from jax2onnx.converter import ir_optimizations as opt
    import onnx_ir as ir

    nodes = list(graph)
    dtypes = opt._collect_value_dtypes(graph, nodes)
    removed = 0
    for node in nodes:
        if not opt._is_standard_onnx_node(node, "Cast"):
            continue
        ins, outs = opt._node_inputs(node), opt._node_outputs(node)
        if not ins or not outs or ins[0] is None:
            continue
        target = opt._attr_to_int(opt._get_attr(node, "to"))
        source = opt._value_dtype_code(ins[0])
        if source is None:
            source = dtypes.get(opt._v_name(ins[0]) or "")
        if target is None or source != target:
            continue
        ir.convenience.replace_all_uses_with(outs[0], ins[0], replace_graph_outputs=True)
        graph.remove(node)
        removed += 1
    return removed


def _identity_casts_first(stack: contextlib.ExitStack) -> None:
    try:
        from jax2onnx.converter import ir_optimizations as opt
    except ImportError:
        return
    needed = ("_OPTIMIZER_PASSES", "remove_redundant_casts_ir", "_collect_value_dtypes",
              "_is_standard_onnx_node", "_node_inputs", "_node_outputs", "_attr_to_int",
              "_get_attr", "_value_dtype_code", "_v_name")
    if not all(hasattr(opt, n) for n in needed):
        return
    import dataclasses

    original = opt.remove_redundant_casts_ir

    def casts(graph) -> None:
        remove_identity_casts(graph)
        original(graph)

    def swap(runner):
        return casts if runner is original else runner

    passes = tuple(dataclasses.replace(p, graph_runner=swap(p.graph_runner),
                                       function_graph_runner=swap(p.function_graph_runner))
                   for p in opt._OPTIMIZER_PASSES)
    stack.enter_context(_patched(opt, "_OPTIMIZER_PASSES", passes))


@contextlib.contextmanager
def converting(linear: bool = True) -> Iterator[None]:
    """The module docstring's changes to jax2onnx / onnx_ir, undone on exit (``linear=False``:
    the dimension names only, jax2onnx's own conversion time)."""
    adapts = [_symbolic_dims_as_names]
    if linear:
        adapts += [_connected_check_by_producer, _graph_queries_with_kept_snapshots,
                   _identity_casts_first]
    with contextlib.ExitStack() as stack:
        for adapt in adapts:
            adapt(stack)
        yield
