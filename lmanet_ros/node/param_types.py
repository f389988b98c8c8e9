"""Parameter values of the wrong ROS type or out of range: converted where nothing is lost, else
refused with a reason in words.

rclpy refuses a value of another ROS type than the declared one with "Wrong parameter type,
expected '3' got '2'" (at declaration: an exception). Here an integer for a double parameter
(``-p memory.max_gap:=2``, ``max_gap: 2`` in a file, ``ros2 param set /lmanet memory.max_gap 2``)
becomes that double, and an empty list (which has no ROS type: ``cameras:=[]``, ``ros2 param
set /lmanet cameras "[]"``) becomes the parameter's empty list; any other mismatch, and a number
outside the parameter's range, is refused with a reason that names the parameter, the type
expected and the value given, e.g. "memory.stride must be an integer (got the string 'abc')".

:class:`TypedParameters` applies :func:`coerce` to a node's parameters of :data:`SPECS`: to the
command-line and file overrides when they are declared, and to every set (``set_parameters``,
``set_parameters_atomically``, hence the SetParameters services and ``ros2 param set``), which
it also refuses, with the reason, for a name the node does not have: empty, blank or undeclared.
"""
from __future__ import annotations

import math
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

from lmanet_ros.node.loading import StartupError
from lmanet_ros.node.params import SPEC_BY_NAME, ParamSpec

__all__ = ["TypedParameters", "coerce", "expected_type", "shown", "type_name", "type_words"]

Type = Parameter.Type

#: What a value of each ROS type is called in a reason.
_NOUNS = {
    Type.BOOL: "boolean", Type.INTEGER: "integer", Type.DOUBLE: "double", Type.STRING: "string",
    Type.BYTE_ARRAY: "list of bytes", Type.BOOL_ARRAY: "list of booleans",
    Type.INTEGER_ARRAY: "list of integers", Type.DOUBLE_ARRAY: "list of doubles",
    Type.STRING_ARRAY: "list of strings",
}
#: The array types.
_ARRAYS = frozenset({Type.BYTE_ARRAY, Type.BOOL_ARRAY, Type.INTEGER_ARRAY, Type.DOUBLE_ARRAY,
                     Type.STRING_ARRAY})
#: Items of a list shown in a reason; the rest is elided.
_SHOWN_ITEMS = 6


def expected_type(spec: ParamSpec) -> Parameter.Type:
    """The ROS type of ``spec`` (that of its default, or the type it declares)."""
    if isinstance(spec.default, Type):
        return spec.default
    return Type.from_parameter_value(spec.default)


def type_name(kind: Parameter.Type) -> str:
    """What a value of ``kind`` is called: 'integer', 'double', 'list of strings'."""
    return _NOUNS[kind]


def type_words(kind: Parameter.Type) -> str:
    """``kind`` with its article: 'an integer', 'a list of strings', 'a boolean, true or false'."""
    noun = type_name(kind)
    article = "an" if noun[0] in "aeiou" else "a"
    return f"{article} {noun}" + (", true or false" if kind == Type.BOOL else "")


def shown(value: Any, items: int = _SHOWN_ITEMS) -> str:
    """A value as a user types it: 'abc' in quotes, true, 2.5, [1, 2, ...] (the first ``items``
    of a list)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)):
        return repr(value)
    first = [shown(item) for item in list(value)[:items]]
    more = ", ..." if len(value) > items else ""
    return f"[{', '.join(first)}{more}]"


def _given(param: Parameter) -> str:
    """The value given, with its type: "the string 'abc'", 'the integer 2', 'an empty list'."""
    if param.type_ in _ARRAYS and not len(param.value):
        return "an empty list"
    return f"the {type_name(param.type_)} {shown(param.value)}"


def _range_reason(spec: ParamSpec, value: Any) -> str | None:
    """Why a number of ``spec``'s type is outside its inclusive range (None: inside, or none)."""
    bounds = spec.float_range if isinstance(value, float) else spec.int_range
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isnan(value) and bounds[0] <= value <= bounds[1]:
        return None
    return (f"{spec.name} must be {type_words(expected_type(spec))} in "
            f"[{bounds[0]}, {bounds[1]}] (got {shown(value)})")


