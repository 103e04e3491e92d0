"""Alternating Fixed Parameter Expansion of deep MLPs (A.7, "Scaling to Deeper Architectures").

Paper: A.7. "for hidden layers i, i+1, and i+2, when we expand i from h -> alpha h neurons,
the subsequent layer i+1 must also be adjusted to accept a wider input ... We then apply
the re-sparsify method ... and do not expand the neurons in layer i+1. Thus, for hidden
layer i+2, we do not need to worry about expanding the input, and can simply expand the
number of neurons again. We repeat this process with pairs of hidden layers, stopping
before and not expanding the final classification head."

For an MLP with weights ``W1 .. WL`` (hidden layers ``1 .. L-1``, head ``WL``) this is
``expand(layer=1)``, then ``expand(layer=3)``, ... for every odd hidden layer ``i < L``:

* ``expand(layer=i)`` splits the ``h_i`` neurons of ``W_i`` into ``alpha h_i`` children
  (``W_i`` sparse by the split), duplicates the input columns of ``W_{i+1}`` for the
  children, and prunes the ``(alpha - 1) nnz(W_{i+1})`` excess over ``W_i'`` and
  ``W_{i+1}'`` jointly, so ``nnz(W_i') + nnz(W_{i+1}') = nnz(W_i) + nnz(W_{i+1})`` exactly.
* Layer ``i+1``'s neurons are not split (its inputs are wider, its outputs are not), so
  layer ``i+2`` can be split next without touching anything already expanded.
* The head ``WL`` is never split. When the number of hidden layers is odd, the last
  expanded layer is ``L-1`` and its expansion widens the head's inputs: exactly the
  single-hidden-layer FPE of Sec. 2.3.

The LayerNorm of an expanded layer gets its parent's gain and shift copied to every child
(what ``expand`` does); it then normalises over ``alpha h_i`` neurons.

The weight count is held exactly at every step (``expand`` asserts it); the total over
all layers, ``Ledger.weights``, therefore equals the dense parent's.
"""

from __future__ import annotations

from dataclasses import dataclass

from fpe_ref import splits
from fpe_ref.errors import FPEError, check_int
from fpe_ref.expand import ExpandResult, carry_optimizer, expand
from fpe_ref.mlp import MLP, Ledger
from fpe_ref.rng import as_rng


def alternating_layers(n_layers: int) -> list:
    """The hidden layers A.7's alternating strategy splits: ``1, 3, 5, ... < n_layers``.

    ``n_layers`` counts weight matrices (a "5-layer MLP" has ``W1..W5``: four hidden layers,
    of which 1 and 3 are split). A single-hidden-layer net gives ``[1]``.
    """
    n_layers = check_int("n_layers", n_layers, 2, what="an integer >= 2 for alternating expansion (n_layers >= 2: one hidden layer at least)")
    return list(range(1, int(n_layers), 2))


@dataclass
class DeepExpandResult:
    """The expanded model and the per-layer ``ExpandResult``s, in the order they were applied."""

    model: MLP
    alpha: int
    steps: list  # ExpandResult per expanded layer, in order (their .model are intermediates)
    ledger_parent: Ledger
    ledger_child: Ledger

    @property
    def layers(self) -> list:
        return [s.layer for s in self.steps]

    @property
    def dead_children(self) -> dict:
        """``{layer: child rows left with no input or no output weight}`` (non-empty ones only)."""
        return {s.layer: s.dead_children for s in self.steps if s.dead_children.size}

    def report(self) -> str:
        lines = [f"alternating FPE, alpha={self.alpha}, layers {self.layers}"]
        for s in self.steps:
            pr = ", ".join(f"{k}: {len(v)}" for k, v in s.pruned.items())
            lines.append(f"  layer {s.layer}: pruned {pr}")
            if s.dead_children.size:
                lines.append(f"    warning: {s.dead_children.size} children lost all input or output weights")
        lines.append(f"  parent  : {self.ledger_parent.line()}")
        lines.append(f"  expanded: {self.ledger_child.line()}")
        return "\n".join(lines)


def expand_alternating(model: MLP, alpha, split="random", rng=None, *, layers=None,
                       gram_clusters: int = 16, gram_linkage: str = "ward") -> DeepExpandResult:
    """Alternating FPE of every odd hidden layer of ``model`` (A.7). Returns a new model.

    Parameters
    ----------
    model : MLP
        The trained dense (or partly masked) parent; not modified.
    alpha : int >= 2
    split : "random", "gram" or "two-four" (applied to every expanded layer). "gram" clusters
        the rows of that layer's own Gram matrix ``W_i^T W_i`` (``splits.gram_groups``,
        with ``min(gram_clusters, fan-in)`` clusters), since each expanded layer has its own inputs.
    rng : numpy Generator or int seed (one stream, consumed layer by layer).
    layers : list of int, optional
        The hidden layers to split; default ``alternating_layers(model.n_layers)``. Two
        consecutive layers are refused: expanding ``i`` widens ``i+1``'s inputs, which A.7
        deliberately leaves unsplit.
    gram_clusters, gram_linkage : the Gram-cluster settings (``splits.gram_groups``).
    """
    rng = as_rng(rng)
    todo = alternating_layers(model.n_layers) if layers is None else [int(i) for i in layers]
    if not todo:
        raise FPEError("no layer to expand")
    if sorted(set(todo)) != todo:
        raise FPEError(f"layers must be increasing and distinct, got {todo}")
    if any(b - a < 2 for a, b in zip(todo, todo[1:])):
        raise FPEError(f"layers {todo} include consecutive hidden layers; A.7 expands every other layer")
    if todo[0] < 1 or todo[-1] >= model.n_layers:
        raise FPEError(f"layers must be hidden layers in [1, {model.n_layers - 1}], got {todo}")
    if isinstance(split, str) and split == "clause":
        raise FPEError("split='clause' needs Boolean clauses; use expand(layer=1, groups=...) for one layer")
    current = model
    steps = []
    for i in todo:
        groups = None
        if isinstance(split, str) and split == "gram":
            W = current.params[f"W{i}"]
            groups = splits.gram_groups(W, min(gram_clusters, W.shape[1]), gram_linkage)
        res: ExpandResult = expand(current, alpha, split, rng, groups=groups, layer=i)
        steps.append(res)
        current = res.model
    led_p, led_c = model.ledger(), current.ledger()
    if led_p.weights != led_c.weights:  # each expand holds it; the sum must too
        raise AssertionError(f"alternating FPE changed the weight count: {led_p.weights} -> {led_c.weights}")
    return DeepExpandResult(current, int(steps[0].alpha), steps, led_p, led_c)


def carry_optimizer_alternating(opt, result: DeepExpandResult, parent: MLP):
    """``carry_optimizer`` applied step by step through an alternating expansion."""
    prev = parent
    for s in result.steps:
        opt = carry_optimizer(opt, s, prev)
        prev = s.model
    return opt
