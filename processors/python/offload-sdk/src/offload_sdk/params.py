"""Files and parameters a processor declares in ``--describe`` (PROTOCOL.md, section 10.1).

``files`` says how a file becomes the input and the result a file, so that a host runs the
processor on a folder; each parameter is a top-level field of the input that a form can set.
The SDK checks every declared parameter present in an input before the function runs and
refuses a wrong one as invalid input, naming it and what it takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence


@dataclass(frozen=True)
class Files:
    """How a file becomes the input (its bytes in ``input_field``) and the result a file (the
    bytes in ``output_field``, named with ``output_extension``, or with the value of the
    choice parameter ``output_extension_parameter`` when given)."""

    input_field: str
    accepts: Sequence[str]
    output_field: str
    output_extension: str
    output_extension_parameter: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "input_field": self.input_field,
            "accepts": [a.lower().lstrip(".") for a in self.accepts],
            "output_field": self.output_field,
            "output_extension": self.output_extension,
        }
        if self.output_extension_parameter is not None:
            out["output_extension_parameter"] = self.output_extension_parameter
        return out


@dataclass(frozen=True)
class Parameter:
    """One parameter; make it with :meth:`integer`, :meth:`number`, :meth:`boolean`,
    :meth:`string` or :meth:`choice`."""

    name: str
    type: str
    default: Any
    label: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: List[str] = field(default_factory=list)

    @classmethod
    def integer(cls, name: str, default: int, label: str, minimum: Optional[int] = None,
                maximum: Optional[int] = None) -> "Parameter":
        return cls(name, "integer", default, label, minimum, maximum)

    @classmethod
    def number(cls, name: str, default: float, label: str, minimum: Optional[float] = None,
               maximum: Optional[float] = None) -> "Parameter":
        return cls(name, "number", default, label, minimum, maximum)

    @classmethod
    def boolean(cls, name: str, default: bool, label: str) -> "Parameter":
        return cls(name, "boolean", default, label)

    @classmethod
    def string(cls, name: str, default: str, label: str) -> "Parameter":
        return cls(name, "string", default, label)

    @classmethod
    def choice(cls, name: str, choices: Sequence[str], default: str, label: str) -> "Parameter":
        return cls(name, "choice", default, label, choices=list(choices))

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "default": self.default,
        }
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.type == "choice":
            out["choices"] = list(self.choices)
        return out

    def allowed(self) -> str:
        """What it takes, for messages: "an integer from 1 to 100", "one of png, jpeg"."""
        if self.type in ("integer", "number"):
            noun = "an integer" if self.type == "integer" else "a number"
            if self.minimum is not None and self.maximum is not None:
                return f"{noun} from {self.minimum} to {self.maximum}"
            if self.minimum is not None:
                return f"{noun} of at least {self.minimum}"
            if self.maximum is not None:
                return f"{noun} of at most {self.maximum}"
            return noun
        if self.type == "boolean":
            return "true or false"
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        return "a text"

    def problem(self, value: Any) -> Optional[str]:
        """Why ``value`` is wrong for this parameter, or None."""
        ok: bool
        if self.type == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool) and self._within(value)
        elif self.type == "number":
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value) and self._within(value))
        elif self.type == "boolean":
            ok = isinstance(value, bool)
        elif self.type == "choice":
            ok = isinstance(value, str) and value in self.choices
        else:
            ok = isinstance(value, str)
        if ok:
            return None
        return f"parameter {self.name}: expected {self.allowed()}, got {value!r}"

    def _within(self, value: float) -> bool:
        return ((self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum))


def check_input(parameters: Sequence[Parameter], inp: Any) -> Optional[str]:
    """The first problem with a declared parameter present in ``inp``, or None."""
    if not isinstance(inp, dict):
        return None
    for parameter in parameters:
        if parameter.name in inp:
            problem = parameter.problem(inp[parameter.name])
            if problem is not None:
                return problem
    return None
