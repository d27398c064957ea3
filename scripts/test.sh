#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: the Python suite, then the Blender suite once per
# supported Blender version (each in its own bpy venv, see scripts/setup_blender.sh).
# Extra arguments go to the Python suite's pytest, e.g.  scripts/test.sh -k checkpoints
# It fails when a required Blender version (4.2, 4.5, 5.0) could not be set up or tested.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The Blender venvs first, so that what is missing (Python 3.11, a bpy wheel) is said at once; the
# Python suite runs all the same, and the run fails at the end.
blender_setup=0
bash scripts/setup_blender.sh || blender_setup=$?
source scripts/free_space.sh
# the model-data, training and benchmark tests hold up to about 3 GB of temporary files at once
need_free_space 3500 "${TMPDIR:-/tmp}" "the tests' temporary files (TMPDIR can name another folder)"
python_suite=0
.venv/bin/python -m pytest -m "not blender" "$@" || python_suite=$?
if [ "$blender_setup" -ne 0 ]; then
    echo "The Blender suite did not run: scripts/setup_blender.sh failed (its message is above)." >&2
    exit 1
fi
bash scripts/test_blender.sh
exit "$python_suite"
