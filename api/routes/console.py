"""The operators' console: an HTML page served by the api, live from ``/v1/admin/overview`` and
``/v1/admin/jobs`` (polled every two seconds), with no build step (``api/console/``: HTML, CSS, JS).

``GET /console`` answers the page to a browser holding a console session and the login form (401) to
anyone else; ``POST /console/login`` trades the operators' key for a session cookie
(``api.console_session``), ``POST /console/logout`` ends it. These HTML routes are for browsers and
are left out of the OpenAPI document; the JSON the page reads is in it (``/v1/admin/*``).
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from api import console_session as sessions
from api.deps import GatewayDep

router = APIRouter(include_in_schema=False)
PAGES = Path(__file__).resolve().parent.parent / "console"
MAX_FORM_BYTES = 4096
# The page loads only its own script and style, and no other site may frame it.
HEADERS = {"content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                      "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
           "x-frame-options": "DENY", "cache-control": "no-store", "referrer-policy": "no-referrer",
           "x-content-type-options": "nosniff"}


def install_static(app: FastAPI) -> None:
    """The console's script and style (no data in them: they need no session)."""
    app.mount("/console/static", StaticFiles(directory=PAGES / "static"), name="console-static")


def _page(name: str, **values: str) -> str:
    text = (PAGES / name).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return text


def _login_page(request: Request, message: str = "", status: int = 401) -> HTMLResponse:
    token = sessions.login_token(request)
    response = HTMLResponse(_page("login.html", csrf=token, message=message), status_code=status, headers=HEADERS)
    sessions.set_login_token(response, request, token)
    return response


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=307)


@router.get("/console")
async def console_page(request: Request, gw: GatewayDep) -> Response:
    key = gw.auth.admin_key()
    if key is None:
        return HTMLResponse(_page("off.html", variable=gw.settings.api.admin_key_env), status_code=403, headers=HEADERS)
    session = request.cookies.get(sessions.SESSION_COOKIE)
    if session is None or not sessions.session_valid(key, session):
        return _login_page(request)
    return HTMLResponse(_page("index.html", csrf=sessions.csrf_token(key, session)), headers=HEADERS)


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the login's and logout's); anything else reads as an empty form."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES or not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        return {}
    try:
        fields = parse_qs(raw.decode(), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items() if values}


@router.post("/console/login")
async def console_login(request: Request, gw: GatewayDep) -> Response:
    key = gw.auth.admin_key()
    if key is None:
        return HTMLResponse(_page("off.html", variable=gw.settings.api.admin_key_env), status_code=403, headers=HEADERS)
    form = await _form(request)
    if not sessions.login_token_valid(request, form.get("csrf")):
        return _login_page(request, "The form expired: try again.", status=403)
    source = request.client.host if request.client else ""
    if gw.auth.failures.exhausted(source) > 0:
        return _login_page(request, "Too many failed logins from this address: wait a minute.", status=429)
    if not gw.auth.is_admin(form.get("key", "")):
        gw.auth.failures.spend(source)
        gw.auth.on_failure("invalid_console_login")
        return _login_page(request, "That is not the operators' key.")
    response = RedirectResponse("/console", status_code=303, headers=HEADERS)
    sessions.set_session(response, request, sessions.new_session(key))
    return response


@router.post("/console/logout")
async def console_logout(request: Request, gw: GatewayDep) -> Response:
    key = gw.auth.admin_key()
    session = request.cookies.get(sessions.SESSION_COOKIE)
    form = await _form(request)
    if key is None or session is None or not sessions.csrf_valid(key, session, form.get("csrf")):
        return _login_page(request, "", status=403)
    response = RedirectResponse("/console", status_code=303, headers=HEADERS)
    sessions.clear_session(response)
    return response
