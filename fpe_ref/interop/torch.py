"""PyTorch models in and out of fpe-ref: ``from_torch``, ``to_torch`` and ``expand``.

Three functions (Paper: Sec. 2.1 for the network, Sec. 2.3 / Alg. A1 for the expansion):

* :func:`from_torch` reads an ``nn.Sequential`` (or its ``state_dict``) into an
  :class:`fpe_ref.MLP`, exactly: no value is rounded except by the ``dtype`` asked for.
* :func:`to_torch` writes an :class:`fpe_ref.MLP` as an ``nn.Sequential``; masked weights
  become ``torch.nn.utils.prune`` masks, so torch training keeps them at zero.
* :func:`expand` is ``to_torch(fpe_ref.expand.expand(from_torch(model), ...).model)``: the
  reference expansion itself, so its result is the reference's, bit for bit.

Example::

    net = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 1))  # a trained torch model
    wide, result = expand(net, 2, "random", rng=0)     # Alg. A1 by the reference: 16 neurons
    print(result.ledger_child.line())                  # 264 non-zero weights, as many as net's
    opt = torch.optim.Adam(wide.parameters())          # weight_orig, bias, ... of the wide model
    wide(torch.randn(64, 32)).square().mean().backward(); opt.step()  # pruned weights stay 0
    mlp = from_torch(wide)                             # back to an fpe_ref.MLP, masks included

Conventions
-----------
**Structure.** ``nn.Sequential(Linear, [LayerNorm,] ReLU, Linear, [LayerNorm,] ReLU, ..., Linear)``:
every Linear has a bias; LayerNorm, if any hidden layer has one, sits between every hidden
Linear and its ReLU (``fpe_ref.MLP``'s ``layer_norm`` flag is one for the whole network),
has ``elementwise_affine=True`` with a bias, ``normalized_shape == (out_features,)`` and
``eps == 1e-5`` (:data:`fpe_ref.layers.LN_EPS`, torch's default). Linear ``l`` (1-based,
counting Linear modules only) becomes ``W{l}`` (out, in) and ``b{l}`` (out,): PyTorch's
``(out_features, in_features)`` is already the MLP's layout, nothing is transposed. The
LayerNorm after Linear ``l`` becomes ``ln{l}.gamma`` / ``ln{l}.beta``.

**Masks.** A Linear pruned with ``torch.nn.utils.prune`` (a ``weight_orig`` parameter and a
``weight_mask`` buffer) gives ``masks["W{l}"] = weight_mask != 0`` and the weight
``weight_orig`` with every masked entry set to 0.0, which equals ``weight_orig * weight_mask``;
the mask must hold only 0 and 1. Unpruned layers are dense (no mask entry). :func:`to_torch`
applies ``prune.custom_from_mask(linear, "weight", mask)`` to each masked layer; since an MLP's
masked weights are 0.0, its ``weight_orig`` is 0.0 there too, and Adam (gradient 0, moments
0) leaves them at 0.0. Pruned biases or LayerNorm parameters are not supported.

**State dicts.** Keys ``"<i>.weight"`` and ``"<i>.bias"`` (or ``"<i>.weight_orig"``,
``"<i>.weight_mask"`` and ``"<i>.bias"`` for a pruned Linear), ``<i>`` the module's index in
the Sequential, nothing else. A 2-d weight is a Linear, a 1-d weight a LayerNorm. A
state_dict holds no parameterless module, so it cannot show where the ReLUs are: the
indices must be exactly those of the structure above (Linear at 0, then a LayerNorm at
``i + 1`` and the next Linear at ``i + 3``, or the next Linear at ``i + 2``), and the one
module in each gap is taken to be a ReLU (an ``nn.Tanh`` there would be read as a ReLU, so
pass the module itself where you have it); LayerNorm's ``eps`` is taken to be 1e-5.

**Dtypes.** ``dtype=None`` keeps the tensors' dtype (float32 or float64, the same for all);
``dtype=np.float64`` (or ``torch.float64``, ``"float64"``) converts, exactly from float32.
float16 and bfloat16 tensors need an explicit ``dtype``. Tensors may be on any device;
the MLP's arrays are copies on the CPU. :func:`to_torch` gives a CPU model of the MLP's dtype.

Every bad input is a one-line :class:`fpe_ref.FPEError` naming the module (its index and
type) or the state_dict keys and what is supported.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from fpe_ref.errors import FPEError
from fpe_ref.expand import ExpandResult
from fpe_ref.expand import expand as reference_expand
from fpe_ref.layers import LN_EPS
from fpe_ref.mlp import MLP

SUPPORTED = ("an nn.Sequential of Linear [LayerNorm] ReLU ... Linear (Linear with bias; LayerNorm with "
             f"elementwise_affine, bias and eps={LN_EPS:g}, before every hidden ReLU or none) or its state_dict")
STATE_DICT_LAYOUT = ("keys '<i>.weight', '<i>.bias' (a pruned Linear: '<i>.weight_orig', '<i>.weight_mask', "
                     "'<i>.bias') at the indices of nn.Sequential(Linear, [LayerNorm,] ReLU, ..., Linear)")

_NUMPY_OF = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
_TORCH_OF = {v: k for k, v in _NUMPY_OF.items()}
_CONVERTIBLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# The keyword-only arguments of the reference expansion (groups, layer, out_scale, tie_key).
EXPAND_KEYWORDS = tuple(p.name for p in inspect.signature(reference_expand).parameters.values()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY)


# ---------------------------------------------------------------- helpers
def _describe(module) -> str:
    """``Linear(in_features=3, out_features=4, bias=True)``, always on one line."""
    return f"{type(module).__name__}({module.extra_repr()})".replace("\n", " ")


def _target_dtype(dtype):
    """The numpy dtype asked for (float32 or float64), or None to keep the tensors' own."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if dtype not in _NUMPY_OF:
            raise FPEError(f"dtype must be float32 or float64, got {dtype}")
        return _NUMPY_OF[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise FPEError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in _TORCH_OF:
        raise FPEError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _array(t: torch.Tensor, dt) -> np.ndarray:
    """A CPU copy of ``t`` as ``dt``; float16 and bfloat16 go through float32, which holds them exactly."""
    t = t.detach().to("cpu")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    return np.array(t.numpy(), dtype=dt, copy=True)


class _Layer:
    """One Linear (and the LayerNorm after it) as tensors, before conversion."""

    def __init__(self, where, weight, bias, mask=None):
        self.where, self.weight, self.bias, self.mask = where, weight, bias, mask
        self.ln = None  # (where, gamma, beta)


def _build(layers, layer_norm, dtype, fail) -> MLP:
    """Check the shapes and dtypes of ``layers`` and make the MLP; ``fail(where, why)`` raises."""
    tensors = []
    prev = None
    for layer in layers:
        W, b = layer.weight, layer.bias
        if W.ndim != 2 or b.shape != (W.shape[0],):
            fail(layer.where, f"has a weight of shape {tuple(W.shape)} and a bias of shape {tuple(b.shape)}: "
                              "expected (out, in) and (out,)")
        if prev is not None and W.shape[1] != prev[1]:
            fail(layer.where, f"has {W.shape[1]} inputs but the Linear before it ({prev[0]}) has {prev[1]} outputs")
        prev = (layer.where, W.shape[0])
        if layer.mask is not None and layer.mask.shape != W.shape:
            fail(layer.where, f"has a weight_mask of shape {tuple(layer.mask.shape)}, its weight {tuple(W.shape)}")
        tensors += [(layer.where, W), (layer.where, b)]
        if layer.ln is not None:
            where, gamma, beta = layer.ln
            if gamma.shape != (W.shape[0],) or beta.shape != (W.shape[0],):
                fail(where, f"has weight and bias of shapes {tuple(gamma.shape)} and {tuple(beta.shape)}: "
                            f"expected ({W.shape[0]},), the outputs of the Linear before it")
            tensors += [(where, gamma), (where, beta)]
    for where, t in tensors:
        if t.dtype not in _CONVERTIBLE:
            fail(where, f"has a parameter of dtype {t.dtype}: expected a floating-point tensor")
    if dtype is None:
        found = sorted({str(t.dtype) for _, t in tensors})
        if len(found) > 1:
            raise FPEError(f"the parameters have dtypes {found}: pass dtype=np.float32 or np.float64 to convert")
        if tensors[0][1].dtype not in _NUMPY_OF:
            raise FPEError(f"the parameters are {found[0]}: pass dtype=np.float32 or np.float64 to convert")
        dtype = _NUMPY_OF[tensors[0][1].dtype]

    params, masks = {}, {}
    for l, layer in enumerate(layers, start=1):
        W = _array(layer.weight, dtype)
        if layer.mask is not None:
            m = layer.mask.detach().to("cpu")
            if not bool(((m == 0) | (m == 1)).all()):
                fail(layer.where, "has a weight_mask with values other than 0 and 1")
            M = (m != 0).numpy().copy()
            W[~M] = 0.0  # = weight_orig * weight_mask, with +0.0 at every masked entry
            masks[f"W{l}"] = M
        params[f"W{l}"] = W
        params[f"b{l}"] = _array(layer.bias, dtype)
        if layer.ln is not None:
            params[f"ln{l}.gamma"] = _array(layer.ln[1], dtype)
            params[f"ln{l}.beta"] = _array(layer.ln[2], dtype)
    try:
        return MLP(params, masks, layer_norm)
    except FPEError as exc:  # NaN or inf in a parameter
        raise FPEError(f"from_torch: {exc}") from exc


# ---------------------------------------------------------------- torch -> MLP
def _parse_sequential(seq: nn.Sequential):
    """The layers of ``seq``, checked against ``Linear [LayerNorm] ReLU ... Linear``."""

    def fail(where, why):
        raise FPEError(f"{where} {why}; from_torch supports {SUPPORTED}")

    def placed():
        return f"follows {prev}" if prev else "comes first"

    items = list(seq._modules.items())
    if not items:
        raise FPEError(f"the nn.Sequential is empty; from_torch supports {SUPPORTED}")
    layers, layer_norm = [], None
    expect = "Linear"  # "Linear", "after Linear" (LayerNorm, ReLU or the end), "ReLU"
    prev = None  # "module 3 ReLU", the module before this one
    for i, (name, m) in enumerate(items):
        label = f"module {i}" if name == str(i) else f"module {i} ({name!r})"
        where = f"{label} {_describe(m)}" if m is not None else f"{label} None"
        if isinstance(m, nn.Linear):
            if expect != "Linear":
                fail(where, f"{placed()}: expected {'LayerNorm or ReLU' if expect == 'after Linear' else expect}")
            if isinstance(m.weight, nn.parameter.UninitializedParameter):
                fail(where, "is uninitialised (a lazy module): run one forward pass first")
            if "bias_orig" in m._parameters or "bias_mask" in m._buffers:
                fail(where, "has a pruned bias: fpe_ref.MLP masks weights only")
            if m.bias is None:
                fail(where, "has no bias (FPE copies each parent's bias to its children, Sec. 2.3)")
            orig, mask = m._parameters.get("weight_orig"), m._buffers.get("weight_mask")
            if (orig is None) != (mask is None):
                fail(where, "has only one of weight_orig and weight_mask: expected both (torch.nn.utils.prune) "
                            "or neither")
            if orig is not None:
                layers.append(_Layer(where, orig, m.bias, mask))
            else:
                layers.append(_Layer(where, m.weight, m.bias))
            expect = "after Linear"
        elif isinstance(m, nn.LayerNorm):
            if expect != "after Linear":
                fail(where, f"{placed()}: expected {expect}")
            if layer_norm is False:
                fail(where, "is a LayerNorm but an earlier hidden layer has none: fpe_ref.MLP has LayerNorm "
                            "before every hidden ReLU or before none")
            if any(k.endswith("_mask") for k in m._buffers):
                fail(where, "is pruned: fpe_ref.MLP masks Linear weights only")
            if not m.elementwise_affine or m.weight is None or m.bias is None:
                fail(where, "has no elementwise affine weight and bias (fpe_ref.MLP's LayerNorm has gamma and beta)")
            if tuple(m.normalized_shape) != (layers[-1].weight.shape[0],):
                fail(where, f"normalises over {tuple(m.normalized_shape)}: expected ({layers[-1].weight.shape[0]},), "
                            "the outputs of the Linear before it")
            if m.eps != LN_EPS:
                fail(where, f"has eps={m.eps!r}: fpe_ref.MLP's LayerNorm uses eps={LN_EPS!r}")
            layers[-1].ln = (where, m.weight, m.bias)
            layer_norm = True
            expect = "ReLU"
        elif isinstance(m, nn.ReLU):
            if expect == "after Linear":
                if layer_norm is True:
                    fail(where, "follows a Linear without LayerNorm but an earlier hidden layer has one: "
                                "fpe_ref.MLP has LayerNorm before every hidden ReLU or before none")
                layer_norm = False
            elif expect != "ReLU":
                fail(where, f"{placed()}: expected {expect}")
            expect = "Linear"
        else:
            fail(where, "is not supported")
        prev = f"module {i} {type(m).__name__}"
    if expect != "after Linear":
        fail(f"the last module ({prev})", "ends the network: expected a Linear last")
    return layers, bool(layer_norm)


def _parse_state_dict(sd: Mapping):
    """The layers of a state_dict with the keys of ``nn.Sequential(Linear, [LayerNorm,] ReLU, ..., Linear)``."""
    keys = list(sd)

    def fail(where, why):
        raise FPEError(f"{where} {why}; from_torch takes {STATE_DICT_LAYOUT}; keys found: {keys}")

    if not keys:
        fail("the state_dict", "is empty")
    groups = {}
    for key in keys:
        idx, _, attr = key.partition(".") if isinstance(key, str) else ("", "", "")
        if not idx.isdigit() or attr not in ("weight", "bias", "weight_orig", "weight_mask"):
            fail(f"state_dict key {key!r}", "is not '<index>.weight', '<index>.bias', '<index>.weight_orig' "
                                            "or '<index>.weight_mask'")
        if not isinstance(sd[key], torch.Tensor):
            fail(f"state_dict entry {key!r}", f"is a {type(sd[key]).__name__}, not a torch.Tensor")
        groups.setdefault(int(idx), {})[attr] = sd[key]

    def kind(g):
        attrs = set(g)
        if attrs == {"weight", "bias"}:
            return {2: "Linear", 1: "LayerNorm"}.get(g["weight"].ndim)
        if attrs == {"weight_orig", "weight_mask", "bias"} and g["weight_orig"].ndim == 2:
            return "Linear"
        return None

    order = sorted(groups)
    for idx in order:
        if kind(groups[idx]) is None:
            shapes = {a: tuple(t.shape) for a, t in sorted(groups[idx].items())}
            fail(f"state_dict index {idx}", f"has {shapes}, which is neither a Linear (2-d weight and bias) "
                                            "nor a LayerNorm (1-d weight and bias)")
    layers, layer_norm = [], None
    k, expect = 0, 0
    while k < len(order):
        idx = order[k]
        g = groups[idx]
        if kind(g) != "Linear" or idx != expect:
            fail(f"state_dict index {idx}", f"holds a {kind(g)} where the Linear at index {expect} belongs")
        where = f"state_dict index {idx} (Linear)"
        if "weight_orig" in g:
            layers.append(_Layer(where, g["weight_orig"], g["bias"], g["weight_mask"]))
        else:
            layers.append(_Layer(where, g["weight"], g["bias"]))
        k += 1
        if k == len(order):
            break
        nxt = order[k]
        if kind(groups[nxt]) == "LayerNorm":
            if nxt != idx + 1:
                fail(f"state_dict index {nxt}", f"holds a LayerNorm where index {idx + 1} (after the Linear at "
                                                f"{idx}) belongs")
            if layer_norm is False:
                fail(f"state_dict index {nxt}", "holds a LayerNorm but an earlier hidden layer has none")
            layers[-1].ln = (f"state_dict index {nxt} (LayerNorm)", groups[nxt]["weight"], groups[nxt]["bias"])
            layer_norm, expect = True, idx + 3
            k += 1
        else:
            if layer_norm is True:
                fail(f"state_dict index {idx}", "is a hidden Linear without LayerNorm but an earlier one has it")
            layer_norm, expect = False, idx + 2
    if layers[-1].ln is not None:
        fail(layers[-1].ln[0], "ends the network: expected a Linear last")
    return layers, bool(layer_norm), fail


def from_torch(obj, *, dtype=None) -> MLP:
    """An :class:`fpe_ref.MLP` with exactly the parameters and masks of a torch model.

    Parameters
    ----------
    obj : torch.nn.Sequential or its state_dict (a mapping of str -> torch.Tensor)
        ``Linear [LayerNorm] ReLU ... Linear``; pruned Linear layers give masks (see the
        module docstring for the state_dict keys and the assumptions a state_dict needs).
    dtype : None, float32 or float64 (numpy or torch dtype, or its name)
        None keeps the tensors' dtype; otherwise every parameter is converted to it.

    Returns
    -------
    MLP
        ``W{l}`` (out, in) and ``b{l}`` from the l-th Linear, ``ln{l}.gamma`` / ``ln{l}.beta``
        from the LayerNorm after it, ``masks["W{l}"]`` (bool) from its ``weight_mask``.
        The arrays are copies: changing the MLP leaves the torch model alone.
    """
    dt = _target_dtype(dtype)
    if isinstance(obj, torch.Tensor):
        raise FPEError(f"from_torch got a torch.Tensor of shape {tuple(obj.shape)}, not a model; "
                       f"it takes {SUPPORTED}")
    if isinstance(obj, nn.Sequential):
        layers, layer_norm = _parse_sequential(obj)

        def fail(where, why):
            raise FPEError(f"{where} {why}; from_torch supports {SUPPORTED}")
    elif isinstance(obj, nn.Module):
        raise FPEError(f"from_torch got the module {_describe(obj)}, not an nn.Sequential; it takes {SUPPORTED}")
    elif isinstance(obj, Mapping):
        layers, layer_norm, fail = _parse_state_dict(obj)
    else:
        raise FPEError(f"from_torch got a {type(obj).__name__}; it takes {SUPPORTED}")
    return _build(layers, layer_norm, dt, fail)


# ---------------------------------------------------------------- MLP -> torch
def to_torch(mlp: MLP) -> nn.Sequential:
    """The ``nn.Sequential`` of an :class:`fpe_ref.MLP`: same structure, values, dtype and masks.

    ``Linear(d, h1), [LayerNorm(h1),] ReLU(), ..., Linear(h_{L-1}, C)`` on the CPU, in the
    MLP's dtype (float32 or float64), with ``weight = W{l}``, ``bias = b{l}`` and LayerNorm
    ``weight = ln{l}.gamma``, ``bias = ln{l}.beta`` (``eps = 1e-5``). A masked ``W{l}`` gets
    ``torch.nn.utils.prune.custom_from_mask(linear, "weight", mask)``: the model's parameter
    is then ``weight_orig`` (equal to ``W{l}``, 0.0 at every masked entry), its buffer
    ``weight_mask`` is the mask as 0.0/1.0, and ``weight = weight_orig * weight_mask``.
    Building the model does not draw from torch's random generator.
    """
    if not isinstance(mlp, MLP):
        raise FPEError(f"to_torch takes an fpe_ref.MLP, got a {type(mlp).__name__}")
    found = sorted({str(p.dtype) for p in mlp.params.values()})
    if len(found) != 1 or np.dtype(found[0]) not in _TORCH_OF:
        raise FPEError(f"to_torch needs an MLP whose parameters are all float32 or all float64, got {found}")
    tdtype = _TORCH_OF[np.dtype(found[0])]

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    modules = []
    L = mlp.n_layers
    for l in range(1, L + 1):
        W = mlp.params[f"W{l}"]
        linear = nn.utils.skip_init(nn.Linear, W.shape[1], W.shape[0], dtype=tdtype)  # no random init
        with torch.no_grad():
            linear.weight.copy_(tensor(W))
            linear.bias.copy_(tensor(mlp.params[f"b{l}"]))
        mask = mlp.masks.get(f"W{l}")
        if mask is not None:
            prune.custom_from_mask(linear, "weight", tensor(mask))
        modules.append(linear)
        if l < L:
            if mlp.layer_norm:
                norm = nn.LayerNorm(W.shape[0], eps=LN_EPS, dtype=tdtype)
                with torch.no_grad():
                    norm.weight.copy_(tensor(mlp.params[f"ln{l}.gamma"]))
                    norm.bias.copy_(tensor(mlp.params[f"ln{l}.beta"]))
                modules.append(norm)
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


# ---------------------------------------------------------------- FPE on a torch model
def expand(model, alpha, split="random", rng=None, *, dtype=None, **kw) -> tuple[nn.Sequential, ExpandResult]:
    """Alg. A1 on a torch model: the reference expansion between the two converters.

    ``result = fpe_ref.expand.expand(from_torch(model, dtype=dtype), alpha, split, rng, **kw)``
    and ``to_torch(result.model)``; nothing is recomputed in torch, so the expanded model
    is exactly the reference's (same split, same pruning, same tie-breaking for the same
    ``rng``).

    Parameters
    ----------
    model : torch.nn.Sequential or its state_dict, as :func:`from_torch` takes.
    alpha, split, rng : as the reference ``fpe_ref.expand`` (``rng``: an int seed or a numpy Generator,
        required: the split and the tie-breaking draw from it).
    dtype : as :func:`from_torch`.
    **kw : the keyword arguments of :func:`fpe_ref.expand.expand`: ``groups`` (the clauses,
        for ``split="clause"``; Gram clusters for ``"gram"``), ``layer``, ``out_scale``, ``tie_key``.

    Returns
    -------
    (nn.Sequential, ExpandResult)
        The expanded torch model (masks as prune buffers) and the reference's result, with
        its ledgers (``result.report()``), split masks and pruned positions.
    """
    unknown = sorted(set(kw) - set(EXPAND_KEYWORDS))
    if unknown:
        raise FPEError(f"expand got unknown keyword argument(s) {unknown}; fpe_ref.expand.expand takes "
                       f"{', '.join(EXPAND_KEYWORDS)}")
    result = reference_expand(from_torch(model, dtype=dtype), alpha, split, rng, **kw)
    return to_torch(result.model), result
