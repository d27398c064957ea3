"""CLI subcommands, one module each. A module exposes ``add_parser(subparsers)`` which sets
``run=callable(args) -> int`` as the parser default. Add new commands to COMMANDS."""
from . import data
from . import train
from . import evaluate
from . import extract_features

COMMANDS = [data, train, evaluate, extract_features]
