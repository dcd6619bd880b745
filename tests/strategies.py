"""Hypothesis strategies derived from the wire schema of any registered type."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from depin_p2p import wire

# Keep generated values small: round-trips test structure, not size limits.
_MAX_BLOB = 48
_MAX_ITEMS = 4


def for_node(node: wire.Node) -> st.SearchStrategy[Any]:
    if isinstance(node, wire.IntNode):
        return st.integers(node.lo, node.hi)
    if isinstance(node, wire.BoolNode):
        return st.booleans()
    if isinstance(node, wire.BytesNode):
        return st.binary(min_size=node.min_len, max_size=max(node.min_len, min(node.max_len, _MAX_BLOB)))
    if isinstance(node, wire.StrNode):
        hi = max(node.min_len, min(node.max_len, _MAX_BLOB))
        return st.text(min_size=node.min_len, max_size=hi)
    if isinstance(node, wire.EnumNode):
        return st.sampled_from(list(node.enum_type))
    if isinstance(node, wire.OptionalNode):
        return st.none() | for_node(node.inner)
    if isinstance(node, wire.TupleNode):
        hi = max(node.min_len, min(node.max_len, _MAX_ITEMS))
        return st.lists(for_node(node.item), min_size=node.min_len, max_size=hi).map(tuple)
    if isinstance(node, wire.FixedTupleNode):
        return st.tuples(*(for_node(n) for n in node.items))
    if isinstance(node, wire.StructNode):
        return for_type(node.cls)
    raise AssertionError(f"no strategy for {node!r}")


def for_type(cls: type) -> st.SearchStrategy[Any]:
    schema = wire.schema_of(cls)
    return st.builds(cls, *(for_node(n) for n in schema.nodes))
