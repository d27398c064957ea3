#!/usr/bin/env bash
# Validates and builds the Blender extension zip (dist/vibe_mocap-<version>.zip) with the extension
# tool that ships inside Blender (the same code as `blender --command extension build`), run from a
# bpy venv (scripts/setup_blender.sh), so no Blender binary is needed.
#   bash scripts/build_extension.sh                 # -> dist/vibe_mocap-0.1.0.zip
#   BPY_PYTHON=.venv-bpy-4.2/bin/python bash scripts/build_extension.sh --output-dir /tmp/x
# Install it in Blender: Edit > Preferences > Get Extensions > Install from Disk.
set -euo pipefail
USAGE="usage: [BPY_PYTHON=PATH/TO/bpy-venv/bin/python] bash scripts/build_extension.sh [--output-dir DIR]"
usage_error() { echo "build_extension.sh: $1"$'\n'"$USAGE" >&2; exit 2; }
# A relative --output-dir or BPY_PYTHON path is the caller's, so it is made absolute before the cd.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

OUT_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --output-dir) [ $# -ge 2 ] && [ -n "$2" ] || usage_error "--output-dir needs a folder"; OUT_DIR="$(absolute "$2")"; shift 2 ;;
        --output-dir=) usage_error "--output-dir needs a folder" ;;
        --output-dir=*) OUT_DIR="$(absolute "${1#--output-dir=}")"; shift ;;
        -h | --help) echo "$USAGE"; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done
PY="${BPY_PYTHON:-}"
case "$PY" in */*) PY="$(absolute "$PY")" ;; esac
cd "$(dirname "$0")/.."
OUT_DIR="${OUT_DIR:-dist}"
if [ -z "$PY" ]; then
    for v in 5.0 4.5 5.2 4.2; do
        if [ -x ".venv-bpy-$v/bin/python" ]; then PY=".venv-bpy-$v/bin/python"; break; fi
    done
fi
[ -n "$PY" ] || { echo "No bpy venv found: run  bash scripts/setup_blender.sh  first." >&2; exit 1; }

# Blender's extension CLI and the list of valid tags, from the bpy wheel: one tagged line each, as
# importing bpy may print lines of its own and a path may hold spaces.
status=0
found="$("$PY" - <<'PYEOF'
import os, sys
try:
    import bpy
except ImportError as error:
    print(error, file=sys.stderr)
    sys.exit(3)
scripts = bpy.utils.system_resource("SCRIPTS")
print("BLENDER_EXT=" + os.path.join(scripts, "addons_core", "bl_pkg", "cli", "blender_ext.py"))
print("TAGS=" + os.path.join(scripts, "modules", "_bpy_internal", "extensions", "tags.py"))
PYEOF
)" || status=$?
if [ "$status" -eq 3 ]; then
    echo "bpy is not importable in $PY; run scripts/setup_blender.sh" >&2; exit 1
elif [ "$status" -ne 0 ]; then
    echo "Could not run $PY to find Blender's extension tool (exit status $status, see above)." >&2; exit 1
fi
BLENDER_EXT="" TAGS=""
while IFS= read -r line; do
    case "$line" in
        BLENDER_EXT=*) BLENDER_EXT="${line#BLENDER_EXT=}" ;;
        TAGS=*) TAGS="${line#TAGS=}" ;;
    esac
done <<<"$found"
for file in "$BLENDER_EXT" "$TAGS"; do
    [ -f "$file" ] || { echo "Blender's extension tool is not where this bpy keeps it: no '$file' ($PY)" >&2; exit 1; }
done

mkdir -p "$OUT_DIR"
"$PY" "$BLENDER_EXT" validate --valid-tags="$TAGS" .
"$PY" "$BLENDER_EXT" build --valid-tags="$TAGS" --source-dir . --output-dir "$OUT_DIR"
ZIP="$OUT_DIR/vibe_mocap-$(sed -n 's/^version = "\(.*\)"/\1/p' blender_manifest.toml).zip"
"$PY" "$BLENDER_EXT" validate --valid-tags="$TAGS" "$ZIP"
echo "Built $ZIP  (Blender: Edit > Preferences > Get Extensions > v > Install from Disk)"
echo "Then set the add-on's preference 'vibe-mocap program' to $PWD/.venv/bin/vibe-mocap (made by scripts/setup.sh)."