def coerce(spec: ParamSpec, param: Parameter) -> tuple[Parameter, str | None]:
    """``param`` as a value of ``spec``: (the parameter to set, None), where an integer for a
    double becomes that double and an empty list the empty list of ``spec``'s type, or
    (``param``, the reason it is refused: another type, a number out of range). A parameter
    without a value (NOT_SET: an undeclaration) is left to rclpy."""
    kind = expected_type(spec)
    if param.type_ == Type.INTEGER and kind == Type.DOUBLE:
        param = Parameter(param.name, Type.DOUBLE, float(param.value))
    elif param.type_ in _ARRAYS and kind in _ARRAYS and not len(param.value):
        param = Parameter(param.name, kind, [])
    elif param.type_ not in (kind, Type.NOT_SET):
        return param, f"{spec.name} must be {type_words(kind)} (got {_given(param)})"
    return param, _range_reason(spec, param.value)


class TypedParameters:
    """Mixin of an :class:`rclpy.node.Node` (before it in the bases) whose parameters include
    those of :data:`~lmanet_ros.node.params.SPECS`: their values pass :func:`coerce` first.

    A refused set answers ``successful=False`` with the reason (and logs it); read-only
    parameters are left to rclpy, which refuses any change of them. So is a parameter the node
    does not have, with its name: rclpy takes an empty name without a word (its check of
    undeclared names skips falsy ones), and names none of the others ("undeclared
    parameter(s): []").
    """

    def declare_spec(self, spec: ParamSpec, descriptor: Any) -> Parameter:
        """Declare ``spec`` with ``descriptor``; its override (command line, file), converted.

        Raises:
            StartupError: the override is of another type or out of range (the reason).
        """
        value, ignore_override = spec.default, False
        override = (getattr(self, "_parameter_overrides", None) or {}).get(spec.name)
        if override is not None:
            if override.type_ == Type.NOT_SET:  # rcl reads `[]` as no value
                override = Parameter(spec.name, Type.BYTE_ARRAY, [])
            param, reason = coerce(spec, override)
            if reason:
                raise StartupError(f"invalid parameter: {reason}")
            value, ignore_override = param.value, param is not override
        if isinstance(value, list) and not value:  # no ROS type: declare the type, then set []
            value = expected_type(spec)
        declared = self.declare_parameter(spec.name, value, descriptor,
                                          ignore_override=ignore_override)
        if declared.type_ == Type.NOT_SET:  # declared by its type alone
            self.set_parameters([Parameter(spec.name, expected_type(spec), [])])
            declared = self.get_parameter(spec.name)
        return declared

    def set_parameters(self, parameter_list: list[Parameter]) -> list[SetParametersResult]:
        """Set each parameter on its own (:meth:`set_parameters_atomically`), in order."""
        return [self.set_parameters_atomically([param]) for param in parameter_list]

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        """Set the parameters all together once each names a parameter of the node
        (:meth:`unknown_name`) and passes :func:`coerce` (read-only ones are rclpy's to refuse),
        else none of them: the first reason."""
        checked = []
        for param in parameter_list:
            reason = self.unknown_name(param.name)
            if reason:
                return self.refuse(reason)
            spec = SPEC_BY_NAME.get(param.name)
            if spec is not None and not spec.read_only:
                param, reason = coerce(spec, param)
                if reason:
                    return self.refuse(reason)
            checked.append(param)
        return super().set_parameters_atomically(checked)

    def unknown_name(self, name: str) -> str | None:
        """Why ``name`` names no parameter of this node (empty, blank, not declared); None
        when it does (or the node takes undeclared parameters)."""
        if not name.strip():
            return f"a parameter name cannot be empty or blank (got {name!r})"
        if self.has_parameter(name) or getattr(self, "_allow_undeclared_parameters", False):
            return None
        return (f"{self.get_fully_qualified_name()} has no parameter '{name}' "
                f"(`ros2 param list {self.get_fully_qualified_name()}` lists them)")

    def refuse(self, reason: str) -> SetParametersResult:
        """Log a refused parameter change and give its result."""
        self.get_logger().warning(f"parameter change refused: {reason}")
        return SetParametersResult(successful=False, reason=reason)
