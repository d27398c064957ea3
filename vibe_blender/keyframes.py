"""THE one place that writes F-curves: bulk keyframes on Blender 4.2 .. 5.x.

Blender 4.4 introduced layered ("slotted") actions and 5.0 removed ``action.fcurves``: F-curves now
live in a channelbag of a keyframe strip of a layer, for one slot (= one animated ID). 4.2 only has
``action.fcurves``. :func:`new_channels` hides that difference; everything else is the same call.
Keys are written in bulk (``keyframe_points.add`` + ``foreach_set``): 1800 frames x 99 curves take
~0.04 s, where per-frame ``keyframe_insert`` takes ~12 s. Rewriting keys keeps the F-curve (only
its keys change), so the user's curve settings survive a clean-up or a re-import, and so do the
modifiers, except those an edit bakes into the keys (see bake_reason).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from math import comb

import bpy
import numpy as np

# BezTriple interpolation enum values, as foreach_set wants them.
CONSTANT, LINEAR, BEZIER = 0, 1, 2
LAYERED_ACTIONS = bpy.app.version >= (4, 4, 0)


def rotation_channel(mode: str) -> tuple[str, int]:
    """-> (pose-bone property, size) that a bone in rotation ``mode`` reads its rotation from."""
    return {"QUATERNION": ("rotation_quaternion", 4), "AXIS_ANGLE": ("rotation_axis_angle", 4)}.get(
        mode, ("rotation_euler", 3)
    )


def rotation_path(bone: str, mode: str = "QUATERNION") -> str:
    """F-curve data path of a pose bone's rotation in rotation ``mode``: by default its quaternion,
    'pose.bones["left_hip"].rotation_quaternion'."""
    return f'pose.bones["{bpy.utils.escape_identifier(bone)}"].{rotation_channel(mode)[0]}'


def location_path(bone: str) -> str:
    """F-curve data path of a pose bone's location."""
    return f'pose.bones["{bpy.utils.escape_identifier(bone)}"].location'


def new_channels(id_block: bpy.types.ID, action_name: str):
    """Create an action for ``id_block`` and return the container whose ``.fcurves``/``.groups``
    take new curves: the action itself on 4.2, the slot's channelbag on 4.4+."""
    anim = id_block.animation_data_create()
    # the slot of the action it replaces, by name: assigned again, that action finds its slot (Blender
    # picks the slot named as the ID's last one), where the object's name (a rig renamed) would not
    previous = anim.action_slot if LAYERED_ACTIONS and anim.action is not None else None
    action = bpy.data.actions.new(action_name)
    anim.action = action
    if not LAYERED_ACTIONS:
        return action
    slot = action.slots.new(id_type=id_block.id_type, name=previous.name_display if previous else id_block.name)
    anim.action_slot = slot
    strip = action.layers.new("Layer").strips.new(type="KEYFRAME")
    return strip.channelbag(slot, ensure=True)


def channels_for_rewrite(id_block: bpy.types.ID, action_name: str):
    """The container of ``id_block``'s F-curves in its current action (see channels_of), or a new
    action's when it has none: rewriting keys keeps the action, not a new "name.001" per edit. An
    action another ID uses too (a linked duplicate) is copied first: the rewrite changes only this one."""
    own_action(id_block)
    return channels_of(id_block) or new_channels(id_block, action_name)


def own_action(id_block: bpy.types.ID) -> None:
    """Give ``id_block`` its own copy of its action when another user shares it (a linked duplicate,
    an NLA strip) or it is linked from another file (whose keys changed here would be lost when the
    file is saved: a library override's action), keeping its slot (4.4+) so it stays animated by
    the same channels."""
    anim = id_block.animation_data
    action = None if anim is None else anim.action
    if action is None or (action.library is None and action.users - int(action.use_fake_user) <= 1):
        return
    identifier = anim.action_slot.identifier if LAYERED_ACTIONS and anim.action_slot else None
    copy = action.copy()
    anim.action = copy
    if identifier is not None:
        slot = next((s for s in copy.slots if s.identifier == identifier), None)
        if slot is not None and anim.action_slot != slot:
            anim.action_slot = slot


def channels_of(id_block: bpy.types.ID):
    """The container of ``id_block``'s existing F-curves (see new_channels), or None."""
    anim = id_block.animation_data
    if anim is None or anim.action is None:
        return None
    if not LAYERED_ACTIONS:
        return anim.action
    for layer in anim.action.layers:
        for strip in layer.strips:
            bag = strip.channelbag(anim.action_slot) if anim.action_slot else None
            if bag is not None:
                return bag
    return None


# Why an ID has no F-curves of its own to read (no_channels_reason).
NO_ACTION, IN_NLA_STRIPS, NO_SLOT = "no action", "in NLA strips", "no slot"


