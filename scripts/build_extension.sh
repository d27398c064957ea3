#!/usr/bin/env bash
# Validates and builds the Blender extension zip (dist/vibe_mocap-<version>.zip) with the extension
# tool that ships inside Blender (the same code as `blender --command extension build`), run from a
# bpy venv (scripts/setup_blender.sh), so no Blender binary is needed.
#   bash scripts/build_extension.sh                 # -> dist/vibe_mocap-0.1.0.zip
#   BPY_PYTHON=.venv-bpy-4.2/bin/python bash scripts/build_extension.sh --output-dir /tmp/x
# Install it in Blender: Edit > Preferences > Get Extensions > Install from Disk.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=dist
if [ "${1:-}" = "--output-dir" ]; then OUT_DIR="$2"; fi
PY="${BPY_PYTHON:-}"
if [ -z "$PY" ]; then
    for v in 5.0 4.5 5.2 4.2; do
        if [ -x ".venv-bpy-$v/bin/python" ]; then PY=".venv-bpy-$v/bin/python"; break; fi
    done
fi
[ -n "$PY" ] || { echo "No bpy venv found: run  bash scripts/setup_blender.sh  first." >&2; exit 1; }

# Blender's extension CLI and the list of valid tags, from the bpy wheel.
read -r BLENDER_EXT TAGS < <("$PY" - <<'PYEOF' 2>/dev/null | tail -1
import os, bpy
scripts = bpy.utils.system_resource("SCRIPTS")
print(os.path.join(scripts, "addons_core", "bl_pkg", "cli", "blender_ext.py"),
      os.path.join(scripts, "modules", "_bpy_internal", "extensions", "tags.py"))
PYEOF
)
mkdir -p "$OUT_DIR"
"$PY" "$BLENDER_EXT" validate --valid-tags="$TAGS" .
"$PY" "$BLENDER_EXT" build --valid-tags="$TAGS" --source-dir . --output-dir "$OUT_DIR"
ZIP="$OUT_DIR/vibe_mocap-$(sed -n 's/^version = "\(.*\)"/\1/p' blender_manifest.toml).zip"
"$PY" "$BLENDER_EXT" validate --valid-tags="$TAGS" "$ZIP"
echo "Built $ZIP  (Blender: Edit > Preferences > Get Extensions > v > Install from Disk)"
