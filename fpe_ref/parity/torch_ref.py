"""The one PyTorch twin of FPE: ``fpe golden check --impl torch`` and the PyTorch rows of ``fpe bench``.

Written from the conventions in ``docs/golden.md``, not from our NumPy code: autograd for
every gradient, ``torch.nn.functional`` for Linear / LayerNorm / the losses,
``torch.optim.Adam`` for the optimizer, and Alg. A1 re-implemented with torch ops. It
runs on the CPU or a CUDA device, in float64 or float32. Two users, both importing it
lazily so that fpe-ref itself never needs torch (extras ``torch`` and ``bench``):

- :mod:`fpe_ref.parity.golden` calls :func:`compute` on each case of a golden bundle;
- :mod:`fpe_ref.experiments.bench` trains with :class:`TorchTrainer` / :func:`train`,
  Alg. A3's loop (:func:`fpe_ref.train.train`) built from the same :func:`forward`,
  :func:`data_loss` and :func:`penalty`, with the warm-up of
  :func:`fpe_ref.optim.schedule` and the prediction rules of :data:`LOSSES`; and with
  :func:`train_many`, the same loop for many MLPs of one shape at once, their parameters
  stacked along a leading model dimension (batched matrix products, one backward, one Adam).

Masks: a masked weight ``W`` enters every computation as ``W * M`` (the forward pass and
every penalty), as ``torch.nn.utils.prune`` applies a mask, so autograd multiplies its
gradient by ``M``; ``torch.optim.Adam`` then sees ``g = 0`` there, its moments stay 0 and
the update ``0 / (0 + eps)`` leaves the weight at exactly 0.
"""

from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from fpe_ref.errors import FPEError
from fpe_ref.layers import LN_EPS, loss_name  # torch.nn.LayerNorm's default eps
from fpe_ref.optim import schedule
from fpe_ref.parity import check_many
from fpe_ref.rng import as_rng
from fpe_ref.train import History, check_data


def resolve_device(device: str) -> torch.device:
    if device == "cuda":
        if not torch.cuda.is_available():
            raise FPEError("--device cuda: torch.cuda.is_available() is False on this machine")
        # IEEE float32 matmuls (no TF32): the float32 tolerances assume them.
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
    return torch.device(device)


def describe(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"torch {torch.__version__} ({name})"


# ---------------------------------------------------------------- helpers
def _t(a, dtype, device):
    return torch.as_tensor(np.asarray(a, dtype=np.float64), device=device).to(dtype)


def _np(t):
    return t.detach().to("cpu", torch.float64).numpy().copy()


def _model(inputs, dtype, device, pprefix="param/", mprefix="mask/"):
    params = {k[len(pprefix):]: _t(v, dtype, device) for k, v in inputs.items() if k.startswith(pprefix)}
    masks = {k[len(mprefix):]: _t(v, dtype, device) for k, v in inputs.items() if k.startswith(mprefix)}
    n_layers = sum(1 for k in params if k.startswith("W"))
    return params, masks, n_layers


def _effective(params, masks):
    """``W * M`` for masked weights, the parameter itself otherwise."""
    return {k: p * masks[k] if k in masks else p for k, p in params.items()}


def forward(p, X, n_layers, layer_norm):
    """Logits and the activations ``a{l}`` (Linear), ``n{l}`` (LayerNorm), ``h{l}`` (ReLU)."""
    acts, h = {}, X
    for l in range(1, n_layers + 1):
        a = F.linear(h, p[f"W{l}"], p[f"b{l}"])
        acts[f"a{l}"] = a
        if l < n_layers:
            if layer_norm:
                a = F.layer_norm(a, (a.shape[-1],), p[f"ln{l}.gamma"], p[f"ln{l}.beta"], eps=LN_EPS)
                acts[f"n{l}"] = a
            a = torch.relu(a)
            acts[f"h{l}"] = a
        h = a
    return h, acts


def _bce(logits, y):
    return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))


