"""Load the site configuration from YAML, and say exactly what is wrong when it cannot be used.

:func:`load_config` reads one YAML file (or the default embedded in the package),
turns it into plain data while remembering where every key and list item sits in
the file, and validates it with :class:`vms.config.Config`. Whatever goes wrong
becomes a :class:`ConfigError` listing one :class:`ConfigProblem` per mistake, each
naming the file, line and column, what is wrong, and how to fix it: this is what an
operator reads when the service refuses to start. Turning pydantic's errors into
those sentences is :mod:`vms.config_messages`' job.

Blocking file I/O: call it at start-up (or from a thread), not on a running event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from vms.config import Config
from vms.config_checks import Inconsistency, loc_text, reference_problems
from vms.config_messages import Loc, Position, explain, explain_inconsistency

DEFAULT_CONFIG_NAME = "default_config.yaml"
MAX_PROBLEMS = 10
_EXAMPLE_HINT = "the embedded default (vms/default_config.yaml) is a complete, commented example"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One mistake in a configuration file and where it is."""

    file: str
    line: int | None
    """1-based, or None when the problem is the file as a whole."""
    column: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.message}"
        column = f":{self.column}" if self.column is not None else ""
        return f"{self.file}:{self.line}{column}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used. ``str()`` gives one line per problem (at most ten)."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        lines = [str(problem) for problem in self.problems[:MAX_PROBLEMS]]
        hidden = len(self.problems) - MAX_PROBLEMS
        if hidden > 0:
            lines.append(f"... and {hidden} more problem{'s' if hidden > 1 else ''}; fix these first")
        super().__init__("\n".join(lines))


