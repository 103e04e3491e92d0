"""Monotone read-once DNF classification data (the Boolean task of the paper).

Paper: Sec. 2.2.1 (the task), A.2.1 and Algorithm A2 (the generator), A.3.1 (batch size).

The formula over ``m`` literals has ``C = m / k`` disjoint clauses of ``k`` positive
literals; clause ``c`` is the literal block ``{c*k, ..., c*k + k - 1}``::

    f(x) = OR_{c=0}^{C-1} AND_{i=0}^{k-1} x[c*k + i]          e.g. m=32, k=4: 8 clauses

An example is an assignment ``bits in {0,1}^m`` with label ``f(bits)``. Half the examples are
positive, half negative:

positive      all ``k`` literals of a uniform clause ``c`` on, plus ``s - k`` extra literals
              drawn uniformly from the other ``m - k``; ``s ~ UniformInt[min_ones, max_ones]``.
              (Extras may complete further clauses; the label is still 1.)
near miss     built like a positive with its own ``s``, then one uniform literal of the
              clause block ``c`` switched off, so it has ``s - 1`` active bits.
uniform       ``s`` literals drawn uniformly from all ``m``.

A negative candidate that satisfies some clause is rejected and redrawn *with the same s*
(Alg. A2's ``u <- s``), so the active count of the negatives stays uniform instead of leaning
towards small ``s``, which is rejected less often. The clause ``c``, the extras and the removed
literal are redrawn.

The inputs are a continuous encoding of the bits (A.2.1): a 1 becomes ``U[3, 3.5)`` and a 0
becomes ``U[0, 0.5)``, i.e. ``X = 3 * bits + 0.5 * U[0, 1)`` entrywise.

Choices where the paper is silent or ambiguous
-----------------------------------------------
* **Half near misses, half uniform.** A2 flips a fair coin per *candidate*, and flips again
  after a rejection, so the accepted mix would lean towards whichever kind is rejected less;
  A.2.1's text asks for "equal proportions". We fix the kind per row: exactly
  ``n_neg // 2`` near misses and ``n_neg - n_neg // 2`` uniform negatives, each redrawn
  within its own kind. The proportion is exact, not random.
* **Class sizes.** ``n_pos = floor(n / 2)`` and ``n_neg = n - n_pos`` (A2, step 2); for odd
  ``n`` there is one more negative than positive.
* **Active-bit bounds.** A2's defaults are ``min_ones = floor(m/4)`` and
  ``max_ones = floor(m/4) + floor(m/8)``. For ``m < 4k`` (the paper's m=12, k=4) this gives
  ``min_ones < k``, and a positive cannot have fewer than ``k`` active bits (A2 would add a
  negative number of extras). The *defaults* are therefore raised to at least ``k``:
  ``min_ones = max(floor(m/4), k)``, ``max_ones = max(floor(m/4) + floor(m/8), min_ones)``;
  for m=12, k=4 that is ``s = 4`` always. Explicit bounds below ``k`` are an error.
* **Feasibility.** An assignment with ``t`` active bits and no full clause exists iff
  ``t <= C*(k-1)`` (pigeonhole: each clause holds at most ``k-1``). Uniform negatives need
  ``max_ones <= C*(k-1)``; near misses need ``max_ones - 1 <= C*(k-1)``, which that implies.
  So ``k = 1`` (an OR of all literals) has no negatives in range and is refused. Feasible but
  hopeless settings are refused too: the probability that a candidate is accepted is computed
  exactly (:func:`prob_no_full_clause`) and the call fails up front if the rejection loop would
  need more than ``MAX_REJECTION_ROUNDS`` rounds (e.g. m=128, k=2 with the default bounds).
* **Near-miss counts.** A near miss has ``s - 1`` active bits, one fewer than the positive it
  was built from (A2 removes a literal and adds none back), so negatives have active counts in
  ``[min_ones - 1, max_ones]`` while positives have ``[min_ones, max_ones]``.
* **Shuffling.** A2 returns ``[X_+; X_-]`` stacked. We shuffle the rows once (a seeded
  permutation) so that positives and negatives are interleaved and a sequential minibatch is
  not all one class; it changes nothing else (same rows, same labels).
* **Encoding intervals.** ``rng.random`` draws from ``[0, 1)``, so the intervals are half-open;
  the paper's closed ``[3, 3.5]``, ``[0, 0.5]`` differ only on a set of probability zero.

Defaults for size and split (the paper states neither)
-------------------------------------------------------
``DEFAULT_N_SAMPLES = 10000`` and ``DEFAULT_TEST_FRACTION = 0.2`` give 8000 training rows,
exactly 16 minibatches of ``B = 500`` (A.3.1), and 2000 test rows, whose accuracy has binomial
standard error ``sqrt(p(1-p)/2000)``: at most 1.1 points (p = 0.5), 0.9 points at the paper's
dense 78.7% (Sec. 3.1), 0.17 points at 99.4%, far below the gaps the paper reports. 2000 epochs
(1000 dense + 1000 after expansion, Sec. 3.1) are 32000 minibatch steps of a 32-8-1 network:
well under a minute of NumPy per model on one CPU core.

Duplicates
----------
Rows are drawn independently, so the same bit pattern can occur twice, and a test row can have
a training twin with the same bits (its ``X`` differs by the encoding noise). How often
depends on the number of distinct patterns. Share of the 2000 default test rows whose bits
also occur among the 8000 training rows (default bounds, 5 seeds each):

* m=12, k=4 (``s = 4``): 99.7%. There are only 3 distinct positives (one clause on, nothing
  else), 12 distinct near misses and ``C(12,4) - 3 = 492`` uniform negatives.
* m=24, k=4 (``s in 6..9``): about 11%, nearly all positives with small ``s``.
* m=32, k=4 (case study, ``s in 8..12``): about 0.03%, i.e. 0 to 1 test row per split, a
  positive with ``s = 8`` (only ``8 * C(28, 4) = 163800`` such patterns). The negatives
  essentially never repeat.
* m >= 40: none seen.

We do not deduplicate: A2 does not, and removing twins would change the sampling distribution.

Order of random draws (for reproducing a data set draw by draw)
---------------------------------------------------------------
positives (``c``, ``s``, extras), near misses (``s``; then per round ``c``, extras, removed
literal), uniform negatives (``s``; then per round the subset), the row permutation, the
encoding noise ``U[0,1)`` of shape ``(n, m)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fpe_ref.errors import FPEError, check_int, check_memory
from fpe_ref.rng import as_rng

DEFAULT_N_SAMPLES = 10000  # 8000 train = 16 batches of 500 (A.3.1); 2000 test, SE <= 1.1 points
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_K = 4  # "each of which has exact four literals" (Sec. 2.2.1)

ON_LOW, ON_HIGH = 3.0, 3.5  # True -> U[3, 3.5) (A.2.1)
OFF_LOW, OFF_HIGH = 0.0, 0.5  # False -> U[0, 0.5)

BYTES_PER_ENTRY = 16  # memory of generate_dnf per entry of its (n, m) data (measured peak: about 12)
MAX_REJECTION_ROUNDS = 10_000  # guard on the negatives' redraw loop
_FAIL_PROB = 1e-9  # allowed chance that a feasible setting still exhausts the guard

ORIGIN_POSITIVE = 0  # codes of DNFData.origin
ORIGIN_NEAR_MISS = 1
ORIGIN_UNIFORM = 2


@dataclass(frozen=True, eq=False)
class DNFData:
    """A DNF classification data set (Alg. A2), rows shuffled.

    Attributes
    ----------
    bits : ndarray, shape (n, m), uint8
        The Boolean assignments, 0/1.
    X : ndarray, shape (n, m), float64
        Encoded inputs: ``3 * bits + U[0, 0.5)`` entrywise (A.2.1).
    y : ndarray, shape (n,), float64
        Labels 0.0 / 1.0; ``y == f(bits)``. Float, as the binary loss takes its targets
        (``torch.nn.BCEWithLogitsLoss``); multiclass data (:mod:`fpe_ref.data.classification`)
        holds int64 class indices, as softmax cross-entropy takes them.
    clauses : ndarray, shape (C, k), int64
        Literal indices of each clause; ``clauses[c] = [c*k, ..., c*k + k - 1]``.
    m : int
        Number of literals.
    k : int
        Literals per clause.
    origin : ndarray, shape (n,), int8, or None
        How each row was made: ``ORIGIN_POSITIVE`` (0), ``ORIGIN_NEAR_MISS`` (1) or
        ``ORIGIN_UNIFORM`` (2). Always set by :func:`generate_dnf`; optional for data built
        by hand.

    Notes
    -----
    The dataclass is frozen; its arrays are not made read-only. The constructor checks that
    the shapes agree and raises ``FPEError`` if not.
    """

    bits: np.ndarray  # (n, m) uint8
    X: np.ndarray  # (n, m) float64
    y: np.ndarray  # (n,) float64
    clauses: np.ndarray  # (C, k) int64
    m: int
    k: int
    origin: np.ndarray | None = None  # (n,) int8

    def __post_init__(self):
        n = len(self.y)
        C = self.m // self.k if self.k > 0 else 0
        if self.bits.shape != (n, self.m):
            raise FPEError(f"DNFData.bits must have shape ({n}, {self.m}), got {self.bits.shape}")
        if self.X.shape != (n, self.m):
            raise FPEError(f"DNFData.X must have shape ({n}, {self.m}), got {self.X.shape}")
        if self.y.shape != (n,):
            raise FPEError(f"DNFData.y must have shape ({n},), got {self.y.shape}")
        if self.clauses.shape != (C, self.k):
            raise FPEError(
                f"DNFData.clauses must have shape ({C}, {self.k}), got {self.clauses.shape}")
        if self.origin is not None and self.origin.shape != (n,):
            raise FPEError(f"DNFData.origin must have shape ({n},), got {self.origin.shape}")

    @property
    def n(self) -> int:
        """Number of examples."""
        return len(self.y)

    @property
    def n_clauses(self) -> int:
        """Number of clauses ``C = m / k``."""
        return self.m // self.k

    def take(self, idx) -> "DNFData":
        """The rows ``idx`` (an integer index array) as a new ``DNFData`` (copies)."""
        idx = np.asarray(idx, dtype=np.int64)
        return DNFData(
            bits=self.bits[idx], X=self.X[idx], y=self.y[idx], clauses=self.clauses.copy(),
            m=self.m, k=self.k, origin=None if self.origin is None else self.origin[idx])


# ----------------------------------------------------------------------------- validation

def _check_m_k(m, k) -> tuple[int, int]:
    k = check_int("k", k, 1)
    m = check_int("m", m, 1)
    if m % k:
        raise FPEError(f"m={m} is not divisible by k={k}: clauses must partition the literals")
    return m, k


def default_ones_bounds(m: int, k: int) -> tuple[int, int]:
    """A2's active-bit bounds, raised to at least ``k``.

    ``min_ones = max(floor(m/4), k)``, ``max_ones = max(floor(m/4) + floor(m/8), min_ones)``.
    Paper: Alg. A2, "Require" line; the ``max(., k)`` is ours (module docstring).
    """
    lo = max(m // 4, k)
    return lo, max(m // 4 + m // 8, lo)


def prob_no_full_clause(n_clauses: int, k: int, t: int) -> float:
    """Probability that ``t`` literals drawn uniformly from ``n_clauses * k`` fill no clause.

    Counts the ``t``-subsets that take at most ``k-1`` literals from every clause,
    ``N(t) = [x^t] (sum_{j<k} C(k, j) x^j)^C``, exactly in integers, and returns
    ``N(t) / C(C*k, t)``. This is the acceptance probability of a uniform negative with
    ``s = t`` (``C`` clauses) and of a near miss with ``s = t + k`` (its ``t`` extras fall in
    the other ``C - 1`` clauses). Zero iff ``t > C*(k-1)`` (pigeonhole).
    """
    total = n_clauses * k
    if t < 0 or t > total:
        return 0.0
    weights = [math.comb(k, j) for j in range(k)]  # ways to take j < k literals of one clause
    counts = [1] + [0] * t  # counts[d]: d-subsets of the clauses seen so far with none full
    for _ in range(n_clauses):
        counts = [sum(w * counts[d - j] for j, w in enumerate(weights) if d - j >= 0)
                  for d in range(t + 1)]
    return counts[t] / math.comb(total, t)  # int / int: correctly rounded float


def _check_bounds(m: int, k: int, min_ones, max_ones) -> tuple[int, int]:
    """Validate (or default) the active-bit bounds; see the module docstring, "Feasibility"."""
    d_lo, d_hi = default_ones_bounds(m, k)
    lo = d_lo if min_ones is None else check_int("min_ones", min_ones, 0)
    hi = max(d_hi, lo) if max_ones is None else check_int("max_ones", max_ones, 0)
    if max_ones is not None and hi < k:
        raise FPEError(
            f"max_ones={hi} is below k={k}: a positive has all k literals of a clause on")
    if min_ones is None:
        lo = min(lo, hi)  # the default lower bound gives way to an explicit lower max_ones
    if lo < k:
        raise FPEError(
            f"min_ones={lo} is below k={k}: a positive has all k literals of a clause on")
    if hi > m:
        raise FPEError(f"max_ones={hi} exceeds m={m} literals")
    if lo > hi:
        raise FPEError(f"min_ones={lo} exceeds max_ones={hi}")
    C = m // k
    if hi > C * (k - 1):
        raise FPEError(
            f"max_ones={hi} exceeds C*(k-1)={C * (k - 1)} (m={m}, k={k}): every assignment "
            f"with that many active bits fills a clause, so no negative can be drawn")
    return lo, hi


def _check_rejection_feasible(m: int, k: int, hi: int, n_near: int, n_unif: int) -> None:
    """Refuse settings whose rejection loop would need more than MAX_REJECTION_ROUNDS rounds.

    Acceptance falls with ``s``, so the worst case is ``s = max_ones``. With acceptance ``p``,
    ``R`` rounds leave ``r`` rows unfinished with probability at most ``r (1-p)^R``; we need
    ``R = log(r / 1e-9) / -log(1-p)`` of them.
    """
    C = m // k
    for kind, rows, p in (("a near miss", n_near, prob_no_full_clause(C - 1, k, hi - k)),
                          ("a uniform negative", n_unif, prob_no_full_clause(C, k, hi))):
        if rows == 0:
            continue
        need = math.inf if p <= 0.0 else (
            0.0 if p >= 1.0 else math.log(rows / _FAIL_PROB) / -math.log1p(-p))
        if need > MAX_REJECTION_ROUNDS:
            raise FPEError(
                f"max_ones={hi} is too large for m={m}, k={k}: {kind} with {hi} active bits "
                f"avoids every clause with probability {p:.2e}, so rejection would need "
                f"~{need:.1e} rounds (limit {MAX_REJECTION_ROUNDS}); lower max_ones")


# ----------------------------------------------------------------------------- sampling

def _any_clause_full(bits: np.ndarray, k: int) -> np.ndarray:
    """(r, m) 0/1 -> (r,) bool: some clause has all its k literals on. No validation."""
    r, m = bits.shape
    return bits.reshape(r, m // k, k).all(axis=2).any(axis=1)  # (r, C, k) -> (r,)


def _sample_subsets(rng: np.random.Generator, count: np.ndarray, m: int,
                    excluded: np.ndarray | None = None) -> np.ndarray:
    """Row ``i``: a uniform ``count[i]``-subset of the literals not in ``excluded[i]``.

    Every row gets iid ``U[0,1)`` keys; excluded literals get key 2 (sorted last). The
    ``count[i]`` literals with the smallest keys are a uniform subset of the allowed ones, as
    the allowed keys' order is a uniform permutation. Requires ``count <= #allowed``.
    Returns (r, m) bool.
    """
    r = len(count)
    keys = rng.random((r, m))  # (r, m)
    if excluded is not None:
        keys[excluded] = 2.0
    order = np.argsort(keys, axis=1)  # (r, m): literal indices, chosen ones first
    chosen = np.arange(m)[None, :] < count[:, None]  # (r, m): rank < count
    out = np.zeros((r, m), dtype=bool)
    out[np.arange(r)[:, None], order] = chosen  # out[i, order[i, q]] = (q < count[i])
    return out


def _draw_clause_plus_extras(rng: np.random.Generator, s: np.ndarray, m: int, k: int):
    """A2 steps 7-11 for each row: clause ``c`` on plus ``s - k`` extras outside it.

    Returns ``bits`` (r, m) bool and ``c`` (r,) int64.
    """
    r = len(s)
    c = rng.integers(0, m // k, size=r)  # (r,)
    block = (np.arange(m)[None, :] // k) == c[:, None]  # (r, m): literals of clause c
    bits = block | _sample_subsets(rng, s - k, m, excluded=block)
    return bits, c


def _draw_near_miss(rng: np.random.Generator, s: np.ndarray, m: int, k: int) -> np.ndarray:
    """A2 step 17: a positive with ``s`` active, then one literal of its clause block off."""
    bits, c = _draw_clause_plus_extras(rng, s, m, k)
    j = rng.integers(0, k, size=len(s))  # (r,): which literal of the block to switch off
    bits[np.arange(len(s)), c * k + j] = False
    return bits


def _draw_negatives(draw, rng: np.random.Generator, s: np.ndarray, m: int, k: int,
                    kind: str) -> np.ndarray:
    """Draw with ``draw(rng, s, m, k)`` and redraw rejected rows with the same ``s``.

    Alg. A2 steps 13-24, vectorised: every round redraws only the rows that still satisfy a
    clause, each keeping its ``s`` (A2's ``u <- s``).
    """
    bits = draw(rng, s, m, k)  # (r, m)
    pending = np.flatnonzero(_any_clause_full(bits, k))
    rounds = 0
    while pending.size:
        rounds += 1
        if rounds > MAX_REJECTION_ROUNDS:
            raise FPEError(
                f"{pending.size} {kind} rows still satisfy a clause after "
                f"{MAX_REJECTION_ROUNDS} redraw rounds (m={m}, k={k}); lower max_ones")
        redrawn = draw(rng, s[pending], m, k)
        bits[pending] = redrawn
        pending = pending[_any_clause_full(redrawn, k)]
    return bits


def _draw_uniform(rng: np.random.Generator, s: np.ndarray, m: int, k: int) -> np.ndarray:
    """A2 step 19: ``s`` literals uniformly from all ``m``."""
    return _sample_subsets(rng, s, m)


def generate_dnf(n: int, m: int, k: int = DEFAULT_K, rng=None, *,
                 min_ones: int | None = None, max_ones: int | None = None) -> DNFData:
    """Generate a balanced, shuffled monotone read-once DNF data set.

    Paper: Alg. A2 and A.2.1; Sec. 2.2.1. With ``C = m / k`` clauses
    ``f(x) = OR_c AND_{i<k} x[c*k + i]``, ``floor(n/2)`` rows are positives (a uniform clause
    on plus ``s - k`` uniform extra literals), ``n - floor(n/2)`` are negatives: the first
    ``n_neg // 2`` near misses (a positive with one literal of its clause switched off), the
    rest uniform ``s``-subsets, each rejected and redrawn with the same ``s`` while it
    satisfies a clause. ``s ~ UniformInt[min_ones, max_ones]`` per row. The rows are then
    shuffled and encoded ``X = 3 * bits + U[0, 0.5)``. See the module docstring for every
    choice made where A2 is ambiguous.

    Parameters
    ----------
    n : int
        Number of examples, ``>= 2`` (one of each class at least).
    m : int
        Number of literals; a multiple of ``k``.
    k : int, default 4
        Literals per clause, ``>= 2`` in practice (``k = 1`` has no negatives in range).
    rng : numpy.random.Generator or int
        Random source or seed (``fpe_ref.rng.as_rng``). Required: ``None`` raises, there is no
        hidden global seed.
    min_ones, max_ones : int, optional
        Inclusive range of ``s``. Default ``max(floor(m/4), k)`` and
        ``max(floor(m/4) + floor(m/8), min_ones)`` (A2, raised to ``k``). Need
        ``k <= min_ones <= max_ones <= C*(k-1)``.

    Returns
    -------
    DNFData
        ``bits`` (n, m) uint8, ``X`` (n, m) float64, ``y`` (n,) float64, ``clauses`` (C, k)
        int64, ``m``, ``k``, ``origin`` (n,) int8.

    Raises
    ------
    FPEError
        Bad ``n``, ``m``, ``k``, seed, or bounds that make a class impossible or the
        rejection loop hopeless (the message names the value), or an ``n * m`` too large
        for the memory available.
    """
    n = check_int("n", n, 2)
    m, k = _check_m_k(m, k)
    lo, hi = _check_bounds(m, k, min_ones, max_ones)
    check_memory(BYTES_PER_ENTRY * n * m, f"generate_dnf(n={n}, m={m})")
    rng = as_rng(rng)

    n_pos = n // 2  # A2 step 2, p = 0.5
    n_neg = n - n_pos
    n_near = n_neg // 2  # exact halves (module docstring)
    n_unif = n_neg - n_near
    _check_rejection_feasible(m, k, hi, n_near, n_unif)

    # positives: A2 steps 6-11
    s_pos = rng.integers(lo, hi + 1, size=n_pos)  # (n_pos,)
    pos, _ = _draw_clause_plus_extras(rng, s_pos, m, k)  # (n_pos, m)

    # negatives: A2 steps 12-24, one kind per row
    s_near = rng.integers(lo, hi + 1, size=n_near)
    near = _draw_negatives(_draw_near_miss, rng, s_near, m, k, "near-miss")  # (n_near, m)
    s_unif = rng.integers(lo, hi + 1, size=n_unif)
    unif = _draw_negatives(_draw_uniform, rng, s_unif, m, k, "uniform")  # (n_unif, m)

    bits = np.concatenate([pos, near, unif])  # (n, m) bool, A2's stacked order
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg)])  # (n,)
    origin = np.repeat(np.array([ORIGIN_POSITIVE, ORIGIN_NEAR_MISS, ORIGIN_UNIFORM], np.int8),
                       [n_pos, n_near, n_unif])  # (n,)

    perm = rng.permutation(n)  # interleave the classes for minibatching
    bits, y, origin = bits[perm], y[perm], origin[perm]

    # A.2.1 encoding: 1 -> U[3, 3.5), 0 -> U[0, 0.5)
    X = rng.random((n, m))  # (n, m) U[0, 1)
    X *= OFF_HIGH - OFF_LOW  # both intervals have width 0.5
    X += OFF_LOW  # off entries: U[0, 0.5)
    np.add(X, ON_LOW - OFF_LOW, out=X, where=bits)  # on entries: U[3, 3.5)
    clauses = np.arange(m, dtype=np.int64).reshape(m // k, k)  # (C, k)
    return DNFData(bits=bits.astype(np.uint8), X=X, y=y, clauses=clauses, m=m, k=k,
                   origin=origin)


def evaluate_dnf(bits, k) -> np.ndarray:
    """Evaluate the read-once DNF with clauses of ``k`` consecutive literals.

    ``f(bits)[i] = OR_c AND_{j<k} bits[i, c*k + j]`` (Alg. A2's EVALUATEDNF, Sec. 2.2.1).

    Parameters
    ----------
    bits : array_like, shape (n, m)
        0/1 assignments (bool, integer or float holding only 0 and 1).
    k : int
        Literals per clause; must divide ``m``.

    Returns
    -------
    ndarray, shape (n,), bool
        True where some clause is fully on.
    """
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise FPEError(f"bits must be a 2-D (n, m) array, got shape {bits.shape}")
    _check_m_k(bits.shape[1], k)
    if bits.dtype != bool:
        bad = (bits != 0) & (bits != 1)
        if bad.any():
            raise FPEError(f"bits must be 0/1, got value {bits[bad].flat[0].item()!r}")
    return _any_clause_full(bits != 0, int(k))


def check_test_split(n: int, test_fraction: float) -> int:
    """``n_test = round(test_fraction * n)``; FPEError unless both sides are non-empty."""
    n = check_int("n", n, 1)
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.floating))
            or not 0.0 < test_fraction < 1.0):  # also rejects NaN
        raise FPEError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    n_test = int(round(test_fraction * n))
    if n_test == 0 or n_test == n:
        side = "test" if n_test == 0 else "training"
        raise FPEError(f"test_fraction={test_fraction} with n={n} leaves the {side} set empty")
    return n_test


def split_indices(n: int, test_fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train / test row indices from one seeded permutation of ``range(n)``.

    ``n_test = round(test_fraction * n)``; the test rows are the first ``n_test`` entries of
    ``rng.permutation(n)``, the training rows the rest (in permutation order). Not stratified.

    Returns
    -------
    train_idx : ndarray, shape (n - n_test,), int64
    test_idx : ndarray, shape (n_test,), int64
    """
    n_test = check_test_split(n, test_fraction)
    perm = as_rng(rng).permutation(n)
    return perm[n_test:], perm[:n_test]


def train_test_split(data: DNFData, test_fraction: float, rng) -> tuple[DNFData, DNFData]:
    """Split a ``DNFData`` into training and test sets by a seeded permutation.

    Uses :func:`split_indices`; ``n_test = round(test_fraction * n)``, both sides non-empty.
    The paper does not state its split; ``DEFAULT_TEST_FRACTION = 0.2`` (module docstring).

    Returns
    -------
    train, test : DNFData
    """
    if not isinstance(data, DNFData):
        raise FPEError(f"data must be a DNFData, got {type(data).__name__}")
    train_idx, test_idx = split_indices(data.n, test_fraction, rng)
    return data.take(train_idx), data.take(test_idx)