def _xent(logits, y):
    return F.cross_entropy(logits, y.long())


def _predict_binary(logits):
    return (logits[:, 0] > 0).long()


def _predict_argmax(logits):
    return logits.argmax(dim=1)


class Loss(NamedTuple):
    """A loss with its prediction rule, on tensors: :data:`fpe_ref.layers.LOSSES` in torch."""

    loss: Callable  # (logits, y) -> mean loss, a tensor autograd differentiates
    predict: Callable  # logits -> int64 labels


# The keys and rules of fpe_ref.layers.LOSSES (A3 line 22): "bce" for one logit (predict
# z > 0), "xent" for several (predict the first argmax, as torch.argmax returns it).
LOSSES = {"bce": Loss(_bce, _predict_binary), "xent": Loss(_xent, _predict_argmax)}


def data_loss(logits, y):
    """Mean BCE-with-logits for one logit, mean softmax cross-entropy otherwise."""
    return LOSSES[loss_name(logits.shape[1])].loss(logits, y)


def predict(logits):
    """Labels from logits ``(n, C)``: ``z > 0`` for one logit, the argmax otherwise."""
    return LOSSES[loss_name(logits.shape[1])].predict(logits)


def penalty(p, l1, l2, orth):
    """``l1 ||W1||_1 + l2 sum_p ||p||^2 + orth ||W1 W1^T - I||_F^2`` (on the masked weights)."""
    W1 = p["W1"]
    out = torch.zeros((), dtype=W1.dtype, device=W1.device)
    if l1:
        out = out + l1 * W1.abs().sum()
    if l2:
        out = out + l2 * sum((q * q).sum() for q in p.values())
    if orth:
        R = W1 @ W1.T - torch.eye(W1.shape[0], dtype=W1.dtype, device=W1.device)
        out = out + orth * (R * R).sum()
    return out


# ---------------------------------------------------------------- Alg. A1 with explicit masks
def expand_explicit(params, masks, split, key, alpha, layer):
    """Split, duplicate, one global |w| ranking (ties by ``key``), prune to the parent's count.

    Returns new ``params``, ``masks`` and the pruned ``(row, col)`` positions per matrix.
    """
    nW, nN = f"W{layer}", f"W{layer + 1}"
    W, Wn = params[nW], params[nN]
    h, d = W.shape
    dev = W.device
    M_old = masks[nW].bool() if nW in masks else torch.ones_like(W, dtype=torch.bool)
    Mn_old = masks[nN].bool() if nN in masks else torch.ones_like(Wn, dtype=torch.bool)
    parent_of = torch.arange(h, device=dev).repeat_interleave(alpha)  # child row i*alpha+j -> parent i
    M1 = split.bool() & M_old[parent_of]
    M2 = Mn_old[:, parent_of].clone()
    W1 = torch.where(M1, W[parent_of], torch.zeros_like(W[parent_of]))
    W2 = Wn[:, parent_of].clone()
    budget = int(M_old.sum() + Mn_old.sum())
    excess = int(M1.sum() + M2.sum()) - budget
    pos1, pos2 = torch.nonzero(M1), torch.nonzero(M2)  # row-major
    mags = torch.cat([W1.abs()[M1], W2.abs()[M2]])
    if key.shape != mags.shape:
        raise FPEError(f"tie_key has {key.numel()} entries, expected {mags.numel()} prune candidates")
    # lexicographic (|w|, key): sort by the secondary key, then stably by the primary
    order = torch.sort(key, stable=True).indices
    order = order[torch.sort(mags[order], stable=True).indices][:excess]
    n1 = pos1.shape[0]
    p1, p2 = pos1[order[order < n1]], pos2[order[order >= n1] - n1]
    M1[p1[:, 0], p1[:, 1]] = False
    M2[p2[:, 0], p2[:, 1]] = False
    out = {}
    for k, v in params.items():
        if k == nW:
            out[k] = torch.where(M1, W1, torch.zeros_like(W1))
        elif k == nN:
            out[k] = torch.where(M2, W2, torch.zeros_like(W2))
        elif k in (f"b{layer}", f"ln{layer}.gamma", f"ln{layer}.beta"):
            out[k] = v[parent_of].clone()
        else:
            out[k] = v.clone()
    new_masks = {k: v.bool().clone() for k, v in masks.items()}
    new_masks[nW], new_masks[nN] = M1, M2
    return out, new_masks, {nW: p1, nN: p2}


