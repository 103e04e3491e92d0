"""Closed forms for clause coverage and clause collisions in a randomly sparsified FPE layer.

Paper: Sec. 2.5 (summary) and Sec. A.5 (full argument), "Expand Neurons, Not Parameters".

Setting (Sec. A.5, "Model Setup")
---------------------------------
A read-once DNF over ``m`` literals has ``C = m / k`` disjoint clauses of ``k`` literals each
(Sec. A.2.1: "m Boolean variables partitioned into C = m/k disjoint clauses"). A dense layer
has ``r`` neurons that see all ``m`` literals. The FPE layer with expansion factor ``alpha``
has ``alpha * r`` neurons of degree ``d = m / alpha``, so both layers hold ``r * m`` non-zero
first-layer weights. A neuron *covers* a clause when all ``k`` literals of the clause are
among its ``d`` inputs.

Two random FPE models are treated here:

(a) the paper's model: each of the ``alpha * r`` neurons picks its ``d`` literals uniformly
    at random, independently of every other neuron (Sec. A.5: "let us allow for replacement
    when choosing non-zero weights between all neurons").
(b) the construction fpe-ref actually builds (``fpe_ref.splits.random_split``): each of the
    ``r`` parents partitions its ``m`` inputs at random into ``alpha`` disjoint children.
    Parents are independent; children of one parent are not.

Degrees when ``alpha`` does not divide ``m``
-------------------------------------------
The paper writes ``d = m / alpha``. fpe-ref's balanced random split gives ``m % alpha`` of a
parent's children ``m // alpha + 1`` inputs and the others ``m // alpha``. We use the same
*degree profile* for model (a), so that (a) and (b) hold the same non-zero count: per parent
(per group of ``alpha`` neurons in (a)) there are ``m % alpha`` neurons of degree
``m // alpha + 1`` and ``alpha - m % alpha`` of degree ``m // alpha``. Every formula below is
written for one degree ``d`` and combined over the profile by products (independent neurons)
or sums (expectations). When ``alpha`` divides ``m`` this is exactly the paper's model.

Exactness and stability
-----------------------
``p`` and ``p'`` are evaluated with log-binomials (``scipy.special.gammaln``) through the
identity ``C(m-k, d-k) / C(m, d) = C(d, k) / C(m, k)`` (count the d-subsets that contain a
fixed k-set, or the k-sets inside a fixed d-subset), which keeps the arguments of the
log-binomials small; they are accurate to ~1e-12 relative for ``m`` up to 10^4.
The exact coverage probabilities (beyond the paper) are built from exact integer counts
(Python ``int``); their inclusion-exclusion sums alternate in sign and lose all precision in
float64 once ``C`` reaches a few dozen, so they are summed in ``decimal`` with enough digits
to absorb the cancellation (or in ``fractions.Fraction`` on request, used by the tests).

Bad input raises :class:`fpe_ref.errors.FPEError`.
"""

from __future__ import annotations

import decimal
import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy.special import gammaln

from fpe_ref.errors import FPEError, check_int

__all__ = [
    "log_binom",
    "degree_profile",
    "n_clauses",
    "p_cover",
    "p_pair",
    "p_cover_approx",
    "p_pair_approx",
    "p_missed",
    "expected_missed",
    "union_bound",
    "union_bound_approx",
    "width_requirement",
    "expected_collisions_dense",
    "expected_collisions_fpe",
    "collision_ratio",
    "collision_ratio_approx",
    "coverage_exact",
    "p_parent_cover",
    "p_missed_split",
    "union_bound_split",
    "coverage_exact_split",
    "expected_collisions_split",
    "collision_ratio_split",
    "smallest_r",
    "MAX_EXACT_CLAUSES",
]

#: Largest clause count for which the exact inclusion-exclusion coverage is computed
#: (cost grows like C^2 big-integer products; C = 256 takes about a second).
MAX_EXACT_CLAUSES = 256


# ----------------------------------------------------------------------------- validation


def _as_int(name: str, value, lo: int) -> int:
    """Return ``value`` as an int >= ``lo`` (a float holding an integer is accepted) or raise FPEError."""
    return check_int(name, value, lo, integral_float=True)


