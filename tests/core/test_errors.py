"""The validators of fpe_ref.errors: check_int, check_indices, check_memory; what they accept and refuse."""

from dataclasses import dataclass

import numpy as np
import pytest

from fpe_ref import errors
from fpe_ref.errors import FPEError, check_indices, check_int, check_positive_ints


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


# ---------------------------------------------------------------- check_indices
def test_check_indices_accepts_integer_arrays_and_lists():
    out = check_indices("group 0", [3, 0, 2], 4)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [3, 0, 2])
    np.testing.assert_array_equal(check_indices("g", np.array([1], dtype=np.uint8), 2), [1])
    assert check_indices("g", [], 4).shape == (0,)


@pytest.mark.parametrize("values,message", [
    ([0.5, 1], r"^index 0 of group 0 must be an index in \[0, 4\), got 0\.5$"),
    ([1, 2.0], r"^index 1 of group 0 must be an index in \[0, 4\), got 2\.0$"),  # never truncated, never cast
    ([True, False], r"^index 0 of group 0 must be an index in \[0, 4\), got True$"),  # a mask is not indices
    ([0, 4], r"^index 1 of group 0 must be an index in \[0, 4\), got 4$"),
    ([-1], r"^index 0 of group 0 must be an index in \[0, 4\), got -1$"),
    (["a"], r"^index 0 of group 0 must be an index in \[0, 4\), got 'a'$"),
    ([[0, 1]], r"^group 0 must be a 1-D sequence of integer indices, got shape \(1, 2\)$"),
    ([[0], [1, 2]], r"^group 0 must be a 1-D sequence of integer indices, got a ragged list$"),
], ids=["half", "integral-float", "bool", "too-large", "negative", "string", "2-D", "ragged"])
def test_check_indices_refuses_what_would_be_truncated_or_misread(values, message):
    with pytest.raises(FPEError, match=message):
        check_indices("group 0", values, 4)


# ---------------------------------------------------------------- check_memory
def test_check_memory_refuses_more_than_is_available(monkeypatch):
    monkeypatch.setattr(errors, "available_memory", lambda: 2 * 1024**3)
    errors.check_memory(2 * 1024**3, "exactly all of it")  # fits
    with pytest.raises(FPEError, match=r"^an MLP of sizes \[32, 1000000000000, 1\] needs 7\.3 TiB "
                                       r"\(8000000000000 bytes\) but only 2\.0 GiB of memory is available$"):
        errors.check_memory(8 * 10**12, "an MLP of sizes [32, 1000000000000, 1]")


def test_check_memory_skips_the_check_when_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(errors, "available_memory", lambda: None)
    errors.check_memory(10**30, "anything")


def test_available_memory_reads_meminfo_then_falls_back_to_physical_memory(monkeypatch):
    monkeypatch.setattr(errors, "_meminfo_available", lambda: 12345 * 1024)
    assert errors.available_memory() == 12345 * 1024
    monkeypatch.setattr(errors, "_meminfo_available", lambda: None)
    pages = {"SC_PHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(errors.os, "sysconf", lambda name: pages[name])
    assert errors.available_memory() == 4096 * 1000

    def unknown(name):
        raise ValueError(name)

    monkeypatch.setattr(errors.os, "sysconf", unknown)
    assert errors.available_memory() is None


def test_meminfo_of_this_machine_is_a_positive_byte_count():
    avail = errors.available_memory()
    assert avail is None or (isinstance(avail, int) and avail > 0)


@pytest.mark.parametrize("n,text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 1024**3, "3.0 GiB")])
def test_format_bytes(n, text):
    assert errors.format_bytes(n) == text


def test_fpe_warning_is_a_user_warning():
    assert issubclass(errors.FPEWarning, UserWarning)
