"""The PyTorch adapter: exact round trips, the reference's expansion, masks kept through torch training."""

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.expand import expand as reference_expand
from fpe_ref.mlp import MLP

torch = pytest.importorskip("torch")
adapter = pytest.importorskip("fpe_ref.interop.torch")
nn = torch.nn
prune = torch.nn.utils.prune

RNG_SEED = 13

SHAPES = [  # sizes, layer_norm
    ([5, 4, 1], False),  # the case-study shape
    ([5, 4, 3], True),  # one hidden layer with LayerNorm, softmax output
    ([6, 5, 4, 3, 2], False),  # deep
    ([6, 5, 4, 3, 2], True),  # deep with LayerNorm
]
DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------- helpers
def _bits(a):
    """The raw bytes of an array: equal bits, so -0.0 != 0.0 and the dtype must match."""
    a = np.ascontiguousarray(a)
    return a.dtype.str, a.shape, a.tobytes()


def _mlp(sizes, layer_norm, dtype, rng, masked=True):
    """An MLP with non-trivial LayerNorm parameters and (when ``masked``) random masks on every weight."""
    model = MLP.init(sizes, rng, layer_norm=layer_norm, dtype=dtype)
    for k in model.params:
        if k.startswith("ln"):
            model.params[k] = rng.standard_normal(model.params[k].shape).astype(dtype)
    if masked:
        masks = {}
        for k, v in model.params.items():
            if k.startswith("W"):
                M = rng.random(v.shape) < 0.6
                M[:, 0] = True  # no empty row
                masks[k] = M
        model = MLP(model.params, masks, layer_norm)
    return model


def _sequential(sizes, layer_norm, dtype, seed):
    """A torch model of the supported shape, LayerNorm parameters randomised."""
    torch.manual_seed(seed)
    modules = []
    for i in range(len(sizes) - 1):
        modules.append(nn.Linear(sizes[i], sizes[i + 1], dtype=dtype))
        if i < len(sizes) - 2:
            if layer_norm:
                norm = nn.LayerNorm(sizes[i + 1], dtype=dtype)
                with torch.no_grad():
                    norm.weight.normal_()
                    norm.bias.normal_()
                modules.append(norm)
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def _linears(seq):
    return [m for m in seq if isinstance(m, nn.Linear)]


def _assert_same_mlp(a, b):
    assert list(a.params) == list(b.params)
    assert a.layer_norm == b.layer_norm
    for k in a.params:
        assert _bits(a.params[k]) == _bits(b.params[k]), k
    assert sorted(a.masks) == sorted(b.masks)
    for k in a.masks:
        assert a.masks[k].dtype == b.masks[k].dtype == np.bool_, k
        np.testing.assert_array_equal(a.masks[k], b.masks[k], err_msg=k)


