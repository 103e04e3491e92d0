"""Golden reference bundles: canonical tensors other implementations are checked against.

A bundle is a directory with two files (format and names: ``docs/golden.md``):

``golden.npz``
    float64 arrays only, keyed ``<section>/<case>/<tensor>``. Inputs (weights, masks,
    batches, split masks, tie-break keys) are stored next to the expected outputs, so a
    checked implementation needs no random generator compatible with ours. Integer-valued
    tensors (labels, masks, pruned positions) are float64 arrays holding exact integers.
``manifest.json``
    format version, fpe-ref version, seeds, every case's configuration, and for every
    tensor its role (``input`` / ``expected``), shape, SHA-256 and tolerances.

Sections:

``forward``  activations, data loss and every parameter gradient of dense and expanded MLPs
             (1 and 5 hidden layers, BCE and cross-entropy, with and without LayerNorm);
``expand``   Alg. A1 with explicit split masks and an explicit tie-break key: resulting
             weights, masks and pruned positions;
``adam``     20 Adam steps with every penalty on, on fixed batches: loss, weights and both
             moments after each step;
``metrics``  Gram matrix, capacity and mean cosine on fixed weights.

The expected outputs are computed by :func:`compute_numpy` -- our own layers, MLP, expand,
optim and metrics -- and ``check --impl numpy`` calls the same function on the stored
inputs, so our code reproduces the bundle exactly (tolerance 0). ``--impl torch`` runs the
independent PyTorch implementation in :mod:`fpe_ref.parity.torch_ref` (imported lazily).

Tolerance rule, per expected tensor ``ref`` and computed ``x`` (both compared in float64)::

    max_abs = max |x - ref|,   max_rel = max_abs / max |ref|,   pass iff max_rel <= tol

i.e. the error is relative to the tensor's largest magnitude, not element by element (a
gradient entry that is 0 up to cancellation has no meaningful elementwise relative error).
Masks and pruned positions are exact (tol 0) in every dtype. A reference whose largest
magnitude is 0 (all zeros, or no elements) must be reproduced exactly: ``max_rel`` is 0 when
``x`` is exactly 0 too and inf otherwise. NaN in a reference (the mean cosine of fewer than
two non-zero rows) is matched only by NaN at the same positions; NaN anywhere else fails.

Checking any implementation
---------------------------
``check --impl MODULE:CALLABLE`` (an importable module, as ``import MODULE`` finds it from
the current directory) or ``--impl path/to/file.py:CALLABLE`` (a file, imported with its
directory on ``sys.path``); ``CALLABLE`` may be dotted (``module:Class.method``). It is
called once per case, after the bundle's shapes and SHA-256 checksums have been verified
(a case with a corrupted input is never passed to it)::

    outputs = impl(config, inputs, dtype, device)

``config``
    a copy of the case's configuration, ``manifest["cases"][name]``: ``config["section"]``
    is ``"forward"``, ``"expand"``, ``"adam"`` or ``"metrics"``, the other fields are the
    section's (docs/golden.md, sections 3 to 6).
``inputs``
    ``{tensor name: numpy.ndarray}``, the case's ``input`` tensors without the
    ``<section>/<case>/`` prefix, as stored: float64, C order, fresh copies.
``dtype``
    ``"float64"`` or ``"float32"`` (``--dtype``): the precision to compute in. The inputs
    stay float64; the implementation casts them (the tie key is compared, never computed
    with: keep it float64).
``device``
    ``"cpu"`` or ``"cuda"`` (``--device``), passed through for the implementation to use.

It returns a mapping ``{tensor name: array-like}`` holding the case's ``expected`` tensors,
named as in the bundle without the prefix (``act/a1``, ``grad/W1``, ``mask/W2``, ...; the
names of each section are in docs/golden.md), each anything ``numpy.asarray`` turns into a
float64 array of the expected shape (a torch tensor: ``t.detach().cpu()``). A name it
leaves out fails ("not computed"); names it adds are ignored.

**Not implemented**: a case the implementation does not support raises
``NotImplementedError`` (typically for a whole section: ``if config["section"] == "adam":
raise NotImplementedError``); its tensors are reported ``NOT IMPLEMENTED``, apart from the
failures. Any other exception fails every tensor of the case, naming the exception.
:attr:`CheckReport.exit_status` (the exit status of ``fpe golden check``) is 0 when every
checked tensor passes, 1 when any fails, 3 when none fails but some are not implemented
(2 is bad input: a missing bundle, an ``--impl`` that cannot be loaded).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import json
import os
import secrets
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fpe_ref import __version__, layers
from fpe_ref.data.npz import read_npz
from fpe_ref.errors import FPEError
from fpe_ref.expand import expand
from fpe_ref.metrics import capacity, gram, mean_cosine
from fpe_ref.mlp import MLP
from fpe_ref.optim import Adam, Penalties
from fpe_ref.train import train_step
from fpe_ref.rng import stream

FORMAT_VERSION = 1
NPZ_NAME = "golden.npz"
MANIFEST_NAME = "manifest.json"
SEED = 20250  # the one seed every golden input derives from: stream(SEED, "golden", <case>)
IMPLS = ("numpy", "torch")
DEVICES = ("cpu", "cuda")
DTYPES = ("float64", "float32")
TOL_FLOAT64 = 1e-10  # relative to the tensor's largest magnitude, every non-exact tensor

# float32 tolerances per kind of expected tensor (the first component of the tensor name
# inside its case). Measured worst cases of the torch CPU run are in docs/golden.md; the
# tolerances sit one to two orders of magnitude above them. None = exact in every dtype.
TOL_FLOAT32 = {
    ("forward", "act"): 1e-5,
    ("forward", "logits"): 1e-5,
    ("forward", "loss"): 1e-5,
    ("forward", "grad"): 1e-4,
    ("expand", "param"): 1e-6,  # copies of float32-rounded inputs: <= 2^-24 relative
    ("expand", "mask"): None,
    ("expand", "pruned"): None,
    ("adam", "loss"): 1e-5,
    ("adam", "param"): 1e-5,
    ("adam", "m"): 2e-5,
    ("adam", "v"): 2e-5,
    ("metrics", "gram"): 1e-5,
    ("metrics", "capacity"): 1e-5,
    ("metrics", "capacity_total"): 1e-5,
    ("metrics", "cosine"): 1e-5,
}

# Adam case hyper-parameters: larger than A.3.1's so that every penalty visibly moves the weights.
ADAM_HPARAMS = {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "l1": 1e-3, "l2": 1e-3, "orth": 1e-2, "steps": 20,
                "batch_size": 16}

# Memory-order tie-breaking each expand case's tie key is drawn to defeat (docs/golden.md,
# section 4). At the prune cut-off of every expand case a group of tied copies of one
# W_{l+1} entry is split: some copies pruned, some kept. "memory" prunes the first copies in
# candidate (memory) order, as a stable sort by |w| alone does; "reversed" the last ones.
# With two tied copies (alpha 2) a key can disagree with only one of these, so each alpha-2
# case defeats one and the alpha-3 case both: either order fails two of the three cases.
TIE_ORDERS = ("memory", "reversed")
TIE_DEFEATS = {
    "expand/h1_xent_alpha2": ("memory",),
    "expand/h1_bce_alpha3": ("memory", "reversed"),
    "expand/h3_xent_ln_layer2_masked": ("reversed",),
}


# ================================================================ the canonical cases
@dataclass(frozen=True)
class Case:
    """One canonical case: its name (``<section>/<id>``) and JSON-able configuration."""

    name: str
    config: dict = field(hash=False)

    @property
    def section(self) -> str:
        return self.config["section"]


def canonical_cases() -> list:
    """Every case of the bundle, in export order."""
    cases = []
    for depth in (1, 5):
        for loss in ("bce", "xent"):
            for ln in (False, True):
                for kind in ("dense", "fpe"):
                    name = f"forward/h{depth}_{loss}_{'ln' if ln else 'noln'}_{kind}"
                    cases.append(Case(name, {"section": "forward", "hidden_layers": depth, "loss": loss,
                                             "layer_norm": ln, "expanded": kind == "fpe", "n": 12}))
    cases += [
        Case("expand/h1_xent_alpha2", {"section": "expand", "parent_sizes": [6, 4, 3], "layer_norm": False,
                                       "alpha": 2, "layer": 1, "parent_masked": False}),
        Case("expand/h1_bce_alpha3", {"section": "expand", "parent_sizes": [9, 4, 1], "layer_norm": False,
                                      "alpha": 3, "layer": 1, "parent_masked": False}),
        Case("expand/h3_xent_ln_layer2_masked", {"section": "expand", "parent_sizes": [5, 6, 4, 6, 3],
                                                 "layer_norm": True, "alpha": 2, "layer": 2,
                                                 "parent_masked": True}),
        Case("adam/h1_xent_fpe", {"section": "adam", "parent_sizes": [6, 4, 3], "layer_norm": False,
                                  "expanded": True, **ADAM_HPARAMS}),
        Case("adam/h2_bce_ln_dense", {"section": "adam", "parent_sizes": [6, 5, 4, 1], "layer_norm": True,
                                      "expanded": False, **ADAM_HPARAMS}),
        Case("metrics/dense", {"section": "metrics", "h": 8, "d": 12}),
        Case("metrics/sparse_edge", {"section": "metrics", "h": 8, "d": 12}),
    ]
    return cases


def _forward_sizes(cfg):
    C = 1 if cfg["loss"] == "bce" else 4
    return [6, 5, C] if cfg["hidden_layers"] == 1 else [6, 8, 6, 8, 6, 8, C]


def _model_inputs(model: MLP) -> dict:
    out = {f"param/{k}": v for k, v in model.params.items()}
    out.update({f"mask/{k}": v.astype(np.float64) for k, v in model.masks.items()})
    return out


def _randomize_non_weights(model: MLP, rng):
    """LayerNorm gain/shift away from 1/0 and larger biases, so their gradients are non-trivial."""
    for k, v in model.params.items():
        if k.endswith(".gamma"):
            v[...] = rng.uniform(0.5, 1.5, size=v.shape)
        elif k.endswith(".beta"):
            v[...] = rng.uniform(-0.5, 0.5, size=v.shape)
        elif k.startswith("b"):
            v[...] = rng.uniform(-0.3, 0.3, size=v.shape)


def _distinct_magnitudes(shape_a, shape_b, rng):
    """Two weight matrices whose entries have pairwise distinct magnitudes, >= 1e-2 apart.

    The global |w| ranking of Alg. A1 then has no ties except the duplicated columns (which
    the stored tie-break key orders), and float32 rounding cannot reorder it.
    """
    na, nb = int(np.prod(shape_a)), int(np.prod(shape_b))
    mags = 0.05 + 0.01 * rng.permutation(na + nb)
    signs = np.where(rng.random(na + nb) < 0.5, -1.0, 1.0)
    w = mags * signs
    return w[:na].reshape(shape_a), w[na:].reshape(shape_b)


def _random_split(h, d, alpha, rng, allowed=None):
    """Random partition masks ``(h * alpha, d)`` (every child non-empty, also under ``allowed``)."""
    for _ in range(1000):
        child_of = np.stack([rng.permutation(np.arange(d) % alpha) for _ in range(h)])  # (h, d)
        S = np.zeros((h * alpha, d), dtype=bool)
        for i in range(h):
            S[i * alpha + child_of[i], np.arange(d)] = True
        eff = S if allowed is None else S & allowed[np.repeat(np.arange(h), alpha)]
        if eff.any(axis=1).all():
            return S
    raise AssertionError("could not draw a split without empty children")  # pragma: no cover


def _expand_random(model: MLP, layer: int, rng) -> MLP:
    """``expand`` with alpha 2 and a random partition drawn by :func:`_random_split`.

    The bundle's masks come from this module's own generator, not from
    ``fpe_ref.splits.random_split``: a faster or otherwise changed split there must not
    change the bundle, which other implementations take as their input.
    """
    h, d = model.params[f"W{layer}"].shape
    S = _random_split(h, d, 2, rng, model.masks.get(f"W{layer}"))
    return expand(model, 2, S, rng, layer=layer).model


def build_inputs(case: Case) -> dict:
    """The case's inputs (float64 arrays), drawn from ``stream(SEED, "golden", case.name)``."""
    cfg = case.config
    rng = stream(SEED, "golden", case.name)
    if case.section == "forward":
        sizes = _forward_sizes(cfg)
        model = MLP.init(sizes, rng, layer_norm=cfg["layer_norm"])
        _randomize_non_weights(model, rng)
        if cfg["expanded"]:
            for layer in ((1,) if cfg["hidden_layers"] == 1 else (1, 3)):
                model = _expand_random(model, layer, rng)
        X = rng.normal(size=(cfg["n"], sizes[0]))
        y = rng.integers(0, max(2, sizes[-1]), size=cfg["n"])
        return {"X": X, "y": y.astype(np.float64), **_model_inputs(model)}
    if case.section == "expand":
        sizes, layer, alpha = cfg["parent_sizes"], cfg["layer"], cfg["alpha"]
        model = MLP.init(sizes, rng, layer_norm=cfg["layer_norm"])
        _randomize_non_weights(model, rng)
        nW, nN = f"W{layer}", f"W{layer + 1}"
        masks = {}
        if cfg["parent_masked"]:
            for k in (nW, nN):
                masks[k] = rng.random(model.params[k].shape) < 0.75
        h, d = model.params[nW].shape
        S = _random_split(h, d, alpha, rng, masks.get(nW))
        parent_of = np.repeat(np.arange(h), alpha)
        M = masks.get(nW, np.ones((h, d), dtype=bool))
        Mn = masks.get(nN, np.ones_like(model.params[nN], dtype=bool))
        M1 = S & M[parent_of]
        excess = int(M1.sum() + Mn.sum() * alpha - M.sum() - Mn.sum())
        for _ in range(1000):  # weights whose pruning cut-off falls inside a group of duplicated copies,
            W, Wn = _distinct_magnitudes(model.params[nW].shape, model.params[nN].shape, rng)
            mags = np.sort(np.concatenate([np.abs(W[parent_of][M1]), np.abs(Wn[:, parent_of][Mn[:, parent_of]])]))
            if mags[excess - 1] == mags[excess]:  # so the stored tie-break key decides which copy goes
                break
        else:  # pragma: no cover
            raise AssertionError(f"{case.name}: no weights with a tie at the pruning cut-off")
        model.params[nW], model.params[nN] = W, Wn
        model = MLP(model.params, masks, cfg["layer_norm"])
        n_candidates = int(M1.sum() + Mn.sum() * alpha)
        out = {f"parent/{k}": v for k, v in model.params.items()}
        out.update({f"parent_mask/{k}": v.astype(np.float64) for k, v in model.masks.items()})
        out["split"] = S.astype(np.float64)
        for _ in range(1000):  # a key that orders the cut-off's tied copies unlike memory order (TIE_DEFEATS)
            out["tie_key"] = rng.random(n_candidates)
            if tie_key_problem(case.name, cfg, out) is None:
                break
        else:  # pragma: no cover
            raise AssertionError(f"{case.name}: {tie_key_problem(case.name, cfg, out)}")
        return out
    if case.section == "adam":
        sizes = cfg["parent_sizes"]
        model = MLP.init(sizes, rng, layer_norm=cfg["layer_norm"])
        _randomize_non_weights(model, rng)
        if cfg["expanded"]:
            model = _expand_random(model, 1, rng)
        steps, B = cfg["steps"], cfg["batch_size"]
        X = rng.normal(size=(steps, B, sizes[0]))
        y = rng.integers(0, max(2, sizes[-1]), size=(steps, B))
        out = {f"init/{k}": v for k, v in model.params.items()}
        out.update({f"mask/{k}": v.astype(np.float64) for k, v in model.masks.items()})
        return {"X": X, "y": y.astype(np.float64), **out}
    if case.section == "metrics":
        h, d = cfg["h"], cfg["d"]
        W1 = rng.normal(size=(h, d))
        groups = np.zeros((3, d))
        for i in range(3):
            groups[i, 4 * i:4 * i + 4] = 1.0  # three clauses of four consecutive literals
        if case.name.endswith("sparse_edge"):
            W1 *= rng.random((h, d)) < 0.6  # FPE-like sparsity
            W1[3] = 0.0  # a neuron pruned away: skipped by the cosine
            W1[:, 4:8] = 0.0  # the second clause reaches no neuron: capacity 0 by definition
            groups[2, 11] = 0.0  # an input in no group
        return {"W1": W1, "groups": groups}
    raise AssertionError(case.section)  # pragma: no cover


