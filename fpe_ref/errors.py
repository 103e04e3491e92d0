"""The one exception type fpe-ref raises for bad input.

Every user-facing error is an ``FPEError`` with a one-line message naming the bad value;
the CLI prints it as ``Error: <message>`` without a traceback.
"""


class FPEError(ValueError):
    """Bad input to fpe-ref (wrong shape, impossible setting, corrupt file, NaN, ...)."""
