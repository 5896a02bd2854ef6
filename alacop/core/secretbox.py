"""Encryption at rest for stored secrets (TOTP seeds), with rotation, using cryptography's Fernet."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from alacop.core.errors import AlacopError


class SecretUnreadable(AlacopError):
    code = "secret_unreadable"
    status = 500


class SecretBox:
    """The first key encrypts; every key decrypts, so a new key can be added before old data moves."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._box = MultiFernet([Fernet(k.encode("ascii")) for k in keys])

    def seal(self, plaintext: bytes) -> str:
        return self._box.encrypt(plaintext).decode("ascii")

    def open(self, token: str) -> bytes:
        try:
            return self._box.decrypt(token.encode("ascii"))
        except InvalidToken as exc:
            raise SecretUnreadable("no configured key opens this secret") from exc

    def reseal(self, token: str) -> str:
        """Re-encrypt under the first key (key rotation)."""
        try:
            return self._box.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise SecretUnreadable("no configured key opens this secret") from exc
