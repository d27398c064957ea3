"""The server proves it holds the token before a client sends it.

Every client sends the token with each request (``Authorization: Bearer``). But another account on
this machine can listen on a loopback port first (the add-on's default, 8765, is free whenever the
add-on runs its own server on a random port) and answer ``/health`` like a VIBE server; a client
that sent the token there would give it away. So a client first asks ``GET /health?challenge=C``
without the token, and the server answers ``proof`` = HMAC-SHA256(token, C): only a program that
knows the token can answer it, and the answer reveals nothing about the token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

CHALLENGE_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"  # URL-safe, so it goes in a query string as it is
_CONTEXT = b"vibe-mocap server proof v1\n"  # never the same bytes as anything else the token signs


def new_challenge() -> str:
    """A fresh random challenge (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def server_proof(token: str, challenge: str) -> str:
    """The server's answer to ``challenge``: hex HMAC-SHA256 keyed with the token."""
    return hmac.new(token.encode(), _CONTEXT + challenge.encode(), hashlib.sha256).hexdigest()


def proof_ok(token: str, challenge: str, proof: object) -> bool:
    """Whether ``proof`` (anything a server sent) answers ``challenge`` for ``token`` (constant time)."""
    if not isinstance(proof, str) or not re.fullmatch(CHALLENGE_PATTERN, challenge):
        return False
    return hmac.compare_digest(proof.encode(), server_proof(token, challenge).encode())
