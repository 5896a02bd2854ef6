"""Unit tests for alacop.config: defaults, TOML, environment, validation and the generated secret."""

from __future__ import annotations

import hashlib
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from alacop.config import WARNING_TEXT, Branding, Settings, ensure_secret, load_settings
from alacop.core.errors import ConfigError
from alacop.policy.cjis import Policy

SECRET = "s" * 32


def write_toml(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "alacop.toml"
    path.write_text(text, encoding="utf-8")
    return {"ALACOP_CONFIG": str(path)}


def config_error(environ: dict[str, str], **overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(environ, overrides=overrides or None)
    return str(info.value)


# -- defaults ------------------------------------------------------------------------------------


def test_defaults_from_an_empty_environment() -> None:
    settings = load_settings({})
    assert settings.env == "production"
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.behind_tls_proxy is False
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("alacop.db")
    assert settings.secret_key == ""
    assert settings.audit_key is None
    assert settings.policy == Policy()


def test_default_branding_is_the_seed() -> None:
    brand = load_settings({}).branding
    assert brand.domain == "alacop.gov"
    assert brand.support_phone == "1-844-838-9028"
    assert brand.support_email == "ALEA-Support@alea.gov"
    assert brand.help_url == "/help"
    assert brand.warning_text == WARNING_TEXT
    assert brand.warning_sha256 == hashlib.sha256(WARNING_TEXT.encode("utf-8")).hexdigest()


def test_warning_text_is_verbatim() -> None:
    assert WARNING_TEXT.startswith(
        "This site is intended strictly for official law enforcement and criminal justice use only. "
    )
    assert "It is a violation of Alabama State law" in WARNING_TEXT
    assert "All transactions are monitored and logged." in WARNING_TEXT
    assert "(e.g. libraries, airports, cafes, hotels, etc.)" in WARNING_TEXT
    assert WARNING_TEXT.endswith("subject to criminal and administrative penalties under federal and state laws.")
    assert "  " not in WARNING_TEXT


def test_warning_sha256_follows_the_text() -> None:
    default = Branding()
    changed = replace(default, warning_text=WARNING_TEXT + " Amended.")
    assert changed.warning_sha256 != default.warning_sha256
    assert len(changed.warning_sha256) == 64


# -- TOML and environment ------------------------------------------------------------------------


TOML = """
public_url = "https://portal.example.gov"
secret_key = "0123456789abcdef0123456789abcdef"

[branding]
support_phone = "1-800-555-0100"
warning_text = "Authorised use only."

[policy]
lockout_threshold = 3
session_idle_minutes = 15
"""


def test_toml_file_is_read(tmp_path: Path) -> None:
    settings = load_settings(write_toml(tmp_path, TOML))
    assert settings.public_url == "https://portal.example.gov"
    assert settings.branding.support_phone == "1-800-555-0100"
    assert settings.branding.warning_text == "Authorised use only."
    assert settings.branding.warning_sha256 != Branding().warning_sha256
    assert settings.branding.domain == "alacop.gov"
    assert settings.policy.lockout_threshold == 3
    assert settings.policy.session_idle_minutes == 15
    assert settings.policy.password_min_length == 8


def test_environment_overrides_toml(tmp_path: Path) -> None:
    environ = write_toml(tmp_path, TOML) | {
        "ALACOP_PUBLIC_URL": "https://other.example.gov",
        "ALACOP_BRANDING__SUPPORT_PHONE": "1-800-555-0199",
        "ALACOP_POLICY__LOCKOUT_THRESHOLD": "4",
    }
    settings = load_settings(environ)
    assert settings.public_url == "https://other.example.gov"
    assert settings.branding.support_phone == "1-800-555-0199"
    assert settings.policy.lockout_threshold == 4
    # Values the environment does not name still come from the file.
    assert settings.policy.session_idle_minutes == 15
    assert settings.branding.warning_text == "Authorised use only."


def test_nested_environment_without_toml() -> None:
    settings = load_settings(
        {"ALACOP_BRANDING__SUPPORT_PHONE": "  1-800-555-0111  ", "ALACOP_POLICY__LOCKOUT_THRESHOLD": "2"}
    )
    assert settings.branding.support_phone == "1-800-555-0111"
    assert settings.policy.lockout_threshold == 2


def test_overrides_beat_environment() -> None:
    settings = load_settings(
        {"ALACOP_PUBLIC_URL": "https://env.example.gov"}, overrides={"public_url": "https://o.example.gov"}
    )
    assert settings.public_url == "https://o.example.gov"


def test_branding_domain_is_lower_cased() -> None:
    assert load_settings({"ALACOP_BRANDING__DOMAIN": "AlaCOP.GOV"}).branding.domain == "alacop.gov"


@pytest.mark.parametrize("value", ["", "alacop", "user@alacop.gov"])
def test_bad_branding_domain(value: str) -> None:
    assert config_error({"ALACOP_BRANDING__DOMAIN": value}).startswith("branding.domain:")


def test_trusted_proxies_are_parsed() -> None:
    settings = load_settings({"ALACOP_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16"})
    assert settings.trusted_proxies == ("10.0.0.1/32", "192.168.0.0/16")


# -- every error names its setting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "prefix"),
    [
        ("bogus = 1\n", "bogus:"),
        ("[branding]\nbogus = 'x'\n", "branding.bogus:"),
        ("[policy]\nbogus = 1\n", "policy.bogus:"),
    ],
)
def test_unknown_key_in_toml(tmp_path: Path, toml: str, prefix: str) -> None:
    message = config_error(write_toml(tmp_path, toml))
    assert message.startswith(prefix)
    assert "unknown setting" in message


def test_unknown_nested_environment_key() -> None:
    assert config_error({"ALACOP_BRANDING__BOGUS": "x"}).startswith("branding.bogus:")
    assert config_error({"ALACOP_POLICY__BOGUS": "1"}).startswith("policy.bogus:")


def test_unknown_override_key() -> None:
    assert config_error({}, bogus=1).startswith("bogus:")


@pytest.mark.parametrize(
    ("key", "value", "prefix"),
    [
        ("ALACOP_ENV", "staging", "env:"),
        ("ALACOP_BEHIND_TLS_PROXY", "maybe", "behind_tls_proxy:"),
        ("ALACOP_MAX_BODY_BYTES", "lots", "max_body_bytes:"),
        ("ALACOP_MAX_BODY_BYTES", "100", "max_body_bytes:"),
        ("ALACOP_TRUSTED_PROXIES", "not-an-ip", "trusted_proxies:"),
        ("ALACOP_PUBLIC_URL", "ftp://portal.example.gov", "public_url:"),
        ("ALACOP_PUBLIC_URL", "https://portal.example.gov/sub", "public_url:"),
        ("ALACOP_PUBLIC_URL", "https://portal.example.gov?x=1", "public_url:"),
        ("ALACOP_SECRET_KEY", "s" * 31, "secret_key:"),
        ("ALACOP_AUDIT_HMAC_KEY", "k" * 31, "audit_hmac_key:"),
        ("ALACOP_DATABASE_URL", "mysql://db/alacop", "database_url:"),
        ("ALACOP_REDIS_URL", "http://cache:6379", "redis_url:"),
        ("ALACOP_BRANDING__SUPPORT_PHONE", "   ", "branding.support_phone:"),
        ("ALACOP_POLICY__LOCKOUT_THRESHOLD", "three", "policy.lockout_threshold:"),
        ("ALACOP_POLICY__PASSKEY_SIGN_IN", "perhaps", "policy.passkey_sign_in:"),
    ],
)
def test_bad_environment_value_names_the_setting(key: str, value: str, prefix: str) -> None:
    assert config_error({key: value}).startswith(prefix)


def test_minimum_secret_lengths_accepted() -> None:
    settings = load_settings({"ALACOP_SECRET_KEY": SECRET, "ALACOP_AUDIT_HMAC_KEY": "k" * 32})
    assert settings.secret_key == SECRET
    assert settings.audit_key == b"k" * 32


@pytest.mark.parametrize(
    "url", ["sqlite:///tmp/a.db", "postgresql://u@h/db", "postgresql+asyncpg://u@h/db", "postgres://h/db"]
)
def test_good_database_urls(url: str) -> None:
    assert load_settings({"ALACOP_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("url", ["redis://cache:6379/0", "rediss://cache:6380", "unix:///run/redis.sock"])
def test_good_redis_urls(url: str) -> None:
    assert load_settings({"ALACOP_REDIS_URL": url}).redis_url == url


def test_missing_config_file(tmp_path: Path) -> None:
    message = config_error({"ALACOP_CONFIG": str(tmp_path / "absent.toml")})
    assert message.startswith("ALACOP_CONFIG:")
    assert "absent.toml" in message


def test_invalid_toml(tmp_path: Path) -> None:
    message = config_error(write_toml(tmp_path, "public_url = \n[branding\n"))
    assert message.startswith("ALACOP_CONFIG:")
    assert "not valid TOML" in message


# -- public URL, TLS and cookies -----------------------------------------------------------------


def test_plain_http_on_a_public_host_is_refused() -> None:
    message = config_error({"ALACOP_PUBLIC_URL": "http://portal.example.gov"})
    assert message.startswith("public_url:")
    assert "behind_tls_proxy" in message


def test_plain_http_behind_a_tls_proxy_is_accepted() -> None:
    settings = load_settings({"ALACOP_PUBLIC_URL": "http://portal.example.gov", "ALACOP_BEHIND_TLS_PROXY": "true"})
    assert settings.behind_tls_proxy is True
    assert settings.loopback_http is False
    assert settings.secure_cookies is True
    assert settings.cookie_prefix == "__Host-"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "http://127.0.0.2"]
)
def test_loopback_http_is_for_development(url: str) -> None:
    settings = load_settings({"ALACOP_PUBLIC_URL": url})
    assert settings.loopback_http is True
    assert settings.secure_cookies is False
    assert settings.cookie_prefix == ""


def test_https_uses_secure_host_cookies() -> None:
    settings = load_settings({"ALACOP_PUBLIC_URL": "https://portal.example.gov/"})
    assert settings.public_url == "https://portal.example.gov"
    assert settings.secure_cookies is True
    assert settings.cookie_prefix == "__Host-"


def test_https_on_loopback_still_uses_secure_cookies() -> None:
    settings = load_settings({"ALACOP_PUBLIC_URL": "https://127.0.0.1:8443"})
    assert settings.loopback_http is False
    assert settings.cookie_prefix == "__Host-"


# -- policy bounds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lockout_threshold", 6),
        ("lockout_threshold", 0),
        ("lockout_window_minutes", 14),
        ("session_idle_minutes", 31),
        ("session_absolute_hours", 13),
        ("password_min_length", 7),
        ("password_max_length", 63),
        ("password_max_age_days", 366),
        ("inactive_disable_days", 91),
        ("identifier_reuse_days", 364),
    ],
)
def test_policy_looser_than_cjis_is_refused(tmp_path: Path, key: str, value: int) -> None:
    message = config_error(write_toml(tmp_path, f"[policy]\n{key} = {value}\n"))
    assert message.startswith(f"policy.{key}:")
    assert "CJIS" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lockout_threshold", 3),
        ("lockout_window_minutes", 30),
        ("session_idle_minutes", 15),
        ("session_absolute_hours", 8),
        ("password_min_length", 12),
        ("password_max_age_days", 90),
        ("inactive_disable_days", 45),
        ("identifier_reuse_days", 730),
    ],
)
def test_policy_tighter_than_cjis_is_accepted(tmp_path: Path, key: str, value: int) -> None:
    settings = load_settings(write_toml(tmp_path, f"[policy]\n{key} = {value}\n"))
    assert getattr(settings.policy, key) == value