def no_channels_reason(id_block: bpy.types.ID) -> str | None:
    """None when ``id_block`` plays an action of its own (channels_of finds its F-curves, or it has
    none yet); else why not: IN_NLA_STRIPS (no active action, its motion is in NLA strips),
    NO_ACTION, or NO_SLOT (4.4+: an action assigned without a slot for it plays nothing)."""
    anim = id_block.animation_data
    if anim is None or anim.action is None:
        return IN_NLA_STRIPS if anim is not None and any(track.strips for track in anim.nla_tracks) else NO_ACTION
    if LAYERED_ACTIONS and anim.action_slot is None:
        return NO_SLOT
    return None


def in_nla_strips_message(id_block: bpy.types.ID, then: str, *, tweak_mode_reads: bool = False) -> str:
    """What to do about IN_NLA_STRIPS, ending in ``then`` ('try again'). tweak_mode_reads: where a strip
    open for tweaking is read as the ID's own action (a retarget's source; an edit refuses tweak mode)."""
    tweak = "select its strip and press Tab (tweak mode), or " if tweak_mode_reads else ""
    return (
        f"The motion of '{id_block.name}' is in NLA strips and it has no action of its own: {tweak}assign the "
        f"strip's action to it in the Action editor (then mute or delete the strip), then {then}."
    )


def no_slot_message(id_block: bpy.types.ID, then: str) -> str:
    """What to do about NO_SLOT, ending in ``then`` ('try again')."""
    return (
        f"The action '{id_block.animation_data.action.name}' of '{id_block.name}' has no slot for it, so nothing "
        f"of it plays: pick its slot in the Action editor (the slot menu beside the action), then {then}."
    )


def keyed_range(id_block: bpy.types.ID) -> tuple[float, float] | None:
    """(first, last) frame of ``id_block``'s own keys: its action's manual frame range when one is set,
    else the range of the F-curves of its slot (4.4+: an action's own range spans every slot, those of
    other IDs sharing it too). None without an action or a key."""
    anim = id_block.animation_data
    action = None if anim is None else anim.action
    if action is None:
        return None
    if action.use_frame_range:
        return tuple(action.frame_range)
    channels = channels_of(id_block)  # (4.2: the action itself)
    ranges = [fcurve.range() for fcurve in channels.fcurves if len(fcurve.keyframe_points)] if channels else []
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def is_played(fcurve: bpy.types.FCurve) -> bool:
    """Whether Blender plays ``fcurve``: neither it nor its group is muted."""
    return not (fcurve.mute or (fcurve.group is not None and fcurve.group.mute))


def scene_fps(scene: bpy.types.Scene | None = None) -> float:
    """The frame rate of ``scene`` (default: the current one), frames per second (fps_base makes 29.97
    and the like)."""
    render = (scene or bpy.context.scene).render
    return render.fps / render.fps_base


def write_fcurve(
    channels,
    data_path: str,
    index: int,
    frames: np.ndarray,
    values: np.ndarray,
    *,
    group: str | None = None,
    interpolation: np.ndarray | int = LINEAR,
) -> bpy.types.FCurve:
    """frames (N,), values (N,) -> a new F-curve with N keys; interpolation per key or for all."""
    fcurve = channels.fcurves.new(data_path, index=index)
    if group:
        fcurve.group = channels.groups.get(group) or channels.groups.new(group)
    _set_keys(fcurve, frames, values, interpolation)
    return fcurve


def rewrite_fcurve(
    channels,
    data_path: str,
    index: int,
    frames: np.ndarray,
    values: np.ndarray,
    *,
    group: str | None = None,
    interpolation: np.ndarray | int = LINEAR,
) -> bpy.types.FCurve:
    """:func:`write_fcurve` onto the F-curve of that path and index when it exists: only its keys are
    replaced, the curve itself stays, so the user's modifiers (Noise, Cycles, Limits, ...) and
    settings (extrapolation, colour, lock, mute, hide, group) survive the rewrite."""
    fcurve = channels.fcurves.find(data_path, index=index)
    if fcurve is None:
        return write_fcurve(channels, data_path, index, frames, values, group=group, interpolation=interpolation)
    fcurve.keyframe_points.clear()
    _set_keys(fcurve, frames, values, interpolation)
    return fcurve


def _set_keys(fcurve, frames: np.ndarray, values: np.ndarray, interpolation: np.ndarray | int) -> None:
    """Give a keyless F-curve N keys in bulk: frames (N,), values (N,), interpolation per key or for all."""
    n = len(frames)
    points = fcurve.keyframe_points
    points.add(n)
    co = np.empty(2 * n, dtype=np.float32)
    co[0::2], co[1::2] = frames, values
    points.foreach_set("co", co)
    points.foreach_set("interpolation", np.broadcast_to(np.asarray(interpolation, dtype=np.int32), (n,)).copy())
    fcurve.update()  # sorts the keys and computes handles


