"""Show objects for a moment: Blender's exporters leave out what is hidden, and a body is hidden
by its visibility keys on the frames where its person was not seen.

:func:`shown` un-hides the objects (their eye and monitor flags, render flag, and those of the
collections holding them), mutes their animated visibility, and puts every flag, mute and the
selection back exactly as they were afterwards, also when the export fails. Objects outside the
view layer (in an excluded collection) cannot be shown this way; :func:`outside_view_layer` names them.
"""

from __future__ import annotations

from contextlib import contextmanager

import bpy

from . import keyframes

OBJECT_FLAGS = ("hide_viewport", "hide_render", "hide_select")
COLLECTION_FLAGS = ("hide_viewport", "hide_select")
ANIMATED_FLAGS = ("hide_viewport", "hide_render")


def outside_view_layer(objects) -> list:
    """The objects the current view layer does not hold (their collections are excluded from it).
    Read from the collections' exclude flags: ``view_layer.objects`` is synced lazily."""
    held = _objects_held(bpy.context.view_layer.layer_collection)
    return [obj for obj in objects if obj not in held]


def collection_outside_view_layer(collection) -> bool:
    """True unless ``collection`` is in the current view layer (linked below the scene's collection
    through collections none of which is excluded)."""
    return not _holds_collection(bpy.context.view_layer.layer_collection, collection)


def _holds_collection(layer_collection, collection) -> bool:
    return any(
        not child.exclude and (child.collection == collection or _holds_collection(child, collection))
        for child in layer_collection.children
    )


def _objects_held(layer_collection) -> set:
    held = set(layer_collection.collection.objects)
    for child in layer_collection.children:
        if not child.exclude:
            held |= _objects_held(child)
    return held


@contextmanager
def shown(objects):
    """Within the block the ``objects`` (all in the view layer) are visible, renderable and
    selectable on every frame; afterwards everything is as it was."""
    view_layer = bpy.context.view_layer
    undo = []  # (restore function, argument), run in reverse order
    try:
        undo.append((_restore_selection, (list(bpy.context.selected_objects), view_layer.objects.active)))
        for fcurve in _visibility_fcurves(objects):
            undo.append((_set_mute, (fcurve, fcurve.mute)))
            fcurve.mute = True
        for layer_collection in _layer_collections_holding(view_layer.layer_collection, objects):
            flags = [(layer_collection, "hide_viewport")]
            flags += [(layer_collection.collection, flag) for flag in COLLECTION_FLAGS]
            for owner, flag in flags:
                undo.append((_set_flag, (owner, flag, getattr(owner, flag))))
                setattr(owner, flag, False)
        for obj in objects:
            undo.append((_set_hidden, (obj, obj.hide_get())))
            obj.hide_set(False)
            for flag in OBJECT_FLAGS:
                undo.append((_set_flag, (obj, flag, getattr(obj, flag))))
                setattr(obj, flag, False)
        yield
    finally:
        for restore, args in reversed(undo):
            restore(*args)


def _visibility_fcurves(objects) -> list:
    fcurves = []
    for obj in objects:
        channels = keyframes.channels_of(obj)
        if channels is not None:
            fcurves += [f for f in channels.fcurves if f.data_path in ANIMATED_FLAGS and not f.mute]
    return fcurves


def _layer_collections_holding(parent, objects) -> list:
    """The layer collections below ``parent`` (at any depth) that hold any of ``objects``, however deep."""
    found = []
    for child in parent.children:
        if set(child.collection.all_objects).intersection(objects):
            found += [child, *_layer_collections_holding(child, objects)]
    return found


def _set_flag(owner, flag: str, value: bool) -> None:
    setattr(owner, flag, value)


def _set_mute(fcurve, mute: bool) -> None:
    fcurve.mute = mute


def _set_hidden(obj, hidden: bool) -> None:
    obj.hide_set(hidden)


def _restore_selection(selected: list, active) -> None:
    view_layer = bpy.context.view_layer
    for obj in view_layer.objects:
        obj.select_set(obj in selected)
    view_layer.objects.active = active
