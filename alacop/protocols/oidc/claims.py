"""The claims a relying party receives about a user, chosen by the scopes it was granted."""

from __future__ import annotations

from alacop.core.accounts import Agency, User

# What each scope releases; `sub` (the user's id, never reassigned) is always there.
SCOPE_CLAIMS: dict[str, tuple[str, ...]] = {
    "profile": ("preferred_username", "name"),
    "email": ("email",),
    "agency": ("agency_name", "agency_ori"),
    "roles": ("roles",),
}
ID_TOKEN_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "acr", "amr", "sid")
CLAIMS_SUPPORTED = tuple(dict.fromkeys((*ID_TOKEN_CLAIMS, *(c for claims in SCOPE_CLAIMS.values() for c in claims))))


def user_claims(user: User, agency: Agency | None, scopes: set[str], domain: str) -> dict[str, object]:
    claims: dict[str, object] = {"sub": user.id}
    if "profile" in scopes:
        claims["preferred_username"] = f"{user.username}@{domain}"
        claims["name"] = user.name
    if "email" in scopes:
        claims["email"] = user.email
    if "agency" in scopes and agency is not None:
        claims["agency_name"] = agency.name
        claims["agency_ori"] = agency.ori
    if "roles" in scopes:
        claims["roles"] = [str(user.role)]
    return claims
