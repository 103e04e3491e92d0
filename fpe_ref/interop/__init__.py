"""Adapters between fpe-ref's :class:`fpe_ref.MLP` and other frameworks' models.

:mod:`fpe_ref.interop.torch` converts a PyTorch ``nn.Sequential`` of Linear [LayerNorm]
ReLU ... Linear (or its state_dict) to an :class:`~fpe_ref.MLP` and back, masks as
``torch.nn.utils.prune`` buffers, and runs the reference expansion (Alg. A1) on a torch
model. It needs the ``torch`` extra; this package itself imports nothing, so
``import fpe_ref.interop`` works without torch, and the core never imports it.
"""
