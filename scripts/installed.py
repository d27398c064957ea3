"""Exit status 0 when this checkout is installed in the running Python with every dependency of
pyproject.toml (the test extra included), else 1: setup.sh then installs again."""

import importlib.metadata as metadata
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def missing() -> list[str]:
    try:
        requirements = metadata.requires("vibe-mocap") or []
        import vibe_server
    except (metadata.PackageNotFoundError, ImportError):
        return ["vibe-mocap"]
    if REPO not in Path(vibe_server.__file__).resolve().parents:
        return ["vibe-mocap (installed from another checkout)"]
    absent = []
    for requirement in requirements:
        marker = requirement.partition(";")[2]
        if "extra" in marker and '"test"' not in marker and "'test'" not in marker:
            continue  # other extras (train, ray) are installed on request only
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            absent.append(name)
    return absent


if __name__ == "__main__":
    sys.exit(1 if missing() else 0)
