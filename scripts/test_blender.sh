#!/usr/bin/env bash
# The Blender suite: for every bpy venv (scripts/setup_blender.sh) run the pure-core tests and
# `pytest -m blender` with that Blender. The smplx reference the suite compares against is made once
# with the main .venv (torch + smplx), since the bpy venvs have neither.
#   bash scripts/test_blender.sh                     # all versions that are set up
#   BPY_VERSIONS="4.5" bash scripts/test_blender.sh  # one version; extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup_blender.sh
[ -x .venv/bin/python ] || bash scripts/setup.sh

REF_DIR="$(mktemp -d)"
USER_DIR="$(mktemp -d)"
trap 'rm -rf "$REF_DIR" "$USER_DIR"' EXIT
PYTHONPATH=".:server" .venv/bin/python tests/blender/make_smplx_reference.py "$REF_DIR"

failed=()
for v in ${BPY_VERSIONS:-4.2 4.5 5.0 5.2}; do
    py=".venv-bpy-$v/bin/python"
    [ -x "$py" ] || { echo "== bpy $v: no venv (see scripts/setup_blender.sh), skipped"; continue; }
    echo "== Blender $v: core tests + Blender suite"
    # The pure-core tests run on each Blender's own Python and numpy (numpy 1.x on 4.2-5.0, 2.x on 5.2).
    if ! BLENDER_USER_RESOURCES="$USER_DIR/$v" \
        "$py" -m pytest -p no:cacheprovider -q tests/core "$@"; then failed+=("$v core"); fi
    # --confcutdir keeps the suite-wide conftest (torch fixtures) out of the bpy venvs.
    if ! VIBE_SMPLX_REFERENCE="$REF_DIR" BLENDER_USER_RESOURCES="$USER_DIR/$v" \
        "$py" -m pytest -p no:cacheprovider -q -m blender tests/blender --confcutdir=tests/blender "$@"; then failed+=("$v blender"); fi
done
[ ${#failed[@]} -eq 0 ] || { echo "Blender suite failed: ${failed[*]}" >&2; exit 1; }
echo "Blender suite passed"
