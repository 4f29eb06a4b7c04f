"""Authentication of the ServiceX front end, as the servicex 3.x client does it.

The client holds a long-lived *refresh token* (``token:`` in servicex.yaml).  Before its
first call it POSTs to ``/token/refresh`` with ``Authorization: Bearer <refresh token>``
and receives ``{"access_token": <JWT>}``; every later call carries
``Authorization: Bearer <access token>``.  It decodes the JWT (without checking the
signature) to read ``exp`` and asks for a new one a minute before it expires, or after a
401 on a status poll.

Here the refresh tokens are those of a token file (one a line, ``#`` comments), and the
access tokens are HS256 JWTs signed with a key drawn when the front end starts (so they
die with it), valid ``lifetime`` seconds.  A missing, malformed, forged or expired access
token is refused (HTTP 401), and so is an unknown refresh token.

What this deliberately ignores: users and per-user rights (any listed token may do
anything), token revocation before expiry (restart the front end), and the
``BEARER_TOKEN_FILE`` variant of the client (a pre-issued access token), which works only
with a token this front end issued.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time


class Unauthorized(Exception):
    """Refused credentials (HTTP 401); the message says why."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenAuthority:
    def __init__(self, refresh_tokens, lifetime: int = 3600, clock=time.time):
        self._refresh = [t.encode() for t in refresh_tokens]
        if not self._refresh:
            raise ValueError("no refresh token given: authentication needs at least one")
        self.lifetime = int(lifetime)
        self._key = secrets.token_bytes(32)
        self._clock = clock

    @staticmethod
    def _bearer(header: str | None) -> str:
        if not header:
            raise Unauthorized("no Authorization header (this ServiceX front end requires a token: "
                               "set token: in servicex.yaml)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header is not 'Bearer <token>'")
        return token.strip()

    def refresh(self, header: str | None) -> dict:
        """``POST /token/refresh``: a new access token for a known refresh token."""
        token = self._bearer(header).encode()
        if not any(hmac.compare_digest(token, t) for t in self._refresh):
            raise Unauthorized("unknown refresh token")
        now = int(self._clock())
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps({"sub": "skyhook-servicex", "iat": now, "exp": now + self.lifetime}).encode())
        sig = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return {"access_token": f"{head}.{body}.{sig}"}

    def check(self, header: str | None) -> None:
        """Raise Unauthorized unless the header carries a valid, unexpired access token."""
        token = self._bearer(header)
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthorized("the bearer token is not an access token from /token/refresh")
        head, body, sig = parts
        want = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        try:
            ok = hmac.compare_digest(_unb64(sig), want)
            claims = json.loads(_unb64(body)) if ok else None
        except (ValueError, UnicodeDecodeError):
            ok, claims = False, None
        if not ok or not isinstance(claims, dict):
            raise Unauthorized("the access token was not issued by this front end (or was altered)")
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= self._clock():
            raise Unauthorized("the access token has expired: ask /token/refresh for a new one")
