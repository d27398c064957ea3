"""CLI subcommands, one module each. A module exposes ``add_parser(subparsers)`` which sets
``run=callable(args) -> int`` as the parser default. Add new commands to COMMANDS."""
from . import data, infer, serve

COMMANDS = [data, infer, serve]
