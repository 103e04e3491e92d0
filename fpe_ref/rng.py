"""Seeds -> independent random streams.

One integer ``seed`` becomes a ``numpy.random.SeedSequence``; each consumer (init, data,
masks, shuffling, Monte Carlo, ...) gets its own child stream from ``SeedSequence.spawn``,
keyed by a name so that adding a new stream never shifts an existing one.
``np.random.seed`` is never used.
"""

from __future__ import annotations

import zlib

import numpy as np

from fpe_ref.errors import FPEError


def as_rng(seed_or_rng) -> np.random.Generator:
    """Return a Generator: pass one through, or build one from an int seed."""
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if seed_or_rng is None or isinstance(seed_or_rng, (bool, float)):
        raise FPEError(f"seed must be an integer or a numpy Generator, got {seed_or_rng!r}")
    try:
        return np.random.default_rng(int(seed_or_rng))
    except (TypeError, ValueError) as exc:
        raise FPEError(f"seed must be a non-negative integer, got {seed_or_rng!r}") from exc


def stream(seed: int, *names) -> np.random.Generator:
    """An independent Generator for the stream ``names`` under ``seed``.

    ``stream(0, "init", 3)`` and ``stream(0, "data")`` are independent; the same arguments
    always give the same stream. Names are hashed (crc32) into the SeedSequence's
    ``spawn_key``, so the mapping is stable across Python processes.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FPEError(f"seed must be a non-negative integer, got {seed!r}")
    key = tuple(zlib.crc32(str(n).encode()) for n in names)
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))