# ================================================================ the numpy reference path
def _as(inputs, dtype):
    """Fresh C-contiguous copies in ``dtype``: export and check feed identical memory to our code."""
    return {k: np.array(v, dtype=dtype, order="C") for k, v in inputs.items()}


def _mask(a, name):
    if not np.all((a == 0) | (a == 1)):
        raise FPEError(f"{name} must hold only 0 and 1")
    return a == 1


def _labels(y, name):
    if not np.all(y == np.round(y)):
        raise FPEError(f"{name} must hold integer labels")
    return y.astype(np.int64)


def _np_model(inputs, layer_norm, prefix="param/", mask_prefix="mask/"):
    params = {k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)}
    n_layers = sum(1 for k in params if k.startswith("W"))
    try:
        params = MLP._ordered(params, n_layers, layer_norm)
    except KeyError as exc:
        raise FPEError(f"the case lacks parameter {exc}") from exc
    masks = {k[len(mask_prefix):]: _mask(v, k) for k, v in inputs.items() if k.startswith(mask_prefix)}
    return MLP(params, masks, layer_norm)


def _np_forward_record(model: MLP, X):
    """Layer by layer with the core's layer functions, in MLP.forward's order, recording
    ``a{l}`` (Linear output), ``n{l}`` (LayerNorm output) and ``h{l}`` (ReLU output)."""
    acts, h, L = {}, X, model.n_layers
    for l in range(1, L + 1):
        a, _ = layers.linear_forward(h, model.params[f"W{l}"], model.params[f"b{l}"])
        acts[f"a{l}"] = a
        if l < L:
            if model.layer_norm:
                a, _ = layers.layernorm_forward(a, model.params[f"ln{l}.gamma"], model.params[f"ln{l}.beta"])
                acts[f"n{l}"] = a
            a, _ = layers.relu_forward(a)
            acts[f"h{l}"] = a
        h = a
    return h, acts


