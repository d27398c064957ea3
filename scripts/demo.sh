#!/usr/bin/env bash
# The main job, end to end, on the bundled sample clip (or the video given as first argument):
#   video -> people detected and tracked -> VIBE -> SMPL motion (out/NAME.npz)
#         -> Blender (as a Python module) -> animated character: out/NAME.blend + out/NAME.fbx
# Sets everything up on first use: .venv (the server side) and one Blender venv (.venv-bpy-5.0).
# Without the official model data installed it runs a clearly labelled synthetic placeholder model.
# A relative video path or DEMO_OUT is taken from the folder it is run in; DEMO_BLENDER picks the
# Blender version (default 5.0). Run again, it replaces its own outputs (out/NAME.*).
set -euo pipefail
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
VIDEO="${1:-}"
OUT="${DEMO_OUT:-}"
[ -z "$VIDEO" ] || VIDEO="$(absolute "$VIDEO")"
[ -z "$OUT" ] || OUT="$(absolute "$OUT")"
cd "$(dirname "$0")/.."

VIDEO="${VIDEO:-samples/one-person-walk.mp4}"
OUT="${OUT:-out}"
BLENDER="${DEMO_BLENDER:-5.0}"
# the file's name without its extension (a dot in a folder's name is no extension: my.clips/take -> take)
NAME="$(basename "$VIDEO")"
[ -z "${NAME%.*}" ] || NAME="${NAME%.*}"
[ ! -d "$VIDEO" ] || { echo "$VIDEO is a folder; give one video file (for many: vibe-mocap batch)." >&2; exit 1; }
[ -f "$VIDEO" ] || { echo "No such video file: $VIDEO" >&2; exit 1; }

bash scripts/setup.sh
# before the (long) inference: it ends only once the Blender venv's bpy imports, else stops the demo
BPY_VERSIONS="$BLENDER" bash scripts/setup_blender.sh
BPY_PYTHON=".venv-bpy-$BLENDER/bin/python"
mkdir -p "$OUT"

echo "== 1/2 Video to motion: $VIDEO"
.venv/bin/vibe-mocap infer "$VIDEO" -o "$OUT/$NAME.npz" --body-model "$OUT/${NAME}_body_model.npz"

echo "== 2/2 Motion to an animated character (Blender $BLENDER)"
"$BPY_PYTHON" -m vibe_blender.batch "$OUT/$NAME.npz" --body-model "$OUT/${NAME}_body_model.npz" \
    --video "$VIDEO" -o "$OUT/$NAME.blend" --fbx "$OUT/$NAME.fbx" --overwrite
