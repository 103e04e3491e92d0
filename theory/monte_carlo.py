"""Monte Carlo estimators that check :mod:`fpe_ref.theory.closed_form`.

Paper: Sec. 2.5 and A.5 (the quantities), Sec. 2.3 / Alg. A1 (the split that model (b) uses).

Three random first layers over ``m`` literals, ``C = m / k`` disjoint clauses
(clause ``c`` = literals ``c k .. c k + k - 1``; every model is invariant under relabelling
the literals, so this layout loses nothing):

(a) ``simulate_independent``: the paper's model, ``alpha r`` neurons, each picks its inputs
    as a uniform random subset, independently (degrees from
    :func:`fpe_ref.theory.closed_form.degree_profile`).
(b) ``simulate_split``: fpe-ref's construction, ``r`` parents each split at random into
    ``alpha`` disjoint children by :func:`fpe_ref.splits.random_split` itself.
(c) ``simulate_dense``: ``r`` neurons that see every literal (deterministic).

Per simulated network we record: whether every clause is covered, the number of collisions
``sum_neurons C(t, 2)`` (``t`` = clauses a neuron covers), whether one designated clause
(network index mod ``C``) is missed by every neuron, and, per *unit* (a neuron in (a) and (c),
a parent in (b)), whether it covers one designated clause (unit index mod ``C``). Designating
one clause per network / unit in rotation keeps the indicators independent, so their counts
are exactly binomial.

Randomness is drawn with NumPy from an explicit ``rng`` and passed into the kernels, which
never hold a generator. The model (a) kernel is the only Numba code in ``theory/``.

Sampling a uniform d-subset (model (a))
---------------------------------------
Partial Fisher-Yates on a permutation buffer ``perm`` of ``0..m-1``: for ``i < s`` swap
``perm[i]`` with ``perm[i + floor(u_i (m - i) / 2^32)]``, ``u_i`` uniform 32-bit. The first ``s``
entries are then a uniform random s-subset *whatever order ``perm`` started in*, so the buffer
is reused from neuron to neuron without resetting. We draw ``s = min(d, m - d)`` and take the
complement when ``d > m / 2``. The multiply-shift map from 32-bit integers to ``0..n-1`` gives
each value probability within ``2^-32`` of ``1 / n``; that bias is far below what any run here
can resolve.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numba
import numpy as np
from scipy import stats

from fpe_ref.errors import FPEError
from fpe_ref.rng import as_rng
from fpe_ref.splits import random_split

from fpe_ref.theory import closed_form as cf

__all__ = [
    "SimResult",
    "Estimate",
    "slot_degrees",
    "simulate_independent",
    "simulate_split",
    "simulate_dense",
    "mask_stats",
    "sample_supports",
    "independent_stats",
    "proportion_interval",
    "wilson_interval",
    "mean_interval",
    "neurons_per_second",
    "uniform_u32",
]


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SimResult:
    """Per-network outcomes of one simulated setting.

    Attributes
    ----------
    model : str
        ``"a"`` (independent neurons), ``"b"`` (fpe_ref random split) or ``"dense"``.
    m, k, alpha, r : int
        Literals, literals per clause, expansion factor, dense width / parents.
    all_covered : ndarray of bool, shape (N,)
        Every clause is covered by at least one neuron.
    collisions : ndarray of int64, shape (N,)
        ``sum over neurons of C(t, 2)``, ``t`` = number of clauses the neuron covers.
    missed_one : ndarray of bool, shape (N,)
        Clause ``n mod C`` of network ``n`` is covered by no neuron.
    unit_hits, unit_trials : int
        Units (neurons in (a)/dense, parents in (b)) that cover their designated clause,
        and units examined.
    n_neurons : int
        Neurons sampled in total (``N alpha r``; ``N r`` for dense).
    seconds : float
        Wall time of the simulation.
    """

    model: str
    m: int
    k: int
    alpha: int
    r: int
    all_covered: np.ndarray = field(repr=False)
    collisions: np.ndarray = field(repr=False)
    missed_one: np.ndarray = field(repr=False)
    unit_hits: int
    unit_trials: int
    n_neurons: int
    seconds: float

    @property
    def n_networks(self) -> int:
        return int(self.all_covered.size)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval ``[lo, hi]`` at ``level``."""

    value: float
    lo: float
    hi: float
    level: float
    method: str

    def contains(self, x: float, *, rtol: float = 1e-9) -> bool:
        """``lo <= x <= hi``, with a relative slack ``rtol`` for round-off in ``x``."""
        slack = rtol * max(abs(x), abs(self.lo), abs(self.hi), 1e-300)
        return self.lo - slack <= x <= self.hi + slack


