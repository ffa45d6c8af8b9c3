"""Identical ONNX initializers merged into one (``jflow.export_onnx``, after jax2onnx).

jax2onnx 0.17 lowers a ``broadcast_in_dim`` of a constant at a static shape to a full-size
initializer, one per use: ``jnp.where(mask, x, 0.0)`` in a lookup unrolled over iterations stores
the same zeros once per iteration and pyramid level. :func:`merge_identical_initializers` keeps
one initializer per (data type, dims, bytes) and renames every use of the others, in the main
graph and in the ``Loop`` / ``If`` / ``Scan`` subgraphs (which may read outer-scope names).
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterator, Mapping

GRAPH_ATTRIBUTE = 5  # onnx.AttributeProto.GRAPH
GRAPHS_ATTRIBUTE = 10  # onnx.AttributeProto.GRAPHS


def _subgraphs(graph) -> Iterator[Any]:
    """Every graph nested in ``graph``'s nodes' attributes, recursively (not ``graph`` itself)."""
    for node in graph.node:
        for attr in node.attribute:
            inner = [attr.g] if attr.type == GRAPH_ATTRIBUTE else (
                list(attr.graphs) if attr.type == GRAPHS_ATTRIBUTE else [])
            for g in inner:
                yield g
                yield from _subgraphs(g)


def _key(tensor) -> tuple:
    from onnx import numpy_helper

    data = numpy_helper.to_array(tensor)
    return tensor.data_type, tuple(tensor.dims), hashlib.sha256(data.tobytes()).hexdigest()


def _rename_inputs(graph, renamed: Mapping[str, str]) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]


def merge_identical_initializers(model) -> int:
    """Drops each main-graph initializer equal (data type, dims, bytes) to an earlier one and points
    its uses, in the main graph and every subgraph, to the one kept. Initializers named as graph
    inputs or outputs are kept. Modifies ``model`` (an ``onnx.ModelProto``) in place; returns the
    bytes of tensor data dropped."""
    from onnx import numpy_helper

    graph = model.graph
    subgraphs = list(_subgraphs(graph))
    pinned = {v.name for g in [graph, *subgraphs] for v in [*g.input, *g.output]}
    kept: dict[tuple, str] = {}
    renamed: dict[str, str] = {}
    survivors, dropped = [], 0
    for tensor in graph.initializer:
        key = _key(tensor)
        if key in kept and tensor.name not in pinned:
            renamed[tensor.name] = kept[key]
            dropped += numpy_helper.to_array(tensor).nbytes
        else:
            kept.setdefault(key, tensor.name)
            survivors.append(tensor)
    if not renamed:
        return 0
    del graph.initializer[:]
    graph.initializer.extend(survivors)
    for g in [graph, *subgraphs]:
        _rename_inputs(g, renamed)
        infos = [v for v in g.value_info if v.name not in renamed]
        del g.value_info[:]
        g.value_info.extend(infos)
    return dropped
