#!/usr/bin/env bash
# The main job, end to end, on the bundled sample clip (or the video given as first argument):
#   video -> people detected and tracked -> VIBE -> SMPL motion (out/NAME.npz)
#         -> Blender (as a Python module) -> animated character: out/NAME.blend + out/NAME.fbx
# Sets everything up on first use: .venv (the server side) and one Blender venv (.venv-bpy-5.0).
# Without the official model data installed it runs a clearly labelled synthetic placeholder model.
set -euo pipefail
cd "$(dirname "$0")/.."

VIDEO="${1:-samples/one-person-walk.mp4}"
BLENDER="${DEMO_BLENDER:-5.0}"
OUT="${DEMO_OUT:-out}"
NAME="$(basename "${VIDEO%.*}")"

bash scripts/setup.sh
BPY_VERSIONS="$BLENDER" bash scripts/setup_blender.sh
mkdir -p "$OUT"

echo "== 1/2 Video to motion: $VIDEO"
.venv/bin/vibe-mocap infer "$VIDEO" -o "$OUT/$NAME.npz" --body-model "$OUT/${NAME}_body_model.npz" \
    --detection-stride 2

echo "== 2/2 Motion to an animated character (Blender $BLENDER)"
".venv-bpy-$BLENDER/bin/python" -m vibe_blender.batch "$OUT/$NAME.npz" --body-model "$OUT/${NAME}_body_model.npz" \
    --video "$VIDEO" -o "$OUT/$NAME.blend" --fbx "$OUT/$NAME.fbx"
