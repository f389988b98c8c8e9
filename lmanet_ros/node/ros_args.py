"""The ROS arguments of a command line (``--ros-args ... [--]``), checked before rcl parses them.

rcl answers a malformed ROS argument with two lines, its own log line and an error in its lexer's
words (``-p foo``: "Expected lexeme type (22) not found, search ended at index 3"), and takes some
broken parameter files without a word (an empty file, a scalar, binary data: no parameters at
all). :func:`check` refuses both kinds with one :class:`RosArgumentError` whose message names the
argument or file and the problem, e.g. ``--params-file /tmp/p.yaml: 'x' (line 2) is not under
ros__parameters: expected NODE_NAME: ros__parameters: NAME: VALUE``.

What is checked:

- ``-p``/``--param [NODE:]NAME:=VALUE``: the rule is there, NAME is tokens of letters, digits and
  '_' joined by '.' (or '/'), VALUE is one YAML value: a scalar or a list of scalars of one type;
- ``-r``/``--remap [NODE:]FROM:=TO``: both names there and valid ROS names, ``__ns`` absolute,
  ``__node`` one token;
- ``--params-file FILE``: :func:`check_params_file`;
- ``--log-level [NAME:=]LEVEL``: a severity rcl knows; ``-e``/``--enclave``,
  ``--log-config-file``, ``--log-file-name``: a value follows.

Arguments this module does not know are left to rcl and rclpy (a newer rcl may know them).
Nothing here imports rclpy; PyYAML is imported when a file or value is checked.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterable

__all__ = ["RosArgumentError", "check", "check_params_file", "LOG_LEVELS"]

#: Severities of ``--log-level`` (any case), as rcl accepts them.
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal", "unset")
#: The key under a node name that holds its parameters.
ROS_PARAMETERS = "ros__parameters"
#: The shape a parameter file must have, in words.
FILE_SHAPE = "expected NODE_NAME: ros__parameters: NAME: VALUE"

_RULES = {"-p": "NAME:=VALUE", "--param": "NAME:=VALUE", "-r": "FROM:=TO",
          "--remap": "FROM:=TO", "--params-file": "FILE", "--log-level": "LEVEL",
          "-e": "ENCLAVE", "--enclave": "ENCLAVE", "--log-config-file": "FILE",
          "--log-file-name": "NAME"}
#: One token of a ROS name: a letter or '_' first (rcl refuses a leading '__').
_TOKEN = re.compile(r"^(?!__)[A-Za-z_][A-Za-z0-9_]*$")
#: A parameter name as rcl's ``-p`` takes it: tokens joined by '.', where '/' may stand around
#: a dot or for it ('qos_overrides./image.subscription.depth').
_PARAM_NAME = re.compile(r"^/*{t}(?:(?:/+\.?/*|\./*){t})*/*$".format(
    t=r"(?!__)[A-Za-z_][A-Za-z0-9_]*"))
_YAML_KINDS = {"tag:yaml.org,2002:bool": "boolean", "tag:yaml.org,2002:int": "integer",
               "tag:yaml.org,2002:float": "double"}


class RosArgumentError(ValueError):
    """A ROS argument or parameter file rcl would refuse or misread; the message is one line."""


def _sections(argv: Iterable[str]) -> list[list[str]]:
    """The ROS arguments of ``argv``: each ``--ros-args`` up to ``--``, the next ``--ros-args``
    or the end."""
    sections: list[list[str]] = []
    current: list[str] | None = None
    for arg in argv:
        if arg == "--ros-args":
            current = []
            sections.append(current)
        elif arg == "--":
            current = None
        elif current is not None:
            current.append(arg)
    return sections


def check(argv: Iterable[str]) -> None:
    """Check the ROS arguments of ``argv`` (a whole command line, program name included).

    Raises:
        RosArgumentError: the first malformed argument, in one line.
    """
    for section in _sections(argv):
        index = 0
        while index < len(section):
            flag = section[index]
            if flag not in _RULES:  # a flag rcl knows and this module does not, or a stray word
                index += 1
                continue
            if index + 1 >= len(section):
                raise RosArgumentError(f"{flag} ends the ROS arguments: expected "
                                       f"{flag} {_RULES[flag]}")
            _check_one(flag, section[index + 1])
            index += 2


def _check_one(flag: str, value: str) -> None:
    """Check one ``flag value`` pair of the ROS arguments."""
    if flag in ("-p", "--param"):
        _check_param_rule(flag, value)
    elif flag in ("-r", "--remap"):
        _check_remap_rule(flag, value)
    elif flag == "--params-file":
        check_params_file(value)
    elif flag == "--log-level":
        level = value.split(":=", 1)[-1]
        if level.lower() not in LOG_LEVELS:
            raise RosArgumentError(f"--log-level {value}: '{level}' is not a log level (expected "
                                   f"{', '.join(LOG_LEVELS)})")
    elif value.startswith("-") or not value.strip():
        raise RosArgumentError(f"{flag} {value}: expected {flag} {_RULES[flag]}")


#: Prefixes of a remap's left side that rcl accepts (a topic-only or service-only remap).
_SCHEMES = ("rostopic://", "rosservice://")


def _split_rule(flag: str, rule: str) -> tuple[str, str]:
    """``[NODE:]LEFT:=RIGHT`` -> (LEFT, RIGHT), both present."""
    if ":=" not in rule:
        raise RosArgumentError(f"{flag} {rule}: no ':=' (expected {flag} {_RULES[flag]})")
    left, right = rule.split(":=", 1)
    for scheme in _SCHEMES:  # rcl's: a remap of topics only or services only
        left = left.replace(scheme, "", 1)
    node, colon, left = left.rpartition(":")
    if colon and not _TOKEN.match(node):
        raise RosArgumentError(f"{flag} {rule}: '{node}' before ':' is not a node name (one "
                               f"token: {flag} NODE:{_RULES[flag]} applies to that node only)")
    what = "parameter name" if flag in ("-p", "--param") else "name to remap"
    if not left.strip():
        raise RosArgumentError(f"{flag} {rule}: the {what} is empty (expected {flag} "
                               f"{_RULES[flag]})")
    if not right or (not right.strip() and flag not in ("-p", "--param")):
        missing = "value" if flag in ("-p", "--param") else "new name"
        raise RosArgumentError(f"{flag} {rule}: the {missing} after ':=' is empty")
    return left, right


def _check_param_rule(flag: str, rule: str) -> None:
    name, value = _split_rule(flag, rule)
    if not _PARAM_NAME.match(name):
        raise RosArgumentError(f"{flag} {rule}: '{name}' is not a parameter name (letters, "
                               f"digits and '_' in parts joined by '.', each starting with a "
                               f"letter or '_')")
    import yaml
    try:
        node = yaml.compose(value, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise RosArgumentError(f"{flag} {rule}: the value is not YAML "
                               f"({_yaml_problem(exc)})") from None
    problem = "the value is a mapping: a value is a scalar or a list" if isinstance(
        node, yaml.MappingNode) else _value_problem(node, name) if node is not None else None
    if problem:
        raise RosArgumentError(f"{flag} {rule}: {problem}")


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a ROS name ('/a/b', 'a/b', '~/a'); None if it is."""
    body = name[2:] if name.startswith("~/") else name[1:] if name.startswith("/") else name
    if all(_TOKEN.match(part) for part in body.split("/")):
        return None
    return (f"'{name}' is not a ROS name (tokens of letters, digits and '_', each starting "
            f"with a letter or '_', joined by '/')")