def _check_mdk(m, d, k) -> tuple[int, int, int]:
    """Validate one neuron's (m, d, k): 1 <= k <= d <= m."""
    m = _as_int("m (number of literals)", m, 1)
    d = _as_int("d (neuron degree)", d, 1)
    k = _as_int("k (literals per clause)", k, 1)
    if d > m:
        raise FPEError(f"d={d} > m={m}: a neuron cannot have more inputs than there are literals")
    if k > d:
        raise FPEError(f"k={k} > d={d}: a neuron with d inputs can never hold a k-literal clause")
    return m, d, k


def _check_alpha(alpha, m: int) -> int:
    alpha = _as_int("alpha (expansion factor)", alpha, 1)
    if alpha > m:
        raise FPEError(f"alpha={alpha} > m={m}: some neurons would have no inputs (d = m/alpha < 1)")
    return alpha


def n_clauses(m, k) -> int:
    """Number of clauses ``C = m / k`` of the read-once DNF (Paper: Sec. A.2.1, Alg. A2 line 3).

    Raises FPEError when ``k`` does not divide ``m``: the clauses would not tile the literals.
    """
    m = _as_int("m (number of literals)", m, 1)
    k = _as_int("k (literals per clause)", k, 1)
    if k > m:
        raise FPEError(f"k={k} > m={m}: a clause cannot have more literals than there are")
    if m % k:
        raise FPEError(f"m={m} is not divisible by k={k}: the C = m/k disjoint clauses must tile the literals")
    return m // k


def _check_net(m, k, alpha, r) -> tuple[int, int, int, int, int]:
    """Validate a network setting; return (m, k, alpha, r, C)."""
    C = n_clauses(m, k)
    m, k = int(m), int(k)
    alpha = _check_alpha(alpha, m)
    r = _as_int("r (dense width / number of parents)", r, 1)
    return m, k, alpha, r, C


def degree_profile(m, alpha) -> tuple[tuple[int, int], ...]:
    """Degrees of one parent's ``alpha`` children: ``((degree, how many), ...)``.

    Paper: Sec. A.5 "each of which is connected to d = m/alpha literals". When ``alpha``
    does not divide ``m`` we follow ``fpe_ref.splits.random_partition`` (balanced split):
    ``m % alpha`` children get ``m // alpha + 1`` inputs, the rest ``m // alpha``.
    Degree classes with count zero are omitted; the counts sum to ``alpha``.
    """
    m = _as_int("m (number of literals)", m, 1)
    alpha = _check_alpha(alpha, m)
    q, rem = divmod(m, alpha)
    prof = []
    if alpha - rem:
        prof.append((q, alpha - rem))
    if rem:
        prof.append((q + 1, rem))
    return tuple(prof)


# ----------------------------------------------------------------------------- binomials


def log_binom(n, k):
    """``ln C(n, k)`` via ``gammaln``; ``-inf`` where ``k < 0`` or ``k > n`` (broadcasts)."""
    n = np.asarray(n, dtype=float)
    k = np.asarray(k, dtype=float)
    ok = (k >= 0) & (k <= n)
    with np.errstate(invalid="ignore"):
        val = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    out = np.where(ok, val, -np.inf)
    return float(out) if out.ndim == 0 else out


def _p_subset(m: int, d: int, j: int) -> float:
    """P[a uniform d-subset of m contains a fixed j-set] = C(m-j, d-j)/C(m, d) = C(d, j)/C(m, j)."""
    if j > d:
        return 0.0
    return math.exp(log_binom(d, j) - log_binom(m, j))


# ----------------------------------------------------------------------------- model (a): Sec. A.5


def p_cover(m, d, k) -> float:
    """Chance that one neuron of degree ``d`` covers a given ``k``-literal clause.

    Paper: Sec. A.5, "Clause Coverage Probability"::

        p = C(m-k, d-k) / C(m, d)      (= C(d, k) / C(m, k), the form evaluated here)

    Parameters
    ----------
    m : int
        Number of literals.
    d : int
        The neuron's degree (number of non-zero inputs), ``k <= d <= m``.
    k : int
        Literals per clause.
    """
    m, d, k = _check_mdk(m, d, k)
    return _p_subset(m, d, k)


