"""FPE on real classification data: FashionMNIST pixels and CLIP embeddings (Sec. 3.3, 3.4, A.7).

Paper: Sec. 3.3 (Figure 5: dense vs random vs Gram split over the hidden size), Sec. 3.4
(Figure 6b: when to split; 6c: cosine; 6d: alpha in {2, 4, 8}), A.7 (Tables A3/A4: deep MLPs
with alternating expansion; dynamic rewiring; Table A5: 2:4 structured sparsity).

One run = one hidden size x one trial of this workflow (Sec. 3.1's, on real data):

1. a dense MLP ``[d, h, ..., h, C]`` (``layers`` weight matrices; LayerNorm before each ReLU
   when ``layers > 2``, as A.7) trains ``pretrain_epochs`` epochs: the *parent*;
2. each FPE variant expands a copy of the parent (``deep.expand_alternating``: layer 1 for
   a single hidden layer; layers 1, 3, ... for deep nets) and trains ``post_epochs`` more
   with a fresh Adam; the ``dense`` baseline is the parent trained ``post_epochs`` more
   with a fresh Adam (so the split is the only difference);
3. the beyond-the-paper baselines (the reviewers' questions) train from scratch for
   ``pretrain_epochs + post_epochs`` epochs in one phase: ``dense-scratch`` (the parent's
   architecture: the same non-zero weight count, no optimizer restart) and
   ``sparse-scratch`` (a fresh initialisation of the *random* variant's expanded shape with
   its exact post-split mask: same neurons, same sparsity pattern, no dense pre-training).
   Its weights are drawn as ``nn.Linear``'s (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with the
   dense fan-in) and then masked, as a PyTorch user applying a mask to a fresh layer gets.

Variants (``VisionConfig.variants``; ``@a`` overrides alpha, e.g. ``random@4``):

``dense``           the paper's baseline (parent + ``post_epochs``)
``random``          random split (Sec. 2.3)
``gram``            Gram-cluster split (Sec. 3.3; ``splits.gram_groups`` on the parent's W_i)
``two-four``        2:4 structured split (A.7, alpha 2)
``rewire``          random split, then dynamic rewiring while training (A.7; ``rewire.py``); the
                    same split and shuffles as ``random``, so the two differ by the rewiring only
``dense-scratch``   dense from scratch, ``pretrain + post`` epochs (beyond the paper)
``sparse-scratch``  the random variant's wide sparse mask from scratch (beyond the paper)

Choices the paper does not state (each is a ``VisionConfig`` field, printed by ``--help`` and
written next to the results): Adam lr 1e-3 and batch 500 as A.3.1; the A.3.1 penalties
(lambda_1 = 1e-7 on W1, lambda_2 = 1e-5 on all parameters); **no warm-up** (A3's
``r = min(1, e/W)`` with W = 1000 would keep the learning rate near 0 over a 20-epoch
phase); ``post_epochs`` = ``pretrain_epochs`` (20 for FashionMNIST, Figure 5a's caption;
25 for the embeddings); a validation split of 10 % of the training set, taken out of
training (so every model trains on 90 %), for the model-selection-on-validation column;
float32 arithmetic (float64 is available).

Randomness: streams ``stream(seed, name, layers, hidden, trial, ...)``; the validation split
depends on ``seed`` only, so every run sees the same train/validation/test sets, and the
parent of ``(hidden, trial)`` is the same whichever variants a run trains.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from fpe_ref.deep import expand_alternating
from fpe_ref.errors import FPEError, check_int, check_memory, check_positive_ints
from fpe_ref.metrics import mean_cosine
from fpe_ref.mlp import MLP, param_nbytes
from fpe_ref.rewire import RewireSchedule, RewiringAdam
from fpe_ref.rng import stream
from fpe_ref.splits import check_alpha
from fpe_ref.experiments import stats, trainers
from fpe_ref.experiments.outputs import code_version, open_output
from fpe_ref.experiments.runs import STORE_NAME, RunStore, open_sweep_dir, run_sweep
from fpe_ref.train import TrainConfig, TrialSummary, chance_accuracy, divergence

KIND = "vision"
TRAINER = trainers.key_name(trainers.AUTO, KIND)  # the default run-key trainer: "numpy-reference"
SPLIT_VARIANTS = ("random", "gram", "two-four", "rewire")
SCRATCH_VARIANTS = ("dense-scratch", "sparse-scratch")
VARIANT_KINDS = ("dense",) + SPLIT_VARIANTS + SCRATCH_VARIANTS
DATASETS = ("fashion-mnist", "embeddings")


def vision_train_config(**kw) -> TrainConfig:
    """A.3.1's optimiser and penalties, without A3's warm-up (module docstring)."""
    base = dict(warmup="none", warmup_epochs=1, eval_every=1)
    base.update(kw)
    return TrainConfig(**base)


@dataclass(frozen=True)
class VisionConfig:
    """Everything a run depends on except its hidden size and trial."""

    dataset: str = "fashion-mnist"  # "fashion-mnist" (IDX files) or "embeddings" (.npz / .npy dir)
    data_path: str | None = None  # FashionMNIST directory (None: /usr/share/datasets/fashion-mnist) or embedding file
    n_classes: int | None = None  # embeddings only: K, else inferred from the labels
    layers: int = 2  # weight matrices: 2 = one hidden layer (Sec. 2.1); 5, 7, 9 = A.7's deep MLPs
    layer_norm: bool | None = None  # LayerNorm before each ReLU; None: on iff layers > 2 (A.7)
    alpha: int = 2  # expansion factor (variants may override with "@a")
    pretrain_epochs: int = 20  # dense pre-training (Figure 5: 20 for FashionMNIST, 25 for CLIP embeddings)
    post_epochs: int = 20  # epochs after the split, every variant (not stated by the paper)
    variants: tuple = ("dense", "random", "gram", "dense-scratch", "sparse-scratch")
    trials: int = 5  # T (Figure 5: five trials)
    val_fraction: float = 0.1  # share of the training set held out for validation (0: none, the paper's setting)
    gram_clusters: int = 16  # clusters of the Gram split (splits.gram_groups)
    gram_linkage: str = "ward"  # linkage of the Gram split
    rewire_every: int = 100  # rewiring: optimizer steps between events (K)
    rewire_fraction: float = 0.3  # rewiring: share of masked positions unmasked per event (f0)
    rewire_decay: str = "cosine"  # rewiring: "constant" or "cosine" (RigL)
    rewire_end: float = 0.75  # rewiring: events stop after this share of the post-split steps (RigL)
    dtype: str = "float32"  # arithmetic of data and model ("float64" for exact comparisons)
    seed: int = 0  # the one seed all streams derive from
    train: TrainConfig = field(default_factory=vision_train_config)  # epochs set per phase
    trainer: str = TRAINER  # which implementation trains: its run-key name (trainers.key_names("vision"))

    def __post_init__(self):
        if self.trainer not in trainers.key_names(KIND):
            raise FPEError(f"trainer must be one of {tuple(trainers.key_names(KIND))}, got {self.trainer!r}")
        if self.dataset not in DATASETS:
            raise FPEError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.dataset == "embeddings" and not self.data_path:
            raise FPEError("the embeddings data set needs a file: --data FILE (.npz or a directory of .npy)")
        check_positive_ints(self, ("layers", "trials", "post_epochs", "gram_clusters", "rewire_every"))
        if self.layers < 2:
            raise FPEError(f"layers must be >= 2 (one hidden layer), got {self.layers}")
        check_positive_ints(self, ("pretrain_epochs",), minimum=0)
        if not 0.0 <= self.val_fraction < 1.0:
            raise FPEError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.dtype not in ("float32", "float64"):
            raise FPEError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if not 0.0 < self.rewire_end <= 1.0:
            raise FPEError(f"rewire_end must be in (0, 1], got {self.rewire_end!r}")
        if not self.variants:
            raise FPEError("at least one variant is needed")
        parsed = [parse_variant(v, self.alpha) for v in self.variants]
        names = [name for name, _ in parsed]
        for name, a in parsed:
            if name == "gram" and self.gram_clusters < a:
                raise FPEError(f"--gram-clusters {self.gram_clusters} is fewer than alpha={a}: "
                               "the Gram split deals whole clusters to the alpha children")
        if "sparse-scratch" in names and "random" not in self.variants:
            raise FPEError("the sparse-scratch baseline reuses the random variant's mask: add 'random' to the variants")
        if len(set(self.variants)) != len(self.variants):
            raise FPEError(f"variants repeat: {list(self.variants)}")
        schedule = RewireSchedule(every=self.rewire_every, fraction=self.rewire_fraction,
                                  decay=self.rewire_decay, end=1 if self.rewire_decay == "cosine" else None)
        # the trainer must train every model of every run: refused here, before any run starts
        trainer = trainers.from_key(self.trainer, KIND)
        sizes, ln = _sizes(self, 4, 4, 2), self.use_layer_norm
        trainer.check_sizes(sizes, self.train, layer_norm=ln, what=f"layers={self.layers}, layer_norm={ln}")
        if "rewire" in names:
            trainer.check_sizes(sizes, self.train, layer_norm=ln, what="the rewire variant",
                                optimizer=lambda params: RewiringAdam(params, schedule, 0))

    @property
    def use_layer_norm(self) -> bool:
        return self.layers > 2 if self.layer_norm is None else bool(self.layer_norm)

    def signature(self) -> dict:
        """The config minus ``trials`` (more trials extend a sweep; anything else makes a new one)."""
        d = asdict(self)
        d.pop("trials")
        d["variants"] = list(d["variants"])
        d["train"] = dict(d["train"], betas=list(d["train"]["betas"]))
        return d


def parse_variant(v: str, alpha: int):
    """``"random@4"`` -> ``("random", 4)``; ``"dense"`` -> ``("dense", alpha)``."""
    if not isinstance(v, str):
        raise FPEError(f"a variant must be a string, got {v!r}")
    name, _, a = v.partition("@")
    if name not in VARIANT_KINDS:
        raise FPEError(f"unknown variant {v!r}; choose from {', '.join(VARIANT_KINDS)} (optionally @alpha)")
    if a:
        if name not in SPLIT_VARIANTS:
            raise FPEError(f"variant {v!r}: only split variants take @alpha")
        try:
            alpha = int(a)
        except ValueError:
            raise FPEError(f"variant {v!r}: alpha after @ must be an integer") from None
    alpha = check_int(f"variant {v!r}: alpha", alpha, 2)
    return name, int(alpha)


def key_for(cfg: VisionConfig, hidden: int, trial: int) -> dict:
    return {"hidden": int(hidden), "trial": int(trial), **cfg.signature()}


def config_of(key: dict) -> VisionConfig:
    d = {k: v for k, v in key.items() if k not in ("hidden", "trial")}
    tr = dict(d.pop("train"))
    tr["betas"] = tuple(tr["betas"])
    d["variants"] = tuple(d["variants"])
    return VisionConfig(trials=1, train=TrainConfig(**tr), **d)


# ---------------------------------------------------------------- data
def _file_stamp(dataset, data_path) -> str:
    """sha1 of the data's files (names and bytes): part of the cache key, so a replaced file is read again.

    Contents, not modification times: a file rewritten within the file system's timestamp
    granularity (milliseconds) keeps its mtime. Hashing FashionMNIST's 30 MB takes ~50 ms.
    """
    import hashlib

    if dataset == "fashion-mnist" and not data_path:
        from fpe_ref.data.fashion_mnist import DEFAULT_DATA_DIR as data_path
    path = os.fspath(data_path)
    h = hashlib.sha1()
    try:
        names = sorted(os.listdir(path)) if os.path.isdir(path) else [""]
        for n in names:
            full = os.path.join(path, n) if n else path
            if not os.path.isfile(full):
                continue
            h.update(n.encode() + b"\0")
            with open(full, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    except OSError:
        return ""  # the loader gives the error that names the path
    return h.hexdigest()


def load_split(dataset, data_path, n_classes, dtype, val_fraction, seed):
    """``(X_tr, y_tr, X_val, y_val, X_te, y_te, C)``; cached per process (workers load once).

    The cache is keyed by the settings and a hash of the data files (``_file_stamp``).
    """
    return _load_split_cached(dataset, data_path, n_classes, dtype, val_fraction, seed,
                              _file_stamp(dataset, data_path))


@functools.lru_cache(maxsize=2)
def _load_split_cached(dataset, data_path, n_classes, dtype, val_fraction, seed, stamp):
    """``load_split`` without the cache key's ``stamp``.

    The validation rows are a uniformly random ``val_fraction`` of the training set
    (``stream(seed, "val-split")``), removed from training. ``X_val`` is ``None`` when 0.
    """
    if dataset == "fashion-mnist":
        from fpe_ref.data.fashion_mnist import load_fashion_mnist

        data = load_fashion_mnist(data_path, dtype=dtype)
    else:
        from fpe_ref.data.embeddings import load_embeddings

        data = load_embeddings(data_path, n_classes=n_classes, dtype=dtype)
    X, y = data.X_train, data.y_train
    n_val = int(round(val_fraction * X.shape[0]))
    if n_val and X.shape[0] - n_val < 1:
        raise FPEError(f"val_fraction={val_fraction} leaves no training rows out of {X.shape[0]}")
    if n_val:
        perm = stream(seed, "val-split").permutation(X.shape[0])
        val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        return X[tr], y[tr], X[val], y[val], data.X_test, data.y_test, data.n_classes
    return X, y, None, None, data.X_test, data.y_test, data.n_classes


def data_for(cfg: VisionConfig):
    return load_split(cfg.dataset, cfg.data_path, cfg.n_classes, cfg.dtype, cfg.val_fraction, cfg.seed)


# ---------------------------------------------------------------- metrics of one model
def per_class_accuracy(model: MLP, X, y, n_classes: int) -> list:
    """Accuracy on each class ``k``: the share of test rows with label k predicted as k (NaN if none)."""
    pred = model.predict(X)
    out = []
    for k in range(n_classes):
        sel = y == k
        out.append(float(np.mean(pred[sel] == k)) if sel.any() else float("nan"))
    return out


def _round(xs, nd=5):
    return [round(float(x), nd) for x in xs]


def describe(model: MLP, data, hist=None) -> dict:
    """Test / validation accuracy, per-class test accuracy, counts, W1 cosine, and the test curve."""
    X_tr, y_tr, X_val, y_val, X_te, y_te, C = data
    led = model.ledger()
    out = {
        "test_acc": model.accuracy(X_te, y_te),
        "val_acc": model.accuracy(X_val, y_val) if X_val is not None else None,
        "per_class_test_acc": _round(per_class_accuracy(model, X_te, y_te, C), 4),
        "nonzero_weights": int(led.weights),
        "biases": int(led.biases),
        "layernorm": int(led.layernorm),
        "params_total": int(led.total),
        "sizes": model.sizes,
        "cosine_W1": mean_cosine(np.asarray(model.params["W1"], dtype=np.float64)),
    }
    if hist is not None:
        out["curve"] = {"epoch": list(map(int, hist.test_epoch)), "test_acc": _round(hist.test_acc),
                        "loss": _round(hist.loss, 6)}
    return out


# ---------------------------------------------------------------- one run
def _phase(cfg: VisionConfig, epochs: int):
    from dataclasses import replace

    return replace(cfg.train, epochs=int(epochs))


def _sizes(cfg, d, h, C):
    return [d] + [h] * (cfg.layers - 1) + [C]


def _schedule(cfg: VisionConfig, n_train: int) -> RewireSchedule:
    steps_per_epoch = -(-n_train // cfg.train.batch_size)
    total = cfg.post_epochs * steps_per_epoch
    end = max(1, int(cfg.rewire_end * total))
    return RewireSchedule(every=cfg.rewire_every, fraction=cfg.rewire_fraction, decay=cfg.rewire_decay, end=end)


def _trainer(cfg: VisionConfig):
    """The trainer of ``cfg.trainer`` (a run-key name, :mod:`fpe_ref.experiments.trainers`)."""
    return trainers.from_key(cfg.trainer, "vision")


def run_one(cfg: VisionConfig, hidden: int, trial: int, data=None, log=None) -> dict:
    """One hidden size x one trial: the parent and every variant of ``cfg.variants`` (module docstring)."""
    data = data if data is not None else data_for(cfg)
    X_tr, y_tr, X_val, y_val, X_te, y_te, C = data
    d = X_tr.shape[1]
    dtype = np.dtype(cfg.dtype)
    h = int(hidden)
    if h < 1:
        raise FPEError(f"hidden must be >= 1, got {h}")
    tag = (cfg.layers, h, trial)
    sizes = _sizes(cfg, d, h, C)
    ln = cfg.use_layer_norm

    parent = MLP.init(sizes, stream(cfg.seed, "init", *tag), layer_norm=ln, dtype=dtype)
    _, hist_p = _trainer(cfg).train(parent, X_tr, y_tr, _phase(cfg, cfg.pretrain_epochs),
                                    stream(cfg.seed, "shuffle", *tag, "parent"), X_test=X_te, y_test=y_te)
    rec = {"parent": describe(parent, data, hist_p), "models": {}}
    chance = chance_accuracy(y_tr)
    warnings = [f"parent: {w}" for w in (divergence(hist_p, chance),) if w]
    random_child = None
    for v in cfg.variants:
        name, alpha = parse_variant(v, cfg.alpha)
        extra = {}
        opt = None
        # "rewire" draws the same split and the same shuffles as "random" (paired: only the rewiring differs)
        sv = v.replace("rewire", "random")
        if name == "dense":
            model, epochs = parent.copy(), cfg.post_epochs
        elif name in SPLIT_VARIANTS:
            split = "random" if name == "rewire" else name
            for l in range(1, cfg.layers, 2):
                check_alpha(alpha, parent.params[f"W{l}"].shape[1])
            res = expand_alternating(parent, alpha, split, stream(cfg.seed, "split", *tag, sv),
                                     gram_clusters=cfg.gram_clusters, gram_linkage=cfg.gram_linkage)
            model, epochs = res.model, cfg.post_epochs
            if v == "random":
                random_child = model.copy()  # its post-split mask, for sparse-scratch
            at_split = model.accuracy(X_te, y_te)
            extra = {"test_acc_at_split": at_split, "expanded_layers": res.layers,
                     "pruned": {s.layer: {k: int(len(p)) for k, p in s.pruned.items()} for s in res.steps},
                     "dead_children": {int(k): int(len(x)) for k, x in res.dead_children.items()}}
            if name == "gram":
                from fpe_ref.splits import gram_groups

                groups = gram_groups(parent.params["W1"], cfg.gram_clusters, cfg.gram_linkage)
                extra["gram_cluster_sizes"] = sorted((int(len(g)) for g in groups), reverse=True)
            if name == "rewire":
                opt = RewiringAdam(model.params, _schedule(cfg, X_tr.shape[0]), stream(cfg.seed, "rewire", *tag, v),
                                   lr=cfg.train.lr, betas=cfg.train.betas, eps=cfg.train.eps)
        elif name == "dense-scratch":
            model = MLP.init(sizes, stream(cfg.seed, "init-scratch", *tag), layer_norm=ln, dtype=dtype)
            epochs = cfg.pretrain_epochs + cfg.post_epochs
        else:  # sparse-scratch: the random variant's expanded shape and mask, fresh weights
            if random_child is None:
                raise FPEError("sparse-scratch needs the random variant to run before it (list 'random' first)")
            fresh = MLP.init(random_child.sizes, stream(cfg.seed, "init-sparse-scratch", *tag), layer_norm=ln,
                             dtype=dtype)
            model = MLP(fresh.params, {k: M.copy() for k, M in random_child.masks.items()}, ln)
            epochs = cfg.pretrain_epochs + cfg.post_epochs
        nnz0 = model.ledger().weights
        _, hist = _trainer(cfg).train(model, X_tr, y_tr, _phase(cfg, epochs), stream(cfg.seed, "shuffle", *tag, sv),
                                      X_test=X_te, y_test=y_te, optimizer=opt)
        if model.ledger().weights != nnz0:
            raise AssertionError(f"{v}: the non-zero count changed during training: {nnz0} -> {model.ledger().weights}")
        out = describe(model, data, hist)
        warnings += [f"{v}: {w}" for w in (divergence(hist, chance),) if w]
        out.update(extra)
        out["epochs"] = int(epochs)
        if name == "rewire":
            out["rewire_events"] = len({e["step"] for e in opt.log})
            out["rewire_schedule"] = opt.schedule.to_dict()
            out["rewired_weights"] = int(sum(e["k"] for e in opt.log))
        rec["models"][v] = out
        if log is not None:
            log(f"h={h} trial={trial} {v}: test {out['test_acc']:.4f}")
    if warnings:  # only where there are: the records of sound runs are as they always were
        rec["warnings"] = warnings
    return rec


def vision_run(key: dict) -> dict:
    """The per-run function shipped to the sweep workers (``runs.run_sweep``)."""
    if key.get("trainer") not in trainers.key_names(KIND):
        raise FPEError(f"this fpe-ref trains with {tuple(trainers.key_names(KIND))}, "
                       f"the run asks for {key.get('trainer')!r}")
    cfg = config_of(key)
    rec = run_one(cfg, key["hidden"], key["trial"])
    rec["code"] = code_version()
    return rec


# ---------------------------------------------------------------- sweeps
def plan(cfg: VisionConfig, hiddens) -> list:
    """Keys in work order: trial by trial, every hidden size (so a partial sweep covers all sizes)."""
    hiddens = [int(h) for h in hiddens]
    if not hiddens or any(h < 1 for h in hiddens):
        raise FPEError(f"hidden sizes must be positive integers, got {hiddens}")
    return [key_for(cfg, h, t) for t in range(cfg.trials) for h in hiddens]


def open_store(out_dir, cfg: VisionConfig, meta: dict | None = None) -> RunStore:
    """``out_dir/runs.jsonl``; writes ``sweep.json`` (resolved config + ``meta``) or checks it matches."""
    full = {"kind": KIND, "config": json.loads(json.dumps(asdict(cfg), default=list)), **(meta or {})}
    return open_sweep_dir(out_dir, full, cfg.signature(), same_if_recorded=("data_sha1",))


def run_vision_sweep(cfg: VisionConfig, hiddens, out_dir, *, meta=None, executor=None, progress=None, log=None):
    """Run (or resume) every ``(hidden, trial)`` of ``cfg`` into ``out_dir/runs.jsonl``."""
    keys = plan(cfg, hiddens)
    data = data_for(cfg)  # fail on bad data here, before any worker starts
    for v in cfg.variants:
        name, alpha = parse_variant(v, cfg.alpha)
        if name == "two-four" and data[0].shape[1] % 4:
            raise FPEError(f"the 2:4 split needs an input dimension divisible by 4, the data has {data[0].shape[1]}")
        if name in SPLIT_VARIANTS:
            check_alpha(alpha, data[0].shape[1])
            if cfg.layers > 3:
                check_alpha(alpha, min(int(h) for h in hiddens))
    # every model's training fits in memory (parameters, gradients and Adam's moments: ~4x), before any run
    d, C = data[0].shape[1], data[6]
    widest = max(parse_variant(v, cfg.alpha)[1] for v in cfg.variants)
    for h in hiddens:
        sizes = _sizes(cfg, d, int(h) * widest, C)
        check_memory(4 * param_nbytes(sizes, cfg.dtype, cfg.use_layer_norm), f"training an MLP of sizes {sizes} ({cfg.dtype})")
    # the data's fingerprint: resuming onto other data under the same path is refused
    with open_output(out_dir, {"kind": KIND, **cfg.signature()}):
        store = open_store(out_dir, cfg, dict(meta or {}, data_sha1=data_fingerprint(data)))
        return run_sweep(keys, vision_run, store, kind=KIND, executor=executor, progress=progress, log=log)


def data_fingerprint(data) -> str:
    """sha1 over the arrays a run trains and tests on (dtype, shape and bytes of each)."""
    import hashlib

    h = hashlib.sha1()
    for a in data:
        if isinstance(a, np.ndarray):
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(repr(a).encode())
    return h.hexdigest()


def load_records(out_dir, cfg: VisionConfig | None = None) -> list:
    """The finished runs in ``out_dir`` (only those of ``cfg``'s settings when given)."""
    recs = RunStore(os.path.join(out_dir, STORE_NAME)).records()
    recs = [r for r in recs if r.get("sweep") == KIND]
    if cfg is not None:
        sig = json.loads(json.dumps(cfg.signature()))
        recs = [r for r in recs if {k: v for k, v in r["key"].items() if k not in ("hidden", "trial")} == sig]
    seen, out = set(), []
    for r in recs:
        if r["run_id"] not in seen:
            seen.add(r["run_id"])
            out.append(r)
    return out


# ---------------------------------------------------------------- summaries
def summarize(records: list, variants) -> dict:
    """``{hidden: {variant: stats}}`` over trials: mean, sem, best-of-T (test- and val-selected), RI vs dense.

    ``ri``, ``ri_se`` and ``p_welch`` are :func:`fpe_ref.experiments.stats.relative_improvement`'s
    ratio, standard error and Welch p of the variant's test accuracies over the dense ones
    (NaN standard error and p with a single trial).
    """
    by_h = {}
    for r in records:
        by_h.setdefault(r["key"]["hidden"], []).append(r)
    out = {}
    for h in sorted(by_h):
        recs = sorted(by_h[h], key=lambda r: r["key"]["trial"])
        rows = {}
        dense = [r["models"]["dense"]["test_acc"] for r in recs if "dense" in r["models"]]
        for v in ["parent", *variants]:
            ms = [r["parent"] if v == "parent" else r["models"][v] for r in recs if v == "parent" or v in r["models"]]
            if not ms:
                continue
            accs = [m["test_acc"] for m in ms]
            s = TrialSummary(accs)
            row = {"n": len(accs), "acc_mean": s.mean, "acc_sem": s.std / np.sqrt(len(accs)) if len(accs) > 1 else 0.0,
                   "acc_std": s.std, "acc_best_test_selected": s.best,
                   "nonzero_weights": ms[0]["nonzero_weights"], "params_total": ms[0]["params_total"],
                   "acc_per_kparam": 1000.0 * s.mean / ms[0]["params_total"],
                   "cosine_W1": float(np.nanmean([m["cosine_W1"] for m in ms])),
                   "per_class_mean": _round(np.nanmean([m["per_class_test_acc"] for m in ms], axis=0), 4)}
            vals = [m.get("val_acc") for m in ms]
            if all(x is not None for x in vals):
                i = int(np.argmax(vals))
                row["acc_best_val_selected"] = accs[i]
            if "test_acc_at_split" in ms[0]:
                row["acc_at_split_mean"] = float(np.mean([m["test_acc_at_split"] for m in ms]))
            if dense and v not in ("dense", "parent") and len(dense) == len(accs):
                r = stats.relative_improvement(accs, dense)
                row.update(ri=r["ratio"], ri_se=r["se"], p_welch=r["p"])
            rows[v] = row
        out[h] = rows
    return out
