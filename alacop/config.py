"""Settings from a TOML file plus ALACOP_* environment variables, validated once at start.

A bad value stops the portal with one line that names the setting (a ConfigError).
Nested settings take a double underscore in the environment: ALACOP_BRANDING__SUPPORT_PHONE.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

from alacop.core.errors import ConfigError
from alacop.policy.cjis import Policy, policy_from_mapping

WARNING_TEXT = (
    "This site is intended strictly for official law enforcement and criminal justice use only. "
    "It is a violation of Alabama State law to attempt to enter this site without possessing the "
    "appropriate credentials. All transactions are monitored and logged. The use of publicly accessible "
    "computers (e.g. libraries, airports, cafes, hotels, etc.) to access this information system is "
    "strictly prohibited. Any unauthorized access of this system or unauthorized use of the information "
    "on this system by authorized users or others is prohibited and is subject to criminal and "
    "administrative penalties under federal and state laws."
)

ENVIRONMENTS = ("production", "development", "test")


@dataclass(frozen=True, slots=True)
class Branding:
    portal_name: str = "AlaCOP"
    domain: str = "alacop.gov"
    logo_url: str = "/static/img/wordmark.svg"
    seal_url: str = "/static/img/seal.svg"
    support_name: str = "ALEA Support Center"
    support_phone: str = "1-844-838-9028"
    support_email: str = "ALEA-Support@alea.gov"
    help_url: str = "/help"
    help_center_name: str = "ALACOP Help Center"
    warning_text: str = WARNING_TEXT

    @property
    def warning_sha256(self) -> str:
        """Which version of the warning a user saw; each sign-in attempt records it (CJIS AC-8)."""
        return hashlib.sha256(self.warning_text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Settings:
    env: str = "production"
    public_url: str = "http://127.0.0.1:8000"
    behind_tls_proxy: bool = False
    database_url: str = ""
    data_dir: Path = Path("data")
    secret_key: str = ""
    audit_hmac_key: str = ""
    redis_url: str = ""
    # Fernet keys that encrypt stored secrets (TOTP seeds); the first encrypts, all decrypt.
    encryption_keys: tuple[str, ...] = ()
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str = ""
    smtp_password: str = ""
    mail_from: str = "AlaCOP <no-reply@alacop.gov>"
    trusted_proxies: tuple[str, ...] = ()
    max_body_bytes: int = 65536
    # Tests only (ALACOP_ENV=test): the key the CAPTCHA derives answers with. See core/captcha.py.
    captcha_seed: str = ""
    branding: Branding = field(default_factory=Branding)
    policy: Policy = field(default_factory=Policy)

    @property
    def loopback_http(self) -> bool:
        parts = urlsplit(self.public_url)
        return parts.scheme == "http" and _is_loopback(parts.hostname or "")

    @property
    def secure_cookies(self) -> bool:
        # Plain http on localhost is for development only; everything else needs Secure cookies.
        return not self.loopback_http

    @property
    def cookie_prefix(self) -> str:
        return "__Host-" if self.secure_cookies else ""

    @property
    def origin(self) -> str:
        return self.public_url

    @property
    def rp_id(self) -> str:
        """The WebAuthn relying-party id: the public host name."""
        return urlsplit(self.public_url).hostname or "localhost"

    @property
    def captcha_key(self) -> bytes:
        if self.captcha_seed:
            return self.captcha_seed.encode("utf-8")
        return hmac.new(self.secret_key.encode("utf-8"), b"alacop-captcha-key", hashlib.sha256).digest()

    @property
    def pepper(self) -> bytes:
        return hmac.new(self.secret_key.encode("utf-8"), b"alacop-pepper", hashlib.sha256).digest()

    @property
    def audit_key(self) -> bytes | None:
        return self.audit_hmac_key.encode("utf-8") if self.audit_hmac_key else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_TOP = {f.name for f in fields(Settings)} - {"branding", "policy"}
# Variables that share the prefix but are read elsewhere, not settings of their own.
_NOT_SETTINGS = frozenset({"ALACOP_CONFIG", "ALACOP_CAPTCHA_SEED"})
_BRANDING = {f.name for f in fields(Branding)}


def load_settings(environ: Mapping[str, str] | None = None, *, overrides: Mapping[str, Any] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, Any] = {}
    config_path = env.get("ALACOP_CONFIG")
    if config_path:
        path = Path(config_path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"ALACOP_CONFIG: no such file: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"ALACOP_CONFIG: {path} is not valid TOML: {exc}") from exc
    top: dict[str, Any] = {k: v for k, v in raw.items() if k not in {"branding", "policy"}}
    branding: dict[str, Any] = dict(raw.get("branding", {}))
    policy: dict[str, Any] = dict(raw.get("policy", {}))
    for key, value in env.items():
        if not key.startswith("ALACOP_") or key in _NOT_SETTINGS or key.startswith("ALACOP_TEST_"):
            continue
        name = key[len("ALACOP_") :].lower()
        if name.startswith("branding__"):
            branding[name[len("branding__") :]] = value
        elif name.startswith("policy__"):
            policy[name[len("policy__") :]] = value
        elif name in _TOP:
            top[name] = value
        else:
            # A mistyped variable (ALACOP_AUDIT_HMAC for ALACOP_AUDIT_HMAC_KEY) must not pass silently.
            raise ConfigError(f"{key}: unknown setting")
    if "captcha_seed" in top or (overrides and "captcha_seed" in overrides):
        # Only the ALACOP_CAPTCHA_SEED environment variable, checked below, may set it.
        raise ConfigError("captcha_seed: not a setting; tests pass ALACOP_CAPTCHA_SEED with ALACOP_ENV=test")
    top.update(overrides or {})
    seed = env.get("ALACOP_CAPTCHA_SEED", "")
    if seed:
        if str(top.get("env", "production")).strip().lower() != "test":
            # The seed makes every CAPTCHA answer computable: it is a test fixture, never a setting.
            raise ConfigError("ALACOP_CAPTCHA_SEED: accepted only with ALACOP_ENV=test")
        top["captcha_seed"] = seed
    return _validate(top, branding, policy)


def _validate(top: dict[str, Any], branding: dict[str, Any], policy: dict[str, Any]) -> Settings:
    for key in top:
        if key not in _TOP:
            raise ConfigError(f"{key}: unknown setting")
    for key in branding:
        if key not in _BRANDING:
            raise ConfigError(f"branding.{key}: unknown setting")
    env = str(top.get("env", "production")).strip().lower()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"env: must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
    public_url = str(top.get("public_url", "http://127.0.0.1:8000")).strip().rstrip("/")
    parts = urlsplit(public_url)
    try:
        parts.port  # noqa: B018 - raises ValueError for an impossible port
    except ValueError:
        parts = urlsplit("invalid://")
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise ConfigError(
            f"public_url: must be an http(s) origin such as https://portal.example.gov, got {public_url!r}"
        )
    behind_proxy = _bool(top.get("behind_tls_proxy", False), "behind_tls_proxy")
    data_dir = Path(str(top.get("data_dir", "data"))).expanduser()
    database_url = str(top.get("database_url", "") or f"sqlite:///{(data_dir / 'alacop.db').absolute()}")
    if not database_url.startswith(("sqlite:", "postgresql:", "postgresql+asyncpg:", "postgres:")):
        raise ConfigError("database_url: must be a sqlite:/// or postgresql:// URL")
    max_body = _int(top.get("max_body_bytes", 65536), "max_body_bytes", 1024, 10_000_000)
    proxies_raw = top.get("trusted_proxies", ())
    if isinstance(proxies_raw, str):
        proxies_raw = [p for p in proxies_raw.split(",") if p.strip()]
    proxies: list[str] = []
    for item in proxies_raw:
        try:
            proxies.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: not an address or network: {item!r}") from exc
    secret_key = str(top.get("secret_key", ""))
    if secret_key and len(secret_key) < 32:
        raise ConfigError("secret_key: must be at least 32 characters")
    audit_key = str(top.get("audit_hmac_key", ""))
    if audit_key and len(audit_key) < 32:
        raise ConfigError("audit_hmac_key: must be at least 32 characters")
    keys_raw = top.get("encryption_keys", ())
    if isinstance(keys_raw, str):
        keys_raw = [k for k in keys_raw.split(",") if k.strip()]
    encryption_keys = tuple(str(k).strip() for k in keys_raw)
    for key in encryption_keys:
        if not _is_fernet_key(key):
            raise ConfigError("encryption_keys: each key must be a Fernet key (32 url-safe base64 bytes)")
    smtp_host = str(top.get("smtp_host", "")).strip()
    smtp_port = _int(top.get("smtp_port", 587), "smtp_port", 1, 65535)
    smtp_starttls = _bool(top.get("smtp_starttls", True), "smtp_starttls")
    mail_from = str(top.get("mail_from", "AlaCOP <no-reply@alacop.gov>")).strip()
    if "@" not in mail_from or "\n" in mail_from or "\r" in mail_from:
        raise ConfigError("mail_from: must be an address such as AlaCOP <no-reply@alacop.gov>")
    redis_url = str(top.get("redis_url", "")).strip()
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis_url: must be a redis://, rediss:// or unix:// URL")
    brand = Branding(**{k: _text(v, f"branding.{k}") for k, v in branding.items()})
    if not brand.domain or "@" in brand.domain or "." not in brand.domain:
        raise ConfigError(f"branding.domain: must be a domain such as alacop.gov, got {brand.domain!r}")
    brand = replace(brand, domain=brand.domain.lower())
    for name in ("logo_url", "seal_url"):
        value = getattr(brand, name)
        # The CSP allows images from this portal only, which is also what keeps a page genuine.
        if not (value.startswith("/") and not value.startswith(("//", "/\\"))) and not value.startswith("data:image/"):
            raise ConfigError(f"branding.{name}: must be a path on this portal (/static/...) or a data: image")
    if top.get("captcha_seed") and env != "test":
        raise ConfigError("ALACOP_CAPTCHA_SEED: accepted only with ALACOP_ENV=test")
    settings = Settings(
        env=env,
        public_url=public_url,
        behind_tls_proxy=behind_proxy,
        database_url=database_url,
        data_dir=data_dir,
        secret_key=secret_key,
        audit_hmac_key=audit_key,
        redis_url=redis_url,
        encryption_keys=encryption_keys,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_starttls=smtp_starttls,
        smtp_username=str(top.get("smtp_username", "")),
        smtp_password=str(top.get("smtp_password", "")),
        mail_from=mail_from,
        trusted_proxies=tuple(proxies),
        max_body_bytes=max_body,
        captcha_seed=str(top.get("captcha_seed", "")),
        branding=brand,
        policy=policy_from_mapping(policy),
    )
    if env != "production" and not _is_loopback(parts.hostname or ""):
        # Test and development modes generate secrets and may accept a CAPTCHA seed: never public.
        raise ConfigError(f"env: {env} runs only on a loopback public_url; use production for {public_url}")
    if parts.scheme == "http" and not settings.loopback_http and not behind_proxy:
        raise ConfigError(
            "public_url: plain http is allowed only on a loopback address; "
            "set behind_tls_proxy = true if a TLS-terminating proxy sits in front"
        )
    return settings


def ensure_secret(settings: Settings) -> Settings:
    """Production must be given its secrets; development keeps generated ones in the data folder."""
    production = settings.env == "production" and not settings.loopback_http
    if not settings.secret_key:
        if production:
            raise ConfigError("secret_key: required in production (at least 32 random characters)")
        settings = replace(settings, secret_key=_kept(settings, "secret.key", lambda: secrets.token_urlsafe(48)))
    if not settings.encryption_keys:
        if production:
            raise ConfigError("encryption_keys: required in production (make one with `alacop secrets new-key`)")
        key = _kept(settings, "encryption.key", lambda: Fernet.generate_key().decode("ascii"))
        settings = replace(settings, encryption_keys=(key,))
    if production and not settings.smtp_host:
        # Security notices (a new method, a lock, a used recovery code) must reach people, not a folder.
        raise ConfigError("smtp_host: required in production; the portal emails security notices")
    return settings


def _kept(settings: Settings, name: str, make: Callable[[], str]) -> str:
    path = settings.data_dir / name
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make())
    return path.read_text().strip()


def _is_fernet_key(key: str) -> bool:
    try:
        Fernet(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return True


def _bool(raw: object, name: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in {
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
        "",
    }:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _int(raw: object, name: str, low: int, high: int) -> int:
    try:
        value = int(str(raw).strip()) if not isinstance(raw, bool) else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ConfigError(f"{name}: expected a whole number between {low} and {high}, got {raw!r}")
    return value


def _text(raw: object, name: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{name}: expected non-empty text")
    return raw.strip()