def remove_fcurves(channels, data_path: str) -> int:
    """Remove every F-curve of ``data_path`` (all indices); -> how many there were."""
    fcurves = [f for f in channels.fcurves if f.data_path == data_path]
    for fcurve in fcurves:
        channels.fcurves.remove(fcurve)
    return len(fcurves)


def read_fcurve(channels, data_path: str, index: int) -> tuple[np.ndarray, np.ndarray] | None:
    """-> (frames (N,), values (N,)) of an existing F-curve, or None."""
    fcurve = channels.fcurves.find(data_path, index=index)
    if fcurve is None:
        return None
    co = np.empty(2 * len(fcurve.keyframe_points), dtype=np.float32)
    fcurve.keyframe_points.foreach_get("co", co)
    return co[0::2].astype(np.float64), co[1::2].astype(np.float64)


def read_vector_keys(channels, data_path: str, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """-> (frames (N,), values (N, size)) of a vector property keyed on all ``size`` channels at the
    same frames (a quaternion, a location), or None when none of them is keyed. ValueError, naming
    the channels, when only some are keyed or their keys are on different frames."""
    curves = [read_fcurve(channels, data_path, c) for c in range(size)]
    if all(curve is None for curve in curves):
        return None
    frames = next(curve[0] for curve in curves if curve is not None)
    for curve in curves:
        if curve is None or curve[0].shape != frames.shape or np.any(curve[0] != frames):
            counts = ", ".join("no keys" if k is None else f"{len(k[0])} keys" for k in curves)
            raise ValueError(f"{data_path} is not keyed on the same frames in all its channels ({counts})")
    return frames, np.stack([curve[1] for curve in curves], -1)


def sample_fcurve(
    channels, data_path: str, index: int, frames: np.ndarray, *, through_modifiers: bool = True
) -> np.ndarray | None:
    """(N,) values of an existing F-curve at ``frames``, or None when there is no such F-curve.
    through_modifiers: as Blender plays it (its modifiers applied); False: the curve of its keys
    alone, which is what a rewrite must start from when it keeps the modifiers (see rewrite_fcurve
    and bake_reason), or they would apply twice. The keys are read in bulk when
    they are exactly these frames and no modifier changes them, else the curve is evaluated there."""
    fcurve = channels.fcurves.find(data_path, index=index)
    if fcurve is None:
        return None
    keys_frames, values = read_fcurve(channels, data_path, index)
    applies_modifiers = through_modifiers and len(fcurve.modifiers) > 0
    if not applies_modifiers and keys_frames.shape == np.shape(frames) and np.all(keys_frames == frames):
        return values
    with nullcontext() if through_modifiers else _modifiers_muted(fcurve):
        return np.array([fcurve.evaluate(float(f)) for f in frames])


# Why an edit bakes a curve's active modifiers into its keys (bake_reason).
BAKE_LOOP = "loop"  # a Cycles whose keys do not span the character's frames


def bake_reason(channels, data_path: str, index: int, frames: np.ndarray) -> str | None:
    """None when new keys worked out from this F-curve's keys alone (sample_fcurve with
    through_modifiers=False) on ``frames`` (sorted; the character's frames) can keep its modifiers
    and play as it did, each active (unmuted) modifier applying once, over the new keys; else why
    not, and the curve must be read as Blender plays it and lose its active modifiers
    (drop_modifiers).

    The rule: a muted modifier plays no part, nor does a Cycles that is not first in the stack
    (Blender disables it). BAKE_LOOP for a Cycles whose curve is not keyed from frames[0] to
    frames[-1]: the new keys cover the character's frames, so the loop would span other keys. Every
    other modifier stays: over keys on their frames it plays at each frame as before, over the new
    keys there; over keys an edit moves in time, shift_modifiers moves its frames with them."""
    fcurve = channels.fcurves.find(data_path, index=index)
    if fcurve is None:
        return None
    active = [m for position, m in enumerate(fcurve.modifiers) if not m.mute and (position == 0 or m.type != "CYCLES")]
    if active and active[0].type == "CYCLES":  # only a first Cycles plays (filtered above)
        points = fcurve.keyframe_points
        if not (len(points) and len(frames) and points[0].co[0] == frames[0] and points[-1].co[0] == frames[-1]):
            return BAKE_LOOP
    return None


def drop_modifiers(channels, data_path: str, index: int) -> int:
    """Remove the active (unmuted) modifiers of an existing F-curve, those baked into its keys; a
    muted one stays, as it was. -> how many were removed."""
    fcurve = channels.fcurves.find(data_path, index=index)
    active = [modifier for modifier in fcurve.modifiers if not modifier.mute]
    for modifier in active:
        fcurve.modifiers.remove(modifier)
    return len(active)


@contextmanager
def _modifiers_muted(fcurve: bpy.types.FCurve) -> Iterator[None]:
    """Mute the F-curve's modifiers while inside, then give each its own mute state back."""
    was_muted = [modifier.mute for modifier in fcurve.modifiers]
    try:
        for modifier in fcurve.modifiers:
            modifier.mute = True
        yield
    finally:
        for modifier, mute in zip(fcurve.modifiers, was_muted):
            modifier.mute = mute


def shift_keys(id_block: bpy.types.ID, offset: float, *, keep: set[str] = frozenset()) -> None:
    """Move every key of ``id_block``'s F-curves (but those of the data paths in ``keep``) by
    ``offset`` frames, handles with them, the frames their modifiers play on (see
    shift_modifiers), and its action's manual frame range when it has one: every curve plays at
    frame f + offset what it played at f. An action another ID uses too is copied first (see
    own_action)."""
    own_action(id_block)
    channels = channels_of(id_block)
    if channels is None:
        return
    for fcurve in channels.fcurves:
        if fcurve.data_path in keep:
            continue
        points = fcurve.keyframe_points
        for attribute in ("co", "handle_left", "handle_right"):
            xy = np.empty(2 * len(points), dtype=np.float32)
            points.foreach_get(attribute, xy)
            xy[0::2] += offset
            points.foreach_set(attribute, xy)
        shift_modifiers(fcurve, offset)
        fcurve.update()
    action = id_block.animation_data.action
    if action.use_frame_range:
        _shift_range(action, "frame_start", "frame_end", offset)


def _shift_range(owner, start: str, end: str, offset: float) -> None:
    """Move the frames ``owner.<start>`` and ``owner.<end>`` by ``offset``."""
    moved = {start: getattr(owner, start) + offset, end: getattr(owner, end) + offset}
    # in the order that never puts the start after the end (Blender would move or clamp one of them)
    for name in (end, start) if offset > 0 else (start, end):
        setattr(owner, name, moved[name])


def shift_modifiers_of(id_block: bpy.types.ID, offset: float, data_paths: set[str]) -> None:
    """:func:`shift_modifiers` on the F-curves of ``id_block`` whose data path is in ``data_paths``
    (curves whose keys an edit wrote moved already)."""
    channels = channels_of(id_block)
    for fcurve in channels.fcurves if channels is not None else ():
        if fcurve.data_path in data_paths:
            shift_modifiers(fcurve, offset)


def shift_modifiers(fcurve: bpy.types.FCurve, offset: float) -> None:
    """Move by ``offset`` frames every frame-based setting of ``fcurve``'s modifiers, muted ones too:
    a restricted frame range, a Limits' frame bounds, a Stepped's offset and range, a Noise's time
    offset, an Envelope's control points, and a Generator's or Built-In Function's argument (the
    same function of the frame, moved; Blender keeps a Generator's coefficients in float32, so a
    cubic moved by a thousand frames plays about 0.01 off). A Cycles loops the keys wherever they are."""
    for modifier in fcurve.modifiers:
        # the restricted range (on a Stepped the same names set its own range too)
        _shift_range(modifier, "frame_start", "frame_end", offset)
        if modifier.type == "LIMITS":
            _shift_range(modifier, "min_x", "max_x", offset)
        elif modifier.type == "STEPPED":
            modifier.frame_offset += offset
        elif modifier.type == "NOISE":
            modifier.offset += offset  # it plays noise(frame - offset)
        elif modifier.type == "ENVELOPE":
            for point in modifier.control_points:
                point.frame += offset
        elif modifier.type == "FNGENERATOR":
            modifier.phase_offset -= modifier.phase_multiplier * offset  # fn(multiplier * frame + phase)
        elif modifier.type == "GENERATOR":
            c = list(modifier.coefficients)
            if modifier.mode == "POLYNOMIAL_FACTORISED":  # product of (c[2i] * frame + c[2i + 1])
                c[1::2] = [b - a * offset for a, b in zip(c[0::2], c[1::2])]
            else:  # sum of c[i] * frame ** i, expanded again in (frame - offset)
                c = [sum(c[i] * comb(i, j) * (-offset) ** (i - j) for i in range(j, len(c))) for j in range(len(c))]
            modifier.coefficients = c


def replace_fcurve_values(channels, data_path: str, index: int, values: np.ndarray) -> None:
    """Overwrite the values of an existing F-curve's keys (same count and frames)."""
    fcurve = channels.fcurves.find(data_path, index=index)
    co = np.empty(2 * len(fcurve.keyframe_points), dtype=np.float32)
    fcurve.keyframe_points.foreach_get("co", co)
    co[1::2] = values
    fcurve.keyframe_points.foreach_set("co", co)
    fcurve.update()
