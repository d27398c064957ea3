#!/usr/bin/env bash
# Creates one virtual environment per supported Blender version, each with the PyPI `bpy` wheel
# (Blender as a Python module) plus pytest, for the Blender test suite and the batch importer:
#   .venv-bpy-4.2  bpy 4.2.x LTS + numpy<2 (what real Blender 4.2 ships)     Python 3.11
#   .venv-bpy-4.5  bpy 4.5.x LTS                                              Python 3.11
#   .venv-bpy-5.0  bpy 5.0.x                                                  Python 3.11
#   .venv-bpy-5.2  bpy 5.2.x LTS (only where a Python 3.13 interpreter exists) Python 3.13
# plus pytest and joblib (joblib only to check the official-pkl reader against it; Blender has none).
# Python 3.11 is required: PYTHON (the same variable scripts/setup.sh reads; PYTHON311 also works)
# names it when `python3.11` is not on PATH. Python 3.13 is optional (PYTHON313 names it): without it
# 5.2 is skipped, unless BPY_VERSIONS names 5.2.
# Idempotent: a venv whose bpy already imports at the pinned version is left as it is; a half-made one
# (no pip, or made by another Python, e.g. after an interrupted run) is made again from scratch.
# Each venv is about 1 GB; pick a subset with  BPY_VERSIONS="4.5 5.0" bash scripts/setup_blender.sh
# Exact pins are what PyPI served when tested (`pip index versions bpy`); PyPI drops bpy releases
# that leave Blender's support window, so bump a pin when its install fails.
set -euo pipefail
source "$(dirname "$0")/find_python.sh"
PYTHON="$(absolute_python "${PYTHON:-}")" PYTHON311="$(absolute_python "${PYTHON311:-}")"
PYTHON313="$(absolute_python "${PYTHON313:-}")"
cd "$(dirname "$0")/.."
source scripts/free_space.sh
source scripts/pip_install.sh

declare -A BPY_PIN=([4.2]="4.2.23" [4.5]="4.5.15" [5.0]="5.0.1" [5.2]="5.2.3")
declare -A EXTRA=([4.2]="numpy<2" [4.5]="" [5.0]="" [5.2]="")
declare -A PY_VERSION=([4.2]="3.11" [4.5]="3.11" [5.0]="3.11" [5.2]="3.13")
VERSIONS="${BPY_VERSIONS:-4.2 4.5 5.0 5.2}"
for v in $VERSIONS; do
    [ -n "${BPY_PIN[$v]+set}" ] || { echo "BPY_VERSIONS: unknown Blender version '$v' (supported: 4.2 4.5 5.0 5.2)" >&2; exit 1; }
done

needs() { case " $VERSIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
declare -A PYTHON_FOR=()
if needs 4.2 || needs 4.5 || needs 5.0; then
    PYTHON_FOR[3.11]="$(find_python 3.11 "${PYTHON311:-}" "${PYTHON:-}")"
    if [ -z "${PYTHON_FOR[3.11]}" ]; then
        echo "Blender's Python module (bpy 4.2, 4.5, 5.0) needs Python 3.11, and none was found" \
            "(PYTHON=${PYTHON:-unset}, python3.11, pyenv). Install Python 3.11, or set PYTHON=/path/to/python3.11." >&2
        exit 1
    fi
fi
if needs 5.2; then
    PYTHON_FOR[3.13]="$(find_python 3.13 "${PYTHON313:-}")"
    if [ -z "${PYTHON_FOR[3.13]}" ]; then
        if [ -n "${BPY_VERSIONS:-}" ]; then
            echo "bpy 5.2 needs Python 3.13, and none was found (PYTHON313=${PYTHON313:-unset}, python3.13, pyenv)." \
                "Install Python 3.13, or set PYTHON313=/path/to/python3.13." >&2
            exit 1
        fi
        echo "skip bpy 5.2: it needs Python 3.13 and none was found (set PYTHON313=/path/to/python3.13 to include it)"
        VERSIONS="${VERSIONS/5.2/}"
    fi
fi

ready() { "$1/bin/python" -c "import bpy, pytest, joblib, sys; sys.exit(bpy.app.version_string.split()[0] != '$2')"; }

failed=()
for v in $VERSIONS; do
    venv=".venv-bpy-$v"
    python="${PYTHON_FOR[${PY_VERSION[$v]}]}"
    pin="${BPY_PIN[$v]}"
    if ready "$venv" "$pin" 2>/dev/null; then
        echo "$venv ready: bpy $pin"
        continue
    fi
    need_free_space 1500 . "bpy $pin in $venv" || { failed+=("$v"); continue; }
    echo "Installing bpy==$pin into $venv ($("$python" --version))"
    if ! works "$venv/bin/python" "${PY_VERSION[$v]/./, }" || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        # none yet, or half made (no pip: ensurepip missing or an interrupted run; another Python)
        [ ! -e "$venv" ] || echo "$venv is incomplete (no pip, or not Python ${PY_VERSION[$v]}): making it again"
        if ! "$python" -m venv --clear "$venv"; then
            echo "bpy $v: could not create $venv with $python (see above; on Debian/Ubuntu install python${PY_VERSION[$v]}-venv)" >&2
            failed+=("$v")
            continue
        fi
    fi
    # shellcheck disable=SC2086
    if ! pip_install "$venv/bin/python" "bpy==$pin" ${EXTRA[$v]:+"${EXTRA[$v]}"} "pytest>=8" "joblib>=1.3"; then
        echo "bpy $v: pip could not install bpy==$pin into $venv (see pip's error above)" >&2
        failed+=("$v")
    elif ready "$venv" "$pin"; then
        echo "$venv ready: bpy $pin"
    else
        echo "bpy $v: bpy==$pin was installed into $venv but does not import (see above)" >&2
        failed+=("$v")
    fi
done
[ ${#failed[@]} -eq 0 ] || { echo "failed: bpy ${failed[*]}" >&2; exit 1; }
