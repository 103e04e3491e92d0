"""The one exception type fpe-ref raises for bad input.

Every user-facing error is an ``FPEError`` with a one-line message naming the bad value;
the CLI prints it as ``Error: <message>`` without a traceback.
"""


class FPEError(ValueError):
    """Bad input to fpe-ref (wrong shape, impossible setting, corrupt file, NaN, ...)."""


def check_positive_ints(obj, names, minimum: int = 1) -> None:
    """Raise ``FPEError`` naming the first attribute of ``obj`` in ``names`` that is not an int >= ``minimum``.

    ``bool`` is refused (``True`` is an ``int`` in Python, never a meaningful count).
    """
    import numbers

    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise FPEError(f"{name} must be {what}, got {v!r}")