def _check_remap_rule(flag: str, rule: str) -> None:
    source, target = _split_rule(flag, rule)
    if source == "__ns":
        problem = None if target.startswith("/") and (target == "/" or not _name_problem(
            target)) else f"the namespace '{target}' must be an absolute ROS name, e.g. /robot1"
    elif source in ("__node", "__name"):
        problem = None if _TOKEN.match(target) else \
            f"the node name '{target}' must be one token of letters, digits and '_'"
    else:
        problem = _name_problem(source) or _name_problem(target)
    if problem:
        raise RosArgumentError(f"{flag} {rule}: {problem}")


# ------------------------------------------------------------------------------ parameter files
def _yaml_problem(exc: Exception) -> str:
    """A PyYAML error in one line: 'expected ..., but found ... (line 3, column 5)'."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    if context:
        problem = f"{context}, {problem}"
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def _line(node: Any) -> int:
    return node.start_mark.line + 1


def _kind(node: Any) -> str:
    """The ROS type rcl reads a YAML scalar as: boolean, integer, double or string."""
    return _YAML_KINDS.get(node.tag, "string")


def _value_problem(node: Any, name: str) -> str | None:
    """Why the YAML ``node`` is no value of parameter ``name`` (None: it is one). Values: a
    scalar, a list of scalars of one type, or a mapping of further names."""
    import yaml
    if isinstance(node, yaml.ScalarNode):
        if node.tag == "tag:yaml.org,2002:null" and node.value == "":
            return f"parameter '{name}' (line {_line(node)}) has no value"
        return None
    if isinstance(node, yaml.SequenceNode):
        if not all(isinstance(item, yaml.ScalarNode) for item in node.value):
            return (f"parameter '{name}' (line {_line(node)}) is a list of lists or mappings: "
                    f"a list holds booleans, integers, doubles or strings")
        kinds = sorted({_kind(item) for item in node.value})
        if len(kinds) > 1:
            return (f"parameter '{name}' (line {_line(node)}) mixes {' and '.join(kinds)} "
                    f"values in one list: a list holds values of one type")
        return None
    return _parameters_problem(node, name + ".")


def _key(node: Any, what: str) -> str:
    """The text of a mapping key; a RosArgumentError for a key that is not a name."""
    import yaml
    if not isinstance(node, yaml.ScalarNode) or not node.value.strip() or \
            node.tag == "tag:yaml.org,2002:null":
        raise RosArgumentError(f"the key at line {_line(node)} is not a {what}")
    return node.value


def _parameters_problem(node: Any, prefix: str) -> str | None:
    """Why the mapping ``node`` (under ros__parameters, names starting with ``prefix``) does not
    hold parameters; None if it does."""
    for key_node, value_node in node.value:
        problem = _value_problem(value_node, prefix + _key(key_node, "parameter name"))
        if problem:
            return problem
    return None


def _nodes_problem(node: Any, path: str) -> str | None:
    """Why the mapping ``node`` of node names (below ``path``: '' at the top) does not lead to
    ``ros__parameters`` mappings on every branch; None if it does."""
    import yaml
    if not isinstance(node, yaml.MappingNode) or not node.value:
        if not path:
            held = "a list" if isinstance(node, yaml.SequenceNode) else "a single value" \
                if isinstance(node, yaml.ScalarNode) else "an empty mapping"
            return f"holds {held}, not node names ({FILE_SHAPE})"
        return f"'{path}' (line {_line(node)}) holds no {ROS_PARAMETERS} ({FILE_SHAPE})"
    for key_node, value_node in node.value:
        key = _key(key_node, "node name")
        if key == ROS_PARAMETERS:
            if not path:
                return (f"{ROS_PARAMETERS} (line {_line(key_node)}) has no node name above it "
                        f"({FILE_SHAPE}; /** for every node)")
            if not isinstance(value_node, yaml.MappingNode):
                return (f"{ROS_PARAMETERS} of '{path}' (line {_line(key_node)}) holds no "
                        f"NAME: VALUE pairs")
            problem = _parameters_problem(value_node, "")
        elif not isinstance(value_node, yaml.MappingNode):
            return (f"'{key}' (line {_line(key_node)}) is not under {ROS_PARAMETERS}: "
                    f"{FILE_SHAPE}")
        else:
            problem = _nodes_problem(value_node, f"{path}/{key}" if path else key)
        if problem:
            return problem
    return None


def check_params_file(path: str) -> None:
    """Check that ``path`` is a readable YAML parameter file of rcl's shape: node names (or
    ``/**``), possibly nested under namespaces, each holding ``ros__parameters``: a mapping of
    parameter names to values (:func:`_value_problem`).

    Raises:
        RosArgumentError: ``--params-file PATH: <problem>`` (missing, a directory, unreadable,
            not YAML, empty, of another shape).
    """
    import yaml

    def refused(problem: str) -> RosArgumentError:
        return RosArgumentError(f"--params-file {path}: {problem}")

    if not path.strip() or path.startswith("-"):
        raise RosArgumentError(f"--params-file {path}: expected --params-file FILE")
    if os.path.isdir(path):
        raise refused("is a directory, not a parameter file")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise refused("no such file") from None
    except OSError as exc:
        raise refused(f"cannot be read ({exc.strerror or exc})") from None
    try:
        root = yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise refused(f"is not YAML: {_yaml_problem(exc)}") from None
    if root is None:
        raise refused(f"is empty ({FILE_SHAPE})")
    try:
        problem = _nodes_problem(root, "")
    except RosArgumentError as exc:
        raise refused(str(exc)) from None
    if problem:
        raise refused(problem)
