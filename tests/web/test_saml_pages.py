"""The page that carries a SAML Response to the application: its one inline script must run under its own CSP."""

from __future__ import annotations

import base64
import hashlib
import re

from tests.conftest import Harness
from tests.support.saml import ACS, posted, register_sp


def test_the_autosubmit_script_is_exactly_what_the_policy_allows(harness: Harness) -> None:
    h = harness
    h.create_user()
    sp = register_sp(h, idp_initiated=True)
    assert h.sign_in().url.path == "/apps"
    page = h.client.get(f"/saml/start/{sp.id}")
    assert posted(page).action == ACS
    scripts = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert len(scripts) == 1
    # Escaped quotes (&#39;) would be a syntax error in the browser, and hash to something else.
    assert "&#" not in scripts[0] and "saml-post" in scripts[0]
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in page.headers["content-security-policy"]