def _sorted_positions(p):
    p = np.asarray(p, dtype=np.int64).reshape(-1, 2)
    return p[np.lexsort((p[:, 1], p[:, 0]))]


def _expand_with_key(model, alpha, split, key, layer):
    """``expand`` with an explicit split and the stored tie-break key: no random generator needed."""
    return expand(model, alpha, split, None, layer=layer, tie_key=key)


def compute_numpy(case_cfg: dict, inputs: dict, dtype="float64") -> dict:
    """Expected outputs of one case from its inputs, with fpe-ref's own code.

    This is the function ``export`` uses to write the bundle and ``check --impl numpy`` uses
    to verify it: the same code path on the same (stored) float64 inputs, hence identical
    results. ``dtype="float32"`` runs our code in float32 (a sanity check of the tolerances).
    """
    dt = np.dtype(dtype)
    x = _as(inputs, dt)
    section = case_cfg["section"]
    out = {}
    if section == "forward":
        model = _np_model(x, case_cfg["layer_norm"])
        mirror, acts = _np_forward_record(model, x["X"])
        logits, caches = model.forward(x["X"])
        if not np.array_equal(mirror, logits):  # pragma: no cover - would be a bug in this module
            raise AssertionError("golden's layer-by-layer forward differs from MLP.forward")
        loss, dlogits = model.loss(logits, _labels(x["y"], "y"))
        grads = model.backward(dlogits, caches)
        out.update({f"act/{k}": v for k, v in acts.items()})
        out["logits"] = logits
        out["loss"] = np.array(loss)
        out.update({f"grad/{k}": v for k, v in grads.items()})
    elif section == "expand":
        model = _np_model(x, case_cfg["layer_norm"], "parent/", "parent_mask/")
        layer = case_cfg["layer"]
        res = _expand_with_key(model, case_cfg["alpha"], _mask(x["split"], "split"),
                               inputs["tie_key"].astype(np.float64), layer)
        out.update({f"param/{k}": v for k, v in res.model.params.items()})
        out.update({f"mask/{k}": v for k, v in res.model.masks.items()})
        for k in (f"W{layer}", f"W{layer + 1}"):
            out[f"pruned/{k}"] = _sorted_positions(res.pruned[k])
    elif section == "adam":
        model = _np_model(x, case_cfg["layer_norm"], "init/")
        opt = Adam(model.params, case_cfg["lr"], tuple(case_cfg["betas"]), case_cfg["eps"])
        pen = Penalties(case_cfg["l1"], case_cfg["l2"], case_cfg["orth"])
        y = _labels(x["y"], "y")
        rec = {"loss": []}
        for t in range(case_cfg["steps"]):  # Alg. A3 lines 10-19 for one batch: train.train's own step
            loss, _ = train_step(model, opt, x["X"][t], y[t], pen, case_cfg["lr"])
            rec["loss"].append(loss)
            for k in model.params:
                rec.setdefault(f"param/{k}", []).append(model.params[k].copy())
                rec.setdefault(f"m/{k}", []).append(opt.m[k].copy())
                rec.setdefault(f"v/{k}", []).append(opt.v[k].copy())
        out = {k: np.array(v) for k, v in rec.items()}
    elif section == "metrics":
        W1 = x["W1"]
        groups = [np.flatnonzero(g) for g in _mask(x["groups"], "groups")]
        per, total = capacity(W1, groups)
        out = {"gram": gram(W1), "capacity": per, "capacity_total": np.array(total),
               "cosine": np.array(mean_cosine(W1))}
    else:
        raise FPEError(f"unknown section {section!r} in the bundle")
    return out