# ----------------------------------------------------------------------------- intervals


def _check_level(level) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise FPEError(f"confidence level must lie in (0, 1), got {level!r}")
    return level


def proportion_interval(x: int, n: int, level: float) -> Estimate:
    """Clopper-Pearson (exact binomial) interval for a proportion ``x / n``.

    ``lo = Beta^-1((1-level)/2; x, n-x+1)``, ``hi = Beta^-1((1+level)/2; x+1, n-x)``, with
    ``lo = 0`` at ``x = 0`` and ``hi = 1`` at ``x = n``. Never narrower than the nominal level,
    also for proportions at 0 or 1, where the Wilson interval is used only for comparison.
    """
    level = _check_level(level)
    x, n = int(x), int(n)
    if n < 1 or not 0 <= x <= n:
        raise FPEError(f"need 0 <= x <= n and n >= 1, got x={x}, n={n}")
    a = 1.0 - level
    lo = 0.0 if x == 0 else float(stats.beta.ppf(a / 2, x, n - x + 1))
    hi = 1.0 if x == n else float(stats.beta.ppf(1 - a / 2, x + 1, n - x))
    return Estimate(x / n, lo, hi, level, "clopper-pearson")


def wilson_interval(x: int, n: int, level: float) -> Estimate:
    """Wilson score interval ``(x + z^2/2 +- z sqrt(x(n-x)/n + z^2/4)) / (n + z^2)``."""
    level = _check_level(level)
    x, n = int(x), int(n)
    if n < 1 or not 0 <= x <= n:
        raise FPEError(f"need 0 <= x <= n and n >= 1, got x={x}, n={n}")
    z = float(stats.norm.ppf(0.5 + level / 2))
    centre = x + z * z / 2
    half = z * math.sqrt(x * (n - x) / n + z * z / 4)
    return Estimate(x / n, max(0.0, (centre - half) / (n + z * z)), min(1.0, (centre + half) / (n + z * z)), level, "wilson")


def mean_interval(values, level: float, *, scale: float = 1.0) -> Estimate:
    """CLT interval for a mean: ``xbar +- z s / sqrt(N)`` (``s``: sample sd, ddof=1), times ``scale``.

    When all values are equal the interval is the single point (``s = 0``); callers decide
    whether such a sample can test anything (see ``fpe_ref.theory.check``).
    """
    level = _check_level(level)
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        raise FPEError(f"a CLT interval needs at least 2 values, got {v.size}")
    z = float(stats.norm.ppf(0.5 + level / 2))
    mean = float(v.mean())
    half = z * float(v.std(ddof=1)) / math.sqrt(v.size)
    return Estimate(mean * scale, (mean - half) * scale, (mean + half) * scale, level, "clt")


# ----------------------------------------------------------------------------- kernels (model (a))


def _sample_supports_py(u, m, degrees, perm, masks):
    """Fill ``masks[row]`` with a uniform ``degrees[row % n_slots]``-subset of ``0..m-1``.

    ``u``: (rows, n_draw) uint32 draws; ``perm``: (m,) int64 permutation buffer, updated in
    place (pass it on to continue the stream); ``masks``: (rows, m) bool, overwritten. Same
    Fisher-Yates steps as :func:`_independent_stats_py`.
    """
    n_slots = degrees.shape[0]
    for row in range(u.shape[0]):
        d = degrees[row % n_slots]
        comp = 2 * d > m
        s = m - d if comp else d
        for i in range(s):
            j = i + np.int64((np.uint64(u[row, i]) * np.uint64(m - i)) >> np.uint64(32))
            tmp = perm[i]
            perm[i] = perm[j]
            perm[j] = tmp
        for x in range(m):
            masks[row, x] = comp
        for i in range(s):
            masks[row, perm[i]] = not comp


