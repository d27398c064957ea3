"""Server settings: one class, filled by ``vibe-mocap serve`` (or by tests)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from vibe_blender.core.errors import VibeError
from vibe_blender.core.user_dirs import TOKEN_MAX_CHARS, is_sendable_token, user_dir

from ..value_range import POSITIVE

DEFAULT_PORT = 8765
WILDCARD_HOSTS = ("0.0.0.0", "::")


def default_jobs_dir() -> Path:
    return user_dir("cache") / "jobs"


def is_loopback(host: str) -> bool:
    """'127.0.0.1', '::1', 'localhost' -> True; anything else (including wildcards) -> False."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    host: str = "127.0.0.1"  # bind address
    port: int = DEFAULT_PORT
    token: str = ""  # every request but /health sends "Authorization: Bearer <token>"
    data_dir: Path | None = None  # model data (None: $VIBE_DATA_DIR, then the user default)
    jobs_dir: Path = field(default_factory=default_jobs_dir)  # uploads and results, survive restarts
    device: str = "auto"
    precision: str = "auto"  # auto: fp16 on CUDA, bf16 on CPUs with AVX512-BF16/AMX, else fp32
    max_upload_bytes: int = 2 * 1024**3  # one upload
    max_queued_jobs: int = 16  # queued + running + being submitted (429 beyond)
    max_queued_upload_bytes: int = 8 * 1024**3  # disk held by uploads of unfinished jobs (507 beyond)
    probe_timeout_s: float = 60.0  # each blocking step of a submission (opening the video: 415)
    body_idle_timeout_s: float = 30.0  # a request body that sends nothing for this long gets 408
    keep_finished_days: float = 7.0  # finished jobs and their results are removed after this long...
    keep_finished_jobs: int = 200  # ...or beyond this many (oldest first; the newest 16 kept an hour at least)
    allow_synthetic: bool = False  # run a labelled placeholder model when the data is missing
    allowed_hosts: tuple[str, ...] = ()  # extra Host names (e.g. a LAN name) besides the bind address
    # the jobs the last stop left queued are cancelled at start, not run again: for a client that does not
    # follow its jobs across a restart (the Blender add-on's own server), which would wait behind them
    cancel_unfinished_jobs: bool = False

    def validate(self) -> None:
        # loopback too: any account on this machine can reach 127.0.0.1, only the user can read the token
        if not self.token:
            raise VibeError(
                "The server needs a token that every client sends; 'vibe-mocap serve' makes one "
                "in the user's config folder (or pass $VIBE_MOCAP_TOKEN)."
            )
        if not is_sendable_token(self.token):  # no client could send it
            raise VibeError(
                f"The server token must be printable ASCII without spaces, at most {TOKEN_MAX_CHARS} characters; "
                "pass another --token or $VIBE_MOCAP_TOKEN, or leave both out to use the token file."
            )
        for name in (
            "max_upload_bytes",
            "max_queued_jobs",
            "max_queued_upload_bytes",
            "probe_timeout_s",
            "body_idle_timeout_s",
            "keep_finished_days",
            "keep_finished_jobs",
        ):
            value = getattr(self, name)
            if value not in POSITIVE:
                raise VibeError(f"The server setting {name} must be a positive finite number, got {value}.")
        check_upload_limits(self.max_upload_bytes, self.max_queued_upload_bytes)
        check_port(self.port)

    @property
    def host_names(self) -> set[str]:
        """The names a request's Host header may carry (without the port)."""
        names = {self.host, *self.allowed_hosts}
        if is_loopback(self.host):
            names |= {"127.0.0.1", "localhost", "[::1]"}
        return {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}

    def host_allowed(self, host_header: str) -> bool:
        """Exact match of the Host header against the bound host (DNS-rebinding guard). A wildcard
        bind (0.0.0.0, ::) accepts any non-empty Host: the token it requires is the guard there."""
        if not host_header:
            return False
        if self.host in WILDCARD_HOSTS:
            return True
        names = self.host_names
        return host_header in names or host_header in {f"{n}:{self.port}" for n in names}


def check_upload_limits(max_upload_bytes: int, max_queued_upload_bytes: int) -> None:
    """VibeError when one upload may be larger than the space for the uploads of all waiting jobs: each
    upload between the two would be refused as if waiting jobs filled that space, with none waiting."""
    if max_upload_bytes > max_queued_upload_bytes:
        upload_mb, queued_mb = max_upload_bytes / 1024**2, max_queued_upload_bytes / 1024**2
        raise VibeError(
            f"--max-upload-mb ({upload_mb:g}) is larger than --max-queued-upload-mb ({queued_mb:g}), the space "
            "for the uploads of all waiting jobs together, so no upload larger than that space could be taken; "
            f"raise --max-queued-upload-mb to at least {upload_mb:g}, or lower --max-upload-mb."
        )


def check_port(port: int) -> None:
    """VibeError unless ``port`` is a TCP port a server can listen on."""
    if not 0 < port < 65536:
        raise VibeError(f"Port {port} is not a valid TCP port; use 1-65535 (default {DEFAULT_PORT}).")
