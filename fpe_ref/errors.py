"""The one exception type fpe-ref raises for bad input.

Every user-facing error is an ``FPEError`` with a one-line message naming the bad value;
the CLI prints it as ``Error: <message>`` without a traceback.
"""

from __future__ import annotations

import numbers


class FPEError(ValueError):
    """Bad input to fpe-ref (wrong shape, impossible setting, corrupt file, NaN, ...)."""


def check_int(name: str, value, minimum: int = 1, *, what: str | None = None, integral_float: bool = False) -> int:
    """``value`` as a Python int >= ``minimum``, or an ``FPEError`` naming ``name`` and the value.

    The one integer validator of fpe-ref. ``bool`` is refused (``True`` is an ``int`` in
    Python, never a meaningful count); a float is refused too, unless ``integral_float`` and
    it holds an integer (``2.0``). ``what`` replaces "an integer >= minimum" in the message.
    """
    what = what or f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if integral_float and not isinstance(value, bool) and isinstance(value, numbers.Real) \
                and float(value).is_integer():
            value = int(value)
        else:
            raise FPEError(f"{name} must be {what}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise FPEError(f"{name} must be {what}, got {value}")
    return value


def check_positive_ints(obj, names, minimum: int = 1) -> None:
    """:func:`check_int` on the attributes ``names`` of ``obj`` (a config dataclass)."""
    for name in names:
        check_int(name, getattr(obj, name), minimum, what="a positive integer" if minimum == 1 else None)
