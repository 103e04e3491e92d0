"""Seeds -> independent random streams.

One integer ``seed`` becomes a ``numpy.random.SeedSequence``; each consumer (init, data,
masks, shuffling, Monte Carlo, ...) gets its own child stream from ``SeedSequence.spawn``,
keyed by a name so that adding a new stream never shifts an existing one.
``np.random.seed`` is never used.
"""

from __future__ import annotations

import numbers
import zlib

import numpy as np

from fpe_ref.errors import FPEError, check_int


def as_rng(seed_or_rng) -> np.random.Generator:
    """Return a Generator: pass one through, or build ``np.random.default_rng(seed)`` from an int seed >= 0.

    The randomness contract of fpe-ref: every public function that draws accepts either.
    Anything else (``None``, a bool, a float, a string) is a one-line ``FPEError``.
    """
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if isinstance(seed_or_rng, (bool, np.bool_)) or not isinstance(seed_or_rng, numbers.Integral):
        raise FPEError(f"seed must be an integer or a numpy Generator, got {seed_or_rng!r}")
    if seed_or_rng < 0:
        raise FPEError(f"seed must be a non-negative integer, got {seed_or_rng!r}")
    return np.random.default_rng(int(seed_or_rng))


def stream(seed: int, *names) -> np.random.Generator:
    """An independent Generator for the stream ``names`` under ``seed``.

    ``stream(0, "init", 3)`` and ``stream(0, "data")`` are independent; the same arguments
    always give the same stream. Names are hashed (crc32) into the SeedSequence's
    ``spawn_key``, so the mapping is stable across Python processes.
    """
    seed = check_int("seed", seed, 0, what="a non-negative integer")
    key = tuple(zlib.crc32(str(n).encode()) for n in names)
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))
