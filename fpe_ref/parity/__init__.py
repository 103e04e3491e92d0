"""Checking other implementations against this one: golden bundles and the PyTorch and JAX twins."""

from __future__ import annotations

from fpe_ref.errors import FPEError


def check_many(models, rngs, layer_norm: str) -> list:
    """One-line FPEErrors unless ``models`` are MLPs of one size and dtype without LayerNorm, one
    rng each (``rngs`` None: not checked); ``layer_norm`` is the message for a LayerNorm model.

    What the batched twins (``torch_ref.train_many``, ``jax_ref.train_many``) can stack."""
    from fpe_ref.mlp import MLP

    models = list(models)
    if not models:
        raise FPEError("train_many needs at least one model")
    if any(not isinstance(m, MLP) for m in models):
        raise FPEError("train_many trains fpe_ref.MLP models only")
    if any(m.layer_norm for m in models):
        raise FPEError(layer_norm)
    sizes, dtype = models[0].sizes, models[0].dtype
    for i, m in enumerate(models):
        if m.sizes != sizes or m.dtype != dtype:
            raise FPEError(f"train_many trains models of one shape: model {i} is {m.sizes} {m.dtype.name}, "
                           f"model 0 is {sizes} {dtype.name}")
    if rngs is not None and len(rngs) != len(models):
        raise FPEError(f"train_many needs one rng per model: {len(rngs)} rngs for {len(models)} models")
    return models