def _sorted_rows(p):
    p = p.to("cpu").numpy().astype(np.int64).reshape(-1, 2)
    return p[np.lexsort((p[:, 1], p[:, 0]))]


# ---------------------------------------------------------------- one case
@contextlib.contextmanager
def _one_cpu_thread():
    """One intra-op thread while a case runs: the tensors are tiny (threads only add
    scheduling overhead), and CPU reductions then do not depend on the machine's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compute(cfg: dict, inputs: dict, device: torch.device, dtype: str) -> dict:
    """The expected outputs of one bundle case, computed with torch (names as in the bundle)."""
    with _one_cpu_thread():
        return _compute(cfg, inputs, device, dtype)


def _compute(cfg, inputs, device, dtype):
    dt = {"float64": torch.float64, "float32": torch.float32}[dtype]
    section = cfg["section"]
    out = {}
    if section == "forward":
        params, masks, L = _model(inputs, dt, device)
        for p in params.values():
            p.requires_grad_(True)
        X, y = _t(inputs["X"], dt, device), _t(inputs["y"], torch.float64, device).long()
        logits, acts = forward(_effective(params, masks), X, L, cfg["layer_norm"])
        loss = data_loss(logits, y)
        grads = torch.autograd.grad(loss, list(params.values()))
        out.update({f"act/{k}": _np(v) for k, v in acts.items()})
        out["logits"], out["loss"] = _np(logits), _np(loss)
        out.update({f"grad/{k}": _np(g) for k, g in zip(params, grads)})
    elif section == "expand":
        params, masks, _ = _model(inputs, dt, device, "parent/", "parent_mask/")
        split = _t(inputs["split"], dt, device)
        key = _t(inputs["tie_key"], torch.float64, device)  # only compared, never computed with
        new, new_masks, pruned = expand_explicit(params, masks, split, key, cfg["alpha"], cfg["layer"])
        out.update({f"param/{k}": _np(v) for k, v in new.items()})
        out.update({f"mask/{k}": _np(v.double()) for k, v in new_masks.items()})
        out.update({f"pruned/{k}": _sorted_rows(v).astype(np.float64) for k, v in pruned.items()})
    elif section == "adam":
        params, masks, L = _model(inputs, dt, device, "init/")
        for p in params.values():
            p.requires_grad_(True)
        X, y = _t(inputs["X"], dt, device), _t(inputs["y"], torch.float64, device).long()
        opt = torch.optim.Adam(list(params.values()), lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"])
        rec = {"loss": []}
        for t in range(cfg["steps"]):
            opt.zero_grad(set_to_none=True)
            p = _effective(params, masks)
            logits, _ = forward(p, X[t], L, cfg["layer_norm"])
            loss = data_loss(logits, y[t]) + penalty(p, cfg["l1"], cfg["l2"], cfg["orth"])
            loss.backward()
            opt.step()
            rec["loss"].append(_np(loss))
            for k, q in params.items():
                st = opt.state[q]
                rec.setdefault(f"param/{k}", []).append(_np(q))
                rec.setdefault(f"m/{k}", []).append(_np(st["exp_avg"]))
                rec.setdefault(f"v/{k}", []).append(_np(st["exp_avg_sq"]))
        out = {k: np.stack(v) for k, v in rec.items()}
    elif section == "metrics":
        W1 = _t(inputs["W1"], dt, device)
        G = _t(inputs["groups"], dt, device)  # (F, d) 0/1 membership
        V = W1 @ G.T  # (h, F): v_i = W1 1_{S_i}
        D = V.T @ V
        num, den = torch.diagonal(D) ** 2, (D * D).sum(dim=1)
        cap = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
        norms = torch.linalg.vector_norm(W1, dim=1)
        U = W1[norms > 0] / norms[norms > 0, None]
        S = U @ U.T
        iu = torch.triu_indices(S.shape[0], S.shape[0], offset=1, device=S.device)
        out = {"gram": _np(W1.T @ W1), "capacity": _np(cap), "capacity_total": _np(cap.sum()),
               "cosine": _np(S[iu[0], iu[1]].mean())}
    else:
        raise FPEError(f"unknown section {section!r} in the bundle")
    return out


# ---------------------------------------------------------------- Alg. A3's training loop
def _adam(params, cfg):
    """``torch.optim.Adam`` with ``cfg``'s hyper-parameters, fused where this torch has it.

    The fused implementation updates every parameter in one kernel (CPU from torch 2.4,
    CUDA); it is the fastest and agrees with the single-tensor loop to rounding. Older
    torch refuses ``fused=True`` on the CPU at construction: then the default loop. The
    golden check (:func:`compute`) always uses the default, whose order of operations
    :class:`fpe_ref.optim.Adam` follows.
    """
    kw = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps}
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kw)


class TorchTrainer:
    """:func:`fpe_ref.train.train`'s loop in PyTorch for one MLP: the same batches, warm-up and penalties.

    Each step is Alg. A3 lines 10-19 written the usual PyTorch way: the masks multiplied into
    the weights (:func:`_effective`, what ``torch.nn.utils.prune`` does in its forward
    pre-hook), :func:`forward`, ``data_loss + penalty`` on the masked weights, ``backward``
    and a ``torch.optim.Adam`` step. The epoch's learning rate and penalties come from
    :func:`fpe_ref.optim.schedule`, the prediction rule from :data:`LOSSES`. The loss and
    the hit count of every step stay on the device until the epoch ends (one host
    synchronisation per epoch, none per step).

    Parameters
    ----------
    model : MLP
        Any depth, with or without LayerNorm, dense or masked. Its parameters are copied
        (in the model's dtype) to ``device``; :meth:`write_back` copies the result back.
    X, y : training inputs ``(n, d)`` and integer labels ``(n,)``.
    cfg : TrainConfig
    X_test, y_test : optional test set, for :meth:`test_accuracy`.
    device : ``"cpu"``, ``"cuda"`` (:func:`resolve_device`) or a ``torch.device``.
    """

    def __init__(self, model, X, y, cfg, *, X_test=None, y_test=None, device="cpu"):
        check_data(X, y, model)
        if X_test is not None:
            check_data(X_test, y_test, model, "test")
        dev = resolve_device(device) if isinstance(device, str) else device
        self.model, self.cfg, self.device = model, cfg, dev
        self.n_layers, self.layer_norm = model.n_layers, model.layer_norm
        self.rule = LOSSES[model.loss_name]
        self.params = {k: torch.tensor(v, device=dev).requires_grad_(True) for k, v in model.params.items()}
        self.masks = {k: torch.tensor(M.astype(model.dtype), device=dev) for k, M in model.masks.items()}
        self.opt = _adam(list(self.params.values()), cfg)
        self.X, self.y, self.y_loss = self._data(X, y)
        self.X_test, self.y_test, _ = (None, None, None) if X_test is None else self._data(X_test, y_test)

    def _data(self, X, y):
        """Inputs in the model's dtype; labels as int64 (compared with predictions) and as the loss takes them."""
        X = torch.from_numpy(np.ascontiguousarray(X, dtype=self.model.dtype)).to(self.device)
        y = torch.from_numpy(np.asarray(y).astype(np.int64)).to(self.device)
        return X, y, (y.to(X.dtype) if self.model.loss_name == "bce" else y)

    def epoch(self, epoch: int, order):
        """One epoch (``epoch = 1..N``) over the permutation ``order`` (NumPy integers).

        Returns ``(mean training loss incl. penalties, training accuracy)`` over the
        epoch's batches, as :class:`fpe_ref.train.History` records them.
        """
        lr, pen = schedule(self.cfg, epoch)  # Alg. A3 line 8
        for g in self.opt.param_groups:
            g["lr"] = lr
        order = torch.from_numpy(np.asarray(order)).to(self.device)
        n, B = order.shape[0], self.cfg.batch_size
        losses, hits = [], []
        for start in range(0, n, B):
            idx = order[start:start + B]
            self.opt.zero_grad(set_to_none=True)
            p = _effective(self.params, self.masks)
            logits, _ = forward(p, self.X[idx], self.n_layers, self.layer_norm)
            total = self.rule.loss(logits, self.y_loss[idx]) + penalty(p, pen.l1, pen.l2, pen.orth)
            total.backward()
            self.opt.step()
            losses.append(total.detach())
            hits.append((self.rule.predict(logits.detach()) == self.y[idx]).sum())
        sizes = torch.tensor([min(B, n - s) for s in range(0, n, B)], dtype=torch.float64, device=self.device)
        loss = float((torch.stack(losses).to(torch.float64) * sizes).sum()) / n
        return loss, float(torch.stack(hits).sum()) / n

    def test_accuracy(self) -> float:
        """Accuracy on the test set with the current weights."""
        with torch.no_grad():
            logits, _ = forward(_effective(self.params, self.masks), self.X_test, self.n_layers, self.layer_norm)
            return float((self.rule.predict(logits) == self.y_test).to(torch.float64).mean())

    def write_back(self):
        """Copy the trained (masked) parameters into ``model.params`` in place."""
        with torch.no_grad():
            for k, v in _effective(self.params, self.masks).items():
                self.model.params[k][...] = v.detach().to("cpu").numpy()
        self.model.apply_masks()


def train(model, X, y, cfg, rng, *, X_test=None, y_test=None, device="cpu", on_epoch=None) -> History:
    """Train ``model`` in place like :func:`fpe_ref.train.train`, with :class:`TorchTrainer`.

    The same permutations (``rng.permutation(n)`` once per epoch, ``rng`` an int seed or a
    Generator), the same warm-up and penalties, test accuracy every ``cfg.eval_every``
    epochs and at the last. Returns the :class:`fpe_ref.train.History`.
    """
    rng = as_rng(rng)
    tr = TorchTrainer(model, X, y, cfg, X_test=X_test, y_test=y_test, device=device)
    hist = History()
    for epoch in range(1, cfg.epochs + 1):
        loss, acc = tr.epoch(epoch, rng.permutation(X.shape[0]))
        hist.loss.append(loss)
        hist.train_acc.append(acc)
        if X_test is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            hist.test_epoch.append(epoch)
            hist.test_acc.append(tr.test_accuracy())
        if not np.isfinite(loss):
            raise FPEError(f"training diverged: loss is {loss} at epoch {epoch} (lower the learning rate?)")
        if on_epoch is not None:
            on_epoch(epoch, hist)
    tr.write_back()
    return hist


# ---------------------------------------------------------------- many models at once
def _rows_bce(logits, y):
    """Per-sample BCE-with-logits ``(n,)`` of one logit ``(n, 1)``."""
    return F.binary_cross_entropy_with_logits(logits[:, 0], y, reduction="none")


def _rows_xent(logits, y):
    """Per-sample softmax cross-entropy ``(n,)`` of logits ``(n, C)``."""
    return F.cross_entropy(logits, y, reduction="none")


# LOSSES' losses per sample, so that each model of a stack takes the mean over its own batch.
_ROW_LOSSES = {"bce": _rows_bce, "xent": _rows_xent}


def _stacked_logits(p, X, n_layers):
    """Logits ``(M, n, C)`` of ``M`` stacked MLPs.

    ``p`` holds the masked parameters ``[W1, b1, W2, b2, ...]`` with ``W{l}`` ``(M, out, in)``
    and ``b{l}`` ``(M, out)``; ``X`` is ``(M, n, d)`` (each model's own batch) or ``(n, d)``
    (one input set for every model). Layer ``l`` is ``h W^T + b`` per model, as ``F.linear``.
    """
    h = X
    for l in range(n_layers):
        W, b = p[2 * l], p[2 * l + 1]
        if h.dim() == 2:
            a = torch.matmul(h, W.transpose(1, 2)) + b[:, None, :]  # (M, n, out), X broadcast over models
        else:
            a = torch.baddbmm(b[:, None, :], h, W.transpose(1, 2))  # (M, n, out)
        h = torch.relu(a) if l < n_layers - 1 else a
    return h


def _stacked_penalty(p, pens, terms):
    """:func:`penalty` of each of ``M`` stacked models, ``(M,)``.

    ``pens`` is the epoch's ``(l1, l2, orth)`` as a tensor (values change with the warm-up
    without recompiling a compiled step); ``terms`` says which of the three ``cfg`` switches
    on (fixed for a whole phase, as :func:`penalty`'s ``if l1:``).
    """
    W1 = p[0]
    M = W1.shape[0]
    out = torch.zeros(M, dtype=W1.dtype, device=W1.device)
    if terms[0]:
        out = out + pens[0] * W1.abs().sum(dim=(1, 2))
    if terms[1]:
        out = out + pens[1] * sum((q * q).reshape(M, -1).sum(dim=1) for q in p)
    if terms[2]:
        R = torch.bmm(W1, W1.transpose(1, 2)) - torch.eye(W1.shape[1], dtype=W1.dtype, device=W1.device)  # (M, h, h)
        out = out + pens[2] * (R * R).sum(dim=(1, 2))
    return out


def _many_step(params, masks, X, y_loss, y, idx, pens, n_layers, loss, terms):
    """One Alg. A3 step's forward for ``M`` stacked models, each on its own batch.

    ``idx`` ``(M, B)`` are the rows of each model's batch; ``masks`` are aligned with
    ``params`` (None for an unmasked one). Returns each model's ``data loss + penalty``
    ``(M,)`` (the sum is what autograd differentiates: the models share no parameter, so each
    gets exactly its own gradient) and its hit count ``(M,)`` under the prediction rule.
    """
    p = [q if m is None else q * m for q, m in zip(params, masks)]  # W * M, as _effective
    M, B = idx.shape
    rows = idx.reshape(M * B)  # index_select on the flat rows: a plain gather, cheaper than X[idx]
    logits = _stacked_logits(p, X.index_select(0, rows).reshape(M, B, X.shape[1]), n_layers)  # (M, B, C)
    flat = logits.reshape(M * B, logits.shape[2])
    data = _ROW_LOSSES[loss](flat, y_loss.index_select(0, rows)).reshape(M, B).mean(dim=1)
    hits = (LOSSES[loss].predict(flat.detach()) == y.index_select(0, rows)).reshape(M, B).sum(dim=1)
    return data + _stacked_penalty(p, pens, terms), hits


def _check_many(models, rngs):
    return check_many(models, rngs, "train_many trains MLPs without LayerNorm (train LayerNorm models with train)")


def train_many(models, X, y, cfg, rngs, *, X_test=None, y_test=None, device="cpu", compile=False) -> list:
    """Train MLPs of one shape in place, all at once: :func:`train` for each, batched over models.

    The parameters of the ``M`` models are stacked along a leading model dimension
    (``W{l}``: ``(M, out, in)``, ``b{l}``: ``(M, out)``) and every layer is one
    ``torch.baddbmm``. Each model keeps its own batches: its epoch order is
    ``rngs[m].permutation(n)``, drawn as :func:`fpe_ref.train.train` draws it, and its batch
    ``X[idx_m]`` is gathered into an ``(M, B, d)`` tensor (the last batch smaller when ``B``
    does not divide ``n``). Each model's loss is its own mean data loss plus its own penalty
    on its masked weights; one ``backward`` of their sum gives every model exactly its own
    gradient, and one ``torch.optim.Adam`` (:func:`_adam`) over the stacked tensors equals
    one Adam per model, Adam being element-wise. Warm-up and penalties come from
    :func:`fpe_ref.optim.schedule` (the same for every model), the prediction rule from
    :data:`LOSSES`. Losses, hit counts and test accuracies stay on the device until training
    ends: no host synchronisation inside the loop.

    Parameters
    ----------
    models : list of MLP
        The same sizes and dtype, no LayerNorm, dense or masked (masks may differ per model).
    X, y : training inputs ``(n, d)`` and integer labels ``(n,)``.
    cfg : TrainConfig
    rngs : one Generator (or int seed) per model, for its per-epoch shuffle.
    X_test, y_test : optional test set, evaluated every ``cfg.eval_every`` epochs and at the last.
    device : ``"cpu"``, ``"cuda"`` (:func:`resolve_device`) or a ``torch.device``.
    compile : bool
        Run the step's forward (and so its backward) through ``torch.compile``. If compiling
        fails, an FPEError says why and no model is changed.

    Returns
    -------
    list of History, one per model, as :func:`fpe_ref.train.train` records it.
    """
    models = _check_many(models, rngs)
    rngs = [as_rng(r) for r in rngs]
    X, y = check_data(X, y, models[0])
    if X_test is not None or y_test is not None:
        X_test, y_test = check_data(X_test, y_test, models[0], "test")
    dev = resolve_device(device) if isinstance(device, str) else device
    M, L, dtype, loss = len(models), models[0].n_layers, models[0].dtype, models[0].loss_name
    names = list(models[0].params)  # W1, b1, W2, b2, ...
    params = [torch.from_numpy(np.stack([m.params[k] for m in models])).to(dev).requires_grad_(True) for k in names]
    masked = set().union(*(m.masks for m in models))
    masks = [torch.from_numpy(np.stack([m.masks[k] if k in m.masks else np.ones(m.params[k].shape, bool)
                                        for m in models]).astype(dtype)).to(dev) if k in masked else None
             for k in names]
    opt = _adam(params, cfg)

    def data(X, y):
        X = torch.from_numpy(np.ascontiguousarray(X, dtype=dtype)).to(dev)
        y = torch.from_numpy(np.asarray(y).astype(np.int64)).to(dev)
        return X, y, (y.to(X.dtype) if loss == "bce" else y)

    Xt, yt, yt_loss = data(X, y)
    if X_test is not None:
        Xs, ys, _ = data(X_test, y_test)
    terms = tuple(bool(v) for v in (cfg.l1, cfg.l2, cfg.orth))
    sched = [schedule(cfg, e) for e in range(1, cfg.epochs + 1)]  # Alg. A3 line 8, every epoch
    pens = torch.tensor([[p.l1, p.l2, p.orth] for _, p in sched], dtype=Xt.dtype).reshape(-1, 3).to(dev)
    pens = list(pens.unbind(0))  # the coefficients of each epoch, (3,)
    step = _compiled_step() if compile else _eager_step
    n, B = X.shape[0], cfg.batch_size
    sizes = torch.tensor([min(B, n - s) for s in range(0, n, B)], dtype=torch.float64, device=dev)[:, None]
    losses, hits, test_hits, test_epoch = [], [], [], []
    for epoch in range(1, cfg.epochs + 1):
        lr, _ = sched[epoch - 1]
        for g in opt.param_groups:
            g["lr"] = lr
        order = torch.from_numpy(np.stack([r.permutation(n) for r in rngs])).to(dev)  # (M, n)
        step_loss, step_hits = [], []
        for start in range(0, n, B):
            idx = order[:, start:start + B]  # (M, B)
            opt.zero_grad(set_to_none=True)
            total, h = step(params, masks, Xt, yt_loss, yt, idx, pens[epoch - 1], L, loss, terms)
            opt.step()
            step_loss.append(total.detach())
            step_hits.append(h)
        losses.append((torch.stack(step_loss).to(torch.float64) * sizes).sum(dim=0))  # (M,)
        hits.append(torch.stack(step_hits).sum(dim=0))
        if X_test is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            with torch.no_grad():
                p = [q if m is None else q * m for q, m in zip(params, masks)]
                z = _stacked_logits(p, Xs, L)  # (M, n_test, C)
                pred = LOSSES[loss].predict(z.reshape(-1, z.shape[-1])).reshape(M, -1)
                test_hits.append((pred == ys).sum(dim=1))
            test_epoch.append(epoch)
    # the one host synchronisation: every epoch's numbers at once
    loss_np = torch.stack(losses).cpu().numpy() / n if losses else np.zeros((0, M))  # (epochs, M)
    hits_np = torch.stack(hits).cpu().numpy() if hits else np.zeros((0, M), np.int64)
    test_np = torch.stack(test_hits).cpu().numpy() if test_hits else np.zeros((0, M), np.int64)
    bad = np.argwhere(~np.isfinite(loss_np))
    if bad.size:
        e, m = bad[0]
        raise FPEError(f"training diverged: model {m}'s loss is {loss_np[e, m]} at epoch {e + 1} "
                       "(lower the learning rate?)")
    with torch.no_grad():
        for i, k in enumerate(names):
            eff = params[i] if masks[i] is None else params[i] * masks[i]
            eff = eff.detach().cpu().numpy()
            for j, model in enumerate(models):
                model.params[k][...] = eff[j]
    out = []
    for j, model in enumerate(models):
        model.apply_masks()
        out.append(History(loss=[float(v) for v in loss_np[:, j]], train_acc=[int(v) / n for v in hits_np[:, j]],
                           test_epoch=list(test_epoch),
                           test_acc=[int(v) / Xs.shape[0] for v in test_np[:, j]] if X_test is not None else []))
    return out


def _eager_step(*args):
    """:func:`_many_step` and the backward of the models' summed loss."""
    total, hits = _many_step(*args)
    total.sum().backward()
    return total, hits


_COMPILED = {}


def _compiled_step():
    """:func:`_eager_step` with :func:`_many_step` through ``torch.compile``.

    The compiled function is made once, so its graphs are reused by later calls of the same
    shapes. Compilation happens at a step's first call for new shapes (the forward) and at its
    first backward; any failure there is an FPEError naming the cause.
    """
    if "step" not in _COMPILED:
        try:
            _COMPILED["step"] = torch.compile(_many_step)
        except Exception as exc:  # e.g. a Python or platform torch.compile does not support
            raise FPEError(f"torch.compile is not available: {type(exc).__name__}: {_first_line(exc)}") from None
    compiled = _COMPILED["step"]

    def step(params, *args):
        try:
            total, hits = compiled(params, *args)
            total.sum().backward()
        except Exception as exc:
            raise FPEError(f"torch.compile failed on {params[0].device}: {type(exc).__name__}: "
                           f"{_first_line(exc)}") from None
        return total, hits
    return step


def _first_line(exc) -> str:
    """An exception's first line (compiler errors run to pages), for a one-line FPEError."""
    return (str(exc).strip().splitlines() or [""])[0][:300]
