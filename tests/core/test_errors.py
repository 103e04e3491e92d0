"""The integer validator (fpe_ref.errors.check_int): what it accepts, what it refuses, its message."""

from dataclasses import dataclass

import numpy as np
import pytest

from fpe_ref.errors import FPEError, check_int, check_positive_ints


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)], ids=["int", "int64", "int32", "uint8"])
def test_check_int_accepts_python_and_numpy_ints(value):
    out = check_int("n", value)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, False, np.True_], ids=["True", "False", "np.True_"])
@pytest.mark.parametrize("integral_float", [False, True])
def test_check_int_refuses_bool(value, integral_float):
    """``True`` is an ``int`` to Python but never a count: refused, with or without ``integral_float``."""
    with pytest.raises(FPEError, match=rf"^n must be an integer >= 0, got {value!r}$"):
        check_int("n", value, 0, integral_float=integral_float)


def test_check_int_takes_an_integral_float_only_when_asked():
    with pytest.raises(FPEError, match=r"^n must be an integer >= 1, got 2\.0$"):
        check_int("n", 2.0)
    for value in (2.0, np.float64(2.0), np.float32(2.0)):
        out = check_int("n", value, integral_float=True)
        assert out == 2 and type(out) is int, repr(value)
    with pytest.raises(FPEError, match=r"^n must be an integer >= 1, got 2\.5$"):
        check_int("n", 2.5, integral_float=True)
    with pytest.raises(FPEError, match=r"got nan$"):
        check_int("n", float("nan"), integral_float=True)


@pytest.mark.parametrize("value,kwargs,message", [
    (0, {}, "alpha must be an integer >= 1, got 0"),
    (1, {"minimum": 2}, "alpha must be an integer >= 2, got 1"),
    (-3, {"minimum": 0}, "alpha must be an integer >= 0, got -3"),
    (0, {"what": "a positive integer"}, "alpha must be a positive integer, got 0"),
    ("3", {}, "alpha must be an integer >= 1, got '3'"),
    (None, {}, "alpha must be an integer >= 1, got None"),
    (2.5, {}, "alpha must be an integer >= 1, got 2.5"),
], ids=["below-1", "below-minimum", "negative", "what", "string", "None", "float"])
def test_check_int_message_names_the_value(value, kwargs, message):
    with pytest.raises(FPEError) as info:
        check_int("alpha", value, **kwargs)
    assert str(info.value) == message


def test_check_int_minimum_is_inclusive():
    assert check_int("n", 0, 0) == 0
    assert check_int("n", 2, 2) == 2


def test_check_positive_ints_checks_each_named_field():
    @dataclass
    class Cfg:
        a: object = 1
        b: object = 2

    check_positive_ints(Cfg(), ("a", "b"))
    with pytest.raises(FPEError, match=r"^b must be a positive integer, got 0$"):
        check_positive_ints(Cfg(b=0), ("a", "b"))
    with pytest.raises(FPEError, match=r"^a must be an integer >= 0, got True$"):
        check_positive_ints(Cfg(a=True), ("a",), minimum=0)
