"""YAML loading that remembers line numbers, so pack errors can name the line at fault."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from auditor.errors import PolicyError


class LineDict(dict):
    """A mapping from YAML that knows its own line and the line of each key."""

    line: int = 0
    key_lines: dict[str, int]

    def __init__(self, *args: Any, line: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = line
        self.key_lines = {}

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):
    line: int = 0


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise PolicyError(f"duplicate key '{key}'", line=key_node.start_mark.line + 1)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[str(key)] = key_node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


#: Bounds on what a pack or example file may expand to. A few kilobytes of YAML anchors and
#: aliases can otherwise describe billions of nodes (an "alias bomb").
MAX_BYTES = 8 * 1024 * 1024
#: the path that means standard input (`auditor policy lint -`), and how messages name it
STDIN = "-"
STDIN_NAME = "<stdin>"


def shown(path: Path | str) -> str:
    """How messages name a pack or example file: its path, or ``<stdin>`` for standard input."""
    return STDIN_NAME if str(path) == STDIN else str(path)
#: aliases may make a document at most this many times larger than it is written (or 100,000 nodes)
MAX_EXPANSION = 10
MIN_EXPANSION_ALLOWANCE = 100_000


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Node count of the document with every alias expanded, computed without expanding it."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise PolicyError("a YAML alias refers to the node that contains it (a recursive document)",
                          line=node.start_mark.line + 1)
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, active) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, active) + _expanded_size(v, memo, active) for k, v in node.value)
    active.discard(key)
    memo[key] = size
    return size


def _check_expansion(root: yaml.Node) -> None:
    memo: dict[int, int] = {}
    expanded = _expanded_size(root, memo, set())
    allowed = max(MIN_EXPANSION_ALLOWANCE, MAX_EXPANSION * len(memo))
    if expanded > allowed:
        raise PolicyError(f"the YAML is written as {len(memo):,} nodes but its anchors and aliases expand it to "
                          f"{expanded:,} (more than {allowed:,}: an alias bomb?); write the repeated parts out",
                          line=root.start_mark.line + 1)


def load_yaml(path: Path) -> Any:
    """Load a YAML file (``-``: standard input) safely; faults become PolicyError with the file and line.

    Safe: only plain YAML types (SafeLoader); files over 8 MiB, documents that aliases expand
    more than tenfold (beyond 100,000 nodes), recursive aliases and absurd nesting are refused with a
    clear error instead of exhausting memory or the stack.
    """
    try:
        if str(path) == STDIN:
            data = sys.stdin.buffer.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise PolicyError(f"standard input is over the limit of {MAX_BYTES:,} bytes", path=STDIN_NAME)
            text = data.decode("utf-8")
        else:
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise PolicyError(f"file is {size:,} bytes; the limit is {MAX_BYTES:,}", path=str(path))
            text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror}", path=shown(path)) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError("not UTF-8 text", path=shown(path)) from exc
    try:
        # the reader refuses control characters while it is constructed: inside the try
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}", path=shown(path)) from exc
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except PolicyError as exc:
        exc.path = shown(path)
        raise
    except RecursionError as exc:
        raise PolicyError("the YAML is nested too deeply", path=shown(path)) from exc
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise PolicyError(f"not valid YAML: {exc.problem}", path=shown(path), line=line) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}", path=shown(path)) from exc
    finally:
        loader.dispose()