def p_pair(m, d, k) -> float:
    """Chance that one neuron of degree ``d`` covers two given disjoint clauses.

    Paper: Sec. A.5, "Interference Analysis"::

        p' = C(m-2k, d-2k) / C(m, d)   (= C(d, 2k) / C(m, 2k); zero when d < 2k)

    Requires ``2k <= m`` (two disjoint clauses must exist) and ``k <= d``.
    """
    m, d, k = _check_mdk(m, d, k)
    if 2 * k > m:
        raise FPEError(f"2k={2 * k} > m={m}: there are no two disjoint {k}-literal clauses")
    return _p_subset(m, d, 2 * k)


def p_cover_approx(k, alpha) -> float:
    """The paper's large-m approximation ``p ~ (d/m)^k = alpha^-k`` (Sec. A.5)."""
    k = _as_int("k (literals per clause)", k, 1)
    alpha = _as_int("alpha (expansion factor)", alpha, 1)
    return float(alpha) ** (-k)


def p_pair_approx(k, alpha) -> float:
    """The paper's approximation ``p' ~ alpha^-2k`` (Sec. A.5)."""
    k = _as_int("k (literals per clause)", k, 1)
    alpha = _as_int("alpha (expansion factor)", alpha, 1)
    return float(alpha) ** (-2 * k)


def _profile_p(m: int, k: int, alpha: int, j: int):
    """[(P[a neuron of this degree contains a fixed j-set], neurons of this degree per parent)]."""
    return [(_p_subset(m, d, j), cnt) for d, cnt in degree_profile(m, alpha)]


def p_missed(m, k, alpha, r) -> float:
    """P[a given clause is missed by all ``alpha * r`` neurons] under model (a).

    Paper: Sec. A.5, ``M_i = (1 - p)^(alpha r)`` (independent neurons). With a balanced
    degree profile this is ``prod_d (1 - p_d)^(r * n_d)``. Evaluated as
    ``exp(sum r n_d log1p(-p_d))``.
    """
    m, k, alpha, r, _ = _check_net(m, k, alpha, r)
    logq = sum(r * cnt * (np.log1p(-p) if p < 1 else -np.inf) for p, cnt in _profile_p(m, k, alpha, k))
    return float(np.exp(logq))


def expected_missed(m, k, alpha, r) -> float:
    """E[number of clauses missed by every neuron] = ``C (1-p)^(alpha r)`` (model (a), Sec. A.5).

    This is the sum in the union bound: ``P[some clause missed] <= E[#missed]``.
    """
    m, k, alpha, r, C = _check_net(m, k, alpha, r)
    return C * p_missed(m, k, alpha, r)


def union_bound(m, k, alpha, r) -> float:
    """The paper's union bound ``P[all C clauses covered] >= 1 - C (1-p)^(alpha r)`` (Sec. A.5).

    Returned unclipped: a negative value means the bound says nothing (it is vacuous).
    It is also a valid lower bound under model (b), whose per-clause miss probability
    ``(1 - alpha p)^r`` is never larger (see :func:`p_missed_split`).
    """
    return 1.0 - expected_missed(m, k, alpha, r)


def union_bound_approx(k, alpha, r, C) -> float:
    """The paper's approximation of the union bound, ``1 - C exp(-r / alpha^(k-1))`` (Sec. A.5).

    Obtained from ``p ~ alpha^-k`` and ``(1 - x) ~ exp(-x)``. Unclipped.
    """
    k = _as_int("k (literals per clause)", k, 1)
    alpha = _as_int("alpha (expansion factor)", alpha, 1)
    r = _as_int("r (dense width / number of parents)", r, 1)
    C = _as_int("C (number of clauses)", C, 1)
    return 1.0 - C * math.exp(-r / float(alpha) ** (k - 1))


