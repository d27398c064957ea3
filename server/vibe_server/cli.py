"""``vibe-mocap``: the command line. Each subcommand lives in its own module under ``commands/``
and registers itself through ``add_parser(subparsers)``; this file only wires them together."""

from __future__ import annotations

import argparse
import os
import select
import sys

from vibe_blender.core.errors import VibeError
from vibe_blender.core.shown_text import printable_lines

from . import __version__
from .commands import COMMANDS
from .pipeline.devices import is_out_of_memory, out_of_memory_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vibe-mocap", description="VIBE Mocap: video to SMPL motion.")
    parser.add_argument("--version", action="version", version=f"vibe-mocap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, unknown = parser.parse_known_args(argv)
    empty = None if hasattr(args, "unknown_args_into") else empty_argument(argv)  # (train: its own check)
    if empty is not None:
        parser.error(f"{empty} is empty (a shell variable that is not set?); give a value, or leave it out.")
    if unknown:
        # A command whose settings are free-form (`train --lr=1 ...`) takes them whatever their place,
        # so that its own run() can say what is missing; any other command refuses them, as argparse does.
        into = getattr(args, "unknown_args_into", None)
        if into is None:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        setattr(args, into, unknown + getattr(args, into))
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError as err:
        if not _stdout_is_broken():  # another pipe or socket: reported as below
            return _report_os_error(err)
        _silence_stdout()  # the reader of stdout went away (e.g. `vibe-mocap data check | head -1`): quietly
        return 141  # as a process ended by SIGPIPE: 128 + 13
    except VibeError as err:  # it may quote a file name, whose control characters the terminal would obey
        print(printable_lines(f"error: {err}"), file=sys.stderr)
        return getattr(err, "exit_status", 2)  # (an error its caller acts on has its own: serve's PortTaken)
    except OSError as err:  # a file the command reads or writes: missing, no permission, disk full...
        return _report_os_error(err)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        print(f"error: {out_of_memory_error()}", file=sys.stderr)  # (a run says where; this is anything else)
        return 2


def empty_argument(argv: list[str]) -> str | None:
    """The option given an empty value ('--checkpoint ""'), or "an argument": none of these commands'
    values may be empty, and taken as not given, "$CKPT" left unset silently meant another file or
    folder (the installed model, the current folder). (``train``'s settings, where '' may mean none,
    are checked by train/config.py.)"""
    for i, token in enumerate(argv):
        if token == "":
            before = argv[i - 1] if i else ""
            return f"the value of {before}" if before.startswith("-") and "=" not in before else "an argument"
        if token.startswith("--") and token.endswith("="):
            return f"the value of {token[:-1]}"
    return None


def _report_os_error(err: OSError) -> int:
    where = f" ({err.filename})" if err.filename else ""
    notes = "".join(f" {note}" for note in getattr(err, "__notes__", ()))  # e.g. which outputs were written
    print(
        printable_lines(
            f"error: {err.strerror or err}{where}. Check the path, its permissions and the free disk space.{notes}"
        ),
        file=sys.stderr,
    )
    return 2


def _stdout_is_broken() -> bool:
    """Whether stdout is a pipe whose reader has gone (POSIX: poll reports an error on it; elsewhere
    assumed, as stdout is what the commands write most)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (ImportError, AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout
        return True


def _silence_stdout() -> None:
    """Point stdout at the null device, so that flushing it at exit raises nothing more."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (e.g. captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
