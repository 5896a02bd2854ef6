"""Who is asking and from where: the part of a request the core is allowed to see."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    source_ip: str
    user_agent: str
    request_id: str

    @classmethod
    def system(cls, request_id: str = "cli") -> RequestContext:
        return cls(source_ip="local", user_agent="alacop-cli", request_id=request_id)
