"""YAML from files users (or anyone who can write them) hand to modelctl: profiles, compose files.

`yaml.safe_load` builds no objects, but it still expands aliases: a 600-byte file whose anchors
refer to anchors ("billion laughs") becomes billions of values and exhausts memory as soon as
anything walks it. So:
- aliases=False (profiles): any anchor (`&name`) or alias (`*name`) is refused, naming the file,
  the line and what to do. A profile has no use for them.
- aliases=True (compose files, where `x-common: &common` / `<<: *common` is the usual idiom): the
  document is composed first (aliases share one node, so this is linear in the text), the values it
  would expand to are counted without expanding them, and more than MAX_NODES is refused.
- Text over MAX_BYTES (1 MiB) is refused before it is parsed; the file variant reads at most that
  much, whatever the file claims to be.
Every message quotes at most 200 characters of any value (`short_repr`), on one line (`one_line`),
with credentials masked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError
from .secrets import redact

MAX_BYTES = 1 << 20  # 1 MiB
MAX_NODES = 100_000  # values a document may expand to through aliases
QUOTE_LIMIT = 200


def short_repr(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """repr(value) on one line, at most `limit` characters of it, credentials masked."""
    text = repr(redact(value) if isinstance(value, str) else value)
    if len(text) > limit:
        return f"{text[:limit]}... ({len(text)} characters)"
    return text


def one_line(text: str, limit: int | None = QUOTE_LIMIT) -> str:
    """`text` that cannot start a new line anywhere (YAML comment, terminal, log): control
    characters and Unicode line breaks written as escapes (`\\n`, `\\x1b`, `\\u2028`); cut at `limit`."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    if limit is not None and len(shown) > limit:
        return f"{shown[:limit]}... ({len(shown)} characters)"
    return shown


class _Refused(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases where they first appear."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
            sign = "*" if kind == "alias" else "&"
            raise _Refused(
                f"line {event.start_mark.line + 1}: YAML {kind} {sign}{one_line(str(event.anchor), 60)} "
                "is not accepted (anchors and aliases can expand a small file into gigabytes)",
                "write the values out in full instead of using &anchors and *aliases",
            )
        return super().compose_node(parent, index)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many values `root` stands for once every alias is expanded, counted without expanding:
    an alias is the same node object, so each node's size is computed once. Raises _Refused past
    `limit` or on an alias that contains itself."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > limit:
                raise _Refused(
                    f"its aliases expand to more than {limit} values (line {node.start_mark.line + 1}): "
                    "a 'billion laughs' file?",
                    "write the values out, or use fewer nested *aliases",
                )
            sizes[key] = size
            continue
        if key in sizes:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise _Refused(
                    f"line {child.start_mark.line + 1}: an alias refers to a value that contains it",
                    "write the values out instead of using a recursive *alias",
                )
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def load_yaml(
    text: str,
    *,
    source: str,
    aliases: bool = False,
    max_nodes: int = MAX_NODES,
    error: type[UsageError] = UsageError,
) -> Any:
    """The document in `text`, or `error` (a UsageError, exit 2) naming `source` and what to do.

    aliases=False refuses any anchor or alias; aliases=True allows them while the document expands
    to at most `max_nodes` values. Text over MAX_BYTES is refused unparsed.
    """
    where = one_line(source)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise error(f"{where}: {size} bytes is over the {MAX_BYTES}-byte limit for YAML", hint="is it the right file?")
    loader = (_NoAliasLoader if not aliases else yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if aliases:
            _expanded_size(node, max_nodes)
        return loader.construct_document(node)
    except _Refused as exc:
        raise error(f"{where}: {exc.message}", hint=exc.hint) from None
    except yaml.YAMLError as exc:
        detail = one_line(redact(str(exc)), 600).replace("\\n", " ")
        raise error(f"{where}: not valid YAML: {detail}", hint="fix the YAML syntax") from None
    except RecursionError:
        raise error(f"{where}: YAML nested too deeply", hint="flatten the document") from None
    finally:
        loader.dispose()


def read_text(path: Path, *, max_bytes: int = MAX_BYTES, error: type[UsageError] = UsageError) -> str:
    """A UTF-8 text file of at most `max_bytes`: never reads more than that (a device, a FIFO or a
    growing file included). Follows symlinks. Errors name the file."""
    where = one_line(str(path))
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read {where}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise error(f"{where}: larger than the {max_bytes}-byte limit", hint="is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not UTF-8 text (byte {exc.start})", hint="save it as UTF-8") from None


def load_yaml_file(
    path: Path, *, aliases: bool = False, max_nodes: int = MAX_NODES, error: type[UsageError] = UsageError
) -> Any:
    """`load_yaml` of a file, refused unread past MAX_BYTES (1 MiB)."""
    return load_yaml(read_text(path, error=error), source=str(path), aliases=aliases, max_nodes=max_nodes, error=error)