def width_requirement(k, alpha, C, eps) -> float:
    """The paper's width requirement ``r > alpha^(k-1) ln(C / eps)`` (Sec. A.5).

    With this ``r`` the *approximate* union bound gives ``P[all covered] >= 1 - eps``. At
    finite ``m`` the exact ``p`` is below ``alpha^-k``, so this ``r`` can be too small; see
    :func:`smallest_r` for the exact requirement.
    """
    k = _as_int("k (literals per clause)", k, 1)
    alpha = _as_int("alpha (expansion factor)", alpha, 1)
    C = _as_int("C (number of clauses)", C, 1)
    eps = float(eps)
    if not 0.0 < eps < 1.0:
        raise FPEError(f"eps must lie in (0, 1), got {eps!r}")
    return float(alpha) ** (k - 1) * math.log(C / eps)


def expected_collisions_dense(C, r) -> float:
    """Collisions (neuron, clause pair) of the dense layer: ``E_dense = r C(C, 2)`` (Sec. A.5).

    Every dense neuron sees every literal, so it covers every pair of clauses.
    """
    C = _as_int("C (number of clauses)", C, 1)
    r = _as_int("r (dense width / number of parents)", r, 1)
    return float(r * math.comb(C, 2))


def expected_collisions_fpe(m, k, alpha, r) -> float:
    """Expected collisions of the FPE layer: ``E_FPE = alpha r C(C, 2) p'`` (Sec. A.5).

    With a balanced degree profile: ``r C(C, 2) sum_d n_d p'_d``. A neuron that covers
    ``t`` clauses contributes ``C(t, 2)`` collisions.
    """
    m, k, alpha, r, C = _check_net(m, k, alpha, r)
    if C < 2:
        return 0.0
    return r * math.comb(C, 2) * sum(cnt * p2 for p2, cnt in _profile_p(m, k, alpha, 2 * k))


def collision_ratio(m, k, alpha) -> float:
    """``E_FPE / E_dense = alpha p'`` (Sec. A.5); with a degree profile ``sum_d n_d p'_d``.

    Independent of ``r`` and of ``C``. Requires ``2k <= m``.
    """
    C = n_clauses(m, k)
    if C < 2:
        raise FPEError(f"m={m}, k={k} gives C={C} clause: the collision ratio needs at least two clauses")
    alpha = _check_alpha(alpha, int(m))
    return float(sum(cnt * p2 for p2, cnt in _profile_p(int(m), int(k), alpha, 2 * int(k))))


def collision_ratio_approx(k, alpha) -> float:
    """The paper's headline approximation ``E_FPE / E_dense ~ alpha^-(2k-1)`` (Sec. 2.5, A.5)."""
    k = _as_int("k (literals per clause)", k, 1)
    alpha = _as_int("alpha (expansion factor)", alpha, 1)
    return float(alpha) ** (-(2 * k - 1))


# ----------------------------------------------------------------------------- exact coverage, model (a)


def _alternating_sum(C: int, factors, exact: bool):
    """``sum_{j=0}^{C} (-1)^j C(C, j) prod_(a, b, e) in factors[j] (a / b)^e`` for integers ``0 <= a <= b``.

    ``exact=True``: in ``Fraction`` (exact, slow when the exponents are large).
    Otherwise in ``decimal`` with enough significant digits for a relative error below
    1e-20: every term is at most ``C(C, j) <= 2^C`` and carries a relative rounding error of
    about ``e 10^-digits``, so the sum's absolute error is below
    ``10^slack 10^-digits`` with ``slack = log10((C+1) 2^C e) + 2``. The sum is recomputed with
    more digits until it exceeds that error by 20 orders of magnitude (or is far below the
    smallest float). Callers exclude sums that are exactly zero.
    """
    if exact:
        total = Fraction(0)
        for j, fac in enumerate(factors):
            term = Fraction(math.comb(C, j))
            for a, b, e in fac:
                term *= Fraction(a, b) ** e
            total += -term if j % 2 else term
        return total
    e_max = max([e for fac in factors for _, _, e in fac] + [1])
    slack = math.ceil(math.log10(C + 1) + C * math.log10(2.0) + math.log10(e_max)) + 2
    digits = slack + 40
    while True:
        with decimal.localcontext() as ctx:
            ctx.prec = digits
            ctx.Emin = decimal.MIN_EMIN
            ctx.Emax = decimal.MAX_EMAX
            total = decimal.Decimal(0)
            for j, fac in enumerate(factors):
                term = decimal.Decimal(math.comb(C, j))
                for a, b, e in fac:
                    term *= (decimal.Decimal(a) / decimal.Decimal(b)) ** e
                total += -term if j % 2 else term
        log_err = slack - digits  # log10 of the absolute error bound
        if total > 0 and total.log10() > log_err + 20:
            return float(total)
        if log_err < -400:  # |result| < 1e-380: zero as a float
            return 0.0
        grow = int(-total.log10()) if total > 0 else digits
        digits += max(grow, 20) + 20


