"""Seeds and streams (fpe_ref.rng), and the randomness contract of every public function that draws:
an int seed gives exactly what ``np.random.default_rng(that int)`` gives."""

import zlib

import numpy as np
import pytest

from fpe_ref import splits
from fpe_ref.data.dnf import generate_dnf, split_indices
from fpe_ref.deep import expand_alternating
from fpe_ref.errors import FPEError
from fpe_ref.expand import expand
from fpe_ref.mlp import MLP
from fpe_ref.rewire import rewire_matrix
from fpe_ref.rng import as_rng, stream
from fpe_ref.train import TrainConfig, train

SEED = 12345


# ---------------------------------------------------------------- as_rng
def test_as_rng_passes_a_generator_through():
    g = np.random.default_rng(0)
    assert as_rng(g) is g


@pytest.mark.parametrize("seed", [0, 7, np.int64(7), 2**40], ids=["0", "7", "int64", "2**40"])
def test_as_rng_int_is_default_rng(seed):
    np.testing.assert_array_equal(as_rng(seed).random(5), np.random.default_rng(int(seed)).random(5))


@pytest.mark.parametrize("seed,message", [
    (None, "seed must be an integer or a numpy Generator, got None"),
    (True, "seed must be an integer or a numpy Generator, got True"),
    (1.5, "seed must be an integer or a numpy Generator, got 1.5"),
    (2.0, "seed must be an integer or a numpy Generator, got 2.0"),
    (-1, "seed must be a non-negative integer, got -1"),
    ("abc", "seed must be an integer or a numpy Generator, got 'abc'"),
    ("3", "seed must be an integer or a numpy Generator, got '3'"),
    (np.True_, "seed must be an integer or a numpy Generator, got np.True_"),
], ids=["None", "True", "float", "integral-float", "negative", "string", "digit-string", "numpy-bool"])
def test_as_rng_bad_seed_one_line(seed, message):
    with pytest.raises(FPEError) as info:
        as_rng(seed)
    assert str(info.value) == message


# ---------------------------------------------------------------- stream
def test_stream_same_arguments_same_stream():
    np.testing.assert_array_equal(stream(3, "init", 2).random(8), stream(3, "init", 2).random(8))
    np.testing.assert_array_equal(stream(np.int64(3), "init", 2).random(8), stream(3, "init", 2).random(8))


def test_stream_names_and_seeds_give_independent_streams():
    draws = {args: stream(*args).random(8) for args in [(0,), (1,), (0, "init"), (0, "data"), (0, "init", 1), (0, "init", 2)]}
    for a in draws:
        for b in draws:
            if a != b:
                assert not np.array_equal(draws[a], draws[b]), (a, b)


def test_stream_is_a_spawn_key_of_crc32_names():
    """``stream(seed, *names)`` = ``SeedSequence(seed, spawn_key=crc32 of each name)``: stable across processes."""
    ref = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(zlib.crc32(b"init"), zlib.crc32(b"3"))))
    np.testing.assert_array_equal(stream(0, "init", 3).random(4), ref.random(4))
    assert stream(0, "init").integers(2**32) == 4089777381  # a fixed value: hashing must not depend on the process


@pytest.mark.parametrize("seed", [-1, True, 1.5, "0", None], ids=["negative", "True", "float", "string", "None"])
def test_stream_bad_seed_one_line(seed):
    with pytest.raises(FPEError) as info:
        stream(seed, "a")
    assert str(info.value) == f"seed must be a non-negative integer, got {seed!r}"


# ---------------------------------------------------------------- every drawing function takes a seed
def _train(rng):
    model = MLP.init([4, 3, 1], np.random.default_rng(0))
    X = np.random.default_rng(1).normal(size=(20, 4))
    y = (X[:, 0] > 0).astype(float)
    _, hist = train(model, X, y, TrainConfig(epochs=3, warmup_epochs=2, batch_size=8), rng)
    return model.params, hist.loss


def _expand(rng):
    parent = MLP.init([8, 3, 2], np.random.default_rng(0))
    res = expand(parent, 2, "random", rng)
    return res.model.params, res.model.masks, res.pruned


def _expand_alternating(rng):
    model = MLP.init([8, 4, 4, 4, 4, 2], np.random.default_rng(0), layer_norm=True)
    res = expand_alternating(model, 2, "random", rng)
    return res.model.params, res.model.masks


def _rewire(rng):
    g = np.random.default_rng(0)
    M = g.random((5, 8)) < 0.5
    W = np.where(M, g.normal(size=(5, 8)), 0.0)
    pruned, grown = rewire_matrix(W, M, 0.5, rng)
    return W, M, pruned, grown


def _four_blocks():
    """W (3, 12) whose columns form 4 equal blocks of 3 identical columns: 4 Gram clusters of one size."""
    return np.repeat(np.random.default_rng(0).normal(size=(3, 4)), 3, axis=1)


def _dnf(rng):
    data = generate_dnf(64, 12, 3, rng)
    return data.X, data.y


DRAWS = {
    "MLP.init": lambda rng: MLP.init([5, 4, 3], rng).params,
    "train": _train,
    "splits.random_split": lambda rng: splits.random_split(3, 8, 2, rng),
    "splits.random_partition": lambda rng: splits.random_partition(10, 3, rng),
    "splits.two_four_split": lambda rng: splits.two_four_split(3, 8, 2, rng),
    "splits.gram_split": lambda rng: splits.gram_split(_four_blocks(), 2, rng, n_clusters=4),
    "expand": _expand,
    "expand_alternating": _expand_alternating,
    "rewire_matrix": _rewire,
    "generate_dnf": _dnf,
    "dnf.split_indices": lambda rng: split_indices(50, 0.2, rng),
}


def _assert_same(a, b, where="result"):
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)


def _leaves(a):
    if isinstance(a, dict):
        return [x for v in a.values() for x in _leaves(v)]
    if isinstance(a, (tuple, list)):
        return [x for v in a for x in _leaves(v)]
    return [np.asarray(a)]


@pytest.mark.parametrize("name", DRAWS)
def test_int_seed_equals_its_generator(name):
    """``f(..., rng=SEED)`` is ``f(..., rng=np.random.default_rng(SEED))``, draw for draw."""
    draw = DRAWS[name]
    _assert_same(draw(SEED), draw(np.random.default_rng(SEED)), name)
    other = _leaves(draw(SEED + 1))  # the seed matters: the comparison above is not vacuous
    assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(_leaves(draw(SEED)), other)), name
