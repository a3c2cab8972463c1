"""The operators' console in a browser: a login that keeps a signed session in a cookie, with CSRF tokens.

A browser cannot send ``Authorization: Bearer`` on a page load, so ``POST /console/login`` takes the
operators' key once and answers with a session cookie instead of storing the key:

- the session is ``<expiry>.<HMAC(operators' key, expiry)>``: nothing is kept on the server, it ends
  at its expiry, and changing ``GATEWAY_ADMIN_KEY`` ends every session at once;
- the cookie is ``HttpOnly`` (scripts cannot read it), ``SameSite=Strict`` (other sites' pages cannot
  send it) and ``Secure`` when the request came over HTTPS;
- a request authenticated by the cookie must also carry the session's CSRF token
  (``X-Gateway-CSRF``, an HMAC of the session the console page embeds), and the login and logout
  forms carry one in a hidden field (double-submit: the login form's token matches a cookie of its own).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from fastapi import Request, Response

SESSION_COOKIE = "gw_console"
LOGIN_COOKIE = "gw_console_login"
CSRF_HEADER = "x-gateway-csrf"
SESSION_S = 12 * 3600
LOGIN_FORM_S = 600


def _sign(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_session(key: str, now: float | None = None) -> str:
    """A session for the holder of ``key`` (the operators' key), valid for ``SESSION_S``."""
    expires = int((now or time.time()) + SESSION_S)
    return f"{expires}.{_sign(key, f'console-session:{expires}')}"


def session_valid(key: str, session: str | None, now: float | None = None) -> bool:
    """True for a session ``new_session(key)`` made that has not expired."""
    expires, _, signature = (session or "").partition(".")
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return False
    return hmac.compare_digest(signature, _sign(key, f"console-session:{expires}"))


def csrf_token(key: str, session: str) -> str:
    """The token a page of ``session`` sends back with each request (``X-Gateway-CSRF``, form fields)."""
    return _sign(key, f"console-csrf:{session}")


def csrf_valid(key: str, session: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(str(token), csrf_token(key, session))


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session(response: Response, request: Request, session: str) -> None:
    response.set_cookie(SESSION_COOKIE, session, max_age=SESSION_S, httponly=True, samesite="strict",
                        secure=_secure(request), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/console")


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def login_token(request: Request) -> str:
    """The login form's CSRF token: the one its cookie holds, or a new one (``set_login_token``)."""
    token = request.cookies.get(LOGIN_COOKIE)
    return token if token and len(token) <= 64 else secrets.token_urlsafe(24)


def set_login_token(response: Response, request: Request, token: str) -> None:
    response.set_cookie(LOGIN_COOKIE, token, max_age=LOGIN_FORM_S, httponly=True, samesite="strict",
                        secure=_secure(request), path="/console")


def login_token_valid(request: Request, form_token: str | None) -> bool:
    cookie = request.cookies.get(LOGIN_COOKIE)
    return bool(cookie and form_token) and hmac.compare_digest(str(cookie), str(form_token))
