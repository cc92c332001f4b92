"""The processor interface: one small step of a pipeline that turns named values into others.

A value is a numpy array whose first dimension is the batch, or a list with one array per
batch row (decoded images, which differ in size until they are resized).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from inferbridge.errors import ModelLoadError

__all__ = ["Array", "Params", "Processor", "Value", "param", "rows_of"]

Array = np.ndarray[Any, Any]
Value = Array | list[Array]
Params = dict[str, Any]
_T = TypeVar("_T")


class Processor(abc.ABC):
    """A pipeline step without a model: `__call__` maps its input values to its outputs.

    Subclasses read their settings from `params` (the step's keys in config.yaml) in
    `__init__`, raising ModelLoadError for a bad one; files they name (a labels file, a
    tokenizer) are relative to the pipeline's version directory.
    """

    #: The name used in a step (`processor: decode_image`).
    name: ClassVar[str]
    #: How many values the step takes and returns (ranges: minimum, maximum).
    arity: ClassVar[tuple[int, int]] = (1, 1)
    returns: ClassVar[tuple[int, int]] = (1, 1)

    def __init__(self, params: Params, model_dir: Path) -> None:
        self.params = params
        self.model_dir = model_dir

    @abc.abstractmethod
    def __call__(self, *values: Value) -> tuple[Value, ...]:
        """Run the step over a whole batch."""


def param(params: Params, key: str, kind: type[_T], default: _T, step: str = "") -> _T:
    """`params[key]` converted to `kind`, else `default`; ModelLoadError names the key."""
    if key not in params or params[key] is None:
        return default
    value = params[key]
    try:
        if kind is bool and not isinstance(value, bool):
            raise TypeError("expected true or false")
        if kind in (list, tuple) and not isinstance(value, list | tuple):
            raise TypeError("expected a list")
        return kind(value)  # type: ignore[call-arg]
    except (TypeError, ValueError) as exc:
        where = f"step '{step}': " if step else ""
        raise ModelLoadError(
            f"{where}parameter {key}={value!r} is not a valid {kind.__name__}: {exc}"
        ) from None


def rows_of(value: Value) -> Sequence[Array]:
    """The batch rows of a value (a list as is, an array split along its first dimension)."""
    return value if isinstance(value, list) else list(value)
