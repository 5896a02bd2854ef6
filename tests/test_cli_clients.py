"""`alacop clients create|list|disable|rotate-secret`: the registry from the command line."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import cli_env, run  # noqa: F401 - the fixture is shared


def test_create_list_rotate_and_disable(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    code, out, _ = run(
        capsys,
        "clients",
        "create",
        "Records Search",
        "--redirect-uri",
        "https://records.example/callback",
        "--redirect-uri",
        "http://localhost:9000/cb",
        "--post-logout-uri",
        "https://records.example/",
        "--scope",
        "openid",
        "--scope",
        "profile",
        "--initiate-login-uri",
        "https://records.example/login",
        "--json",
    )
    assert code == 0
    created = json.loads(out)
    client_id, secret = created["client_id"], created["client_secret"]
    assert len(secret) >= 43

    code, out, _ = run(capsys, "clients", "create", "Mobile", "--redirect-uri", "http://127.0.0.1/cb", "--public")
    assert code == 0 and "client_id:" in out and "client_secret" not in out

    code, out, _ = run(capsys, "clients", "list", "--json")
    listed = {c["name"]: c for c in json.loads(out)}
    assert listed["Records Search"]["client_id"] == client_id
    assert listed["Records Search"]["scopes"] == ["openid", "profile"]
    assert listed["Mobile"]["client_type"] == "public"
    assert secret not in out

    code, out, _ = run(capsys, "clients", "rotate-secret", client_id, "--json")
    assert code == 0 and json.loads(out)["client_secret"] not in (secret, None)

    code, out, _ = run(capsys, "clients", "disable", client_id)
    assert code == 0 and "disabled" in out
    code, out, _ = run(capsys, "clients", "list")
    assert "disabled" in out

    code, _, err = run(capsys, "clients", "create", "Bad", "--redirect-uri", "https://*.example/cb")
    assert code == 2 and "redirect" in err
    code, _, err = run(
        capsys, "clients", "create", "Slow", "--redirect-uri", "https://s.example/cb", "--access-token-seconds", "86400"
    )
    assert code == 2 and "lifetime" in err
    code, out, _ = run(
        capsys,
        "clients",
        "create",
        "Fast",
        "--redirect-uri",
        "https://f.example/cb",
        "--access-token-seconds",
        "120",
        "--refresh-token-seconds",
        "3600",
        "--json",
    )
    assert code == 0
    code, _, err = run(capsys, "clients", "disable", "no-such-client-id-000")
    assert code == 2
    code, out, _ = run(capsys, "audit", "export")
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types.count("ClientCreated") == 3 and "ClientSecretRotated" in types and "ClientDisabled" in types
    assert secret not in out
