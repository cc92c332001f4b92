"""Hypothesis strategies shared by the codec property tests: tensors of every OIP datatype
and shape, and JSON values of any shape."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inferbridge.protocol.datatypes import DATATYPES, dtype_of

__all__ = ["BOUNDED", "json_values", "shapes", "tensors"]

#: Bounded and deterministic, so that CI runs the same examples in seconds every time.
BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def tensors(
    draw: st.DrawFn, *, finite: bool = False, text: bool = False, datatypes: Any = None
) -> tuple[str, np.ndarray[Any, Any]]:
    """(datatype, array) for any datatype and shape; `finite` leaves out NaN and infinities
    (JSON cannot carry them), `text` makes BYTES elements UTF-8 text (JSON carries strings)."""
    datatype = draw(st.sampled_from(datatypes or DATATYPES))
    shape = draw(shapes)
    if datatype == "BYTES":
        count = int(np.prod(shape)) if shape else 1
        element = st.text(max_size=8).map(str.encode) if text else st.binary(max_size=8)
        items = draw(st.lists(element, min_size=count, max_size=count))
        array = np.empty(count, dtype=object)
        array[:] = items
        return datatype, array.reshape(shape)
    dtype = dtype_of(datatype)
    elements = None
    if dtype.kind == "f":
        elements = st.floats(
            width=dtype.itemsize * 8, allow_nan=not finite, allow_infinity=not finite
        )
    return datatype, draw(hnp.arrays(dtype, shape, elements=elements))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
