"""The real HTTP server (create_app + uvicorn, as ``vibe-mocap serve`` runs it) with the tiny test
model and the scripted front end, for client tests that need a server process of their own.

    python tests/server/tiny_server.py PORT JOBS_DIR SMPL_DIR \
        [FRAME_DELAY_S [stop-on-stdin-close|- [GRACE_S [OPEN_DELAY_S]]]]

GRACE_S: how long requests still running get once the server is asked to stop (default: serve's).
OPEN_DELAY_S: how long each open of a video takes (the probe before POST /jobs answers; default 0).
It exits as ``vibe-mocap serve`` does (the stop's one line, then 0, or 130 after a second Ctrl-C).

The token is the one ``vibe-mocap serve`` uses: $VIBE_MOCAP_TOKEN, else the token file in the
user's config folder (created when missing).
"""

from __future__ import annotations

import sys
from pathlib import Path

# this folder's test fakes (the script's folder is first on sys.path)
from conftest import ScriptedFrontEnd, TinyVIBE

from vibe_blender.core.user_dirs import ensure_token
from vibe_server.api.app import create_app
from vibe_server.api.settings import Settings
from vibe_server.commands.serve import GRACEFUL_SHUTDOWN_S, run_app
from vibe_server.pipeline.engine import Engine


def main(
    port: str,
    jobs_dir: str,
    smpl_dir: str,
    frame_delay_s: str = "0",
    stop: str = "-",
    grace_s: str = "",
    open_delay_s: str = "0",
) -> int:
    front_end = ScriptedFrontEnd(delay_s=float(frame_delay_s), open_delay_s=float(open_delay_s))
    engine = Engine(TinyVIBE(), model_name="tiny test model", data_dir=Path(smpl_dir), frontend=front_end.as_frontend())
    settings = Settings(port=int(port), token=ensure_token(), jobs_dir=Path(jobs_dir))
    app = create_app(settings, engine_loader=lambda s: engine)
    return run_app(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        stop_on_stdin_close=stop == "stop-on-stdin-close",
        graceful_shutdown_s=float(grace_s) if grace_s else GRACEFUL_SHUTDOWN_S,
    )


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
