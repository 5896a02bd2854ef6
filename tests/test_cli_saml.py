"""`alacop saml sps add|list|disable` and `alacop saml cert rotate|list`: SAML from the command line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alacop.core.saml import ServiceProvider
from tests.conftest import run_async
from tests.support.saml import ACS, ACS_2, SP_ENTITY, sp_keys, sp_metadata
from tests.test_cli import cli_env, run  # noqa: F401 - the fixture is shared


@pytest.fixture
def metadata_server() -> Iterator[str]:
    """An application's metadata served over loopback http, as `--metadata URL` fetches it."""
    body = sp_metadata("https://warrants.example.gov/sp", (ACS_2,))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metadata" else 404)
            self.send_header("Content-Type", "application/samlmetadata+xml")
            self.end_headers()
            if self.path == "/metadata":
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_add_from_a_file_and_an_address_list_and_disable(
    cli_env: str,  # noqa: F811
    tmp_path: Path,
    metadata_server: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "sp.xml"
    path.write_bytes(sp_metadata(keys=sp_keys(), signed_requests=True))
    code, out, err = run(
        capsys,
        "saml",
        "sps",
        "add",
        "Records Search",
        "--metadata",
        str(path),
        "--attribute",
        "username",
        "--attribute",
        "roles",
        "--nameid",
        "email",
        "--idp-initiated",
        "--relay-state",
        "/home",
        "--json",
    )
    assert code == 0, err
    added = json.loads(out)
    assert added["entity_id"] == SP_ENTITY and added["acs"] == [ACS]
    assert added["authn_requests_signed"] is True and added["certificates"] == 1
    assert added["attributes"] == ["username", "roles"] and added["idp_initiated"] is True
    assert "nameid_salt" not in out

    code, out, err = run(capsys, "saml", "sps", "add", "Warrants", "--metadata", metadata_server + "/metadata")
    assert code == 0, err
    assert "https://warrants.example.gov/sp" in out and ACS_2 in out

    code, out, _ = run(capsys, "saml", "sps", "list", "--json")
    listed = {sp["name"]: sp for sp in json.loads(out)}
    assert set(listed) == {"Records Search", "Warrants"}
    assert listed["Warrants"]["nameid_format"].endswith("persistent")

    code, out, _ = run(capsys, "saml", "sps", "disable", added["id"])
    assert code == 0 and "disabled" in out
    code, out, _ = run(capsys, "saml", "sps", "list")
    assert "disabled" in out and "enabled" in out
    code, _, err = run(capsys, "saml", "sps", "disable", added["id"])
    assert code != 0 and "already disabled" in err


def test_bad_metadata_and_options_are_refused_with_a_message(
    cli_env: str,  # noqa: F811
    tmp_path: Path,
    metadata_server: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = {
        "not-xml.xml": b"this is not xml",
        "dtd.xml": b'<!DOCTYPE x [<!ENTITY a "b">]>' + sp_metadata(),
        "no-post.xml": sp_metadata().replace(b"bindings:HTTP-POST", b"bindings:HTTP-Artifact"),
        "wild.xml": sp_metadata(acs=("https://*.example.gov/acs",)),
    }
    for name, body in cases.items():
        (tmp_path / name).write_bytes(body)
        code, _, err = run(capsys, "saml", "sps", "add", "X", "--metadata", str(tmp_path / name))
        assert code == 2 and "metadata" in err, (name, err)
    (tmp_path / "ok.xml").write_bytes(sp_metadata())
    code, _, err = run(capsys, "saml", "sps", "add", "X", "--metadata", str(tmp_path / "ok.xml"), "--attribute", "ssn")
    assert code == 2 and "unknown attribute" in err
    code, _, err = run(capsys, "saml", "sps", "add", "X", "--metadata", str(tmp_path / "missing.xml"))
    assert code == 2 and "could not read" in err
    code, _, err = run(capsys, "saml", "sps", "add", "X", "--metadata", metadata_server + "/nothing-here")
    assert code == 2 and "could not read" in err
    code, out, _ = run(capsys, "saml", "sps", "list", "--json")
    assert json.loads(out) == []
    assert run(capsys, "saml", "sps", "add", "X", "--metadata", str(tmp_path / "ok.xml"))[0] == 0
    code, _, err = run(capsys, "saml", "sps", "add", "Again", "--metadata", str(tmp_path / "ok.xml"))
    assert code != 0 and "entity ID" in err


def test_certificate_rotation_from_the_command_line(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    code, out, _ = run(capsys, "saml", "cert", "list")
    assert code == 0 and len(out.splitlines()) == 1  # the first certificate is made on first use
    code, out, _ = run(capsys, "saml", "cert", "rotate", "--overlap-days", "3")
    assert code == 0 and "signs from" in out
    code, out, _ = run(capsys, "saml", "cert", "list")
    lines = out.splitlines()
    assert len(lines) == 2 and sum("published until -" in line for line in lines) == 1
    code, _, err = run(capsys, "saml", "cert", "rotate", "--overlap-days", "-1")
    assert code == 2 and "overlap" in err
    # A key that may have leaked: the old ones leave the metadata the moment the new one signs.
    code, out, _ = run(capsys, "saml", "cert", "rotate", "--overlap-days", "0", "--retire-now")
    assert code == 0
    signs_from = out.split("signs from ")[1].split()[0].rstrip(";")
    code, out, _ = run(capsys, "saml", "cert", "list")
    lines = out.splitlines()
    assert len(lines) == 3
    assert sum(f"published until {signs_from}" in line for line in lines) == 2


def test_demo_registers_the_saml_demo_application_once(cli_env: str) -> None:  # noqa: F811
    """`alacop demo` registers "Case Files (SAML demo)" and writes its key once; a lost key means a new one."""
    from alacop.cli import SAML_DEMO_NAME, SAML_DEMO_URL, _seed_saml_demo
    from alacop.config import load_settings
    from alacop.wiring import build_deps

    settings = load_settings()
    path = settings.data_dir / "saml_demo.json"

    async def seed() -> list[ServiceProvider]:
        deps = build_deps(settings)
        try:
            await _seed_saml_demo(deps, settings)
            async with deps.store.read() as db:
                return [sp for sp in await db.saml_sps.list() if sp.name == SAML_DEMO_NAME]
        finally:
            await deps.store.close()

    [first] = run_async(seed)
    written = json.loads(path.read_text())
    assert path.stat().st_mode & 0o777 == 0o600
    assert first.entity_id == written["entity_id"] == f"{SAML_DEMO_URL}/saml/metadata"
    assert [a.url for a in first.acs] == [written["acs_url"]] == [f"{SAML_DEMO_URL}/saml/acs"]
    assert first.idp_initiated and first.authn_requests_signed and first.active
    assert "".join(written["certificate"].splitlines()[1:-1]) in first.certificates[0].replace("\n", "")

    assert run_async(seed) == [first] and json.loads(path.read_text()) == written  # a re-run changes nothing

    path.unlink()  # the key is lost: the old registration is disabled, the new key registered beside it
    old, new = sorted(run_async(seed), key=lambda sp: sp.entity_id)
    assert old.id == first.id and not old.active
    assert new.active and new.entity_id.startswith(f"{SAML_DEMO_URL}/saml/metadata?v=")
    assert json.loads(path.read_text())["entity_id"] == new.entity_id