def _assert_same_state_dict(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert _bits(sa[k].numpy()) == _bits(sb[k].numpy()), k


def _prune_all(seq, seed):
    """``prune.random_unstructured`` on every Linear: weight_orig keeps its values at masked entries."""
    torch.manual_seed(seed)
    for linear in _linears(seq):
        prune.random_unstructured(linear, "weight", amount=0.4)
    return seq


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,layer_norm", SHAPES)
@pytest.mark.parametrize("masked", [False, True])
def test_mlp_to_torch_to_mlp_is_exact(rng, sizes, layer_norm, dtype, masked):
    mlp = _mlp(sizes, layer_norm, dtype, rng, masked)
    seq = adapter.to_torch(mlp)
    back = adapter.from_torch(seq)
    _assert_same_mlp(back, mlp)
    assert back.dtype == dtype
    # the torch side: the MLP's values, PyTorch's (out, in) layout, masks as prune buffers
    for l, linear in enumerate(_linears(seq), start=1):
        W = mlp.params[f"W{l}"]
        assert linear.weight.dtype == {np.float32: torch.float32, np.float64: torch.float64}[dtype]
        assert _bits(linear.weight.detach().numpy()) == _bits(W)
        assert prune.is_pruned(linear) == masked
        if masked:
            np.testing.assert_array_equal(linear.weight_mask.numpy(), mlp.masks[f"W{l}"].astype(dtype))
            assert _bits(linear.weight_orig.detach().numpy()) == _bits(W)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sizes,layer_norm", SHAPES)
def test_torch_to_mlp_to_torch_is_exact(sizes, layer_norm, dtype):
    seq = _sequential(sizes, layer_norm, dtype, seed=1)
    mlp = adapter.from_torch(seq)
    assert mlp.layer_norm == layer_norm and mlp.sizes == sizes
    assert mlp.dtype == {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    assert mlp.masks == {}
    _assert_same_state_dict(adapter.to_torch(mlp), seq)
    for l, linear in enumerate(_linears(seq), start=1):  # the same numbers, nothing transposed
        assert _bits(mlp.params[f"W{l}"]) == _bits(linear.weight.detach().numpy())


@pytest.mark.parametrize("sizes,layer_norm", SHAPES)
def test_state_dict_path_equals_module_path(sizes, layer_norm):
    seq = _sequential(sizes, layer_norm, torch.float64, seed=2)
    _assert_same_mlp(adapter.from_torch(seq.state_dict()), adapter.from_torch(seq))
    _prune_all(seq, seed=3)
    _assert_same_mlp(adapter.from_torch(seq.state_dict()), adapter.from_torch(seq))
    assert adapter.from_torch(seq.state_dict()).masks  # the pruned state_dict did give masks


@pytest.mark.parametrize("sizes,layer_norm", SHAPES)
def test_pruned_modules_round_trip_their_masks(sizes, layer_norm):
    seq = _prune_all(_sequential(sizes, layer_norm, torch.float32, seed=4), seed=5)
    mlp = adapter.from_torch(seq)
    back = adapter.to_torch(mlp)
    for l, (a, b) in enumerate(zip(_linears(seq), _linears(back)), start=1):
        M = a.weight_mask.numpy() != 0
        assert M.sum() < M.size  # the masks are real
        np.testing.assert_array_equal(mlp.masks[f"W{l}"], M)
        assert torch.equal(b.weight_mask, a.weight_mask)
        # weights = weight_orig * mask: the same values (masked entries 0.0)
        assert torch.equal(b.weight, a.weight)
        orig = a.weight_orig.detach().numpy()
        assert np.all(orig[~M] != 0)  # the source kept values under its mask ...
        np.testing.assert_array_equal(mlp.params[f"W{l}"][M], orig[M])
        assert np.all(b.weight_orig.detach().numpy()[~M] == 0.0)  # ... the MLP holds 0.0 there
    _assert_same_mlp(adapter.from_torch(back), mlp)


def test_float32_model_converts_to_float64_exactly():
    seq = _sequential([5, 4, 3], True, torch.float32, seed=6)
    for dtype in (np.float64, torch.float64, "float64"):
        mlp = adapter.from_torch(seq, dtype=dtype)
        assert mlp.dtype == np.float64
        ref = adapter.from_torch(seq)
        for k in mlp.params:
            np.testing.assert_array_equal(mlp.params[k], ref.params[k].astype(np.float64), err_msg=k)


def test_from_torch_copies_the_values():
    seq = _sequential([5, 4, 1], False, torch.float64, seed=7)
    mlp = adapter.from_torch(seq)
    mlp.params["W1"][:] = 0.0
    assert torch.count_nonzero(seq[0].weight) == seq[0].weight.numel()


def test_to_torch_does_not_draw_from_torchs_generator(rng):
    mlp = _mlp([5, 4, 3], True, np.float64, rng)
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    adapter.to_torch(mlp)
    assert torch.equal(torch.rand(3), want)


@pytest.mark.parametrize("dtype,atol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("sizes,layer_norm", SHAPES)
def test_forward_equals_the_reference(rng, sizes, layer_norm, dtype, atol):
    mlp = _mlp(sizes, layer_norm, dtype, rng)
    X = rng.standard_normal((40, sizes[0])).astype(dtype)
    want, _ = mlp.forward(X)
    with torch.no_grad():
        got = adapter.to_torch(mlp)(torch.from_numpy(X)).numpy()
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=atol, atol=atol)


# ---------------------------------------------------------------- expand
EXPAND_CASES = [  # sizes, layer_norm, alpha, split, kwargs
    ([8, 4, 1], False, 2, "random", {}),
    ([8, 4, 3], True, 4, "random", {}),
    ([8, 4, 1], False, 2, "clause", {"groups": [np.arange(0, 4), np.arange(4, 8)]}),
    ([8, 6, 5, 2], True, 2, "random", {"layer": 2}),
    ([8, 4, 1], False, 2, "random", {"out_scale": "divide"}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sizes,layer_norm,alpha,split,kw", EXPAND_CASES)
def test_expand_is_the_reference_bitwise(sizes, layer_norm, alpha, split, kw, dtype):
    seq = _sequential(sizes, layer_norm, dtype, seed=8)
    wide, result = adapter.expand(seq, alpha, split, rng=5, **kw)
    ref = reference_expand(adapter.from_torch(seq), alpha, split, rng=5, **kw)
    _assert_same_mlp(result.model, ref.model)
    _assert_same_mlp(adapter.from_torch(wide), ref.model)
    _assert_same_state_dict(wide, adapter.to_torch(ref.model))
    for k in ref.pruned:
        np.testing.assert_array_equal(result.pruned[k], ref.pruned[k], err_msg=k)
    np.testing.assert_array_equal(result.split_masks, ref.split_masks)
    # the reference's non-zero count, in the torch model too
    nnz = sum(int(torch.count_nonzero(m.weight)) for m in _linears(wide))
    assert nnz == ref.ledger_child.weights == ref.ledger_parent.weights == sum(m.weight.numel() for m in _linears(seq))


def test_expand_takes_a_state_dict_and_a_dtype():
    seq = _sequential([8, 4, 1], False, torch.float32, seed=9)
    wide, result = adapter.expand(seq.state_dict(), 2, rng=1, dtype=np.float64)
    ref = reference_expand(adapter.from_torch(seq, dtype=np.float64), 2, rng=1)
    _assert_same_mlp(result.model, ref.model)
    assert wide[0].weight.dtype == torch.float64


def test_torch_training_keeps_masks_and_the_nonzero_count():
    seq = _sequential([8, 6, 1], False, torch.float64, seed=10)
    wide, result = adapter.expand(seq, 2, "random", rng=2)
    budget = result.ledger_child.weights
    masks = [m.weight_mask.clone() != 0 for m in _linears(wide)]
    before = [m.weight.detach().clone() for m in _linears(wide)]
    torch.manual_seed(11)
    X, y = torch.randn(64, 8, dtype=torch.float64), torch.randint(0, 2, (64, 1)).to(torch.float64)
    opt = torch.optim.Adam(wide.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(wide(X), y).backward()
        opt.step()
    for linear, M, W0 in zip(_linears(wide), masks, before):
        W = linear.weight.detach()
        assert torch.all(W[~M] == 0) and torch.all(linear.weight_orig.detach()[~M] == 0)
        assert int((W[M] != W0[M]).sum()) > int(M.sum()) // 2  # the unmasked weights did train (a dead ReLU's do not)
        assert int(torch.count_nonzero(W)) == int(M.sum())
    trained = adapter.from_torch(wide)
    assert trained.ledger().weights == budget
    for l, M in enumerate(masks, start=1):
        np.testing.assert_array_equal(trained.masks[f"W{l}"], M.numpy())


# ---------------------------------------------------------------- bad input
def _pruned_bias():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    prune.random_unstructured(seq[0], "bias", amount=0.5)
    return seq


def _fractional_mask():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    prune.custom_from_mask(seq[2], "weight", torch.tensor([[1.0, 0.5, 1.0, 0.0]]))
    return seq


def _sd(*pairs):
    return {k: torch.zeros(shape) for k, shape in pairs}


LIN, RELU = (lambda: nn.Linear(3, 4)), nn.ReLU
BAD_INPUTS = {  # id -> (make input, regex the message must match)
    "conv2d": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3)), r"^module 0 Conv2d\(.*\) is not supported"),
    "dropout": (lambda: nn.Sequential(LIN(), nn.Dropout(), RELU(), nn.Linear(4, 1)),
                r"^module 1 Dropout\(.*\) is not supported"),
    "sigmoid": (lambda: nn.Sequential(LIN(), RELU(), nn.Linear(4, 1), nn.Sigmoid()),
                r"^module 3 Sigmoid\(\) is not supported"),
    "tanh": (lambda: nn.Sequential(LIN(), nn.Tanh(), nn.Linear(4, 1)), r"^module 1 Tanh\(\) is not supported"),
    "no bias": (lambda: nn.Sequential(nn.Linear(3, 4, bias=False), RELU(), nn.Linear(4, 1)),
                r"^module 0 Linear\(.*bias=False\) has no bias"),
    "layernorm without affine": (
        lambda: nn.Sequential(LIN(), nn.LayerNorm(4, elementwise_affine=False), RELU(), nn.Linear(4, 1)),
        r"^module 1 LayerNorm\(.*\) has no elementwise affine"),
    "layernorm without bias": (lambda: nn.Sequential(LIN(), nn.LayerNorm(4, bias=False), RELU(), nn.Linear(4, 1)),
                               r"^module 1 LayerNorm\(.*\) has no elementwise affine"),
    "layernorm eps": (lambda: nn.Sequential(LIN(), nn.LayerNorm(4, eps=1e-6), RELU(), nn.Linear(4, 1)),
                      r"^module 1 LayerNorm\(.*\) has eps=1e-06"),
    "layernorm shape": (lambda: nn.Sequential(LIN(), nn.LayerNorm(5), RELU(), nn.Linear(4, 1)),
                        r"^module 1 LayerNorm\(.*\) normalises over \(5,\)"),
    "relu first": (lambda: nn.Sequential(RELU(), LIN()), r"^module 0 ReLU\(\) comes first: expected Linear"),
    "two linears": (lambda: nn.Sequential(LIN(), nn.Linear(4, 1)),
                    r"^module 1 Linear\(.*\) follows module 0 Linear: expected LayerNorm or ReLU"),
    "two relus": (lambda: nn.Sequential(LIN(), RELU(), RELU(), nn.Linear(4, 1)),
                  r"^module 2 ReLU\(\) follows module 1 ReLU: expected Linear"),
    "relu before layernorm": (lambda: nn.Sequential(LIN(), RELU(), nn.LayerNorm(4), nn.Linear(4, 1)),
                              r"^module 2 LayerNorm\(.*\) follows module 1 ReLU: expected Linear"),
    "ends with relu": (lambda: nn.Sequential(LIN(), RELU()),
                       r"^the last module \(module 1 ReLU\) ends the network: expected a Linear last"),
    "layernorm on one hidden layer only": (
        lambda: nn.Sequential(LIN(), RELU(), nn.Linear(4, 4), nn.LayerNorm(4), RELU(), nn.Linear(4, 1)),
        r"^module 3 LayerNorm\(.*\) is a LayerNorm but an earlier hidden layer has none"),
    "layernorm dropped later": (
        lambda: nn.Sequential(LIN(), nn.LayerNorm(4), RELU(), nn.Linear(4, 4), RELU(), nn.Linear(4, 1)),
        r"^module 4 ReLU\(\) follows a Linear without LayerNorm"),
    "shapes do not chain": (lambda: nn.Sequential(LIN(), RELU(), nn.Linear(5, 1)),
                            r"^module 2 Linear\(.*\) has 5 inputs but the Linear before it \(module 0 .*\) has 4"),
    "nested sequential": (lambda: nn.Sequential(nn.Sequential(LIN()), RELU(), nn.Linear(4, 1)),
                          r"^module 0 Sequential\(\) is not supported"),
    "empty sequential": (lambda: nn.Sequential(), r"^the nn.Sequential is empty"),
    "pruned bias": (_pruned_bias, r"^module 0 Linear\(.*\) has a pruned bias"),
    "fractional mask": (_fractional_mask, r"^module 2 Linear\(.*\) has a weight_mask with values other than 0 and 1"),
    "float16 without dtype": (lambda: nn.Sequential(nn.Linear(3, 1, dtype=torch.float16)),
                              r"^the parameters are torch.float16: pass dtype="),
    "mixed dtypes": (lambda: nn.Sequential(LIN(), RELU(), nn.Linear(4, 1, dtype=torch.float64)),
                     r"^the parameters have dtypes \['torch.float32', 'torch.float64'\]"),
    "lone linear": (lambda: nn.Linear(3, 4), r"^from_torch got the module Linear\(.*\), not an nn.Sequential"),
    "module list": (lambda: nn.ModuleList([LIN()]), r"^from_torch got the module ModuleList\(\), not an nn.Sequential"),
    "tensor": (lambda: torch.zeros(4, 3), r"^from_torch got a torch.Tensor of shape \(4, 3\), not a model"),
    "list of tensors": (lambda: [torch.zeros(4, 3)], r"^from_torch got a list; it takes an nn.Sequential"),
    "an MLP": (lambda: MLP.init([3, 1], rng=0), r"^from_torch got a MLP; it takes"),
    # state_dicts: every message lists the keys found
    "empty state_dict": (lambda: {}, r"^the state_dict is empty; .*keys found: \[\]$"),
    "named keys": (lambda: _sd(("fc.weight", (4, 3)), ("fc.bias", (4,))),
                   r"^state_dict key 'fc.weight' is not '<index>.weight'.*keys found: \['fc.weight', 'fc.bias'\]$"),
    "missing bias": (lambda: _sd(("0.weight", (4, 3))),
                     r"^state_dict index 0 has \{'weight': \(4, 3\)\}, which is neither.*keys found: \['0.weight'\]$"),
    "batchnorm buffer": (lambda: _sd(("0.weight", (4, 3)), ("0.bias", (4,)), ("1.running_mean", (4,))),
                         r"^state_dict key '1.running_mean' is not.*keys found: \['0.weight', '0.bias', "
                         r"'1.running_mean'\]$"),
    "index gap": (lambda: _sd(("0.weight", (4, 3)), ("0.bias", (4,)), ("3.weight", (1, 4)), ("3.bias", (1,))),
                  r"^state_dict index 3 holds a Linear where the Linear at index 2 belongs.*keys found"),
    "first index": (lambda: _sd(("1.weight", (4, 3)), ("1.bias", (4,))),
                    r"^state_dict index 1 holds a Linear where the Linear at index 0 belongs"),
    "state_dict ends with layernorm": (lambda: _sd(("0.weight", (4, 3)), ("0.bias", (4,)), ("1.weight", (4,)),
                                                   ("1.bias", (4,))),
                                       r"^state_dict index 1 \(LayerNorm\) ends the network.*keys found"),
    "state_dict layernorm shape": (lambda: _sd(("0.weight", (4, 3)), ("0.bias", (4,)), ("1.weight", (5,)),
                                               ("1.bias", (5,)), ("3.weight", (1, 4)), ("3.bias", (1,))),
                                   r"^state_dict index 1 \(LayerNorm\) has weight and bias of shapes \(5,\).*"
                                   r"keys found"),
    "state_dict shapes do not chain": (lambda: _sd(("0.weight", (4, 3)), ("0.bias", (4,)), ("2.weight", (1, 5)),
                                                   ("2.bias", (1,))),
                                       r"^state_dict index 2 \(Linear\) has 5 inputs.*keys found"),
    "state_dict bias shape": (lambda: _sd(("0.weight", (4, 3)), ("0.bias", (3,))),
                              r"^state_dict index 0 \(Linear\) has a weight of shape \(4, 3\) and a bias of shape "
                              r"\(3,\)"),
    "state_dict of arrays": (lambda: {"0.weight": np.zeros((4, 3)), "0.bias": np.zeros(4)},
                             r"^state_dict entry '0.weight' is a ndarray, not a torch.Tensor"),
    "state_dict integer weights": (lambda: {"0.weight": torch.zeros(4, 3, dtype=torch.int64),
                                            "0.bias": torch.zeros(4)},
                                   r"^state_dict index 0 \(Linear\) has a parameter of dtype torch.int64"),
    "state_dict nan": (lambda: {"0.weight": torch.full((4, 3), float("nan")), "0.bias": torch.zeros(4)},
                       r"^from_torch: parameter W1 contains NaN or inf"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_unsupported_input_is_a_one_line_error(case):
    make, pattern = BAD_INPUTS[case]
    obj = make()
    with pytest.raises(FPEError, match=pattern) as info:
        adapter.from_torch(obj)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("dtype", ["int32", np.float16, torch.bfloat16, "no such type"])
def test_bad_dtype_is_a_one_line_error(dtype):
    with pytest.raises(FPEError, match=r"^dtype must be float32 or float64, got "):
        adapter.from_torch(nn.Sequential(nn.Linear(3, 1)), dtype=dtype)


def test_half_precision_converts_with_an_explicit_dtype():
    seq = nn.Sequential(nn.Linear(3, 1, dtype=torch.bfloat16))
    mlp = adapter.from_torch(seq, dtype=np.float32)
    np.testing.assert_array_equal(mlp.params["W1"], seq[0].weight.detach().float().numpy())


@pytest.mark.parametrize("obj,pattern", [
    (None, r"^to_torch takes an fpe_ref.MLP, got a NoneType$"),
    ("nn", r"^to_torch takes an fpe_ref.MLP, got a str$"),
])
def test_to_torch_refuses_what_is_not_an_mlp(obj, pattern):
    with pytest.raises(FPEError, match=pattern):
        adapter.to_torch(obj)


def test_to_torch_refuses_half_precision():
    with pytest.raises(FPEError, match=r"^to_torch needs an MLP whose parameters are all float32 or all float64, "
                                       r"got \['float16'\]$"):
        adapter.to_torch(MLP.init([3, 2, 1], rng=0, dtype=np.float16))


def test_expand_refuses_unknown_keywords():
    seq = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    with pytest.raises(FPEError, match=r"^expand got unknown keyword argument\(s\) \['grups'\]; "
                                       r"fpe_ref.expand.expand takes groups, layer, out_scale, bias, tie_key$"):
        adapter.expand(seq, 2, "clause", rng=0, grups=[[0, 1], [2]])
