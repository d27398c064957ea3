"""A server process for a test: started, waited for until its /health answers, stopped afterwards.

    with running_server([python, "-m", "vibe_server", "serve", "--port", str(port)], port=port,
                        token=token, log_path=log, env=env) as url:   # http://127.0.0.1:PORT
        ...

Only the standard library: the Blender suite uses it too (tests/ is on its path).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def health_answers(url: str, token: str) -> bool:
    """True when ``url``/api/v1/health answers 200 to the token."""
    request = urllib.request.Request(f"{url}/api/v1/health", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


@contextlib.contextmanager
def running_server(
    command: list[str], *, port: int, token: str, log_path: Path, env: dict, timeout_s: float = 120
) -> Iterator[str]:
    """Start ``command`` (a server listening on 127.0.0.1:port), yield its URL once /health answers;
    AssertionError with the server's log when it exits or does not answer within ``timeout_s``."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not health_answers(url, token):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the server did not start:\n" + Path(log_path).read_text())
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