def _coverable(m: int, k: int, alpha: int, r: int, C: int) -> bool:
    """Whether all ``C`` clauses can be covered at all: ``r sum_d n_d floor(d / k) >= C``.

    Each neuron (child) of degree ``d`` holds at most ``floor(d / k)`` disjoint clauses; if the
    network cannot hold ``C`` the exact coverage is 0, and otherwise it is strictly positive
    (give distinct clauses to distinct neurons), under model (a) and model (b) alike.
    """
    return r * sum(cnt * (d // k) for d, cnt in degree_profile(m, alpha)) >= C


@lru_cache(maxsize=4096)
def _count_missing_all(m: int, d: int, k: int, j: int) -> int:
    """Number of d-subsets of m literals that contain *none* of ``j`` given disjoint k-clauses.

    Inclusion-exclusion over which of the ``j`` clauses are contained:
    ``sum_i (-1)^i C(j, i) C(m - i k, d - i k)`` (exact integers).
    """
    total = 0
    for i in range(j + 1):
        if i * k > d:
            break
        total += (-1) ** i * math.comb(j, i) * math.comb(m - i * k, d - i * k)
    return total


def coverage_exact(m, k, alpha, r, *, exact: bool = False):
    """Exact ``P[all C clauses covered]`` under model (a) (beyond the paper).

    The union bound of Sec. A.5 only bounds this. With independent neurons, inclusion-
    exclusion over the set ``J`` of clauses that are missed gives::

        P[all covered] = sum_{j=0}^{C} (-1)^j C(C, j) prod_d b_j(d)^(r n_d)

    where ``b_j(d)`` is the chance that one neuron of degree ``d`` covers none of ``j`` given
    clauses. The clauses are disjoint, so containing ``i`` given clauses means containing a
    fixed ``i k``-set, and::

        b_j(d) = sum_{i=0}^{j} (-1)^i C(j, i) C(m - i k, d - i k) / C(m, d)

    The counts are exact integers; the alternating sum is evaluated in high-precision decimal
    arithmetic to a relative error below 1e-20 (see :func:`_alternating_sum`), or exactly
    with ``exact=True``. Exactly 0 when the network cannot hold all clauses (:func:`_coverable`).

    Parameters
    ----------
    m, k, alpha, r : int
        Literals, literals per clause, expansion factor, dense width (so ``alpha r`` neurons).
    exact : bool
        Return a :class:`fractions.Fraction` instead of a float.
    """
    m, k, alpha, r, C = _check_net(m, k, alpha, r)
    if C > MAX_EXACT_CLAUSES:
        raise FPEError(f"C={C} clauses: exact coverage is only computed for C <= {MAX_EXACT_CLAUSES}")
    if not _coverable(m, k, alpha, r, C):
        return Fraction(0) if exact else 0.0
    prof = degree_profile(m, alpha)
    # one neuron of degree d covers none of j given clauses with chance B_j(d) / C(m, d)
    factors = [[(_count_missing_all(m, d, k, j), math.comb(m, d), r * cnt) for d, cnt in prof] for j in range(C + 1)]
    return _alternating_sum(C, factors, exact)


# ----------------------------------------------------------------------------- model (b): fpe_ref random split


def p_parent_cover(m, k, alpha) -> float:
    """P[one parent's random split keeps a given clause inside one child] (model (b), beyond the paper).

    The children partition the parent's inputs, so at most one child can cover the clause,
    and child ``c`` of size ``s_c`` covers it with chance ``C(s_c, k) / C(m, k)`` (its input set
    is a uniform ``s_c``-subset). Hence::

        P[parent covers clause] = sum_c C(s_c, k) / C(m, k)      (= alpha p when alpha | m)

    Under model (a) a group of ``alpha`` independent neurons covers it with the smaller chance
    ``1 - (1 - p)^alpha``: (b) never wastes two children on the same clause.
    """
    m, k, alpha, _, _ = _check_net(m, k, alpha, 1)
    return float(sum(cnt * p for p, cnt in _profile_p(m, k, alpha, k)))


def p_missed_split(m, k, alpha, r) -> float:
    """P[a given clause is missed by every child of all ``r`` parents] = ``(1 - P_parent)^r`` (model (b)).

    Parents are independent. Since ``1 - alpha p <= (1 - p)^alpha``, this is never larger than
    the paper's ``(1 - p)^(alpha r)``.
    """
    m, k, alpha, r, _ = _check_net(m, k, alpha, r)
    q = 1.0 - p_parent_cover(m, k, alpha)
    return float(q**r) if q > 0 else 0.0


def union_bound_split(m, k, alpha, r) -> float:
    """Union bound for model (b): ``P[all covered] >= 1 - C (1 - P_parent)^r``. Unclipped."""
    m, k, alpha, r, C = _check_net(m, k, alpha, r)
    return 1.0 - C * p_missed_split(m, k, alpha, r)


@lru_cache(maxsize=1024)
def _split_intact_counts(m: int, k: int, alpha: int) -> tuple[int, ...]:
    """``N_i`` = number of labelled balanced partitions keeping ``i`` given clauses intact, i = 0..C.

    A labelled partition with child sizes ``s_1..s_alpha`` is one of ``M = m! / prod s_c!``
    equally likely ones (``fpe_ref.splits.random_partition`` draws a uniform permutation).
    To keep ``i`` given disjoint clauses intact, send clause ``j`` wholly to child ``c_j``; if
    child ``c`` receives ``t_c`` clauses, the other ``m - i k`` literals fill the remaining
    ``s_c - k t_c`` slots in ``(m - i k)! / prod (s_c - k t_c)!`` ways, and there are
    ``i! / prod t_c!`` ways to pick which clauses go where. Summing over ``t``::

        N_i = i! (m - i k)! [x^i] prod_c F_{s_c}(x),   F_s(x) = sum_t x^t / (t! (s - k t)!)
    """
    prof = degree_profile(m, alpha)
    C = m // k
    poly = [Fraction(1)]
    for s, cnt in prof:
        f = [Fraction(1, math.factorial(t) * math.factorial(s - k * t)) for t in range(s // k + 1)]
        for _ in range(cnt):
            new = [Fraction(0)] * (len(poly) + len(f) - 1)
            for a, pa in enumerate(poly):
                if pa:
                    for b, fb in enumerate(f):
                        new[a + b] += pa * fb
            poly = new
    out = []
    for i in range(C + 1):
        coef = poly[i] if i < len(poly) else Fraction(0)
        n_i = coef * math.factorial(i) * math.factorial(m - i * k)
        if n_i.denominator != 1:  # pragma: no cover - an algebra error, not bad input
            raise AssertionError("intact-clause count is not an integer")
        out.append(int(n_i))
    return tuple(out)


def coverage_exact_split(m, k, alpha, r, *, exact: bool = False):
    """Exact ``P[all C clauses covered]`` under model (b), fpe-ref's random split (beyond the paper).

    A clause is covered by parent ``i`` iff its ``k`` literals land in one child. With
    ``N_i`` from :func:`_split_intact_counts` and ``M`` the number of partitions, the chance
    that one parent keeps none of ``j`` given clauses intact is::

        q_j = sum_{i=0}^{j} (-1)^i C(j, i) N_i / M

    and, parents being independent, inclusion-exclusion over the missed set gives::

        P[all covered] = sum_{j=0}^{C} (-1)^j C(C, j) q_j^r

    Exact integer counts; high-precision decimal sum, or a Fraction with ``exact=True``.
    """
    m, k, alpha, r, C = _check_net(m, k, alpha, r)
    if C > MAX_EXACT_CLAUSES:
        raise FPEError(f"C={C} clauses: exact coverage is only computed for C <= {MAX_EXACT_CLAUSES}")
    if not _coverable(m, k, alpha, r, C):
        return Fraction(0) if exact else 0.0
    N = _split_intact_counts(m, k, alpha)
    M = math.factorial(m)
    for s, cnt in degree_profile(m, alpha):
        M //= math.factorial(s) ** cnt
    if N[0] != M:  # pragma: no cover
        raise AssertionError("partition count mismatch")
    factors = []
    for j in range(C + 1):
        Q = sum((-1) ** i * math.comb(j, i) * N[i] for i in range(j + 1))  # partitions keeping none of j clauses
        factors.append([(Q, M, r)])
    return _alternating_sum(C, factors, exact)


def expected_collisions_split(m, k, alpha, r) -> float:
    """Expected collisions under model (b): equal to :func:`expected_collisions_fpe`.

    Each child's input set is marginally a uniform subset of its size, so by linearity of
    expectation ``E_FPE = r C(C, 2) sum_c C(s_c, 2k) / C(m, 2k)``, the same as model (a) with
    the same degree profile. Only the distribution (not the mean) of the count differs.
    """
    return expected_collisions_fpe(m, k, alpha, r)


def collision_ratio_split(m, k, alpha) -> float:
    """``E_FPE / E_dense`` under model (b): equal to :func:`collision_ratio` (see above)."""
    return collision_ratio(m, k, alpha)


# ----------------------------------------------------------------------------- requirements


def smallest_r(m, k, alpha, eps, *, criterion: str = "coverage_a", r_max: int = 1 << 20) -> int | None:
    """Smallest width ``r`` with ``criterion(r) >= 1 - eps`` (``None`` if above ``r_max``).

    ``criterion`` is one of ``"union_bound"`` (the paper's bound with the exact ``p``),
    ``"coverage_a"`` (exact coverage, model (a)) or ``"coverage_b"`` (exact, model (b)).
    All three are non-decreasing in ``r``; a doubling search then bisection is used.
    Compare with the paper's :func:`width_requirement`.
    """
    funcs = {"union_bound": union_bound, "coverage_a": coverage_exact, "coverage_b": coverage_exact_split}
    if criterion not in funcs:
        raise FPEError(f"criterion must be one of {sorted(funcs)}, got {criterion!r}")
    eps = float(eps)
    if not 0.0 < eps < 1.0:
        raise FPEError(f"eps must lie in (0, 1), got {eps!r}")
    f = funcs[criterion]
    if criterion == "union_bound":
        # closed form: C prod_d (1 - p_d)^(r n_d) <= eps  <=>  r >= ln(eps / C) / sum_d n_d ln(1 - p_d)
        m_, k_, alpha_, _, C = _check_net(m, k, alpha, 1)
        slope = sum(cnt * (np.log1p(-p) if p < 1 else -np.inf) for p, cnt in _profile_p(m_, k_, alpha_, k_))
        if slope == 0:
            return None
        r = max(1, math.ceil(math.log(eps / C) / slope - 1e-9))
        while r > 1 and f(m, k, alpha, r - 1) >= 1 - eps:
            r -= 1
        while f(m, k, alpha, r) < 1 - eps:
            r += 1
        return r if r <= r_max else None
    lo, hi = 0, 1  # f(lo) < 1 - eps (lo = 0 means "no neurons"), f(hi) >= 1 - eps after search
    while f(m, k, alpha, hi) < 1 - eps:
        lo, hi = hi, hi * 2
        if hi > r_max:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f(m, k, alpha, mid) >= 1 - eps:
            hi = mid
        else:
            lo = mid
    return hi
