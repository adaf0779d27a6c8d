"""Read untrusted YAML into plain Python values, remembering where every value came from.

Only PyYAML's safe machinery is used (SafeLoader's parser and composer, SafeConstructor for
scalars), but the node tree is walked here rather than by `yaml.safe_load` so that:

* every key and value keeps its line and column, for error messages;
* duplicate keys are an error (safe_load silently keeps the last one);
* alias expansion ("billion laughs"), recursive aliases, deep nesting, oversized files,
  non-UTF-8 bytes and non-plain tags are refused with a clear message.

Every failure raises `YamlProblem(message, line, column)` (1-based); callers turn it into
their own error type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from judge.errors import InputError

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 100_000

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SCALAR_TAGS = {
    _STR,
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
# An unquoted date such as `2024-05-01` resolves to a timestamp; policies only ever want
# it as text, so it is kept as written rather than turned into a datetime.
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class YamlProblem(Exception):
    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


@dataclass
class Located:
    """A parsed document plus the position of every value and mapping key in it."""

    value: Any
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    # Sequences written in flow style (`[a, b]`), where every comma starts a new item.
    flow: set[Path_] = field(default_factory=set)

    def position(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """The (line, column) of `path`, or of its nearest ancestor that was written."""
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, (1, 1))


def _mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def decode(data: bytes, *, max_bytes: int = MAX_BYTES) -> str:
    """UTF-8 text of `data` (a leading BOM is dropped), or a YamlProblem saying where not."""
    if len(data) > max_bytes:
        raise YamlProblem(
            f"file is too large ({len(data):,} bytes; the limit is {max_bytes:,})", 1, 1
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        prefix = data[: error.start]
        line = prefix.count(b"\n") + 1
        column = len(prefix[prefix.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        raise YamlProblem(
            f"not valid UTF-8 (byte 0x{data[error.start]:02x}); save the file as UTF-8",
            line,
            column,
        ) from None
    return text.removeprefix("\ufeff")


def _check_events(text: str) -> None:
    """Refuse deep nesting before the (recursive) composer sees the document."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line, column = _mark(event)  # type: ignore[arg-type]
                raise YamlProblem(f"nesting is deeper than {MAX_DEPTH} levels", line, column)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _compose(text: str) -> Node | None:
    try:
        _check_events(text)
        return yaml.compose(text, Loader=yaml.SafeLoader)  # type: ignore[no-any-return]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = " ".join(str(part) for part in (error.context, error.problem) if part)
        if mark is None:
            raise YamlProblem(f"invalid YAML: {message}", 1, 1) from None
        raise YamlProblem(f"invalid YAML: {message}", mark.line + 1, mark.column + 1) from None
    except yaml.reader.ReaderError as error:
        line, column = _line_col(text, error.position)
        raise YamlProblem(
            f"invalid character #x{error.character:04x}"
            if isinstance(error.character, int)
            else f"invalid YAML: {error.reason}",
            line,
            column,
        ) from None
    except yaml.YAMLError as error:  # other parser errors carry no position
        raise YamlProblem(f"invalid YAML: {error}", 1, 1) from None


class _Walker:
    def __init__(self, located: Located, max_nodes: int) -> None:
        self.located = located
        self.max_nodes = max_nodes
        self.count = 0
        self.active: set[int] = set()  # nodes on the current path: a repeat is a cycle
        self.scalars = yaml.SafeLoader("")

    def walk(self, node: Node, path: Path_) -> Any:
        self.count += 1
        if self.count > self.max_nodes:
            line, column = _mark(node)
            raise YamlProblem(
                f"document expands to more than {self.max_nodes:,} values (aliases expanding "
                "too far?)",
                line,
                column,
            )
        self.located.values[path] = _mark(node)
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if id(node) in self.active:
            line, column = _mark(node)
            raise YamlProblem("recursive alias: a node contains itself", line, column)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self.check_tag(node, _SEQ)
                if node.flow_style:
                    self.located.flow.add(path)
                return [self.walk(child, (*path, i)) for i, child in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self.check_tag(node, _MAP)
                return self.mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise YamlProblem("unsupported YAML node", *_mark(node))

    @staticmethod
    def check_tag(node: Node, expected: str) -> None:
        if node.tag != expected:
            raise YamlProblem(f"unsupported YAML tag {node.tag!r}", *_mark(node))

    def scalar(self, node: ScalarNode) -> Any:
        if node.tag == _TIMESTAMP:
            return node.value
        if node.tag not in _SCALAR_TAGS:
            raise YamlProblem(f"unsupported YAML tag {node.tag!r}", *_mark(node))
        try:
            return self.scalars.construct_object(node, deep=True)
        # SafeConstructor reports bad explicitly-tagged values (`!!int abc`, a 5000-digit
        # integer) with whichever builtin error int()/float()/dict lookup raised.
        except (
            yaml.YAMLError,
            ValueError,
            LookupError,
            TypeError,
            OverflowError,
            AttributeError,
        ) as error:
            kind = node.tag.rsplit(":", 1)[-1]
            raise YamlProblem(
                f"cannot read {node.value[:40]!r} as {kind}: {str(error)[:100]}", *_mark(node)
            ) from None

    def mapping(self, node: MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlProblem("merge keys (<<) are not supported", *_mark(key_node))
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a collection"
                raise YamlProblem(
                    f"mapping keys must be text; quote {shown!r} if it is meant as a key",
                    *_mark(key_node),
                )
            key = key_node.value
            if key in result:
                first = self.located.keys[(*path, key)]
                raise YamlProblem(
                    f"duplicate key {key!r} (first given at line {first[0]})", *_mark(key_node)
                )
            self.located.keys[(*path, key)] = _mark(key_node)
            result[key] = self.walk(value_node, (*path, key))
        return result


def load(data: bytes, *, max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES) -> Located:
    """Parse one YAML document from `data`; an empty document gives `None` as its value."""
    text = decode(data, max_bytes=max_bytes)
    node = _compose(text)
    located = Located(None)
    if node is None:
        return located
    located.value = _Walker(located, max_nodes).walk(node, ())
    return located


def read_file(
    path: str | Path, *, what: str, error: type[InputError] = InputError
) -> Any:
    """The plain values of the YAML (or JSON) file at `path`, read as `load` reads a
    constitution: every YAML file judge takes in (thresholds, category maps) comes
    through here, so none is parsed with less care than a policy.

    Args:
        what: the kind of file, for messages ("thresholds file").
        error: the InputError subclass to raise (DatasetError for data set files).

    Raises:
        `error`, naming the file and, where the problem has one, its line and column.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror or problem}") from None
    try:
        return load(data).value
    except YamlProblem as problem:
        where = f"{path}:{problem.line}:{problem.column}" if problem.line else str(path)
        raise error(f"{where}: {what}: {problem.message}") from None