def _independent_stats_py(u, m, k, degrees, net0, perm, all_cov, coll, missed, hits):
    """Fused model (a) kernel: sample ``n_slots`` neurons per network and reduce to statistics.

    Parameters
    ----------
    u : (N * n_slots, n_draw) uint32
        Uniform 32-bit draws, one row per neuron (only the first ``min(d, m-d)`` used).
    m, k : int
        Literals and literals per clause (``m % k == 0``).
    degrees : (n_slots,) int64
        Degree of each neuron slot of a network.
    net0 : int
        Global index of the first network (selects the designated clauses).
    perm : (m,) int64, in/out
        Fisher-Yates buffer, a permutation of ``0..m-1``; carried from chunk to chunk so that
        the result does not depend on how the draws are chunked.
    all_cov, missed : (N,) bool, out
    coll : (N,) int64, out
    hits : (1,) int64, out
        Incremented by the neurons that cover their designated clause ``g mod C``,
        ``g`` = global neuron index.
    """
    C = m // k
    n_slots = degrees.shape[0]
    n_nets = all_cov.shape[0]
    clause_of = np.arange(m) // k  # literal -> clause (a lookup is cheaper than a division)
    cnt = np.zeros(C + 1, dtype=np.int64)  # literals of clause c among the drawn ones
    seen = np.zeros(C, dtype=np.bool_)  # clause covered by some neuron of this network
    for net in range(n_nets):
        seen[:] = False
        n_coll = 0
        for slot in range(n_slots):
            row = net * n_slots + slot
            d = degrees[slot]
            comp = 2 * d > m  # draw the m - d literals the neuron does NOT see
            s = m - d if comp else d
            for i in range(s):
                j = i + np.int64((np.uint64(u[row, i]) * np.uint64(m - i)) >> np.uint64(32))
                tmp = perm[i]
                perm[i] = perm[j]
                perm[j] = tmp
                cnt[clause_of[perm[i]]] += 1
            # covered: all k literals drawn, or (complement) none of them excluded
            want = 0 if comp else k
            target = ((net0 + net) * n_slots + slot) % C
            t = 0
            for c in range(C):
                if cnt[c] == want:
                    t += 1
                    seen[c] = True
                    if c == target:
                        hits[0] += 1
                cnt[c] = 0
            n_coll += t * (t - 1) // 2
        coll[net] = n_coll
        all_ok = True
        for c in range(C):
            if not seen[c]:
                all_ok = False
        all_cov[net] = all_ok
        missed[net] = not seen[(net0 + net) % C]


_JIT = dict(nopython=True, cache=True, nogil=True, error_model="numpy")
_sample_supports_nb = numba.jit(**_JIT)(_sample_supports_py)
_independent_stats_nb = numba.jit(**_JIT)(_independent_stats_py)


def _perm_buffer(perm, m: int) -> np.ndarray:
    if perm is None:
        return np.arange(int(m), dtype=np.int64)
    if perm.dtype != np.int64 or perm.shape != (int(m),) or not perm.flags.c_contiguous:
        raise FPEError(f"perm must be a contiguous int64 array of shape ({m},), got {perm.dtype} {perm.shape}")
    return perm


def sample_supports(u, m, degrees, perm=None, *, compiled: bool = True) -> np.ndarray:
    """Model (a) input sets from given draws: boolean masks ``(rows, m)``.

    For tests and for readers: the same supports the fused kernel sees from the same ``u``
    and starting ``perm`` (default ``arange(m)``; a given array is updated in place).
    """
    u = np.ascontiguousarray(u, dtype=np.uint32)
    degrees = np.ascontiguousarray(degrees, dtype=np.int64)
    perm = _perm_buffer(perm, m)
    masks = np.zeros((u.shape[0], int(m)), dtype=bool)
    (_sample_supports_nb if compiled else _sample_supports_py)(u, int(m), degrees, perm, masks)
    return masks


def independent_stats(u, m, k, degrees, net0: int = 0, perm=None, *, compiled: bool = True):
    """Run the fused model (a) kernel on given draws.

    Returns ``(all_covered, collisions, missed_one, unit_hits)`` for ``u.shape[0] // len(degrees)``
    networks; equal to :func:`mask_stats` applied to :func:`sample_supports` of the same draws.
    ``perm`` as in :func:`sample_supports`.
    """
    u = np.ascontiguousarray(u, dtype=np.uint32)
    degrees = np.ascontiguousarray(degrees, dtype=np.int64)
    perm = _perm_buffer(perm, m)
    n = u.shape[0] // degrees.shape[0]
    all_cov = np.zeros(n, dtype=bool)
    missed = np.zeros(n, dtype=bool)
    coll = np.zeros(n, dtype=np.int64)
    hits = np.zeros(1, dtype=np.int64)
    (_independent_stats_nb if compiled else _independent_stats_py)(u, int(m), int(k), degrees, int(net0), perm, all_cov, coll, missed, hits)
    return all_cov, coll, missed, int(hits[0])


