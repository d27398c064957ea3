"""Import a motion file (or a MotionSet) into the current scene: characters, motion, fps, camera.

``import_motion_file`` is what the import operator, the capture job and the batch command call.
It also runs without any operator or UI (tests, ``python -m vibe_blender.batch``).

The scene's frame rate and range follow the first capture imported into it; later imports (into a
scene with animated characters) only grow the range, so an earlier character keeps all its frames,
and keep the frame rate, with a warning when theirs differs. Characters are built in metres and
scaled by the scene's unit scale, as Blender's FBX importer does, so they have their real size in a
scene that counts in centimetres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import bpy
import numpy as np

from . import keyframes
from .animation import FIRST_FRAME, animate_character
from .core.client import uploaded_file_name
from .core.errors import VibeError
from .core.model_data import PLACEHOLDER_MODEL, read_body_model
from .core.motion import MAX_CHARACTERS, MotionSet, ground_offset, longest_tracks
from .core.readers import read_motion_file
from .core.safe_npz import read_npz
from .core.skeleton import CAMERA_TO_BLENDER, fps_to_blender
from .core.smpl_model import BodyModel
from .progress_counter import progress_counter
from .rig_builder import build_character
from .undo_steps import new_data_removed_on_failure

ROOT_MOTION_MODES = ("full", "in_place")
BLENDER_MAX_FRAME = 1_048_574  # the last frame of Blender's timeline (MAXFRAME)
# Each frame of a person is about 100 keys (15 KB of Blender's memory, 3x with baked correctives): past
# this many person-frames an import needs many GB, so it is refused rather than started.
MAX_PERSON_FRAMES = 300_000
SENSOR_WIDTH_MM = 36.0
CLIP_START_M, CLIP_END_M = 0.1, 1000.0  # the camera's clipping range (Blender's default), in metres
SERVER_VIDEO_NAME_CHARS = 200  # the server records at most this many characters of a video's name
MAX_RUN_WARNINGS = 8  # of a result file's own warnings, shown (a hostile file may hold thousands)


@dataclass
class ImportOptions:
    correctives: str = "off"  # off | drivers | baked
    root_motion: str = "full"  # full (from the video's camera) | in_place
    add_camera: bool = True  # a camera matching the video (when the source has one)
    video_path: str = ""  # shown behind the camera when given
    # the capture panel's video: shown behind the camera when the result was captured from it (and no
    # video_path is given); any other file is imported without it, saying so once
    capture_video_path: str = ""
    set_scene: bool = True  # scene fps and frame range from the source (only grown when characters exist)
    fps: float = 0.0  # frame rate for files that store none (0: 30)
    max_characters: int = MAX_CHARACTERS  # the tracks with the most frames, when a file holds more


def import_motion_file(
    path, body_model: BodyModel | str | Path, options: ImportOptions | None = None, *, report=print, warn=None
) -> list:
    """-> [(armature_obj, mesh_obj)] for each track of the file at ``path``; a result made by the
    synthetic placeholder model, and a file that stores no frame rate imported without ``options.fps``
    (at 30 fps), are imported with one warning saying so."""
    options = options or ImportOptions()
    motion = read_motion_file(path, fps=options.fps or None, max_frames=MAX_PERSON_FRAMES)
    if not isinstance(body_model, BodyModel):
        body_model = read_body_model(body_model)
    warn = warn or report
    if not motion.fps_stored and not options.fps:
        warn(
            f"{Path(path).name} stores no frame rate, so it was imported at {motion.fps:g} fps; give the video's "
            "frame rate with --fps (in Blender: the import's Frame rate option) to play it as filmed."
        )
    if result_model_name(path) == PLACEHOLDER_MODEL:
        warn(
            f"{Path(path).name} was made by the synthetic placeholder model (the server had no model data): its "
            "motion is random, its body a stick figure, and its people were found with OpenCV's HOG detector, "
            "which also finds people who are not there. Install the model data ('vibe-mocap data install', or "
            "the add-on's Server & Model Data panel), then capture again."
        )
    if options.capture_video_path and not options.video_path and options.add_camera and motion.camera is not None:
        options = replace(options, video_path=_video_if_captured_from(path, options.capture_video_path, warn))
    return import_motion(motion, body_model, options, report=report, warn=warn)


def _recorded(path, *names: str) -> list[np.ndarray | None]:
    """The single values ``names`` a VIBE Mocap result file records, read in one pass (None for each
    that is missing or not one value, and for other files: pkl, AMASS)."""
    try:
        values = read_npz(path, names=("format", *names))
    except VibeError:
        return [None] * len(names)
    return [v if (v := values.get(name)) is not None and v.shape == () else None for name in names]


def result_model_name(path) -> str | None:
    """The model name a VIBE Mocap result file records (None for other files: pkl, AMASS)."""
    (name,) = _recorded(path, "model_name")
    return str(name) if name is not None and name.dtype.kind == "U" else None


def result_video(path) -> tuple[str, int] | None:
    """(name, frame count) of the video a VIBE Mocap result file was captured from (None for other
    files: pkl, AMASS)."""
    name, frame_count = _recorded(path, "video_name", "video_frame_count")
    if name is None or name.dtype.kind != "U" or frame_count is None or frame_count.dtype.kind not in "iu":
        return None
    return str(name), int(frame_count)


def is_named_as_recorded(video_path: str, recorded_name: str) -> bool:
    """Whether ``recorded_name``, a result's video name, names ``video_path``: as the server records a
    video sent by its path (the link's target: a local capture sends the resolved path) or uploaded
    (see :func:`uploaded_file_name`), cut to its length limit."""
    paths = {Path(video_path), Path(video_path).resolve()}
    names = {name for path in paths for name in (path.name, uploaded_file_name(path))}
    return recorded_name in {name[:SERVER_VIDEO_NAME_CHARS] for name in names}


def _video_if_captured_from(path, video_path: str, warn) -> str:
    """``video_path`` (the capture panel's video) when the result file at ``path`` was captured from it:
    it records that video's name and, as far as Blender reads it, its frame count; else "" and one
    ``warn`` saying why the camera has no background and how to give it one. A video that is missing or
    does not read is left to :func:`add_video_camera`, which says so."""
    result, video = Path(path).name, Path(video_path).name
    recorded = result_video(path)
    if recorded is None:
        warn(
            f"{result} does not record which video it was captured from, so the capture panel's video '{video}' "
            "is not shown behind its camera; pick the video in the import options (Video) to show it."
        )
        return ""
    recorded_name, recorded_frames = recorded
    if not is_named_as_recorded(video_path, recorded_name):
        warn(
            f"{result} was captured from '{recorded_name}', not from the capture panel's video '{video}': its "
            f"camera has no background. Pick '{recorded_name}' in the import options (Video) to show it."
        )
        return ""
    frames = _frame_count_in_blender(video_path)
    # Blender and the server's decoder may count a frame or two apart in some containers
    if frames is not None and abs(frames - recorded_frames) > max(2, recorded_frames // 100):
        warn(
            f"{result} was captured from a video named '{recorded_name}' of {recorded_frames} frames, but the "
            f"capture panel's video '{video_path}' has {frames}: another video of that name, so its camera has "
            "no background. Pick the video it was captured from in the import options (Video) to show it."
        )
        return ""
    return video_path


def _frame_count_in_blender(video_path: str) -> int | None:
    """The frames Blender reads in the video at ``video_path`` (None when it reads none, or there is no
    such file). A clip loaded only to count them is removed again."""
    if not Path(video_path).is_file():
        return None
    clips_before = len(bpy.data.movieclips)
    clip, _ = _load_clip(video_path)
    if clip is None:  # not readable (no permission): add_video_camera says so when it shows it
        return None
    frames = clip.frame_duration
    if len(bpy.data.movieclips) > clips_before:  # loaded here: add_video_camera loads it when it is shown
        bpy.data.movieclips.remove(clip)
    return frames if frames >= 1 else None


def _load_clip(video_path: str):
    """-> (Blender's movie clip of the file, None), or (None, why) where Blender cannot open it (no
    permission to read it...); a file it opens but cannot decode is a clip without frames."""
    try:
        return bpy.data.movieclips.load(str(video_path), check_existing=True), None
    except RuntimeError as err:
        return None, str(err).strip().rpartition(": ")[2]


def import_motion(
    motion: MotionSet, body_model: BodyModel, options: ImportOptions | None = None, *, report=print, warn=None
) -> list:
    """-> [(armature_obj, mesh_obj)] for each track. ``report`` gets the summary, ``warn`` (default:
    ``report``) what the user may want to change: people left out, a frame rate unlike the scene's."""
    options = options or ImportOptions()
    warn = warn or report
    if options.root_motion not in ROOT_MOTION_MODES:
        raise VibeError(f"Root motion must be one of {', '.join(ROOT_MOTION_MODES)}; got '{options.root_motion}'.")
    if options.max_characters < 1:
        raise VibeError(f"Max characters must be at least 1; got {options.max_characters}.")
    for warning in motion.warnings[:MAX_RUN_WARNINGS]:  # e.g. the video broke off, YOLO fell back to HOG
        warn(f"{motion.source_name}, when captured: {warning}")  # (both made displayable when read)
    tracks = longest_tracks(motion.tracks, options.max_characters)
    if len(tracks) < len(motion.tracks):
        warn(
            f"{motion.source_name} holds {len(motion.tracks)} people; importing the {len(tracks)} seen in the "
            "most frames. Raise 'Max characters' in the import options to import more."
        )
        motion = replace(motion, tracks=tracks)
    last_frame_id = _check_fits_blender(motion)
    camera_frame = any(np.allclose(t.source_to_blender, CAMERA_TO_BLENDER) for t in motion.tracks)
    # Camera-frame data: put the lowest foot on the floor (z = 0); Z-up worlds already have a floor.
    offset = ground_offset(body_model, motion.tracks) if camera_frame else np.zeros(3)
    motion.ground_offset_m = offset

    scene = bpy.context.scene
    had_motion = any(_is_animated(obj) for obj in scene.objects)  # characters, or the user's own animation
    selected_before = list(bpy.context.selected_objects)
    with new_data_removed_on_failure():  # an error halfway leaves no half-built characters behind
        collection = bpy.data.collections.new(f"Mocap {motion.source_name}")
        scene.collection.children.link(collection)
        characters = _build_characters(motion, body_model, options, collection, last_frame_id)
        camera = add_camera_for(motion, options, camera_frame, collection, warn)

    if had_motion or not options.set_scene:
        _warn_on_other_frame_rate(scene, motion, warn, had_motion=had_motion)
    if options.set_scene:
        _fit_scene(scene, motion.fps, FIRST_FRAME + last_frame_id, grow_only=had_motion)
    elif FIRST_FRAME + last_frame_id < scene.frame_start or FIRST_FRAME > scene.frame_end:
        warn(
            f"{motion.source_name}'s motion is on frames {FIRST_FRAME}..{FIRST_FRAME + last_frame_id}, outside the "
            f"scene's {scene.frame_start}..{scene.frame_end}: turn on 'Set scene', or move the keys there "
            "(Trim / Offset)."
        )
    _select_only([obj for pair in characters for obj in pair] + ([camera] if camera else []), selected_before)
    scene.frame_set(scene.frame_current)  # evaluate the new objects where the user is
    report(
        f"Imported {len(characters)} character(s) from {motion.source_name}: {', '.join(a.name for a, _ in characters)}"
    )
    return characters


def _build_characters(motion: MotionSet, body_model: BodyModel, options: ImportOptions, collection, last_frame_id):
    """-> [(armature_obj, mesh_obj)]: each track's character in ``collection``, animated."""
    scale = units_per_metre(bpy.context.scene)
    characters = []
    with progress_counter(len(motion.tracks)) as step:
        for done, track in enumerate(motion.tracks, start=1):
            armature_obj, mesh_obj = build_character(
                body_model, track.betas, track.name, correctives=options.correctives, collection=collection
            )
            armature_obj.scale = (scale,) * 3
            animate_character(
                armature_obj,
                track,
                ground_offset_m=motion.ground_offset_m,
                in_place=options.root_motion == "in_place",
                last_frame_id=last_frame_id,
            )
            characters.append((armature_obj, mesh_obj))
            step(done)
    return characters


def add_camera_for(motion: MotionSet, options: ImportOptions, camera_frame: bool, collection, warn):
    """The video's camera when the options ask for it and the motion can have one (None otherwise,
    with a word where a Video was given and would not be shown)."""
    if not options.add_camera:
        return None
    if options.root_motion == "in_place":  # the body no longer moves as filmed: a camera cannot match it
        warn("No camera was added: with root motion 'In place' the characters do not move as filmed.")
        return None
    if motion.camera is None or not camera_frame:
        if options.video_path:
            warn(f"The video '{options.video_path}' is not shown: {motion.source_name} has no camera to show it in.")
        return None
    return add_video_camera(motion, collection, video_path=options.video_path, report=warn)


def _is_animated(obj) -> bool:
    """The object has keys of its own: an action, or strips in the NLA."""
    animation = obj.animation_data
    return animation is not None and (animation.action is not None or len(animation.nla_tracks) > 0)


def _select_only(objects, selected_before) -> None:
    """The new objects selected and the first active, as Blender's own importers leave them."""
    for obj in selected_before:
        obj.select_set(False)
    for obj in objects:
        obj.select_set(True)
    if objects:
        bpy.context.view_layer.objects.active = objects[0]


def _fit_scene(scene, fps: float, last_frame: int, *, grow_only: bool) -> None:
    """The scene's frame rate and range for motion ending at ``last_frame``; ``grow_only`` (the scene
    has animation already): only widen the range, and keep its frame rate."""
    if grow_only:
        scene.frame_start, scene.frame_end = min(scene.frame_start, FIRST_FRAME), max(scene.frame_end, last_frame)
        return
    scene.render.fps, scene.render.fps_base = fps_to_blender(fps)
    scene.frame_start, scene.frame_end = FIRST_FRAME, last_frame


def _warn_on_other_frame_rate(scene, motion: MotionSet, warn, *, had_motion: bool) -> None:
    scene_fps = keyframes.scene_fps(scene)
    if abs(scene_fps - motion.fps) > 1e-3 * motion.fps:
        why, fix = (
            ("which has animation already", "Import it into a new scene to keep both right.")
            if had_motion
            else ("whose frame rate 'Set scene' (off) left as it was", "Turn on 'Set scene' to play it as filmed.")
        )
        warn(
            f"{motion.source_name} was filmed at {motion.fps:.5g} fps but the scene, {why}, plays at "
            f"{scene_fps:.5g} fps: its characters play {scene_fps / motion.fps:.4g}x as fast as filmed. {fix}"
        )


def units_per_metre(scene) -> float:
    """Blender units in a metre: 100 in a scene whose unit scale is 0.01 (it counts in centimetres)."""
    return 1.0 / scene.unit_settings.scale_length


def _check_fits_blender(motion: MotionSet) -> int:
    """The last source frame the scene shows (the video's, or the last with motion when the video's
    own count passes Blender's timeline); VibeError when the motion itself does not fit in Blender."""
    last_motion = max(int(t.frame_ids[-1]) for t in motion.tracks)
    if FIRST_FRAME + last_motion > BLENDER_MAX_FRAME:
        raise VibeError(
            f"{motion.source_name} has motion at frame {last_motion:,}, past the end of Blender's timeline "
            f"(frame {BLENDER_MAX_FRAME:,}); the file is damaged or is no capture Blender can hold."
        )
    person_frames = sum(len(t.frame_ids) for t in motion.tracks)
    if person_frames > MAX_PERSON_FRAMES:
        # fewer characters helps only where there is more than one
        fewer = "Lower 'Max characters' to import fewer people, or import" if len(motion.tracks) > 1 else "Import"
        raise VibeError(
            f"{motion.source_name} holds {person_frames:,} frames of motion over {len(motion.tracks)} "
            f"{'people' if len(motion.tracks) > 1 else 'person'}; more than {MAX_PERSON_FRAMES:,} would need "
            f"many GB of memory in Blender. {fewer} a shorter capture (about 2.7 hours of one person at "
            "30 frames/s fit)."
        )
    last_video = motion.frame_count - 1
    return last_video if FIRST_FRAME + last_video <= BLENDER_MAX_FRAME else last_motion


def add_video_camera(motion: MotionSet, collection, *, video_path: str = "", report=print):
    """A camera where the video's camera was (the camera frame's origin), with the same field of
    view and resolution, and the video as its background when ``video_path`` is given."""
    info = motion.camera
    cam_data = bpy.data.cameras.new(f"{motion.source_name} camera")
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = SENSOR_WIDTH_MM
    cam_data.lens = info.focal_length_px / info.width_px * SENSOR_WIDTH_MM
    cam_obj = bpy.data.objects.new(cam_data.name, cam_data)
    collection.objects.link(cam_obj)
    # A Blender camera looks along its -Z with +Y up; the video camera looks along +z with y down:
    # camera -> Blender world is CAMERA_TO_BLENDER · diag(1, -1, -1) = SMPL_TO_BLENDER = Rx(+90°).
    cam_obj.rotation_euler = (math.pi / 2, 0.0, 0.0)
    scene = bpy.context.scene
    cam_obj.location = tuple(units_per_metre(scene) * float(v) for v in motion.ground_offset_m)
    # what it sees, in metres as the characters are: 100 times the units in a centimetre scene
    cam_data.clip_start, cam_data.clip_end = (units_per_metre(scene) * d for d in (CLIP_START_M, CLIP_END_M))
    scene.camera = cam_obj
    scene.render.resolution_x, scene.render.resolution_y = int(info.width_px), int(info.height_px)
    scene.render.resolution_percentage = 100
    if video_path:
        if not Path(video_path).is_file():
            problem = "is a folder, not a video file" if Path(video_path).is_dir() else "was not found"
            report(f"The video '{video_path}' {problem}; the camera has no background.")
            return cam_obj
        clips_before = len(bpy.data.movieclips)
        clip, reason = _load_clip(video_path)
        if clip is None:  # the characters are built already: a camera without background, and why
            report(f"The video '{video_path}' cannot be read ({reason}); the camera has no background.")
            return cam_obj
        if clip.frame_duration < 1:  # Blender loads any file as a clip, with no frames when it cannot read it
            if len(bpy.data.movieclips) > clips_before:  # loaded here, not the user's own clip of that file
                bpy.data.movieclips.remove(clip)
            report(f"'{video_path}' is not a video Blender can read; the camera has no background.")
            return cam_obj
        clip.frame_start = FIRST_FRAME
        background = cam_data.background_images.new()
        background.source = "MOVIE_CLIP"
        background.clip = clip
        cam_data.show_background_images = True
    return cam_obj
