"""The sign-in identifier: the AlaCOP email, username@domain."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from alacop.core.errors import InvalidInput

_LOCAL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_IDENTIFIER_LENGTH = 254


@dataclass(frozen=True, slots=True)
class Identifier:
    username: str
    domain: str

    @property
    def email(self) -> str:
        return f"{self.username}@{self.domain}"


class WrongDomain(InvalidInput):
    code = "wrong_domain"


def normalise_identifier(raw: str, domain: str) -> Identifier:
    """Trim, NFKC, lower-case; complete a bare username with the sign-in domain."""
    value = unicodedata.normalize("NFKC", raw).strip().lower()
    if not value:
        raise InvalidInput("enter your AlaCOP email", code="identifier_missing")
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise InvalidInput("that is not an AlaCOP email", code="identifier_invalid")
    if "@" in value:
        local, _, given_domain = value.rpartition("@")
        if given_domain != domain:
            raise WrongDomain(f"identifier at another domain: {given_domain[:64]}")
    else:
        local = value
    if not _LOCAL.fullmatch(local):
        raise InvalidInput("that is not an AlaCOP email", code="identifier_invalid")
    return Identifier(username=local, domain=domain)
