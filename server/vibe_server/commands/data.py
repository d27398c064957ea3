"""``vibe-mocap data {install,check,path}``: the licensed model-data bundle."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="install or check the model data (SMPL, checkpoints, detector)")
    p.set_defaults(run=lambda args: p.print_help() or 1)
