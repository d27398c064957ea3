"""Characters imported from made-up tracks, for tests of what follows a person's frames (gaps,
visibility, correctives) without a result file."""

from __future__ import annotations

import bpy
import numpy as np

from vibe_blender.core.motion import MotionSet, TrackMotion
from vibe_blender.importer import ImportOptions, import_motion


def imported_tracks(body_model, spans, *, correctives="baked", pose=None):
    """[(armature, body)] imported from one track per entry of ``spans`` (the source frame ids it was
    seen on), in a 60-frame video: the first has the mean shape, the others another one; each walks
    1 m sideways 4 m in front of the camera, in a random pose near rest unless ``pose`` (T, 72)."""
    rng = np.random.default_rng(0)
    tracks = []
    for i, frame_ids in enumerate(spans):
        T = len(frame_ids)
        track_pose = rng.normal(0, 0.1, (T, 72)) if pose is None else pose
        track_pose[:, 0] = np.pi  # upright in the camera frame
        trans = np.array([0.0, 0.2, 4.0]) + np.linspace(0, 1, T)[:, None] * [1.0, 0, 0]
        shape = np.zeros(10) if i == 0 else np.r_[2.0, -1.5, np.zeros(8)]
        tracks.append(TrackMotion(f"P{i}", np.asarray(frame_ids), track_pose, trans, shape))
    motion = MotionSet(tracks, 30.0, 60, "clip")
    return import_motion(motion, body_model, ImportOptions(add_camera=False, correctives=correctives))


def linked_clip(tmp_path, body_model, spans=(range(0, 30), range(40, 60))):
    """A new file that links the imported clip's collection from the file it was imported in (the
    characters, their bodies and their actions all linked); -> that library's path."""
    imported_tracks(body_model, list(spans), correctives="off")
    library = tmp_path / "clip.blend"
    bpy.data.libraries.write(str(library), {bpy.data.collections["Mocap clip"]})
    bpy.ops.wm.read_factory_settings(use_empty=True)
    with bpy.data.libraries.load(str(library), link=True) as (_, data_to):
        data_to.collections = ["Mocap clip"]
    bpy.context.scene.collection.children.link(data_to.collections[0])
    return library