# ================================================================ tie keys against memory order
def memory_order_keys(n: int) -> dict:
    """Tie keys that reproduce tie-breaking by memory order, ``{order: (n,) key}``.

    ``lexsort((key, |w|))`` with ``key = 0, 1, ..., n-1`` orders tied candidates as they lie
    in memory (row-major ``W_l'`` then ``W_{l+1}'``), exactly as a stable sort by ``|w|``
    alone does; ``n, n-1, ..., 1`` orders them the other way round.
    """
    return {"memory": np.arange(n, dtype=np.float64), "reversed": np.arange(n, 0, -1, dtype=np.float64)}


def _expand_masks(case_cfg, inputs, key) -> dict:
    out = compute_numpy(case_cfg, {**inputs, "tie_key": key})
    return {k: v for k, v in out.items() if k.startswith("mask/")}


def tie_orders_defeated(case_cfg: dict, inputs: dict) -> tuple:
    """The orders of :data:`TIE_ORDERS` whose tie-breaking prunes other weights than the stored key.

    An implementation that breaks the ties of Alg. A1's ranking by such an order instead of
    by ``inputs["tie_key"]`` fails the case exactly when its order is in the result.
    """
    ref = _expand_masks(case_cfg, inputs, inputs["tie_key"])
    defeated = []
    for order, key in memory_order_keys(len(inputs["tie_key"])).items():
        other = _expand_masks(case_cfg, inputs, key)
        if any(not np.array_equal(other[k], ref[k]) for k in ref):
            defeated.append(order)
    return tuple(defeated)