def default_config_text() -> str:
    """The YAML text of the configuration embedded in the package."""
    return files("vms").joinpath(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")


def load_config(path: Path | None = None) -> Config:
    """Read and validate a configuration file; ``None`` means the embedded default.

    Raises :class:`ConfigError` naming every problem found (file, line, what, fix).
    """
    if path is None:
        return parse_config(default_config_text(), DEFAULT_CONFIG_NAME)
    return parse_config(_read(path), str(path))


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate configuration YAML given as text; ``source`` names it in messages."""
    root = _compose(text, source)
    tree = _Tree(source)
    data = tree.build(root, ())
    problems = list(tree.problems)
    if not isinstance(data, dict):
        found = "a list" if isinstance(data, list) else f"the single value {str(data)[:40]!r}"
        raise ConfigError(
            [
                _at(
                    source,
                    (root.start_mark.line + 1, root.start_mark.column + 1),
                    "the top level must be a mapping of sections (server:, webrtc:, ingest:, pictures:, "
                    f"centres:, halls:, cameras:), found {found}; {_EXAMPLE_HINT}",
                )
            ]
        )
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        for error in errors:
            if not any(error["loc"][: len(loc)] == loc for loc in tree.unreadable):
                problems += [
                    _at(source, where, message) for where, message in explain(error, data, tree.positions)
                ]
        if not any(error["type"] == "config_inconsistent" for error in errors):
            # Config's own cross-check runs only once every field is valid: check references now.
            for problem in _references(data):
                problems.append(_at(source, *explain_inconsistency(problem, data, tree.positions)))
    else:
        if not problems:
            return config
    problems.sort(key=lambda problem: (problem.line or 0, problem.column or 0))
    raise ConfigError(problems)


def _references(data: dict[str, Any]) -> list[Inconsistency]:
    def items(section: str) -> list[Any]:
        value = data.get(section)
        return value if isinstance(value, list) else []

    def get(item: Any, key: str) -> Any:
        return item.get(key) if isinstance(item, dict) else None

    return reference_problems(
        [get(hall, "id") for hall in items("halls")],
        [(get(camera, "id"), get(camera, "hall")) for camera in items("cameras")],
        [(get(centre, "id"), get(centre, "halls")) for centre in items("centres")],
    )


def _read(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        message = (
            f"no such file (looked for {path.absolute()}); check the path, or start from {_EXAMPLE_HINT}"
        )
        raise ConfigError([ConfigProblem(str(path), None, None, message)]) from None
    except IsADirectoryError:
        message = "is a directory; give the path of the YAML file itself"
        raise ConfigError([ConfigProblem(str(path), None, None, message)]) from None
    except PermissionError:
        message = "permission denied; make the file readable by the user running the service"
        raise ConfigError([ConfigProblem(str(path), None, None, message)]) from None
    except OSError as err:
        message = f"cannot be read ({err.strerror or err}); check the path"
        raise ConfigError([ConfigProblem(str(path), None, None, message)]) from err
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        message = f"byte 0x{raw[err.start]:02x} is not UTF-8; save the file as UTF-8 text"
        raise ConfigError([ConfigProblem(str(path), line, None, message)]) from None


def _compose(text: str, source: str) -> Node:
    """The YAML node tree of ``text``; ConfigError for a syntax error or an empty file."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        raise ConfigError([_syntax_problem(source, err)]) from None
    except yaml.YAMLError as err:
        raise ConfigError([ConfigProblem(source, None, None, f"not valid YAML: {err}")]) from None
    finally:
        loader.dispose()
    if root is None:
        message = f"the file is empty (or only comments); write at least halls: and cameras:, {_EXAMPLE_HINT}"
        raise ConfigError([ConfigProblem(source, 1, 1, message)])
    return root


_SYNTAX_HINTS = (
    ("'\\t'", "indent with spaces, never tabs"),
    (
        "mapping values are not allowed",
        "a value that contains ': ' must be quoted, or a line is mis-indented",
    ),
    ("could not find expected ':'", "a line lacks its ':' or is indented differently from its neighbours"),
    ("expected <block end>", "this line is indented differently from the lines above it"),
    ("found undefined alias", "define the &anchor before using *it"),
    ("expected a single document", "remove the second '---': a config file holds one document"),
    ("found unexpected end of stream", "a quote or bracket is not closed"),
)


def _syntax_problem(source: str, err: yaml.MarkedYAMLError) -> ConfigProblem:
    mark = err.problem_mark or err.context_mark
    what = err.problem or "invalid YAML"
    if err.context and err.context_mark is not None and err.problem_mark is not None:
        what = f"{what} ({err.context} at line {err.context_mark.line + 1})"
    hint = next((h for key, h in _SYNTAX_HINTS if key in str(err)), "check the indentation and quoting")
    message = f"YAML syntax error: {what}; {hint}"
    if mark is None:
        return ConfigProblem(source, None, None, message)
    return ConfigProblem(source, mark.line + 1, mark.column + 1, message)


def _at(source: str, position: Position | None, message: str) -> ConfigProblem:
    if position is None:
        return ConfigProblem(source, None, None, message)
    return ConfigProblem(source, position[0], position[1], message)


class _Tree:
    """Plain data from a YAML node tree, with the position of every key and list item."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.positions: dict[Loc, Position] = {}
        self.problems: list[ConfigProblem] = []
        self._constructor = yaml.SafeLoader("")
        self.unreadable: list[Loc] = []
        """Places whose value could not be read; validation errors there are noise."""
        self._active: set[int] = set()
        self._flattened: set[int] = set()

    def build(self, node: Node, loc: Loc) -> Any:
        self.positions.setdefault(loc, _position(node))
        if id(node) in self._active:
            self._problem(node, "this list or mapping contains an alias of itself; remove that *alias")
            self.unreadable.append(loc)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, loc)
            if isinstance(node, SequenceNode):
                return [self.build(item, (*loc, index)) for index, item in enumerate(node.value)]
            return self._scalar(node, loc)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        if id(node) in self._flattened:  # an alias of a mapping already checked and merged
            return self._entries(node, loc)
        self._flattened.add(id(node))
        first_seen: dict[str, Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            earlier = first_seen.setdefault(key_node.value, key_node)
            if earlier is not key_node:
                self._problem(
                    key_node,
                    f"duplicate key {key_node.value!r} (first at {_where(earlier, key_node)}); "
                    "YAML would silently keep only the last one, so remove or rename one of them",
                )
        try:
            self._constructor.flatten_mapping(node)  # resolves '<<' merge keys; explicit keys win
        except yaml.MarkedYAMLError as err:
            self.problems.append(_syntax_problem(self.source, err))
        return self._entries(node, loc)

    def _entries(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._problem(key_node, "a key must be plain text, not a list or a mapping")
                continue
            key = str(key_node.value)
            self.positions[(*loc, key)] = _position(key_node)
            result[key] = self.build(value_node, (*loc, key))
        return result

    def _scalar(self, node: Node, loc: Loc) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as err:
            self.problems.append(_syntax_problem(self.source, err))
        except (ValueError, TypeError):
            kind = node.tag.rpartition(":")[2]
            where = f"{loc_text(loc)}: " if loc else ""
            self._problem(node, f"{where}cannot read this value as {kind}; fix it or remove the !!{kind} tag")
        self.unreadable.append(loc)
        return None

    def _problem(self, node: Node, message: str) -> None:
        line, column = _position(node)
        self.problems.append(ConfigProblem(self.source, line, column, message))


def _where(earlier: Node, later: Node) -> str:
    line, column = _position(earlier)
    return f"line {line}, column {column}" if line == _position(later)[0] else f"line {line}"


def _position(node: Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)
