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
  :func:`fpe_ref.optim.schedule` and the prediction rules of :data:`LOSSES`.

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
