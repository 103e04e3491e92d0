"""The network: an MLP of any depth with optional masks and LayerNorm, forward pass and backprop.

Layer ``l = 1 .. L`` computes ``a_l = h_{l-1} W_l^T + b_l``; every hidden layer then applies
``LayerNorm`` (optional, A.7: "LayerNorm before each activation") and ``ReLU``; the last layer
gives the logits. Paper: Sec. 2.1 (one hidden layer), A.7 (deeper MLPs).

Parameters live in one ordered dict ``params`` with PyTorch-like names and shapes:
``W1`` (h1, d), ``b1`` (h1,), ``ln1.gamma``/``ln1.beta`` (h1,), ..., ``WL`` (C, h_{L-1}), ``bL`` (C,).
``masks`` maps a weight name to a boolean array of its shape; weights without an entry are
dense. Invariant (checked in tests): ``W[~mask] == 0.0`` exactly, after construction,
after every optimizer step and after every load.

Bad input is a one-line ``FPEError``: sizes that are not positive integers or do not fit in
memory, non-float dtypes, inputs ``X`` that are not ``(n, d)`` finite numbers, labels ``y``
that are not ``(n,)`` class indices (:meth:`MLP.check_inputs`, :meth:`MLP.check_labels`),
and model files that are damaged (read by :mod:`fpe_ref.data.npz`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from fpe_ref import layers
from fpe_ref.data.npz import read_npz
from fpe_ref.errors import FPEError, check_int, check_memory
from fpe_ref.rng import as_rng

FORMAT_VERSION = 1


def _weight(l):
    return f"W{l}"


def _bias(l):
    return f"b{l}"


def check_sizes(sizes) -> list:
    """Layer widths ``[d, h1, ..., C]`` as a list of Python ints >= 1 (at least two of them).

    Each width goes through :func:`~fpe_ref.errors.check_int`: ``8.5``, ``"8"`` and ``True``
    are refused, never truncated.
    """
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise FPEError(f"layer sizes must be a list [d, h1, ..., C] of positive integers, got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise FPEError(f"layer sizes must be >= 1 and at least [d, C], got {sizes}")
    return [check_int(f"layer sizes[{i}]", s, 1, what="a positive integer") for i, s in enumerate(sizes)]


def check_param_dtype(dtype) -> np.dtype:
    """A parameter dtype: a NumPy float type (float64 by default, float32 for speed)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise FPEError(f"dtype must be a float type (float32 or float64), got {dtype!r}") from None
    if dt.kind != "f":
        raise FPEError(f"dtype must be a float type (float32 or float64), got {dt.name}: "
                       "integer weights would be rounded to zero")
    return dt


def param_nbytes(sizes, dtype=np.float64, layer_norm: bool = False) -> int:
    """Bytes of the parameters of an MLP of layer widths ``sizes``: weights, biases, LayerNorm.

    ``sum_l (fan_in_l + 1) fan_out_l`` entries (plus ``2 h_l`` per hidden layer with
    LayerNorm), times the dtype's item size. Training needs about four times this (the
    gradients and Adam's two moments); pass such multiples to
    :func:`fpe_ref.errors.check_memory` before allocating.
    """
    sizes = check_sizes(sizes)
    n = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    if layer_norm:
        n += 2 * sum(sizes[1:-1])
    return n * check_param_dtype(dtype).itemsize


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"an array of shape {a.shape} dtype {a.dtype}"
    return f"a {type(a).__name__}"


@dataclass
class Ledger:
    """Parameter ledger: non-zero (unmasked) weights per layer, biases, LayerNorm params, totals.

    ``weights`` counts mask-on weight entries (the structural non-zeros FPE holds fixed);
    biases and LayerNorm parameters are counted separately, since FPE grows ``b1`` by
    ``(alpha - 1) h`` (Sec. 2.3: "we copy the original bias to all sub-neurons").
    """

    per_layer: dict  # weight name -> mask-on count
    weights: int
    biases: int
    layernorm: int

    @property
    def total(self) -> int:
        return self.weights + self.biases + self.layernorm

    def line(self) -> str:
        layers_ = ", ".join(f"{k}={v}" for k, v in self.per_layer.items())
        return f"non-zero weights {self.weights} ({layers_}); biases {self.biases}; layernorm {self.layernorm}; total {self.total}"