def test_policy_from_environment_is_bounded() -> None:
    assert config_error({"ALACOP_POLICY__LOCKOUT_THRESHOLD": "6"}).startswith("policy.lockout_threshold:")
    assert config_error({"ALACOP_POLICY__SESSION_IDLE_MINUTES": "31"}).startswith("policy.session_idle_minutes:")


def test_policy_number_must_be_whole(tmp_path: Path) -> None:
    message = config_error(write_toml(tmp_path, "[policy]\nlockout_threshold = 3.0\n"))
    assert message.startswith("policy.lockout_threshold:")
    message = config_error(write_toml(tmp_path, "[policy]\nlockout_threshold = true\n"))
    assert message.startswith("policy.lockout_threshold:")


def test_social_sign_in_cannot_be_enabled(tmp_path: Path) -> None:
    assert config_error(write_toml(tmp_path, "[policy]\nsocial_sign_in = true\n")).startswith("policy.social_sign_in:")
    assert config_error({"ALACOP_POLICY__SOCIAL_SIGN_IN": "yes"}).startswith("policy.social_sign_in:")


def test_passkey_sign_in_can_be_enabled(tmp_path: Path) -> None:
    assert load_settings(write_toml(tmp_path, "[policy]\npasskey_sign_in = true\n")).policy.passkey_sign_in


