"""The ASGI entry point uvicorn imports: settings come from the environment."""

from __future__ import annotations

from alacop.config import ensure_secret, load_settings
from alacop.web.app import create_app

app = create_app(ensure_secret(load_settings()))
