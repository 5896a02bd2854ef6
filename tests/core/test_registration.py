"""The registration request's own checks, as plain values: no app, no store."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from alacop.core.accounts import Agency
from alacop.core.registration import (
    CODE_ALPHABET,
    CODE_LENGTH,
    Application,
    check_application,
    initials,
    new_code,
    normalise_code,
    training_lapses_on,
    username_candidates,
)
from alacop.flows.registration import resolve_agency, rules_of_behavior

TODAY = date(2026, 11, 29)
AGENCY = Agency(id="a1", ori="AL0030100", name="Montgomery Police Department", email_domains=("mpd.example.gov",))
OTHER = Agency(id="a2", ori="AL0020000", name="Baldwin County Sheriff", email_domains=())


def _form(**changes: str) -> dict[str, str]:
    form = {
        "first_name": "  Casey  ",
        "last_name": "Smith",
        "title": "Patrol   Officer",
        "email": "Casey.Smith@MPD.example.gov",
        "phone": "+1 (334) 555-0100",
        "supervisor": "Sgt. Dana Lee",
        "reason": "Records checks.",
        "training_date": "2026-06-01",
        "accept_rules": "yes",
    }
    form.update(changes)
    return form


def test_a_good_form_is_cleaned_into_an_application() -> None:
    application, problems = check_application(_form(), agency=AGENCY, today=TODAY, rules_sha256="abc")
    assert problems == []
    assert application == Application(
        first_name="Casey",
        last_name="Smith",
        agency_id="a1",
        title="Patrol Officer",
        email="casey.smith@mpd.example.gov",
        phone="+1 (334) 555-0100",
        supervisor="Sgt. Dana Lee",
        reason="Records checks.",
        training_date=date(2026, 6, 1),
        rules_sha256="abc",
    )
    assert Application.from_dict(application.as_dict()) == application


def test_every_problem_is_reported_at_once() -> None:
    application, problems = check_application(
        {"email": "x@gmail.com", "training_date": "2030-01-01"}, agency=AGENCY, today=TODAY, rules_sha256="abc"
    )
    assert application is None
    assert {p.field for p in problems} == {
        "first_name",
        "last_name",
        "title",
        "supervisor",
        "reason",
        "email",
        "phone",
        "training_date",
        "accept_rules",
    }


def test_an_agency_without_domains_accepts_no_email() -> None:
    _, problems = check_application(_form(email="a@bcso.gov"), agency=OTHER, today=TODAY, rules_sha256="abc")
    assert [p.field for p in problems] == ["email"]
    assert "ask your coordinator" in problems[0].message


def test_a_subdomain_is_not_the_agency_domain() -> None:
    _, problems = check_application(
        _form(email="a@evil.mpd.example.gov"), agency=AGENCY, today=TODAY, rules_sha256="abc"
    )
    assert [p.field for p in problems] == ["email"]


@pytest.mark.parametrize(
    ("trained", "ok"),
    [
        (TODAY, True),
        (TODAY - timedelta(days=364), True),
        (TODAY - timedelta(days=365), False),
        (TODAY + timedelta(days=1), False),
    ],
)
def test_training_within_the_last_year_and_not_in_the_future(trained: date, ok: bool) -> None:
    _, problems = check_application(
        _form(training_date=trained.isoformat()), agency=AGENCY, today=TODAY, rules_sha256="abc"
    )
    assert (problems == []) is ok


def test_codes_are_long_enough_and_typed_loosely() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(len(c) == CODE_LENGTH >= 6 and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert normalise_code(" ab-cd 23kl ") == "ABCD23KL"


def test_initials_from_any_script_and_candidates_from_0101() -> None:
    assert initials("Casey", "Smith") == "cs"
    assert initials("Zoë", "Ó Briain") == "zo"
    assert initials("Ünal", "Çelik") == "uc"
    assert initials("李", "王") == "xx"
    assert username_candidates("cs")[:2] == ["cs0101", "cs0102"]
    assert training_lapses_on(date(2026, 1, 1)) == date(2027, 1, 1)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("AL0030100", "a1"),
        ("al0030100", "a1"),
        ("Montgomery Police Department (AL0030100)", "a1"),
        ("montgomery   police department", "a1"),
        ("Baldwin County Sheriff", "a2"),
        ("Montgomery", None),
        ("", None),
        ("Something (AL0099999)", None),
    ],
)
def test_agency_by_ori_or_name(typed: str, expected: str | None) -> None:
    found = resolve_agency(typed, [AGENCY, OTHER])
    assert (found.id if found else None) == expected


def test_rules_of_behavior_are_hashed_as_shown() -> None:
    text, digest = rules_of_behavior()
    assert "monitored and logged" in text and len(digest) == 64