def tie_key_problem(case_name: str, case_cfg: dict, inputs: dict):
    """Why the expand case's stored tie key would let an implementation ignore it, or None.

    The key must defeat the memory orders :data:`TIE_DEFEATS` names for the case (both
    where the case has no entry), and the key rounded to float32 must prune the same weights
    (float32 keeps 24 of the key's 53 bits; rounding never reverses two keys but can make
    two of them equal).
    """
    missed = [o for o in TIE_DEFEATS.get(case_name, TIE_ORDERS) if o not in tie_orders_defeated(case_cfg, inputs)]
    if missed:
        return (f"at the prune cut-off the tie key prunes the same copies as tie-breaking by {missed[0]} "
                "memory order, so the bundle would not catch an implementation that ignores the key")
    key = np.asarray(inputs["tie_key"], dtype=np.float64)
    ref = _expand_masks(case_cfg, inputs, key)
    low = _expand_masks(case_cfg, inputs, key.astype(np.float32).astype(np.float64))
    if any(not np.array_equal(low[k], ref[k]) for k in ref):
        return "the tie key rounded to float32 prunes other weights than the float64 key"
    return None


# ================================================================ platform fingerprint
def _openblas_core() -> str:
    """The OpenBLAS kernel family in use (e.g. "Haswell"), or "unknown" (Linux only; no extra deps)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and ".so" in ln})
    except OSError:
        return "unknown"
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
                    "openblas_get_corename"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return "unknown"


def platform_fingerprint() -> dict:
    """What decides the last bits of our float64 results: numpy, its BLAS and the CPU kernels used.

    Our code is deterministic on one platform (also across BLAS thread counts), but
    OpenBLAS picks its kernels by CPU (``OPENBLAS_CORETYPE``) and numpy dispatches its
    SIMD loops (exp, log, sums) by CPU features, and different kernels round differently.
    ``check --impl numpy`` is exact where this fingerprint equals the bundle's.
    """
    import platform

    try:
        from numpy._core import _multiarray_umath as mu
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as mu
    feats = sorted(k for k in getattr(mu, "__cpu_dispatch__", []) if getattr(mu, "__cpu_features__", {}).get(k))
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - numpy < 1.26 has no dict mode
        blas = "unknown"
    return {"numpy": np.__version__, "blas": blas, "blas_core": _openblas_core(), "machine": platform.machine(),
            "numpy_simd": feats}


# ================================================================ bundle files
def _sha256(a) -> str:
    return hashlib.sha256(np.array(a, dtype="<f8", order="C").tobytes()).hexdigest()


def _temp_file(path):
    """``(name, binary file)`` of a new file beside ``path``, named for this writer alone.

    The name holds the process id and 48 random bits, and the file is created exclusively
    (``O_EXCL``), so writers exporting into one folder at the same time never share a
    temporary file; each moves its own into place with ``os.replace``.
    """
    folder, base = os.path.split(os.fspath(path))
    while True:
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits taken by another writer
            continue
        return tmp, os.fdopen(fd, "wb")


def _write_atomic(path, write):
    """``write(file)`` into a temporary file of this writer, then ``os.replace`` it onto ``path``.

    A reader sees the old file or the complete new one, never a partial one; concurrent
    writers into one folder do not interfere (the last ``os.replace`` wins).
    """
    tmp, f = _temp_file(path)
    try:
        with f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_npz(path, arrays: dict):
    """An .npz ``np.load`` reads, written byte-for-byte reproducibly (sorted names, fixed timestamps)."""
    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in sorted(arrays):
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.array(arrays[name], dtype="<f8", order="C"),
                                              allow_pickle=False)

    _write_atomic(path, write)


def _tolerances(section, name):
    kind = name.split("/", 1)[0]
    exact = TOL_FLOAT32[(section, kind)] is None
    return {"float64": 0.0 if exact else TOL_FLOAT64, "float32": 0.0 if exact else TOL_FLOAT32[(section, kind)]}


def export_bundle(out_dir, *, force=False) -> dict:
    """Write ``golden.npz`` and ``manifest.json`` into ``out_dir``; returns the manifest.

    Deterministic: two exports give byte-identical files.
    """
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FPEError(f"{out_dir} exists and is not a directory")
    existing = [n for n in (NPZ_NAME, MANIFEST_NAME) if os.path.exists(os.path.join(out_dir, n))]
    if existing and not force:
        raise FPEError(f"{out_dir} already holds a bundle ({', '.join(existing)}); pass --force to overwrite")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise FPEError(f"cannot create the bundle directory {out_dir}: {exc}") from exc
    arrays, tensors, cases = {}, {}, {}
    for case in canonical_cases():
        inputs = {k: np.array(v, dtype=np.float64, order="C") for k, v in build_inputs(case).items()}
        expected = compute_numpy(case.config, inputs)
        clash = set(inputs) & set(expected)
        if clash:  # pragma: no cover - a naming bug in this module
            raise AssertionError(f"{case.name}: input and expected tensors share names {sorted(clash)}")
        if case.section == "expand":
            problem = tie_key_problem(case.name, case.config, inputs)
            if problem:
                raise FPEError(f"{case.name}: {problem}")
        cases[case.name] = {**case.config, "seed_stream": [SEED, "golden", case.name]}
        for role, group in (("input", inputs), ("expected", expected)):
            for k in sorted(group):
                a = np.asarray(group[k], dtype=np.float64)
                full = f"{case.name}/{k}"
                arrays[full] = a
                entry = {"role": role, "shape": list(a.shape), "sha256": _sha256(a)}
                if role == "expected":
                    entry["tol"] = _tolerances(case.section, k)
                tensors[full] = entry
    manifest = {
        "format": "fpe-ref golden bundle",
        "format_version": FORMAT_VERSION,
        "fpe_ref_version": __version__,
        "arrays": NPZ_NAME,
        "dtype": "float64 (labels, masks and pruned positions hold exact integers)",
        "platform": platform_fingerprint(),
        "seeds": {"master": SEED,
                  "rule": "inputs of case <c> are drawn from fpe_ref.rng.stream(master, 'golden', <c>)"},
        "tolerance_rule": "max|x - ref| <= tol * max|ref| per tensor, compared in float64; tol 0 = exact",
        "conventions": "docs/golden.md",
        "cases": cases,
        "tensors": tensors,
    }
    text = json.dumps(manifest, indent=1, sort_keys=False) + "\n"
    try:
        _write_npz(os.path.join(out_dir, NPZ_NAME), arrays)
        _write_atomic(os.path.join(out_dir, MANIFEST_NAME), lambda f: f.write(text.encode()))
    except OSError as exc:
        raise FPEError(f"cannot write the bundle into {out_dir}: {exc}") from exc
    return manifest


def load_bundle(bundle_dir):
    """``(manifest, arrays)`` of a bundle; FPEError if missing, of another format version, or unreadable."""
    bundle_dir = os.fspath(bundle_dir)
    mpath, apath = os.path.join(bundle_dir, MANIFEST_NAME), os.path.join(bundle_dir, NPZ_NAME)
    for p in (mpath, apath):
        if not os.path.isfile(p):
            raise FPEError(f"{p} not found: not a golden bundle directory (write one with `fpe golden export`)")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise FPEError(f"cannot read {mpath}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise FPEError(f"{mpath} holds a JSON {type(manifest).__name__}, not a golden manifest object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise FPEError(f"{mpath} has golden format version {manifest.get('format_version')}, "
                       f"this fpe-ref reads {FORMAT_VERSION}")
    _check_manifest(manifest, mpath)
    try:
        arrays = read_npz(apath)  # header-checked: a corrupt member is refused before allocating
    except FPEError as exc:
        raise FPEError(f"cannot read the golden bundle's arrays: {exc}") from None
    return manifest, arrays


def _check_manifest(manifest: dict, mpath) -> None:
    """FPEError naming the first malformed part of a manifest (cases, tensors, shapes, tolerances)."""
    for part in ("cases", "tensors"):
        if not isinstance(manifest.get(part), dict) or not manifest[part]:
            raise FPEError(f"{mpath}: '{part}' is missing or not a non-empty object")
    for name, cfg in manifest["cases"].items():
        if not isinstance(cfg, dict):
            raise FPEError(f"{mpath}: case {name!r} is not an object")
    for name, e in manifest["tensors"].items():
        if not isinstance(e, dict) or e.get("role") not in ("input", "expected"):
            raise FPEError(f"{mpath}: tensor {name!r} needs a role 'input' or 'expected'")
        if not any(name.startswith(c + "/") for c in manifest["cases"]):
            raise FPEError(f"{mpath}: tensor {name!r} belongs to no case of the manifest")
        shape = e.get("shape")
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise FPEError(f"{mpath}: tensor {name!r} has shape {shape!r}, expected a list of sizes")
        if not isinstance(e.get("sha256"), str):
            raise FPEError(f"{mpath}: tensor {name!r} has no sha256")
        if e["role"] == "expected":
            tol = e.get("tol")
            for dt in DTYPES:
                v = tol.get(dt) if isinstance(tol, dict) else None
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
                    raise FPEError(f"{mpath}: tensor {name!r} has tolerance {v!r} for {dt}, expected a number >= 0")


# ================================================================ check
NOT_IMPLEMENTED = "NOT IMPLEMENTED"
EXIT_PASSED, EXIT_FAILED, EXIT_NOT_IMPLEMENTED = 0, 1, 3  # exit statuses of ``fpe golden check``


@dataclass
class Row:
    """One compared tensor; ``implemented=False``: the implementation raised NotImplementedError for its case."""

    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    tol: float
    ok: bool
    note: str = ""
    implemented: bool = True

    @property
    def status(self) -> str:
        return "ok" if self.ok else ("FAIL" if self.implemented else NOT_IMPLEMENTED)


@dataclass
class CheckReport:
    """Everything ``check`` compared, and how."""

    header: str
    rows: list

    @property
    def failed(self) -> list:
        """Rows of computed tensors outside their tolerance (not-implemented rows are not failures)."""
        return [r for r in self.rows if not r.ok and r.implemented]

    @property
    def not_implemented(self) -> list:
        return [r for r in self.rows if not r.implemented]

    @property
    def exit_status(self) -> int:
        """0: every checked tensor passes; 1: some tensor fails; 3: none fails, some are not implemented."""
        if self.failed:
            return EXIT_FAILED
        return EXIT_NOT_IMPLEMENTED if self.not_implemented else EXIT_PASSED

    def lines(self):
        yield self.header
        w = max([len(r.name) for r in self.rows] + [6])
        yield f"{'tensor'.ljust(w)}  {'shape':<14} {'max_abs_err':>11} {'max_rel_err':>11} {'tol':>7}  status"
        for r in self.rows:
            shape = "x".join(map(str, r.shape)) or "scalar"
            note = f"  {r.note}" if r.note else ""
            yield (f"{r.name.ljust(w)}  {shape:<14} {r.max_abs:11.3e} {r.max_rel:11.3e} {r.tol:7.0e}  "
                   f"{r.status}{note}")
        kinds = {}
        for r in self.rows:  # worst error per (section, kind of tensor), the numbers docs/golden.md quotes
            parts = r.name.split("/")
            kinds.setdefault(f"{parts[0]}/*/{parts[2]}", []).append(r)
        yield "worst per kind of tensor:"
        for kind, rs in kinds.items():
            done = [r for r in rs if r.implemented]
            if not done:
                yield f"  {kind:<24} {len(rs):>4} tensors  {NOT_IMPLEMENTED}"
                continue
            wr = max(done, key=lambda r: (np.nan_to_num(r.max_rel, nan=np.inf), r.name))
            yield (f"  {kind:<24} {len(rs):>4} tensors  max_rel_err {wr.max_rel:.3e}  max_abs_err {wr.max_abs:.3e}  "
                   f"tol {wr.tol:.0e}  ({wr.name})")
        absent = self.not_implemented
        done = [r for r in self.rows if r.implemented]
        n, k = len(done), len(self.failed)
        what = "tensors" if not absent else "implemented tensors"
        if absent:
            cases = list(dict.fromkeys("/".join(r.name.split("/")[:2]) for r in absent))  # <section>/<case>
            yield (f"{NOT_IMPLEMENTED}: {len(absent)} of {len(self.rows)} tensors, in {len(cases)} cases: "
                   + ", ".join(cases[:10]) + (" ..." if len(cases) > 10 else ""))
        worst = max(done, key=lambda r: r.max_rel, default=None)
        tail = f"; worst relative error {worst.max_rel:.3e} ({worst.name})" if worst else ""
        if k:
            names = ", ".join(r.name for r in self.failed[:10]) + (" ..." if k > 10 else "")
            yield f"FAILED: {k} of {n} {what}: {names}"
        else:
            yield f"passed: {n} of {n} {what} within tolerance{tail}"


def _compare(name, x, ref, tol) -> Row:
    """One row: ``max_rel = max|x - ref| / max|ref|`` over the finite entries of ``ref``.

    A reference of largest magnitude 0 (all zeros, or no elements) gives ``max_rel = 0`` if
    ``x`` is exactly 0 as well and ``inf`` otherwise. NaN entries of the reference (an
    undefined value, such as the mean cosine of fewer than two non-zero rows) must be NaN in
    ``x`` too; NaN or inf anywhere else fails.
    """
    ref = np.asarray(ref, dtype=np.float64)
    if x is None:
        return Row(name, ref.shape, float("nan"), float("nan"), tol, False, "not computed by the implementation")
    try:
        x = np.asarray(x, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - whatever the implementation returned
        msg = str(exc).splitlines()[0] if str(exc) else ""
        return Row(name, ref.shape, float("nan"), float("nan"), tol, False,
                   f"returned a {type(x).__name__} that is not a float64 array ({type(exc).__name__}: {msg})")
    if x.shape != ref.shape:
        return Row(name, ref.shape, float("nan"), float("nan"), tol, False, f"shape {x.shape} != expected {ref.shape}")
    undefined = np.isnan(ref)
    if not np.array_equal(np.isnan(x), undefined):
        return Row(name, ref.shape, float("nan"), float("nan"), tol, False,
                   "NaN where the reference is not NaN" if np.any(np.isnan(x) & ~undefined)
                   else "a number where the reference is NaN (undefined)")
    x, ref = x[~undefined], ref[~undefined]
    if not np.all(np.isfinite(x)):
        return Row(name, undefined.shape, float("nan"), float("nan"), tol, False, "NaN or inf")
    max_abs = float(np.max(np.abs(x - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return Row(name, undefined.shape, max_abs, max_rel, tol, max_rel <= tol)


IMPL_FORMS = "numpy, torch, MODULE:CALLABLE or path/to/file.py:CALLABLE"


def _first_line(exc) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class _NotADict(TypeError):
    """A plugin returned something other than a mapping of tensors (reported as a FAIL row)."""


def load_implementation(spec: str):
    """The callable ``--impl MODULE:CALLABLE`` or ``--impl path/to/file.py:CALLABLE`` names.

    ``MODULE`` is imported as ``python -m`` would from the current directory (which is put on
    ``sys.path`` if it is not there); ``path/to/file.py`` is imported as a module with its own
    directory on ``sys.path``, so it can import the files beside it. ``CALLABLE`` may be a
    dotted attribute path (``Class.method``). FPEError (one line) if the module cannot be
    imported, has no such attribute, or the attribute is not callable. The contract of the
    callable is in this module's docstring.
    """
    where, colon, attr = str(spec).rpartition(":")
    if not colon or not where or not attr or any(not part.isidentifier() for part in attr.split(".")):
        raise FPEError(f"--impl must be one of {IMPL_FORMS}, got {spec!r}")
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = os.path.abspath(where)
        if not os.path.isfile(path):
            raise FPEError(f"--impl {spec}: file {where} not found")
        stem = "".join(c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(path))[0])
        mod_name = f"fpe_golden_impl_{stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        try:
            spec_ = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec_)
            sys.modules[mod_name] = module
            spec_.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 - any failure of the user's file, SystemExit included
            sys.modules.pop(mod_name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise FPEError(f"--impl {spec}: importing {where} raised {_first_line(exc)}") from exc
        label = where
    else:
        if not all(part.isidentifier() for part in where.split(".")):
            raise FPEError(f"--impl must be one of {IMPL_FORMS}, got {spec!r}")
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except BaseException as exc:  # noqa: BLE001 - any failure of the user's module, SystemExit included
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise FPEError(f"--impl {spec}: cannot import module {where} ({_first_line(exc)})") from exc
        label = f"module {where}"
    fn = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise FPEError(f"--impl {spec}: {label} has no attribute {attr!r}") from None
    if not callable(fn):
        raise FPEError(f"--impl {spec}: {attr} in {label} is a {type(fn).__name__}, not callable")
    return fn


def _implementation(impl, device, dtype):
    """``compute(case_cfg, inputs) -> outputs`` and a description, for the chosen implementation."""
    if not isinstance(impl, str) or (impl not in IMPLS and ":" not in impl):
        raise FPEError(f"--impl must be one of {IMPL_FORMS}, got {impl!r}")
    if device not in DEVICES:
        raise FPEError(f"--device must be one of {DEVICES}, got {device!r}")
    if dtype not in DTYPES:
        raise FPEError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    if impl == "numpy":
        if device != "cpu":
            raise FPEError("--impl numpy runs on the CPU only; use --impl torch --device cuda for a GPU")
        return (lambda cfg, inputs: compute_numpy(cfg, inputs, dtype)), f"numpy {np.__version__} (fpe-ref's own code)"
    if impl == "torch":
        try:
            from fpe_ref.parity import torch_ref
        except ImportError as exc:
            raise FPEError(f"--impl torch needs PyTorch ({exc}); install the extra: pip install 'fpe-ref[torch]'") from exc
        dev = torch_ref.resolve_device(device)
        return (lambda cfg, inputs: torch_ref.compute(cfg, inputs, dev, dtype)), torch_ref.describe(dev)
    fn = load_implementation(impl)

    def compute(cfg, inputs):  # fresh copies: the implementation cannot alter the bundle it is checked against
        fresh = {k: np.array(v, dtype=np.float64, order="C") for k, v in inputs.items()}
        out = fn(copy.deepcopy(cfg), fresh, dtype, device)
        if not isinstance(out, Mapping):
            raise _NotADict(f"returned a {type(out).__name__}, not a dict of tensors")
        return out

    return compute, f"{impl} (plugin)"


def _corrupted(tensors: dict, arrays: dict) -> dict:
    """``{tensor: why}`` for every stored tensor whose shape or SHA-256 differs from the manifest."""
    bad = {}
    for name, entry in tensors.items():
        a = arrays[name]
        if list(a.shape) != entry["shape"]:
            bad[name] = f"shape {list(a.shape)} differs from the manifest's {entry['shape']}"
        elif _sha256(a) != entry["sha256"]:
            bad[name] = "differs from the manifest's SHA-256"
    return bad


def check_bundle(bundle_dir, impl="numpy", device="cpu", dtype="float64", only=None) -> CheckReport:
    """Recompute every expected tensor of the bundle from its stored inputs and compare.

    ``impl`` is ``"numpy"``, ``"torch"``, or ``"MODULE:CALLABLE"`` / ``"path/to/file.py:CALLABLE"``
    (:func:`load_implementation`; the callable's contract is in this module's docstring).
    ``impl="numpy"`` in float64 must match exactly (tolerance 0) on the platform that wrote
    the bundle (:func:`platform_fingerprint`; elsewhere the float64 tolerances apply and the
    header says why); otherwise each tensor's manifest tolerance for ``dtype`` applies.
    ``only`` restricts the check to tensors whose name contains that substring.

    Every stored tensor's shape and SHA-256 are verified against the manifest before any
    implementation is called: a corrupted expected tensor fails, named; a case with a
    corrupted input is not passed to the implementation and all its tensors fail.
    """
    manifest, arrays = load_bundle(bundle_dir)
    tensors = manifest["tensors"]
    for full in tensors:
        if full not in arrays:
            raise FPEError(f"{bundle_dir}: tensor {full} is in the manifest but not in {NPZ_NAME}")
    corrupted = _corrupted(tensors, arrays)
    compute, desc = _implementation(impl, device, dtype)
    exact = impl == "numpy" and dtype == "float64"
    platform_note = ""
    if exact:
        here, there = platform_fingerprint(), manifest.get("platform", {})
        diff = [f"{k} {there.get(k)!r} -> {here[k]!r}" for k in here if there.get(k) != here[k]]
        if diff:
            exact = False
            platform_note = ("; bundle written on another platform (" + ", ".join(diff) +
                             "), so exact equality is not promised: using the float64 tolerances")
    rows = []
    for case_name, cfg in manifest["cases"].items():
        prefix = f"{case_name}/"
        names = [k for k in tensors if k.startswith(prefix)]
        wanted = [k for k in names if tensors[k]["role"] == "expected" and (only is None or only in k)]
        if not wanted:
            continue
        bad_input = [k for k in names if tensors[k]["role"] == "input" and k in corrupted]
        inputs = {k[len(prefix):]: arrays[k] for k in names if tensors[k]["role"] == "input"}
        failure, implemented = None, True
        if bad_input:  # never feed a corrupted input (NaN, wrong shape) to an implementation
            got = {}
        else:
            try:
                got = compute(cfg, inputs)
            except NotImplementedError as exc:
                got, implemented, failure = {}, False, str(exc).splitlines()[0] if str(exc) else ""
            except _NotADict as exc:
                got, failure = {}, f"the implementation {exc}"
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - any failure of the checked implementation (SystemExit too) is a FAIL row
                got, failure = {}, f"the implementation raised {type(exc).__name__}: " + \
                    (str(exc).splitlines()[0] if str(exc) else "")
        for k in wanted:
            tol = 0.0 if exact else float(tensors[k]["tol"][dtype])
            row = _compare(k, got.get(k[len(prefix):]), arrays[k], tol)
            if k in corrupted:
                row.ok = False
                row.note = ((row.note + "; ") if row.note else "") + \
                    f"stored tensor {corrupted[k]} (corrupted bundle)"
            if bad_input:
                row.ok = False
                row.note = (f"corrupted input {bad_input[0]} (SHA-256 or shape differs from the manifest): "
                            "not computed")
            elif not implemented:  # a corrupted tensor fails even where its case is not implemented
                row.ok, row.implemented = False, k in corrupted
                row.note = row.note if k in corrupted else failure
            elif failure:
                sha = f"; stored tensor {corrupted[k]} (corrupted bundle)" if k in corrupted else ""
                row.note = failure + sha
            rows.append(row)
    if not rows:
        raise FPEError(f"no expected tensor of the bundle matches --only {only!r}")
    mode = "exact (tolerance 0)" if exact else f"manifest tolerances for {dtype}"
    header = (f"fpe golden check: bundle {os.fspath(bundle_dir)} (format {manifest['format_version']}, "
              f"written by fpe-ref {manifest.get('fpe_ref_version')}); impl {desc}; device {device}; "
              f"dtype {dtype}; {mode}{platform_note}; max_rel_err = max|x - ref| / max|ref|")
    return CheckReport(header, rows)
