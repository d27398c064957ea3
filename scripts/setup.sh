#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and installs VIBE Mocap into it.
# Idempotent: a second run only checks that everything is there (and installs again what
# pyproject.toml changed).
set -euo pipefail
source "$(dirname "$0")/find_python.sh"
PYTHON="$(absolute_python "${PYTHON:-}")"
cd "$(dirname "$0")/.."
source scripts/free_space.sh
source scripts/pip_install.sh

# PYTHON when set (it must work), else Python 3.11 (python3.11, pyenv's), else python3 when >= 3.11.
if [ -z "$PYTHON" ]; then
    PYTHON="$(find_python 3.11)"
    PYTHON="${PYTHON:-python3}"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
    echo "VIBE Mocap needs Python >= 3.11 (3.11 for the Blender tests); '$PYTHON' is" \
        "$("$PYTHON" --version 2>/dev/null || echo "not a Python that runs"). Set PYTHON=/path/to/python3.11" >&2
    exit 1
}

# A .venv left half-made (no pip: the venv module missing, or an interrupted run) is made again.
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    [ ! -e .venv ] || echo ".venv is incomplete (no pip, or no Python >= 3.11): making it again"
    echo "Creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv --clear .venv || {
        echo "Could not create .venv with $PYTHON (see above; on Debian/Ubuntu install" \
            "python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv)" >&2
        exit 1
    }
fi
# The tested torch build; pyproject only asks for torch>=2.6 so that other hosts can bring their own.
# PyTorch's own index has the CPU build (PyPI's Linux wheels are the CUDA build, several GB more);
# where that index cannot be reached, PyPI's build is installed.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    torch_index=()
    if timeout 10 .venv/bin/python -c 'import socket; socket.getaddrinfo("download.pytorch.org", 443)' 2>/dev/null; then
        torch_index=(--extra-index-url https://download.pytorch.org/whl/cpu)
        need_free_space 2500 . "PyTorch and the other packages in .venv"
    else
        echo "download.pytorch.org cannot be reached: PyTorch comes from pip's usual index (PyPI's Linux build is the CUDA one, several GB)"
        need_free_space 8000 . "PyTorch and the other packages in .venv"
    fi
    pip_install .venv/bin/python "${torch_index[@]}" torch==2.13.0
fi
# The project and its dependencies, again only when pyproject.toml changed since the last install
# (a stamp in .venv); pip's own failure stops the script.
stamp=".venv/.vibe-mocap-installed"
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! .venv/bin/python scripts/installed.py; then
    pip_install .venv/bin/python -e ".[test]"
    echo "$wanted" > "$stamp"
fi
.venv/bin/python -c 'import vibe_server, torch, cv2, smplx; print(f"vibe-mocap ready: torch {torch.__version__}, OpenCV {cv2.__version__}")'
.venv/bin/ruff --version >/dev/null    # the test extra brings ruff, which .ci/run uses
