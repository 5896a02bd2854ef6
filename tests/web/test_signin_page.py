"""The sign-in page the seed describes, and the sign-in options page."""

from __future__ import annotations

import re

from tests.conftest import Harness


def test_sign_in_bar_holds_the_seed_elements_in_order(harness: Harness) -> None:
    response = harness.start()
    assert response.template.name == "login/identifier.html"
    html = response.text
    markers = [
        ">Sign in</h1>",
        'placeholder="someone@alacop.gov"',
        'href="/recover">Can\'t access your account?</a>',
        ">Next</button>",
        'href="/register">New User Registration</a>',
        'href="/help">ALACOP Help Center</a>',
        '<strong id="warning-title">WARNING</strong>',
        'href="/login/options"',
    ]
    positions = [html.find(m) for m in markers]
    assert all(p >= 0 for p in positions), dict(zip(markers, positions, strict=True))
    assert positions == sorted(positions)
    assert "Sign-in options" in html


def test_warning_text_is_shown_verbatim_and_support_contact_present(harness: Harness) -> None:
    html = harness.start().text
    brand = harness.portal.settings.branding
    assert brand.warning_text in html
    assert "All transactions are monitored and logged." in html
    assert "1-844-838-9028" in html
    assert "ALEA-Support@alea.gov" in html


def test_every_field_has_a_label(harness: Harness) -> None:
    html = harness.start().text
    for field_id in re.findall(r'<input id="([^"]+)"', html):
        assert f'for="{field_id}"' in html


def test_sign_in_page_has_logo_and_seal_from_configuration(app_factory) -> None:  # type: ignore[no-untyped-def]
    h = app_factory(ALACOP_BRANDING__LOGO_URL="/static/img/agency.svg", ALACOP_BRANDING__SUPPORT_PHONE="555-0100")
    html = h.start().text
    assert 'src="/static/img/agency.svg"' in html
    assert 'src="/static/img/seal.svg"' in html
    assert "555-0100" in html


def test_options_page_marks_both_options_unsupported(harness: Harness) -> None:
    response = harness.client.get("/login/options")
    assert response.status_code == 200
    assert response.context["passkey_enabled"] is False
    html = response.text
    assert "Face, fingerprint, PIN or security key" in html
    assert "Use your device to sign in with a passkey." in html
    assert "Sign in with GitHub" in html
    assert "Personal accounts only" in html
    assert html.count("This feature is not supported by ALEA or AlaCOP.") == 2
    assert 'href="/login">Back</a>' in html


def test_placeholder_pages_answer_without_signing_in(harness: Harness) -> None:
    for path in ("/recover", "/register", "/help", "/help/sign-in"):
        response = harness.client.get(path)
        assert response.status_code == 200, path
        assert "Support Center" in response.text


def test_static_artwork_is_served(harness: Harness) -> None:
    for name in ("wordmark.svg", "seal.svg"):
        response = harness.client.get(f"/static/img/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("image/svg+xml")


def test_recovery_code_field_fits_a_whole_code(harness: Harness) -> None:
    """A browser cuts typing at maxlength: the field must hold a full code as it is printed."""
    from alacop.methods import recovery_codes

    harness.create_user()
    page = harness.password(harness.identifier("cs0101"), "granite harbor lantern 77")
    flow = harness.flow_of(page)
    chosen = harness.client.post(
        f"/login/method?flow={flow.id}", data={"csrf_token": flow.csrf_token, "kind": "recovery_code"}
    )
    field = re.search(r'<input id="code"[^>]*maxlength="(\d+)"', chosen.text)
    assert field is not None
    assert int(field.group(1)) >= max(len(code) for code in recovery_codes.generate())
