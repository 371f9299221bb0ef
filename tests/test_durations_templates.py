"""Durations (`15m`, `1h30m`) and message templates (`{{ incident.title }}`), as admins
write them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from domain.durations import Duration, format_duration, parse_duration
from domain.templates import (
    INCIDENT_FIELDS,
    check_placeholder,
    did_you_mean,
    placeholders,
    render,
    render_url,
    unsupported,
)

# ---- durations ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", timedelta(seconds=30)),
    ("15m", timedelta(minutes=15)),
    ("2h", timedelta(hours=2)),
    ("1d", timedelta(days=1)),
    ("1w", timedelta(weeks=1)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ("  45m ", timedelta(minutes=45)),
    ("90m", timedelta(minutes=90)),
])
def test_parse_duration_reads_units_and_compounds(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_parse_duration_passes_a_timedelta_through() -> None:
    assert parse_duration(timedelta(minutes=5)) == timedelta(minutes=5)


@pytest.mark.parametrize(("value", "fragment"), [
    ("15 minutes", "use a number and a unit"),
    ("-5m", "use a number and a unit"),
    ("1.5h", "use a number and a unit"),
    ("15", "use a number and a unit"),
    ("m", "use a number and a unit"),
    ("", "use a number and a unit"),
    ("0m", "greater than zero"),
    ("0s0m", "greater than zero"),
    ("3651d", "at most 3650d"),
    ("99999999999w", "at most 3650d"),
    (15, "expected text such as 15m"),
    (None, "expected text such as 15m"),
    (timedelta(seconds=-1), "greater than zero"),
])
def test_parse_duration_rejects_with_a_helpful_message(value: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_duration(value)


@pytest.mark.parametrize(("value", "text"), [
    (timedelta(minutes=15), "15m"),
    (timedelta(hours=1, minutes=30), "1h30m"),
    (timedelta(days=8), "1w1d"),
    (timedelta(seconds=3600), "1h"),
    (timedelta(0), "0s"),
])
def test_format_duration_is_the_shortest_text(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.integers(min_value=1, max_value=3650 * 86400))
def test_format_then_parse_round_trips(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


class _Timer(BaseModel):
    after: Duration


def test_duration_fields_parse_text_and_serialise_back_to_text() -> None:
    timer = _Timer.model_validate({"after": "1h30m"})
    assert timer.after == timedelta(minutes=90)
    assert timer.model_dump(mode="json") == {"after": "1h30m"}
    assert _Timer.model_validate_json(timer.model_dump_json()) == timer
    assert _Timer.model_json_schema()["properties"]["after"]["pattern"] == r"^(\d+[smhdw])+$"


def test_duration_field_errors_name_the_bad_text() -> None:
    with pytest.raises(ValidationError, match="invalid duration '15 minutes'"):
        _Timer.model_validate({"after": "15 minutes"})


# ---- templates ------------------------------------------------------------------------

CONTEXT = {
    "incident": {"id": "inc-1", "title": "Cold pizza", "severity": "high", "source_url": None},
    "steps": {"holding-statement": {"outcome": "approved", "content": "We're on it."},
              "2nd-review": {"outcome": "rejected"}},
}


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ incident.title }}", "Cold pizza"),
    ("{{incident.title}}!", "Cold pizza!"),
    ("[{{  incident.severity  }}] {{ incident.title }}", "[high] Cold pizza"),
    ("{{ steps.holding-statement.content }}", "We're on it."),
    ("{{ steps.2nd-review.outcome }}", "rejected"),  # step ids may start with a digit
    ("url: {{ incident.source_url }}", "url: "),  # None renders as empty text
    ("{{ incident.nope }}", ""),  # unknown at run time: empty, never an exception
    ("no placeholders", "no placeholders"),
])
def test_render_fills_placeholders(template: str, expected: str) -> None:
    assert render(template, CONTEXT) == expected


def test_render_walks_payload_dicts_and_lists_and_keeps_other_values() -> None:
    payload = {"text": "{{ steps.holding-statement.content }}", "count": 3, "ok": True,
               "tags": ["{{ incident.severity }}", "fixed"], "nested": {"t": "{{ incident.id }}"}}
    assert render(payload, CONTEXT) == {
        "text": "We're on it.", "count": 3, "ok": True, "tags": ["high", "fixed"],
        "nested": {"t": "inc-1"}}


def test_render_does_not_evaluate_expressions() -> None:
    text = "{{ incident.title.__class__ }} {{ 1 + 1 }}"
    assert render(text, CONTEXT) == " {{ 1 + 1 }}"


def test_placeholders_lists_every_path_in_nested_templates() -> None:
    template = {"a": "{{ incident.title }} and {{steps.x.outcome}}", "b": ["{{ incident.id }}"]}
    assert list(placeholders(template)) == ["incident.title", "steps.x.outcome", "incident.id"]


def test_unsupported_finds_filters_and_typos_that_render_would_leave_as_is() -> None:
    template = {"m": "{{ incident.title | upper }} {{ incident title }} {{ incident.id }}"}
    assert list(unsupported(template)) == ["{{ incident.title | upper }}", "{{ incident title }}"]


@pytest.mark.parametrize("path", [f"incident.{name}" for name in sorted(INCIDENT_FIELDS)])
def test_every_incident_field_is_a_valid_placeholder(path: str) -> None:
    assert check_placeholder(path, set()) is None


@pytest.mark.parametrize(("path", "fragment"), [
    ("incident.titel", "incident fields are"),
    ("incident", "incident fields are"),
    ("incident.title.length", "incident fields are"),
    ("steps.holding-statement", "use steps.<step id>.outcome or .content"),
    ("steps.holding-statement.approvers", "use steps.<step id>.outcome or .content"),
    ("steps.holding.outcome", "unknown step 'holding' (did you mean 'holding-statement'?)"),
    ("env.SECRET", "must start with incident. or steps."),
])
def test_check_placeholder_explains_what_is_wrong(path: str, fragment: str) -> None:
    error = check_placeholder(path, {"holding-statement", "notify-social"})
    assert error is not None and fragment in error


def test_check_placeholder_accepts_known_steps() -> None:
    assert check_placeholder("steps.holding-statement.outcome", {"holding-statement"}) is None
    assert check_placeholder("steps.holding-statement.content", {"holding-statement"}) is None


def test_did_you_mean_suggests_only_close_names() -> None:
    assert did_you_mean("comms-led", ["comms-lead", "legal"]) == " (did you mean 'comms-lead'?)"
    assert did_you_mean("zzz", ["comms-lead", "legal"]) == ""


def test_a_url_template_percent_encodes_each_value() -> None:
    context = {"incident": {"id": "inc-1", "title": "A & B? 50% /x", "source_url": None}}
    assert render_url("https://hooks.example/i/{{incident.id}}?t={{ incident.title }}"
                      "&s={{incident.source_url}}", context) == (
        "https://hooks.example/i/inc-1?t=A%20%26%20B%3F%2050%25%20%2Fx&s=")
