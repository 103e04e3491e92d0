"""Layers as forward/backward pairs: masked Linear, ReLU, LayerNorm, and the two losses.

Each ``*_forward`` returns ``(out, cache)``; each ``*_backward(dout, cache)`` returns the
gradients named ``d<name>``. Shapes: batch-major, ``x`` is ``(n, in)``; weights are stored
``(out, in)`` exactly as ``torch.nn.Linear``, so a PyTorch user can compare one layer at a time.

Paper: Sec. 2.1 (z = W2 ReLU(W1 x + b1) + b2; sigmoid + BCE for binary tasks, softmax
cross-entropy for multiclass), A.7 (LayerNorm before each activation in deep MLPs).

:data:`LOSSES` is the one table of the losses and their prediction rules (A3 line 22):
``"bce"`` for one logit (predict ``z > 0``), ``"xent"`` for several (predict the first
argmax). The model, the trainers and the parity code all read it from here.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

LN_EPS = 1e-5  # torch.nn.LayerNorm's default eps


# ---------------------------------------------------------------- Linear (optionally masked)
def linear_forward(x, W, b):
    """``out = x W^T + b``.

    A masked layer needs no mask here: fpe-ref keeps the invariant ``W[~M] == 0.0`` exactly
    (at construction, after every optimizer step, after every load), so
    ``x W^T == x (W * M)^T``. The mask is applied to ``dW`` in ``linear_backward``.
    """
    out = x @ W.T + b  # (n, out)
    return out, (x, W)


def linear_backward(dout, cache, mask=None, need_dx=True):
    """Gradients of ``out = x W^T + b``: ``dx = dout W``, ``dW = (dout^T x) * M``, ``db = sum_n dout``.

    ``need_dx=False`` skips ``dx`` (returned as None): the first layer's input gradient is
    never used in training, and at d = 784 it is a large share of a step.

    With a mask ``M`` the gradient of a masked weight is defined as 0 (the weight is not a
    parameter), so ``dW`` is multiplied by ``M``: the same equation a PyTorch user gets from
    ``x @ (W * M).T``.
    """
    x, W = cache
    dx = dout @ W if need_dx else None  # (n, in)
    dW = dout.T @ x  # (out, in)
    if mask is not None:
        dW *= mask
    db = dout.sum(axis=0)  # (out,)
    return dx, dW, db


# ---------------------------------------------------------------- ReLU
def relu_forward(x):
    """``out = max(x, 0)``."""
    on = x > 0
    return x * on, on


def relu_backward(dout, cache):
    """``dx = dout * [x > 0]`` (the subgradient at 0 is 0, as in PyTorch)."""
    return dout * cache


# ---------------------------------------------------------------- LayerNorm
def layernorm_forward(x, gamma, beta, eps=LN_EPS):
    """LayerNorm over the last axis, as ``torch.nn.LayerNorm`` (biased variance, eps inside the sqrt).

    ``xhat = (x - mean) / sqrt(var + eps)``, ``out = gamma * xhat + beta``.
    """
    mean = x.mean(axis=-1, keepdims=True)  # (n, 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (n, 1)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd  # (n, h)
    return xhat * gamma + beta, (xhat, rstd, gamma)


def layernorm_backward(dout, cache):
    """Backward of LayerNorm (llm.c's layernorm.py derivation).

    With ``g = dout * gamma``: ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))``,
    ``dgamma = sum_n dout * xhat``, ``dbeta = sum_n dout``.
    """
    xhat, rstd, gamma = cache
    dgamma = (dout * xhat).sum(axis=0)
    dbeta = dout.sum(axis=0)
    g = dout * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dgamma, dbeta


# ---------------------------------------------------------------- losses
def bce_with_logits(z, y):
    """Mean binary cross-entropy of ``sigmoid(z)`` against ``y``; returns ``(loss, dz)``.

    Stable form (as ``torch.nn.BCEWithLogitsLoss``):
    ``l = max(z, 0) - z y + log(1 + exp(-|z|))``; ``dl/dz = (sigmoid(z) - y) / n``.
    ``z`` is ``(n,)`` or ``(n, 1)``; ``y`` holds 0/1 with ``n`` entries.
    """
    y = y.reshape(z.shape).astype(z.dtype, copy=False)
    n = z.shape[0]
    loss = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    dz = (sigmoid(z) - y) / n
    return float(loss), dz


def softmax_cross_entropy(z, y):
    """Mean softmax cross-entropy of logits ``z`` (n, C) against integer labels ``y`` (n,).

    ``l = logsumexp(z) - z[y]``; ``dl/dz = (softmax(z) - onehot(y)) / n``.
    """
    n = z.shape[0]
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=1, keepdims=True)
    idx = np.arange(n)
    y = np.asarray(y, dtype=np.int64)
    loss = np.mean(np.log(s[:, 0]) + zmax[:, 0] - z[idx, y])
    dz = e / s
    dz[idx, y] -= 1.0
    return float(loss), dz / n


def predict_binary(z):
    """Labels from one logit per sample: ``1`` where ``z > 0`` (``sigmoid(z) > 1/2``), as int64."""
    return (z[:, 0] > 0).astype(np.int64)


def predict_argmax(z):
    """Labels from ``C`` logits per sample: the first index of the largest."""
    return z.argmax(axis=1)


class Loss(NamedTuple):
    """A loss with its prediction rule; :data:`LOSSES` holds the two the paper uses."""

    loss: Callable  # (logits, y) -> (mean loss, dL/dlogits)
    predict: Callable  # logits -> int labels


LOSSES = {
    "bce": Loss(bce_with_logits, predict_binary),  # C = 1: the Boolean tasks
    "xent": Loss(softmax_cross_entropy, predict_argmax),  # C > 1: FashionMNIST, embeddings
}


def loss_name(n_outputs: int) -> str:
    """The key of :data:`LOSSES` for a net with ``n_outputs`` logits."""
    return "bce" if n_outputs == 1 else "xent"


def sigmoid(z):
    """Numerically stable logistic function."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out
