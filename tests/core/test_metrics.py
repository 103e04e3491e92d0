"""Gram, capacity and cosine on hand-computed examples."""

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.metrics import capacity, feature_vectors, gram, interference, mean_cosine


def test_capacity_hand_computed():
    # two clauses {0,1} and {2,3}; v_1 = W1[:, 0] + W1[:, 1] = (1, 0), v_2 = (1, 1)
    W1 = np.array([[1.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 0.0]])
    groups = [np.array([0, 1]), np.array([2, 3])]
    np.testing.assert_array_equal(feature_vectors(W1, groups), [[1, 1], [0, 1]])
    per, total = capacity(W1, groups)
    # D = [[1, 1], [1, 2]]: C_1 = 1 / (1 + 1) = 0.5; C_2 = 4 / (1 + 4) = 0.8
    np.testing.assert_allclose(per, [0.5, 0.8], rtol=1e-15)
    assert total == pytest.approx(1.3)


def test_capacity_orthogonal_features_and_zero_feature():
    W1 = np.array([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0, 0.0, 0.0]])
    per, total = capacity(W1, [np.array([0, 1]), np.array([2, 3]), np.array([4, 5])])
    np.testing.assert_array_equal(per, [1.0, 1.0, 0.0])  # orthogonal: 1 each; unrepresented: 0
    assert total == 2.0


def test_cosine_skips_zero_rows():
    W1 = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    c = 1 / np.sqrt(2)
    assert mean_cosine(W1) == pytest.approx((c + 0.0 + c) / 3)
    assert np.isnan(mean_cosine(np.array([[1.0, 0.0], [0.0, 0.0]])))


def test_gram_and_interference():
    W1 = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(gram(W1), W1.T @ W1)
    out = interference(W1, [np.array([0]), np.array([1, 2])])
    assert set(out) == {"capacity", "capacity_per_feature", "cosine"}
    with pytest.raises(FPEError, match="feature group 0"):
        capacity(W1, [np.array([5])])
