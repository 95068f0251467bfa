"""YAML loaded safely and within bounds (daemon configs, device profiles).

``load(text)`` is ``yaml.safe_load`` (no Python objects, no tags beyond the standard ones) with three
limits checked before any Python value is built, so a hostile or broken file costs milliseconds and a
few kilobytes, never the process:

- ``MAX_BYTES`` of text;
- ``MAX_DEPTH`` levels of nesting, counted through aliases (a file nested deeper than that, or an alias
  to itself, is refused: it would blow the stack of whatever walks it later);
- ``MAX_NODES`` nodes once every alias is expanded (the "billion laughs" bomb: a few lines whose
  aliases expand to 10^9 nodes). Aliases stay usable within that budget.

A key given twice in one mapping (``slo_ms: 25`` ... ``slo_ms: 30``) is refused too: PyYAML keeps the last
one silently, so a config edited in two places ran with whichever came last.

Violations raise ``YamlLimitError`` (a ``yaml.YAMLError``, so callers that already turn YAML errors into
one line need nothing new), whose ``problem`` and ``problem_mark`` say what and where.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 256 << 10
MAX_DEPTH = 50
MAX_NODES = 20_000


class YamlLimitError(yaml.YAMLError):
    """The document breaks a limit (size, depth, expanded nodes, a recursive alias)."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses deep nesting and whose documents are sized before construction."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            node = super().compose_node(parent, index)
            assert node is not None  # compose_node is only called where a node follows
            return node
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            if (key.tag, key.value) in seen:
                shown = key.value if len(key.value) <= 40 else key.value[:40] + "..."
                raise YamlLimitError(f"key {shown!r} given twice in one mapping", key.start_mark)
            seen.add((key.tag, key.value))
        return node

    def compose_document(self) -> Node:
        node = super().compose_document()
        assert node is not None  # compose_document is only called where a document follows
        _check_expanded(node)
        return node


# YAML 1.1 (PyYAML) reads an exponent without a decimal point (1e-3, 2E6) as text, YAML 1.2 and every
# user as a number: `slo_ms: 1e3` was refused as "must be a number, got '1e3'"
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expanded(root: Node) -> None:
    """Expanded size and depth of the node graph (aliases are shared nodes), without recursion.
    Raises YamlLimitError for a cycle, depth over MAX_DEPTH or more than MAX_NODES nodes."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # (node, its children, index of the next child to visit)
    stack: list[tuple[Node, list[Node], int]] = [(root, _children(root), 0)]
    on_path.add(id(root))
    while stack:
        node, kids, i = stack[-1]
        while i < len(kids) and id(kids[i]) in sizes:  # already sized (a shared node): counted again below
            i += 1
        if i < len(kids):
            child = kids[i]
            stack[-1] = (node, kids, i + 1)
            if id(child) in on_path:
                raise YamlLimitError("an alias refers to the node that contains it", child.start_mark)
            if len(stack) >= MAX_DEPTH:
                raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels once aliases are expanded",
                                     child.start_mark)
            on_path.add(id(child))
            stack.append((child, _children(child), 0))
            continue
        stack.pop()
        on_path.discard(id(node))
        total = 1 + sum(sizes[id(k)] for k in kids)
        if total > MAX_NODES:
            raise YamlLimitError(f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?)",
                                 node.start_mark)
        sizes[id(node)] = total


def read_text(path: Any) -> str:
    """The text of ``path`` (UTF-8), reading at most ``MAX_BYTES`` + 1 bytes (a larger file is refused by
    ``load`` without ever being held whole). Raises OSError, UnicodeDecodeError."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    return data.decode("utf-8") if len(data) <= MAX_BYTES else data[:MAX_BYTES].decode("utf-8", "replace") + "\n#"


def load(text: str) -> Any:
    """Parse one YAML document from ``text`` safely and within the limits above. Raises yaml.YAMLError
    (YamlLimitError for a limit)."""
    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"larger than {MAX_BYTES >> 10} KiB")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:  # belt and braces: the limits above keep every walk shallow
        raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "YamlLimitError", "load", "read_text"]