class MLP:
    """A masked MLP with hand-written backward.

    Parameters
    ----------
    params : dict of str -> ndarray
        Ordered parameters (see module docstring).
    masks : dict of str -> bool ndarray, optional
        Masks of the sparse weights.
    layer_norm : bool
        Whether each hidden layer has LayerNorm before its ReLU.
    """

    def __init__(self, params: dict, masks: dict | None = None, layer_norm: bool = False):
        self.params = dict(params)
        self.masks = dict(masks or {})
        self.layer_norm = bool(layer_norm)
        self.n_layers = sum(1 for k in self.params if k.startswith("W"))
        self._validate()
        self.apply_masks()

    # ------------------------------------------------------------ construction
    @classmethod
    def init(cls, sizes, rng, layer_norm: bool = False, dtype=np.float64) -> "MLP":
        """PyTorch ``nn.Linear`` default initialisation, layer by layer, ``W`` then ``b``.

        Kaiming-uniform with ``a = sqrt(5)``: ``gain = sqrt(2 / (1 + a^2)) = sqrt(1/3)``,
        ``bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)``; so ``W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
        and ``b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``. LayerNorm: ``gamma = 1``, ``beta = 0``.

        ``sizes = [d, h1, ..., C]``; ``C = 1`` means a binary task (BCE-with-logits).
        ``dtype`` is a float type. Sizes whose parameters cannot fit in the memory available
        are refused before anything is allocated (:func:`~fpe_ref.errors.check_memory`).
        """
        rng = as_rng(rng)  # an int seed or a Generator
        sizes = check_sizes(sizes)
        dtype = check_param_dtype(dtype)
        # each layer is drawn in float64, then cast: the largest float64 draw is alive beside the result
        largest = max(b * a for a, b in zip(sizes[:-1], sizes[1:])) * 8
        check_memory(param_nbytes(sizes, dtype, layer_norm) + largest, f"an MLP of sizes {sizes} ({dtype.name})")
        params = {}
        for l in range(1, len(sizes)):
            fan_in, fan_out = sizes[l - 1], sizes[l]
            bound = 1.0 / np.sqrt(fan_in)
            params[_weight(l)] = rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(dtype)
            params[_bias(l)] = rng.uniform(-bound, bound, size=fan_out).astype(dtype)
            if layer_norm and l < len(sizes) - 1:
                params[f"ln{l}.gamma"] = np.ones(fan_out, dtype=dtype)
                params[f"ln{l}.beta"] = np.zeros(fan_out, dtype=dtype)
        return cls(cls._ordered(params, len(sizes) - 1, layer_norm), layer_norm=layer_norm)

    @staticmethod
    def _ordered(params, n_layers, layer_norm):
        out = {}
        for l in range(1, n_layers + 1):
            out[_weight(l)] = params[_weight(l)]
            out[_bias(l)] = params[_bias(l)]
            if layer_norm and l < n_layers:
                out[f"ln{l}.gamma"] = params[f"ln{l}.gamma"]
                out[f"ln{l}.beta"] = params[f"ln{l}.beta"]
        return out

    def _validate(self):
        for name, p in self.params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                got = f"dtype {p.dtype}" if isinstance(p, np.ndarray) else type(p).__name__
                raise FPEError(f"parameter {name} has {got}, expected a float ndarray")
        for name, M in self.masks.items():
            if not isinstance(M, np.ndarray):
                raise FPEError(f"mask of {name} is a {type(M).__name__}, expected a bool ndarray")
        L = self.n_layers
        if L < 1:
            raise FPEError("an MLP needs at least one weight matrix W1")
        expected = self._ordered_names(L, self.layer_norm)
        if list(self.params) != expected:
            raise FPEError(f"parameter names {list(self.params)} do not match the expected {expected}")
        prev = None
        for l in range(1, L + 1):
            W, b = self.params[_weight(l)], self.params[_bias(l)]
            if W.ndim != 2 or b.shape != (W.shape[0],):
                raise FPEError(f"W{l} has shape {W.shape} and b{l} {b.shape}: expected (out, in) and (out,)")
            if prev is not None and W.shape[1] != prev:
                raise FPEError(f"W{l} has {W.shape[1]} inputs but layer {l - 1} has {prev} outputs")
            prev = W.shape[0]
            if self.layer_norm and l < L:
                for k in ("gamma", "beta"):
                    if self.params[f"ln{l}.{k}"].shape != (W.shape[0],):
                        raise FPEError(f"ln{l}.{k} has shape {self.params[f'ln{l}.{k}'].shape}, expected ({W.shape[0]},)")
        for name, p in self.params.items():
            if not np.all(np.isfinite(p)):
                raise FPEError(f"parameter {name} contains NaN or inf")
        for name, M in self.masks.items():
            if name not in self.params or not name.startswith("W"):
                raise FPEError(f"mask given for {name!r}, which is not a weight matrix of this model")
            if M.shape != self.params[name].shape or M.dtype != bool:
                raise FPEError(f"mask of {name} has shape {M.shape} dtype {M.dtype}, expected {self.params[name].shape} bool")

    @staticmethod
    def _ordered_names(L, layer_norm):
        names = []
        for l in range(1, L + 1):
            names += [_weight(l), _bias(l)]
            if layer_norm and l < L:
                names += [f"ln{l}.gamma", f"ln{l}.beta"]
        return names

    def apply_masks(self):
        """Enforce the mask invariant ``W[~M] = 0.0`` in place."""
        for name, M in self.masks.items():
            self.params[name][~M] = 0.0

    def copy(self) -> "MLP":
        return MLP({k: v.copy() for k, v in self.params.items()}, {k: v.copy() for k, v in self.masks.items()}, self.layer_norm)

    # ------------------------------------------------------------ shape helpers
    @property
    def sizes(self) -> list:
        return [self.params["W1"].shape[1]] + [self.params[_weight(l)].shape[0] for l in range(1, self.n_layers + 1)]

    @property
    def dtype(self):
        return self.params["W1"].dtype

    @property
    def loss_name(self) -> str:
        """``bce`` for one output logit, ``xent`` (softmax cross-entropy) for several."""
        return layers.loss_name(self.sizes[-1])

    def mask_of(self, name):
        return self.masks.get(name)

    # ------------------------------------------------------------ input checks
    def check_inputs(self, X, name: str = "inputs X") -> np.ndarray:
        """``X`` as an ndarray ``(n, d)`` of finite numbers, or a one-line FPEError naming ``name``.

        A list is converted (``np.asarray``, never cast); a 1-D ``X``, the wrong number of
        columns, a non-numeric dtype, or NaN / inf are refused.
        """
        d = self.sizes[0]
        try:
            X = np.asarray(X)
        except (ValueError, TypeError):
            raise FPEError(f"{name} must be a 2-D array (n, {d}) of numbers, got a ragged {type(X).__name__}") from None
        if X.dtype.kind not in "biuf":
            raise FPEError(f"{name} must be a 2-D array (n, {d}) of numbers, got dtype {X.dtype}")
        if X.ndim != 2 or X.shape[1] != d:
            raise FPEError(f"{name} have shape {X.shape}, the model expects (n, {d})")
        finite = np.isfinite(X)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            raise FPEError(f"{name} contain NaN or inf (row {r}, column {c}: {X[r, c]})")
        return X

    def check_labels(self, y, n: int, name: str = "labels y") -> np.ndarray:
        """``y`` as an ndarray ``(n,)`` of class indices in ``[0, max(2, C))``, or a one-line FPEError.

        Integer or float labels holding exact integers (the Boolean tasks' 0.0 / 1.0) pass;
        a column ``(n, 1)``, another length, fractions, NaN or a label out of range are
        refused (``(n, 1)`` would broadcast against the ``(n,)`` predictions).
        """
        n_classes = max(2, self.sizes[-1])
        try:
            y = np.asarray(y)
        except (ValueError, TypeError):
            raise FPEError(f"{name} must be an array ({n},) of class indices, "
                           f"got a ragged {type(y).__name__}") from None
        if y.shape != (n,):
            raise FPEError(f"{name} have shape {y.shape}, expected ({n},)")
        if y.dtype.kind not in "biuf":
            raise FPEError(f"{name} must be integers in [0, {n_classes}), got dtype {y.dtype}")
        if np.any((y < 0) | (y >= n_classes) | (y != np.round(y))):
            raise FPEError(f"{name} must be integers in [0, {n_classes}), got values in [{y.min()}, {y.max()}]")
        return y

    # ------------------------------------------------------------ forward / backward
    def forward(self, X, check: bool = True):
        """Logits ``(n, C)`` and the caches backprop needs.

        ``check=False`` skips :meth:`check_inputs` (the training loop checks its whole data
        set once, not every batch).
        """
        if check:
            X = self.check_inputs(X)
        caches = []
        h = X
        L = self.n_layers
        for l in range(1, L + 1):
            a, lin = layers.linear_forward(h, self.params[_weight(l)], self.params[_bias(l)])
            ln = act = None
            if l < L:
                if self.layer_norm:
                    a, ln = layers.layernorm_forward(a, self.params[f"ln{l}.gamma"], self.params[f"ln{l}.beta"])
                a, act = layers.relu_forward(a)
            caches.append((lin, ln, act))
            h = a
        return h, caches

    def backward(self, dlogits, caches):
        """Gradients of every parameter given ``dL/dlogits``; masked weight gradients are 0."""
        grads = {}
        d = dlogits
        for l in range(self.n_layers, 0, -1):
            lin, ln, act = caches[l - 1]
            if act is not None:
                d = layers.relu_backward(d, act)
            if ln is not None:
                d, grads[f"ln{l}.gamma"], grads[f"ln{l}.beta"] = layers.layernorm_backward(d, ln)
            d, grads[_weight(l)], grads[_bias(l)] = layers.linear_backward(d, lin, self.masks.get(_weight(l)),
                                                                           need_dx=l > 1)
        return {k: grads[k] for k in self.params}

    def loss(self, logits, y, check: bool = True):
        """Data loss and ``dL/dlogits``: BCE-with-logits for C = 1, softmax cross-entropy otherwise.

        ``logits`` is ``(n, C)`` as :meth:`forward` returns it, ``y`` the ``(n,)`` labels
        (:meth:`check_labels`; ``check=False`` skips both checks).
        """
        if check:
            C = self.sizes[-1]
            if not isinstance(logits, np.ndarray) or logits.ndim != 2 or logits.shape[1] != C:
                raise FPEError(f"logits must be an array (n, {C}) as forward returns them, got {_describe(logits)}")
            y = self.check_labels(y, logits.shape[0])
        return layers.LOSSES[self.loss_name].loss(logits, y)

    def loss_and_grads(self, X, y):
        logits, caches = self.forward(X)
        loss, dlogits = self.loss(logits, y)
        return loss, self.backward(dlogits, caches)

    def predict(self, X, check: bool = True):
        """Predicted labels: ``logit > 0`` (i.e. sigmoid > 0.5, A3 line 22) or argmax."""
        logits, _ = self.forward(X, check)
        return layers.LOSSES[self.loss_name].predict(logits)

    def accuracy(self, X, y, check: bool = True) -> float:
        """Fraction of the rows of ``X`` (n, d) predicted as their label ``y`` (n,)."""
        if check:
            X = self.check_inputs(X)
            y = self.check_labels(y, X.shape[0])
        return float(np.mean(self.predict(X, check=False) == np.asarray(y).astype(np.int64)))

    # ------------------------------------------------------------ bookkeeping
    def ledger(self) -> Ledger:
        per = {}
        for l in range(1, self.n_layers + 1):
            name = _weight(l)
            M = self.masks.get(name)
            per[name] = int(M.sum()) if M is not None else int(self.params[name].size)
        biases = sum(self.params[_bias(l)].size for l in range(1, self.n_layers + 1))
        ln = sum(v.size for k, v in self.params.items() if k.startswith("ln"))
        return Ledger(per, sum(per.values()), int(biases), int(ln))

    # ------------------------------------------------------------ save / load
    def save(self, path):
        """Write an ``.npz`` (no pickles): parameters under their names, masks as ``mask:<name>``."""
        arrays = dict(self.params)
        arrays.update({f"mask:{k}": v for k, v in self.masks.items()})
        meta = {"format_version": FORMAT_VERSION, "layer_norm": self.layer_norm, "sizes": self.sizes}
        arrays["meta"] = np.array(json.dumps(meta))
        path = os.fspath(path)
        if not path.endswith(".npz"):  # np.savez would append ".npz" and write another file
            raise FPEError(f"a model file's name must end in .npz, got {path!r}")
        try:
            np.savez(path, **arrays)
        except OSError as exc:
            raise FPEError(f"cannot write {path}: {exc.strerror or exc}") from None

    @classmethod
    def load(cls, path) -> "MLP":
        """Read a model written by ``save``; a mask-off weight that is not 0.0 is an error."""
        try:
            arrays = read_npz(path)  # header-checked: a corrupt file is refused before allocating
        except FPEError as exc:
            raise FPEError(f"cannot read model file: {exc}") from None
        if "meta" not in arrays:
            raise FPEError(f"{path} is not an fpe-ref model file (no 'meta' entry)")
        try:
            meta = json.loads(str(arrays.pop("meta")))
            if not isinstance(meta, dict):
                raise ValueError(f"meta is a JSON {type(meta).__name__}, not an object")
            if meta.get("format_version") != FORMAT_VERSION:
                raise FPEError(f"{path} has model format version {meta.get('format_version')}, "
                               f"this fpe-ref reads {FORMAT_VERSION}")
            n_layers = len(meta["sizes"]) - 1
            layer_norm = bool(meta["layer_norm"])
        except FPEError:
            raise
        except (ValueError, TypeError, KeyError) as exc:  # json.JSONDecodeError is a ValueError
            raise FPEError(f"{path} has a corrupt 'meta' entry: {exc!r}") from exc
        masks = {k[5:]: v for k, v in arrays.items() if k.startswith("mask:")}
        params = {k: v for k, v in arrays.items() if not k.startswith("mask:")}
        try:
            params = cls._ordered(params, n_layers, layer_norm)
        except KeyError as exc:
            raise FPEError(f"{path} lacks parameter {exc}") from exc
        bad = [k for k, v in params.items() if not np.issubdtype(v.dtype, np.floating)]
        if bad:
            raise FPEError(f"{path}: parameter {bad[0]} has dtype {params[bad[0]].dtype}, expected a float type")
        for name, M in masks.items():
            if M.dtype != np.bool_:
                raise FPEError(f"{path}: mask of {name} has dtype {M.dtype}, expected bool")
            if name in params and M.shape == params[name].shape and np.any(params[name][~M] != 0):
                raise FPEError(f"{path}: weight {name} is non-zero at masked positions (corrupt or hand-edited file)")
        try:
            model = cls(params, masks, layer_norm)
        except FPEError as exc:
            raise FPEError(f"{path}: {exc}") from exc
        if list(model.sizes) != list(meta["sizes"]):
            raise FPEError(f"{path}: meta says sizes {meta['sizes']}, the stored weights have {model.sizes}")
        return model