def test_switches_may_be_set_off_explicitly() -> None:
    settings = load_settings({"ALACOP_POLICY__SOCIAL_SIGN_IN": "false", "ALACOP_POLICY__PASSKEY_SIGN_IN": "0"})
    assert settings.policy.social_sign_in is False
    assert settings.policy.passkey_sign_in is False


# -- ensure_secret -------------------------------------------------------------------------------


def test_given_secrets_are_kept(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    settings = Settings(secret_key=SECRET, encryption_keys=(key,), data_dir=tmp_path / "data")
    assert ensure_secret(settings) is settings
    assert not (tmp_path / "data").exists()


def test_production_on_a_public_host_requires_encryption_keys(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "ALACOP_PUBLIC_URL": "https://portal.example.gov",
            "ALACOP_DATA_DIR": str(tmp_path),
            "ALACOP_SECRET_KEY": SECRET,
        }
    )
    with pytest.raises(ConfigError) as info:
        ensure_secret(settings)
    assert str(info.value).startswith("encryption_keys:")


@pytest.mark.parametrize("bad", ["not-a-key", "a" * 44])
def test_encryption_keys_must_be_fernet_keys(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^encryption_keys:"):
        load_settings({"ALACOP_ENCRYPTION_KEYS": bad})


def test_production_on_a_public_host_requires_a_secret(tmp_path: Path) -> None:
    settings = load_settings({"ALACOP_PUBLIC_URL": "https://portal.example.gov", "ALACOP_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError) as info:
        ensure_secret(settings)
    assert str(info.value).startswith("secret_key:")
    assert not (tmp_path / "secret.key").exists()


def test_development_generates_and_reuses_a_private_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    settings = load_settings(
        {
            "ALACOP_ENV": "development",
            "ALACOP_PUBLIC_URL": "http://127.0.0.1:8000",
            "ALACOP_DATA_DIR": str(data_dir),
        }
    )
    first = ensure_secret(settings)
    path = data_dir / "secret.key"
    assert sorted(data_dir.iterdir()) == sorted([path, data_dir / "encryption.key"])
    for kept in data_dir.iterdir():
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert first.encryption_keys == ((data_dir / "encryption.key").read_text().strip(),)
    assert len(first.secret_key) >= 32
    assert first.secret_key == path.read_text().strip()
    second = ensure_secret(settings)
    assert second.secret_key == first.secret_key
    assert second.encryption_keys == first.encryption_keys
    assert len(list(data_dir.iterdir())) == 2


def test_production_on_loopback_gets_a_generated_secret(tmp_path: Path) -> None:
    settings = load_settings({"ALACOP_DATA_DIR": str(tmp_path)})
    assert ensure_secret(settings).secret_key
    assert (tmp_path / "secret.key").is_file()


def test_mistyped_environment_variable_is_refused() -> None:
    from alacop.config import load_settings
    from alacop.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^ALACOP_AUDIT_HMAC: unknown setting"):
        load_settings({"ALACOP_AUDIT_HMAC": "x" * 40})
    # Variables read elsewhere share the prefix without being settings.
    load_settings(
        {"ALACOP_TEST_BACKENDS": "sqlite", "ALACOP_CAPTCHA_SEED": "1", "ALACOP_ENV": "test", "ALACOP_CONFIG": ""}
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999", "https://portal.example.gov#frag", "https://user@portal.example.gov"]
)
def test_public_url_refuses_ports_fragments_and_credentials(url: str) -> None:
    from alacop.config import load_settings
    from alacop.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^public_url:"):
        load_settings({"ALACOP_PUBLIC_URL": url})


@pytest.mark.parametrize("value", ["https://evil.example/logo.svg", "//evil.example/x.svg", "javascript:x"])
def test_branding_images_must_be_served_by_the_portal(value: str) -> None:
    from alacop.config import load_settings
    from alacop.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^branding.logo_url:"):
        load_settings({"ALACOP_BRANDING__LOGO_URL": value})
    assert load_settings({"ALACOP_BRANDING__LOGO_URL": "/static/img/agency.svg"}).branding.logo_url


def test_production_requires_an_smtp_server(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    base = {
        "ALACOP_PUBLIC_URL": "https://portal.example.gov",
        "ALACOP_DATA_DIR": str(tmp_path),
        "ALACOP_SECRET_KEY": SECRET,
        "ALACOP_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }
    with pytest.raises(ConfigError, match=r"^smtp_host:"):
        ensure_secret(load_settings(base))
    assert ensure_secret(load_settings({**base, "ALACOP_SMTP_HOST": "mail.example.gov"})).smtp_host


@pytest.mark.parametrize("env", ["development", "test"])
def test_non_production_modes_run_only_on_loopback(env: str) -> None:
    with pytest.raises(ConfigError, match=r"^env:"):
        load_settings({"ALACOP_ENV": env, "ALACOP_PUBLIC_URL": "https://portal.example.gov"})
    assert load_settings({"ALACOP_ENV": env, "ALACOP_PUBLIC_URL": "http://localhost:8000"}).env == env
