"""The ALACOP Help Center: home with categories and search, guides, video tutorials, sign-in help."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from alacop.core.errors import NotFound
from alacop.help.content import HelpCenter
from alacop.web import http
from alacop.web.render import template

MAX_QUERY = 200


def center(request: Request) -> HelpCenter:
    return http.portal(request).help  # type: ignore[no-any-return]


async def home(request: Request) -> Response:
    http.ensure_browser_secret(request)
    help_center = center(request)
    return template(
        request,
        "help/index.html",
        {"categories": help_center.categories(), "videos": list(help_center.videos.values()), "query": ""},
    )


async def search(request: Request) -> Response:
    http.ensure_browser_secret(request)
    query = request.query_params.get("q", "")[:MAX_QUERY].strip()
    hits = center(request).search(query) if query else []
    return template(request, "help/search.html", {"query": query, "hits": hits})


async def guide(request: Request) -> Response:
    http.ensure_browser_secret(request)
    found = center(request).guides.get(request.path_params["slug"])
    if found is None:
        raise NotFound("no such guide")
    return template(request, "help/guide.html", {"guide": found, "query": ""})


async def video(request: Request) -> Response:
    http.ensure_browser_secret(request)
    found = center(request).videos.get(request.path_params["slug"])
    if found is None:
        raise NotFound("no such tutorial")
    return template(request, "help/video.html", {"video": found, "query": ""})


async def sign_in(request: Request) -> Response:
    http.ensure_browser_secret(request)
    return template(request, "help/sign_in.html", {"query": ""})
