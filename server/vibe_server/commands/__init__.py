"""CLI subcommands, one module each. A module exposes ``add_parser(subparsers)`` which sets
``run=callable(args) -> int`` as the parser default. Add new commands to COMMANDS."""

from . import batch, data, evaluate, extract_features, infer, live, serve, train

COMMANDS = [infer, batch, live, serve, data, train, evaluate, extract_features]
