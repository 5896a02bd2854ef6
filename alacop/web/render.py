"""Rendering helpers shared by routes and error handlers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from alacop.web import http


def template(request: Request, name: str, ctx: dict[str, Any], status: int = 200) -> Response:
    response = http.portal(request).templates.TemplateResponse(request, name, ctx, status_code=status)
    return http.apply_browser_cookie(request, response)


async def error_page(request: Request, status: int, code: str, title: str, text: str) -> Response:
    return template(request, "error.html", {"status": status, "code": code, "title": title, "text": text}, status)
