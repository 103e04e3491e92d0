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


def test_cosine_with_bias_appends_each_neurons_bias_to_its_row():
    # rows [1, 0 | 1] and [0, 1 | 1]: cos = 1 / 2; with b = (1, -1): cos = -1 / 2, |cos| = 1 / 2
    W1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert mean_cosine(W1) == 0.0
    assert mean_cosine(W1, b1=np.array([1.0, 1.0])) == pytest.approx(0.5)
    assert mean_cosine(W1, b1=[1.0, -1.0]) == pytest.approx(-0.5)
    assert mean_cosine(W1, absolute=True, b1=[1.0, -1.0]) == pytest.approx(0.5)
    # a row of zero weights with a bias is a neuron: it is kept, not skipped
    assert mean_cosine(np.array([[1.0, 0.0], [0.0, 0.0]]), b1=[0.0, 2.0]) == 0.0


@pytest.mark.parametrize("b1,match", [
    (np.ones(3), r"^b1 must be a 1-D array of 2 numbers \(one bias per row of W1\), got shape \(3,\) of dtype float64$"),
    (np.ones((2, 1)), r"^b1 must be a 1-D array of 2 numbers .*got shape \(2, 1\)"),
    ([1.0, np.nan], r"^b1 contains nan at index 1: metrics of non-finite biases are undefined$"),
], ids=["length", "2-D", "nan"])
def test_bad_biases_are_refused(b1, match):
    with pytest.raises(FPEError, match=match):
        mean_cosine(np.eye(2), b1=b1)


def test_gram_and_interference():
    W1 = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(gram(W1), W1.T @ W1)
    out = interference(W1, [np.array([0]), np.array([1, 2])])
    assert set(out) == {"capacity", "capacity_per_feature", "cosine"}
    with pytest.raises(FPEError, match="feature group 0"):
        capacity(W1, [np.array([5])])


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_weights_are_refused_not_scored_zero(value):
    """capacity and mean_cosine of a W1 holding NaN would be 0.0 and NaN, read as results."""
    W1 = np.ones((3, 4))
    W1[1, 2] = value
    groups = [np.array([0, 1]), np.array([2, 3])]
    for f in (lambda: capacity(W1, groups), lambda: mean_cosine(W1), lambda: gram(W1),
              lambda: interference(W1, groups)):
        with pytest.raises(FPEError, match=rf"^W1 contains {value} at row 1, column 2: metrics of non-finite "
                                           "weights are undefined$"):
            f()


@pytest.mark.parametrize("W1,match", [
    (np.ones(4), r"^W1 must be a 2-D array \(h, d\), got shape \(4,\)$"),
    (np.array([["a", "b"]]), r"^W1 must be a 2-D array \(h, d\) of numbers, got dtype <U1$"),
], ids=["1-D", "strings"])
def test_weights_of_the_wrong_shape_or_type_are_refused(W1, match):
    with pytest.raises(FPEError, match=match):
        mean_cosine(W1)
    with pytest.raises(FPEError, match=match):
        capacity(W1, [[0]])


@pytest.mark.parametrize("groups,match", [
    ([[0.5, 1], [2, 3]], r"^index 0 of feature group 0 must be an index in \[0, 4\), got 0\.5$"),
    ([[0, 1], [2.0, 3]], r"^index 0 of feature group 1 must be an index in \[0, 4\), got 2\.0$"),
    ([np.array([True, True, False, False])], r"^index 0 of feature group 0 must be an index .*got True$"),
    ([[]], r"^feature group 0 is empty$"),
], ids=["half", "integral-float", "bool-mask", "empty"])
def test_group_indices_are_never_truncated(groups, match):
    with pytest.raises(FPEError, match=match):
        capacity(np.ones((3, 4)), groups)


def test_integer_weights_are_measured_as_floats():
    W = np.ones((2, 4), dtype=int)
    assert interference(W, [np.array([0, 1]), np.array([2, 3])]) == \
        interference(W.astype(float), [np.array([0, 1]), np.array([2, 3])])