# ----------------------------------------------------------------------------- NumPy statistics from masks


def mask_stats(masks, n_nets: int, k: int, unit: int = 1, net0: int = 0):
    """Statistics of ``n_nets`` networks from their input masks (dense NumPy expression).

    Parameters
    ----------
    masks : (n_nets * n_neur, m) bool
        Row ``n * n_neur + j`` is neuron ``j`` of network ``n``.
    k : int
        Literals per clause; clause ``c`` is literals ``c k .. c k + k - 1``.
    unit : int
        Consecutive neurons forming one unit for ``unit_hits`` (1: neurons, ``alpha``: parents).
    net0 : int
        Global index of the first network.

    Returns
    -------
    all_covered, collisions, missed_one, unit_hits
        As in :class:`SimResult`.
    """
    masks = np.asarray(masks, dtype=bool)
    rows, m = masks.shape
    C = m // k
    n_neur = rows // n_nets
    cov = masks[:, : C * k].reshape(n_nets, n_neur, C, k).all(axis=3)  # (N, n_neur, C)
    t = cov.sum(axis=2, dtype=np.int64)  # (N, n_neur) clauses per neuron
    collisions = (t * (t - 1) // 2).sum(axis=1)  # (N,)
    seen = cov.any(axis=1)  # (N, C)
    net = net0 + np.arange(n_nets)
    all_covered = seen.all(axis=1)
    missed_one = ~seen[np.arange(n_nets), net % C]
    n_units = n_neur // unit
    ucov = cov.reshape(n_nets, n_units, unit, C).any(axis=2)  # (N, n_units, C)
    target = (net[:, None] * n_units + np.arange(n_units)[None, :]) % C  # (N, n_units)
    hits = int(np.take_along_axis(ucov, target[:, :, None], axis=2).sum())
    return all_covered, collisions, missed_one, hits


# ----------------------------------------------------------------------------- simulators


def _check_sim(m, k, alpha, r, n_networks):
    m, k, alpha, r, C = cf._check_net(m, k, alpha, r)
    n_networks = cf._as_int("n_networks", n_networks, 2)
    return m, k, alpha, r, C, n_networks


def slot_degrees(m, alpha, r) -> np.ndarray:
    """Degrees of the ``alpha r`` neurons of one model (a) network, shape ``(alpha r,)``.

    Parent ``i``'s group is slots ``i alpha .. i alpha + alpha - 1``; each group has the
    degree profile of :func:`fpe_ref.theory.closed_form.degree_profile`.
    """
    prof = cf.degree_profile(m, alpha)
    group = np.concatenate([np.full(cnt, d, dtype=np.int64) for d, cnt in prof])
    return np.tile(group, int(r))


def uniform_u32(rng, shape) -> np.ndarray:
    """Uniform 32-bit integers of the given 2-d shape, drawn as full-range uint64 and split in halves.

    ``rng.integers(0, 2^64 - 1, endpoint=True, dtype=uint64)`` gives 64 uniform bits per call,
    about twice as fast per 32-bit draw as asking for uint32 directly. The halves are read in
    the machine's byte order (little-endian on x86/ARM); the numbers are the same on every
    such machine for a given ``rng``.
    """
    rng = as_rng(rng)  # an int seed or a Generator
    rows, cols = (int(x) for x in shape)
    cols2 = cols + (cols & 1)  # even number of 32-bit columns
    raw = rng.integers(0, np.iinfo(np.uint64).max, size=(rows, cols2 // 2), dtype=np.uint64, endpoint=True)
    return raw.view(np.uint32)[:, :cols]


def simulate_independent(m, k, alpha, r, n_networks, rng, *, chunk: int = 1 << 22) -> SimResult:
    """Model (a), the paper's (Sec. A.5): ``alpha r`` independent neurons per network.

    Parameters
    ----------
    m, k, alpha, r : int
        Setting, as in :mod:`fpe_ref.theory.closed_form`.
    n_networks : int
        Networks to simulate (>= 2).
    rng : numpy.random.Generator
        Source of all randomness (uint32 draws, in chunks of about ``chunk`` numbers).
    """
    rng = as_rng(rng)  # an int seed or a Generator
    m, k, alpha, r, C, n_networks = _check_sim(m, k, alpha, r, n_networks)
    t0 = time.perf_counter()
    degrees = slot_degrees(m, alpha, r)
    n_slots = degrees.size
    n_draw = int(max(min(d, m - d) for d, _ in cf.degree_profile(m, alpha)))
    n_draw = max(n_draw, 1)
    per = max(1, chunk // (n_slots * n_draw))  # networks per chunk
    all_cov = np.empty(n_networks, dtype=bool)
    missed = np.empty(n_networks, dtype=bool)
    coll = np.empty(n_networks, dtype=np.int64)
    hits = 0
    perm = np.arange(m, dtype=np.int64)  # Fisher-Yates buffer, carried across chunks
    for a in range(0, n_networks, per):
        b = min(n_networks, a + per)
        u = uniform_u32(rng, ((b - a) * n_slots, n_draw))
        ac, co, mi, h = independent_stats(u, m, k, degrees, a, perm)
        all_cov[a:b], coll[a:b], missed[a:b] = ac, co, mi
        hits += h
    return SimResult("a", m, k, alpha, r, all_cov, coll, missed, hits, n_networks * n_slots, n_networks * n_slots, time.perf_counter() - t0)


def simulate_split(m, k, alpha, r, n_networks, rng, *, chunk_rows: int = 1 << 15) -> SimResult:
    """Model (b), what fpe-ref builds: ``r`` parents per network, each split by ``fpe_ref.splits.random_split``.

    ``random_split(h, m, alpha, rng)`` is called on blocks of whole networks
    (``h = networks_in_block * r``); its rows ``i alpha .. i alpha + alpha - 1`` are parent
    ``i``'s children, and network ``n``'s parents are ``n r .. n r + r - 1``. With ``alpha = 1``
    the "split" is the identity (the parent itself); ``random_split`` only accepts
    ``alpha >= 2``, so that case builds all-ones masks directly.
    """
    rng = as_rng(rng)  # an int seed or a Generator
    m, k, alpha, r, C, n_networks = _check_sim(m, k, alpha, r, n_networks)
    t0 = time.perf_counter()
    n_neur = alpha * r
    per = max(1, chunk_rows // n_neur)
    all_cov = np.empty(n_networks, dtype=bool)
    missed = np.empty(n_networks, dtype=bool)
    coll = np.empty(n_networks, dtype=np.int64)
    hits = 0
    for a in range(0, n_networks, per):
        b = min(n_networks, a + per)
        if alpha == 1:
            masks = np.ones(((b - a) * r, m), dtype=bool)
        else:
            masks = random_split((b - a) * r, m, alpha, rng)  # ((b-a) r alpha, m)
        ac, co, mi, h = mask_stats(masks, b - a, k, unit=alpha, net0=a)
        all_cov[a:b], coll[a:b], missed[a:b] = ac, co, mi
        hits += h
    return SimResult("b", m, k, alpha, r, all_cov, coll, missed, hits, n_networks * r, n_networks * n_neur, time.perf_counter() - t0)


def simulate_dense(m, k, r, n_networks) -> SimResult:
    """Model (c): ``r`` neurons that see all ``m`` literals (no randomness; Sec. A.5 "dense")."""
    m, k, _, r, C, n_networks = _check_sim(m, k, 1, r, n_networks)
    t0 = time.perf_counter()
    masks = np.ones((n_networks * r, m), dtype=bool)
    ac, co, mi, h = mask_stats(masks, n_networks, k)
    return SimResult("dense", m, k, 1, r, ac, co, mi, h, n_networks * r, n_networks * r, time.perf_counter() - t0)


def neurons_per_second(m: int = 128, k: int = 4, alpha: int = 2, r: int = 64, n_neurons: int = 1 << 20, seed: int = 0, repeats: int = 3) -> float:
    """Model (a) sampling rate on one core (draws included, compilation excluded); best of ``repeats``.

    The default setting is the one the speed target names: ``m = 128`` literals, degree
    ``d = 64`` (``alpha = 2``), i.e. 64 Fisher-Yates steps per neuron. The best of a few runs
    is reported because other processes on the machine only ever slow a run down.
    """
    rng = np.random.default_rng(seed)
    simulate_independent(m, k, alpha, r, 2, rng)  # compile / load the cached kernel
    n_net = max(2, n_neurons // (alpha * r))
    best = 0.0
    for _ in range(max(1, int(repeats))):
        res = simulate_independent(m, k, alpha, r, n_net, rng)
        best = max(best, res.n_neurons / res.seconds)
    return best
