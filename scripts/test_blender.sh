#!/usr/bin/env bash
# The Blender suite: for every bpy venv (scripts/setup_blender.sh) run the pure-core tests and
# `pytest -m blender` with that Blender. The smplx reference the suite compares against is made once
# with the main .venv (torch + smplx), since the bpy venvs have neither.
#   bash scripts/test_blender.sh                     # 4.2, 4.5, 5.0, and 5.2 where it is set up
#   BPY_VERSIONS="4.5" bash scripts/test_blender.sh  # only these (each must run); extra args go to pytest
# Every version it is asked for must run: 4.2, 4.5 and 5.0 always, 5.2 (it needs Python 3.13) only
# when BPY_VERSIONS names it; a version that did not run fails the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup_blender.sh
[ -x .venv/bin/python ] || bash scripts/setup.sh

REF_DIR="$(mktemp -d)"
USER_DIR="$(mktemp -d)"
trap 'rm -rf "$REF_DIR" "$USER_DIR"' EXIT
PYTHONPATH=".:server" .venv/bin/python tests/blender/make_smplx_reference.py "$REF_DIR"

# run_pytest WHAT PYTEST-ARGS...: pytest's status, except that "no tests collected" (5) is a pass when
# extra arguments (-k ...) select tests: then the selection may lie in the other run only.
selected_none=0
run_pytest() {
    local status=0
    "$@" || status=$?
    if [ "$status" -eq 5 ] && [ "$EXTRA_ARGS" -gt 0 ]; then selected_none=$((selected_none + 1)); return 0; fi
    return "$status"
}
EXTRA_ARGS=$#

failed=()
ran=()
for v in ${BPY_VERSIONS:-4.2 4.5 5.0 5.2}; do
    py=".venv-bpy-$v/bin/python"
    if ! [ -x "$py" ] || ! "$py" -c "import bpy" >/dev/null 2>&1; then
        if [ -z "${BPY_VERSIONS:-}" ] && [ "$v" = 5.2 ]; then
            echo "== bpy 5.2: not set up (it needs Python 3.13, see scripts/setup_blender.sh), skipped"
        else
            echo "== bpy $v: no working venv $(dirname "$(dirname "$py")") (see scripts/setup_blender.sh)" >&2
            failed+=("$v (not set up)")
        fi
        continue
    fi
    echo "== Blender $v: core tests + Blender suite"
    selected_none=0
    # The pure-core tests run on each Blender's own Python and numpy (numpy 1.x on 4.2-5.0, 2.x on 5.2).
    if ! BLENDER_USER_RESOURCES="$USER_DIR/$v" \
        run_pytest "$py" -m pytest -p no:cacheprovider -q tests/core "$@"; then failed+=("$v core"); fi
    # --confcutdir keeps the suite-wide conftest (torch fixtures) out of the bpy venvs.
    if ! VIBE_SMPLX_REFERENCE="$REF_DIR" BLENDER_USER_RESOURCES="$USER_DIR/$v" \
        run_pytest "$py" -m pytest -p no:cacheprovider -q -m blender tests/blender --confcutdir=tests/blender "$@"; then failed+=("$v blender"); fi
    if [ "$selected_none" -eq 2 ]; then failed+=("$v (the arguments selected no test)"); fi
    ran+=("$v")
done
[ ${#failed[@]} -eq 0 ] || { echo "Blender suite failed: ${failed[*]}" >&2; exit 1; }
echo "Blender suite passed: Blender ${ran[*]}"
