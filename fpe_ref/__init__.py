"""fpe-ref: reference implementation of Fixed Parameter Expansion (FPE).

Paper: Kong, Subramanian et al., "Expand Neurons, Not Parameters" (2025).
Pipeline, one module per concept: data -> layers/mlp -> optim/train -> splits/expand -> metrics.
"""

__version__ = "0.1.0"
