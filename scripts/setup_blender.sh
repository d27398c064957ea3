#!/usr/bin/env bash
# Creates one virtual environment per supported Blender version, each with the PyPI `bpy` wheel
# (Blender as a Python module) plus pytest, for the Blender test suite and the batch importer:
#   .venv-bpy-4.2  bpy 4.2.x LTS + numpy<2 (what real Blender 4.2 ships)     Python 3.11
#   .venv-bpy-4.5  bpy 4.5.x LTS                                              Python 3.11
#   .venv-bpy-5.0  bpy 5.0.x                                                  Python 3.11
#   .venv-bpy-5.2  bpy 5.2.x LTS (only where a Python 3.13 interpreter exists) Python 3.13
# plus pytest and joblib (joblib only to check the official-pkl reader against it; Blender has none).
# Idempotent: a venv whose bpy already imports at the pinned version is left as it is.
# Each venv is about 1 GB; pick a subset with  BPY_VERSIONS="4.5 5.0" bash scripts/setup_blender.sh
# Exact pins are what PyPI served when tested (`pip index versions bpy`); PyPI drops bpy releases
# that leave Blender's support window, so bump a pin when its install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/free_space.sh

PYTHON311="${PYTHON311:-python3.11}"
works() { [ -n "$1" ] && "$1" -c "import sys; sys.exit(sys.version_info[:2] != ($2))" >/dev/null 2>&1; }
# python3.13 may be a pyenv shim that is not active here: fall back to pyenv's own install folder.
PYTHON313="${PYTHON313:-python3.13}"
works "$PYTHON313" "3, 13" || PYTHON313="$(ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 2>/dev/null | head -1 || true)"
works "$PYTHON313" "3, 13" || PYTHON313=""
works "$PYTHON311" "3, 11" || PYTHON311=""

declare -A BPY_PIN=([4.2]="4.2.23" [4.5]="4.5.15" [5.0]="5.0.1" [5.2]="5.2.3")
declare -A EXTRA=([4.2]="numpy<2" [4.5]="" [5.0]="" [5.2]="")
VERSIONS="${BPY_VERSIONS:-4.2 4.5 5.0 5.2}"

pip_q() { "$@" -q --disable-pip-version-check 2>&1 | grep -v "is ignored: it is neither" || true; }

failed=()
for v in $VERSIONS; do
    venv=".venv-bpy-$v"
    if [ "$v" = "5.2" ]; then python="$PYTHON313"; else python="$PYTHON311"; fi
    if [ -z "$python" ]; then
        echo "skip bpy $v: no $([ "$v" = 5.2 ] && echo Python 3.13 || echo Python 3.11) interpreter found"
        continue
    fi
    pin="${BPY_PIN[$v]}"
    if "$venv/bin/python" -c "import bpy, pytest, joblib, sys; sys.exit(bpy.app.version_string.split()[0] != '$pin')" 2>/dev/null; then
        echo "$venv ready: bpy $pin"
        continue
    fi
    need_free_space 1500 . "bpy $pin in $venv" || { failed+=("$v"); continue; }
    echo "Installing bpy==$pin into $venv ($("$python" --version))"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    # shellcheck disable=SC2086
    pip_q "$venv/bin/pip" install "bpy==$pin" ${EXTRA[$v]:+"${EXTRA[$v]}"} "pytest>=8" "joblib>=1.3"
    if "$venv/bin/python" -c "import bpy; print('$venv ready: bpy', bpy.app.version_string)"; then :; else
        echo "bpy $v could not be installed in $venv" >&2; failed+=("$v")
    fi
done
[ ${#failed[@]} -eq 0 ] || { echo "failed: bpy ${failed[*]}" >&2; exit 1; }
