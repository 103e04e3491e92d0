"""The one exception type fpe-ref raises for bad input, its warning, and the shared validators.

Every user-facing error is an ``FPEError`` with a one-line message naming the bad value;
the CLI prints it as ``Error: <message>`` without a traceback. Results that are computed but
suspect (a training run that diverged or sits at chance) give an :class:`FPEWarning` instead.

Validators: :func:`check_int` (the one integer validator), :func:`check_indices` (an array
of indices, element by element through ``check_int``) and :func:`check_memory` (an
allocation that cannot fit is refused before it is attempted).
"""

from __future__ import annotations

import numbers
import os

import numpy as np


class FPEError(ValueError):
    """Bad input to fpe-ref (wrong shape, impossible setting, corrupt file, NaN, ...)."""


class FPEWarning(UserWarning):
    """A result fpe-ref computed but does not trust (e.g. training diverged or stayed at chance)."""


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


def check_indices(name: str, values, size: int) -> np.ndarray:
    """``values`` as a 1-D int64 array of indices in ``[0, size)``, or an ``FPEError``.

    Every entry must be an integer in the sense of :func:`check_int`: floats (``0.5``, and
    ``1.0`` too) and booleans are refused rather than truncated or read as 0/1. The message
    names the first bad entry as ``index j of <name>``.
    """
    what = f"an index in [0, {size})"
    try:
        a = np.asarray(values)
    except (ValueError, TypeError):
        raise FPEError(f"{name} must be a 1-D sequence of integer indices, got a ragged {type(values).__name__}") from None
    if a.ndim != 1:
        raise FPEError(f"{name} must be a 1-D sequence of integer indices, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":  # floats, bools, objects, strings: the first one check_int refuses
        items = values if isinstance(values, (list, tuple)) else a.tolist()  # as given, not as converted
        for j, v in enumerate(items):
            check_int(f"index {j} of {name}", v, 0, what=what)
    bad = np.flatnonzero((a < 0) | (a >= size))
    if bad.size:
        j = int(bad[0])
        raise FPEError(f"index {j} of {name} must be {what}, got {a[j].item()!r}")
    return a.astype(np.int64, copy=False)


# ---------------------------------------------------------------- memory
def _meminfo_available():
    """``MemAvailable`` of /proc/meminfo in bytes, or None where there is no such line."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory():
    """Bytes of memory a new allocation may take, or None when it cannot be found out.

    Linux's estimate ``MemAvailable`` (/proc/meminfo); elsewhere the physical memory,
    ``os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")``.
    """
    avail = _meminfo_available()
    if avail is not None:
        return avail
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return pages * page if pages > 0 and page > 0 else None


def format_bytes(n: int) -> str:
    """``n`` bytes in binary units: ``"7.3 TiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def check_memory(nbytes: int, what: str) -> None:
    """``FPEError`` when ``nbytes`` exceed the memory available now (:func:`available_memory`).

    ``what`` names the allocation in the message (``"an MLP of sizes [32, 10**12, 1]"``):
    ``<what> needs <n> (<bytes> bytes) but only <m> of memory is available``. Nothing is
    checked where the available memory is unknown. Call it before allocating arrays whose
    sizes come from the user, so that an impossible size is one line instead of NumPy's
    ``MemoryError`` (or the kernel's out-of-memory kill).
    """
    nbytes = int(nbytes)
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise FPEError(f"{what} needs {format_bytes(nbytes)} ({nbytes} bytes) but only {format_bytes(avail)} "
                       "of memory is available")
