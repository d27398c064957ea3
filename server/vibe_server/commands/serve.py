"""``vibe-mocap serve``: the HTTP job server for the Blender add-on (see docs/server.md)."""
from __future__ import annotations

import os
from pathlib import Path

from ..api.settings import DEFAULT_PORT, Settings, default_jobs_dir

TOKEN_ENV = "VIBE_MOCAP_TOKEN"


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the inference server for the Blender add-on",
                       description="Serve the HTTP job API. Binds 127.0.0.1 by default; any other address "
                                   f"needs a token (--token or ${TOKEN_ENV}).")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"require 'Authorization: Bearer TOKEN' (default ${TOKEN_ENV})")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another name clients use for this server in the Host header (repeatable)")
    p.add_argument("--data-dir", help="model-data folder (default: $VIBE_DATA_DIR, then the user data folder)")
    p.add_argument("--jobs-dir", default=str(default_jobs_dir()), help="where uploads and results are kept")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (one server per GPU)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto (default): fp16 on CUDA, bf16 on a CPU with AVX512-BF16 or AMX, else fp32; "
                        "a job with params {\"official\": true} always runs in fp32")
    p.add_argument("--fast", action="store_true", help="bf16 (CPU) / fp16 (CUDA) even where auto chooses fp32")
    p.add_argument("--max-upload-mb", type=int, default=4096, help="largest accepted upload (default 4096 MiB)")
    p.add_argument("--synthetic", action="store_true",
                   help="when the model data is missing, serve a labelled random-weight placeholder model")
    p.set_defaults(run=run)


def run(args) -> int:
    import uvicorn

    from ..api.app import create_app
    from ..pipeline.run import resolve_device
    from ..pipeline.cpu_features import choose_precision

    device = resolve_device(args.device)
    settings = Settings(host=args.host, port=args.port, token=args.token or None,
                        data_dir=Path(args.data_dir) if args.data_dir else None, jobs_dir=Path(args.jobs_dir),
                        device=device, precision=choose_precision(args.precision, fast=args.fast, device=device),
                        max_upload_bytes=args.max_upload_mb * 1024 ** 2, allow_synthetic=args.synthetic,
                        allowed_hosts=tuple(args.allowed_host))
    app = create_app(settings)                     # validates: a non-loopback bind needs a token
    print(f"VIBE Mocap server on http://{args.host}:{args.port}/api/v1 (jobs in {settings.jobs_dir})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", proxy_headers=False,
                server_header=False, date_header=False)
    return 0
