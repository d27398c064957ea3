"""The server proves it holds the token before a client sends it.

Every client sends the token with its requests (``Authorization: Bearer``). But another account on
this machine can listen on a loopback port first (the add-on's default, 8765, is free whenever the
add-on runs its own server on a random port) and answer ``/health`` like a VIBE server; a client
that sent the token there would give it away. So on each connection, before the token goes out on
it, a client asks ``GET /health?challenge=C`` without the token and the server answers ``proof`` =
HMAC-SHA256(token, C and the port the connection reached): only a program that knows the token can
answer, the answer reveals nothing about the token, and

- a relay on another port that passes the challenge on to a real server gets a proof for the
  server's own port, which the client refuses (a relay on the same port of another address is
  ruled out by connecting to 127.0.0.1, never to "localhost", which may be ::1);
- the token goes out only on the connection that carried the proof, so a program that takes the
  port after the server stopped gets nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

CHALLENGE_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"  # URL-safe, so it goes in a query string as it is
_CONTEXT = b"vibe-mocap server proof v2\n"  # never the same bytes as anything else the token signs


def new_challenge() -> str:
    """A fresh random challenge (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def server_proof(token: str, challenge: str, port: int) -> str:
    """The server's answer to ``challenge`` on a connection that reached its ``port``: hex
    HMAC-SHA256 keyed with the token."""
    return hmac.new(token.encode(), _CONTEXT + f"{int(port)}\n{challenge}".encode(), hashlib.sha256).hexdigest()


def proof_ok(token: str, challenge: str, port: int, proof: object) -> bool:
    """Whether ``proof`` (anything a server sent) answers ``challenge`` for ``token`` on ``port``,
    the port the client connected to (constant time)."""
    if not isinstance(proof, str) or not re.fullmatch(CHALLENGE_PATTERN, challenge):
        return False
    return hmac.compare_digest(proof.encode(), server_proof(token, challenge, port).encode())
