"""The data container (fpe_ref.data.classification): ClassificationData checks its own arrays."""

import numpy as np
import pytest

from fpe_ref.data.classification import ClassificationData
from fpe_ref.errors import FPEError


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("y_train", np.array([0, 1, 2, 0, 1, 2], dtype=np.int32), r"y_train must be a 1-D int64"),
        ("X_test", np.ones((3, 5)), r"X_train has 4 features but X_test has 5"),
        ("X_train", np.full((6, 4), np.nan), r"X_train has NaN in row 0"),
        ("class_names", ("a",), r"class_names must be 3 strings"),
        ("n_classes", 2, r"y_train\[2\] = 2 is outside 0\.\.1"),
    ],
)
def test_classification_data_validates_itself(embedding_arrays, field, value, match):
    a = embedding_arrays(dtype=np.float64)
    kw = dict(
        X_train=a["X_train"],
        y_train=a["y_train"].astype(np.int64),
        X_test=a["X_test"],
        y_test=a["y_test"].astype(np.int64),
        n_classes=3,
        class_names=("a", "b", "c"),
    )
    ClassificationData(**kw)  # the unedited version is fine
    kw[field] = value
    with pytest.raises(FPEError, match=match):
        ClassificationData(**kw)


def test_classification_data_needs_two_training_classes(embedding_arrays):
    a = embedding_arrays(dtype=np.float64)
    kw = dict(X_train=a["X_train"], y_train=np.ones(6, dtype=np.int64), X_test=a["X_test"],
              y_test=a["y_test"].astype(np.int64), n_classes=3, class_names=("a", "b", "c"), source="my.npz")
    with pytest.raises(FPEError, match=r"^my\.npz: y_train holds 1 class \(label 1\): a classifier needs at least 2 "
                                       r"classes in the training split$"):
        ClassificationData(**kw)
    with pytest.raises(FPEError, match=r"^n_classes must be an integer >= 2, got 1$"):
        ClassificationData(**dict(kw, n_classes=1, class_names=("a",)))
