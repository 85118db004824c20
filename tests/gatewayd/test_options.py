"""gatewayd.options.OptionReader: typed getters that fail with file, dotted key and reason."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from gatewayd.errors import ConfigError
from gatewayd.options import OptionReader

FILE = Path("/etc/gatewayd/config.toml")


def reader(table: dict[str, Any], prefix: str = "devices[1]") -> OptionReader:
    return OptionReader(table, FILE, prefix)


def check(err: ConfigError, key: str, *reason: str) -> None:
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{FILE}: {key}: "), message
    assert err.key == key
    assert err.file == str(FILE)
    for fragment in reason:
        assert fragment in err.reason, (fragment, message)


def error_of(call: Any, *args: Any, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    return info.value


# --- keys and errors ---------------------------------------------------------------------------


def test_key_is_dotted_with_prefix() -> None:
    assert reader({}).key("interval") == "devices[1].interval"
    assert reader({}, prefix="mqtt").key("url") == "mqtt.url"
    assert reader({}, prefix="").key("hub") == "hub"


def test_error_shape() -> None:
    err = reader({}).error("interval", "must be a number > 0, got 'fast'")
    assert isinstance(err, ConfigError)
    assert str(err) == (
        "/etc/gatewayd/config.toml: devices[1].interval: must be a number > 0, got 'fast'"
    )
    assert (err.file, err.key, err.reason) == (
        str(FILE),
        "devices[1].interval",
        "must be a number > 0, got 'fast'",
    )


def test_error_without_file_names_placeholder() -> None:
    err = OptionReader({}, None, "mqtt").error("url", "bad")
    assert str(err) == "<config>: mqtt.url: bad"


def test_config_error_without_key() -> None:
    assert str(ConfigError(FILE, "", "file not found")) == f"{FILE}: file not found"


def test_has_does_not_mark_used() -> None:
    r = reader({"a": 1})
    assert r.has("a")
    assert not r.has("b")
    check(error_of(r.finish), "devices[1].a", "unknown key")


# --- raw / table --------------------------------------------------------------------------------


def test_raw_returns_value_or_default() -> None:
    r = reader({"x": [1, 2]})
    assert r.raw("x") == [1, 2]
    assert r.raw("y", None) is None
    check(error_of(r.raw, "z"), "devices[1].z", "is required")


def test_table_nested_prefix() -> None:
    r = OptionReader({"mqtt": {"url": 5}}, FILE, "")
    sub = r.table("mqtt")
    assert sub.prefix == "mqtt"
    check(error_of(sub.string, "url"), "mqtt.url", "must be a string, got 5")


def test_table_absent_is_empty_unless_required() -> None:
    r = OptionReader({}, FILE, "")
    sub = r.table("log")
    assert not sub.has("level")
    sub.finish()
    check(error_of(r.table, "hub", required=True), "hub", "is required")


def test_table_wrong_type() -> None:
    r = OptionReader({"hub": "x"}, FILE, "")
    check(error_of(r.table, "hub"), "hub", "must be a table ([hub])", "'x'")


# --- string / optional_string -------------------------------------------------------------------


def test_string() -> None:
    r = reader({"s": "hello"})
    assert r.string("s") == "hello"
    assert r.string("missing", "dflt") == "dflt"
    check(error_of(r.string, "other"), "devices[1].other", "is required")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (5, "must be a string, got 5"),
        (True, "must be a string, got True"),
        (["a"], "must be a string, got ['a']"),
        ("", "must not be empty"),
    ],
)
def test_string_bad(value: object, reason: str) -> None:
    check(error_of(reader({"s": value}).string, "s"), "devices[1].s", reason)


def test_optional_string() -> None:
    r = reader({"s": "v"})
    assert r.optional_string("s") == "v"
    assert r.optional_string("absent") is None
    r.finish()  # both were asked for
    check(error_of(reader({"s": ""}).optional_string, "s"), "devices[1].s", "must not be empty")
    check(error_of(reader({"s": 1}).optional_string, "s"), "devices[1].s", "must be a string")


def test_string_reason_is_single_line_for_multiline_values() -> None:
    err = error_of(reader({"s": ["a\nb"]}).string, "s")
    assert "\n" not in str(err)


# --- boolean ------------------------------------------------------------------------------------


def test_boolean() -> None:
    r = reader({"t": True, "f": False})
    assert r.boolean("t") is True
    assert r.boolean("f") is False
    assert r.boolean("absent", True) is True
    check(error_of(r.boolean, "required"), "devices[1].required", "is required")


@pytest.mark.parametrize("value", [1, 0, "true", "yes", None, 1.0])
def test_boolean_bad(value: object) -> None:
    check(
        error_of(reader({"b": value}).boolean, "b"),
        "devices[1].b",
        f"must be true or false, got {value!r}",
    )


# --- integer ------------------------------------------------------------------------------------


def test_integer() -> None:
    r = reader({"n": 7, "neg": -3, "big": 2**62})
    assert r.integer("n") == 7
    assert r.integer("neg") == -3
    assert r.integer("big") == 2**62
    assert r.integer("absent", 42) == 42


@pytest.mark.parametrize("value", [True, False, 1.0, 1.5, "1", None, [1]])
def test_integer_bad_types(value: object) -> None:
    check(
        error_of(reader({"n": value}).integer, "n"),
        "devices[1].n",
        f"must be a whole number, got {value!r}",
    )


@pytest.mark.parametrize(
    ("value", "ok", "reason"),
    [
        (4, False, "must be >= 5, got 4"),
        (5, True, ""),
        (10, True, ""),
        (11, False, "must be <= 10, got 11"),
    ],
)
def test_integer_range(value: int, ok: bool, reason: str) -> None:
    r = reader({"n": value})
    if ok:
        assert r.integer("n", minimum=5, maximum=10) == value
    else:
        check(error_of(r.integer, "n", minimum=5, maximum=10), "devices[1].n", reason)


# --- number -------------------------------------------------------------------------------------


def test_number_returns_float() -> None:
    r = reader({"i": 3, "f": 2.5})
    assert r.number("i") == 3.0
    assert isinstance(r.number("i"), float)
    assert r.number("f") == 2.5
    assert r.number("absent", 1.5) == 1.5


@pytest.mark.parametrize("value", [True, False, "1.5", None, {"a": 1}])
def test_number_bad_types(value: object) -> None:
    check(
        error_of(reader({"x": value}).number, "x"),
        "devices[1].x",
        f"must be a number, got {value!r}",
    )


@pytest.mark.parametrize(
    ("value", "ok", "reason"),
    [
        (-0.001, False, "must be >= 0, got -0.001"),
        (0, True, ""),
        (0.0, True, ""),
        (1, True, ""),
        (1.0001, False, "must be <= 1, got 1.0001"),
    ],
)
def test_number_inclusive_range(value: float, ok: bool, reason: str) -> None:
    r = reader({"x": value})
    if ok:
        assert r.number("x", minimum=0, maximum=1) == value
    else:
        check(error_of(r.number, "x", minimum=0, maximum=1), "devices[1].x", reason)


@pytest.mark.parametrize(
    ("value", "ok", "reason"),
    [
        (0, False, "must be > 0, got 0"),
        (0.0, False, "must be > 0, got 0.0"),
        (-1, False, "must be > 0, got -1"),
        (1e-9, True, ""),
        (300, True, ""),
    ],
)
def test_number_exclusive_minimum(value: float, ok: bool, reason: str) -> None:
    r = reader({"interval": value})
    if ok:
        assert r.number("interval", minimum=0, exclusive_minimum=True) == value
    else:
        check(
            error_of(r.number, "interval", minimum=0, exclusive_minimum=True),
            "devices[1].interval",
            reason,
        )


def test_number_exclusive_minimum_still_checks_maximum() -> None:
    r = reader({"x": 5})
    check(
        error_of(r.number, "x", minimum=0, maximum=1, exclusive_minimum=True),
        "devices[1].x",
        "must be <= 1",
    )


def test_number_exclusive_flag_without_minimum_is_unbounded() -> None:
    assert reader({"x": -5}).number("x", exclusive_minimum=True) == -5.0


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_number_refuses_non_finite(value: float) -> None:
    with pytest.raises(ConfigError):
        reader({"x": value}).number("x", minimum=0, exclusive_minimum=True)


def test_number_bounds_do_refuse_infinities() -> None:
    check(error_of(reader({"x": math.inf}).number, "x", maximum=10), "devices[1].x", "inf")
    check(error_of(reader({"x": -math.inf}).number, "x", minimum=0), "devices[1].x", "-inf")


# --- choice -------------------------------------------------------------------------------------


def test_choice() -> None:
    r = reader({"c": "normal"})
    assert r.choice("c", ("full", "normal")) == "normal"
    assert r.choice("absent", ("full", "normal"), "full") == "full"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("off", "must be one of full, normal; got 'off'"),
        ("FULL", "must be one of full, normal; got 'FULL'"),
        ("", "must not be empty"),
        (1, "must be a string, got 1"),
    ],
)
def test_choice_bad(value: object, reason: str) -> None:
    check(error_of(reader({"c": value}).choice, "c", ("full", "normal")), "devices[1].c", reason)


# --- path / optional_path -----------------------------------------------------------------------


def test_path_relative_to_base() -> None:
    r = reader({"p": "data/x.db"})
    assert r.path("p", base=Path("/etc/gatewayd")) == Path("/etc/gatewayd/data/x.db")


def test_path_absolute_ignores_base() -> None:
    assert reader({"p": "/var/x.db"}).path("p", base=Path("/etc")) == Path("/var/x.db")


def test_path_without_base_stays_relative() -> None:
    assert reader({"p": "x.db"}).path("p") == Path("x.db")


def test_path_expands_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert reader({"p": "~/x.db"}).path("p", base=Path("/etc")) == tmp_path / "x.db"


def test_path_default_is_returned_unchanged_and_marks_used() -> None:
    r = reader({})
    assert r.path("p", Path("rel/default.db"), base=Path("/base")) == Path("rel/default.db")
    r.finish()


def test_path_required_and_typed() -> None:
    check(error_of(reader({}).path, "p"), "devices[1].p", "is required")
    check(error_of(reader({"p": 3}).path, "p"), "devices[1].p", "must be a string")
    check(error_of(reader({"p": ""}).path, "p"), "devices[1].p", "must not be empty")


def test_optional_path() -> None:
    r = reader({"p": "ca.pem"})
    assert r.optional_path("p", base=Path("/etc/g")) == Path("/etc/g/ca.pem")
    assert r.optional_path("absent", base=Path("/etc/g")) is None
    r.finish()


# --- finish -------------------------------------------------------------------------------------


def test_finish_accepts_when_every_key_was_read() -> None:
    r = reader({"a": 1, "b": "x", "c": True})
    r.integer("a")
    r.string("b")
    r.boolean("c")
    r.finish()


def test_finish_names_the_first_unknown_key() -> None:
    r = reader({"interval": 60, "intervall": 61, "zzz": 1})
    r.number("interval")
    check(error_of(r.finish), "devices[1].intervall", "unknown key")


def test_finish_counts_a_failed_read_as_used() -> None:
    """A key that was asked for is known, even when reading it failed."""
    r = reader({"n": "x"})
    error_of(r.integer, "n")
    r.finish()


def test_finish_with_top_level_prefix() -> None:
    r = OptionReader({"colour": 1}, FILE, "")
    check(error_of(r.finish), "colour", "unknown key")
    assert str(error_of(r.finish)) == f"{FILE}: colour: unknown key"
