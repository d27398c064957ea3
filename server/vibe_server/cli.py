"""``vibe-mocap``: the command line. Each subcommand lives in its own module under ``commands/``
and registers itself through ``add_parser(subparsers)``; this file only wires them together."""

from __future__ import annotations

import argparse
import sys

from vibe_blender.core.errors import VibeError

from . import __version__
from .commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vibe-mocap", description="VIBE Mocap: video to SMPL motion.")
    parser.add_argument("--version", action="version", version=f"vibe-mocap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except VibeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file the command reads or writes: missing, no permission, disk full...
        where = f" ({err.filename})" if err.filename else ""
        print(
            f"error: {err.strerror or err}{where}. Check the path, its permissions and the free disk space.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
