"""Export characters with Blender's own FBX, BVH and glTF exporters, with settings that keep the motion.

Every body is written whole, whatever its visibility keys say at the current frame (a person not
seen on that frame): the characters are shown while the exporter runs and put back after it.
Characters in a collection excluded from the view layer cannot be exported; they are left out
and named in one message.

FBX presets (``FBX_PRESET_NAMES``; ``--preset`` takes the names in lower case): "Blender" (metres,
Blender axes), "Unity" (Y up, -Z forward... Unity's FBX importer defaults, scale 1), "Unreal"
(centimetres: scale 100 via FBX units, X forward, Z up). All keep every key (no simplification) and
add no leaf bones. BVH has no axis option: the file is written in Blender's axes (Z up, -Y forward)
and a Y-up consumer must rotate it -90° about X (or import it in Blender with up = Z, forward = Y).
It is the armature's own space: the object's transform is left out, and the export says so when
there is one (an armature imported from FBX, turned 90° about X at scale 0.01, writes Y up in cm).
Batch use, with Blender as a Python module::

    python -m vibe_blender.export scene.blend --format fbx --preset unreal -o out.fbx [--object NAME]
    python -m vibe_blender.export scene.blend --format bvh -o out.bvh --object SMPL  # or the only armature
    python -m vibe_blender.export scene.blend --format glb -o out.glb
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

from .command_line import import_bpy
from .core.errors import VibeError
from .core.output_paths import check_output_path

FBX_PRESETS = {
    "DEFAULT": dict(global_scale=1.0, apply_scale_options="FBX_SCALE_NONE", axis_forward="-Z", axis_up="Y"),
    "UNITY": dict(
        global_scale=1.0,
        apply_scale_options="FBX_SCALE_UNITS",
        axis_forward="-Z",
        axis_up="Y",
        bake_space_transform=False,
    ),
    "UNREAL": dict(global_scale=1.0, apply_scale_options="FBX_SCALE_UNITS", axis_forward="X", axis_up="Z"),
}
# the add-on's name of each preset (lower case: the command line's --preset) and what it is for
FBX_PRESET_NAMES = {
    "DEFAULT": ("Blender", "Blender, Maya, most DCCs: metres, forward -Z, up Y, Blender's FBX default"),
    "UNITY": ("Unity", "Unity: metres, forward -Z, up Y, scale applied as FBX units"),
    "UNREAL": ("Unreal", "Unreal Engine: centimetres via FBX units, forward X, up Z"),
}
FORMATS = ("fbx", "bvh", "glb", "gltf")
NO_ARMATURE = "There is no armature to export; import or retarget a character first."


def _select(objects) -> None:
    import bpy

    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = objects[0]


def _with_children(objects):
    """The objects, everything under them (also a mesh under an Empty child of a rig) and the meshes
    an Armature modifier deforms with one of them, parented to it or not."""
    import bpy

    out = list(objects)
    for obj in objects:
        out += [c for c in obj.children_recursive if c not in out]
    rigs = {obj for obj in objects if obj.type == "ARMATURE"}
    for obj in bpy.context.scene.objects:
        deformed = any(m.type == "ARMATURE" and m.object in rigs for m in getattr(obj, "modifiers", ()))
        if deformed and obj not in out:
            out.append(obj)
    return out


def _exportable(objects, report) -> list:
    """The armatures ``objects`` (default: every armature of the scene) with their children, less
    those outside the view layer, which are named in one report; VibeError when none is left."""
    import bpy

    from .visibility import outside_view_layer

    objects = _with_children(objects or [o for o in bpy.context.scene.objects if o.type == "ARMATURE"])
    if not objects:
        raise VibeError(NO_ARMATURE)
    left_out = outside_view_layer(objects)
    names = ", ".join(obj.name for obj in left_out)
    if len(left_out) == len(objects):
        raise VibeError(
            f"Nothing to export: {names} are in collections excluded from the view layer; "
            "include them (the checkbox in the Outliner) and export again."
        )
    if left_out:
        report(
            f"Left out {names}: in collections excluded from the view layer (include them with the "
            "checkbox in the Outliner to export them)."
        )
    return [obj for obj in objects if obj not in left_out]


def staged_export(what: str, path: Path, exporter, *, fmt: str, **options) -> Path:
    """Run one of Blender's exporters, writing ``fmt`` (one of FORMATS), on ``path`` by
    :func:`staged_write`; its failure (a RuntimeError when it cannot write the file, or no file) is one
    VibeError sentence instead of Blender's traceback."""
    message = (
        f"Blender's {what} exporter could not write '{path}'; check that the folder is writable and the "
        "disk has free space, or choose another place."
    )
    return staged_write(
        path, "." + fmt, lambda staged: "FINISHED" in exporter(filepath=str(staged), **options), message
    )


def staged_write(path: Path, suffix: str, write, message: str) -> Path:
    """``write(staged)`` (True when it says it wrote the file) writes under another name beside ``path``
    (``.NAME.<random>.part`` and ``suffix``, the one the writer gives its files: in the same folder, so
    that paths it writes relative to the file stay right), moved onto ``path`` once whole; a .gltf, whose
    .bin takes the .gltf's name, is written into a folder beside it, and its files moved out, the .gltf
    last. Whatever the writer made under the staged name and is not moved (a part of a file, a file it
    added its own suffix to) is removed. A failure (Blender's RuntimeError, no file, an OSError) is
    VibeError(``message``), Ctrl-C inside Blender's Python a KeyboardInterrupt; either leaves an earlier
    file whole, never a part of a new one."""
    separate = suffix == ".gltf"
    try:
        if separate:
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
            staged = staging / (path.name if path.suffix.lower() == suffix else path.name + suffix)
        else:  # (made by the writer: with the permissions any new file gets)
            staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
            staged = staging.with_name(staging.name + suffix)
    except OSError as err:
        raise VibeError(message) from err
    try:
        try:
            written = write(staged)
        except RuntimeError as err:
            if "KeyboardInterrupt" in str(err):  # Ctrl-C inside the exporter's Python, as Blender reports it
                raise KeyboardInterrupt from err
            raise VibeError(message) from err
        if not written or not staged.is_file() or staged.stat().st_size == 0:
            raise VibeError(message)
        sidecars = [p for p in staging.iterdir() if p != staged] if separate else []
        taken = [p.name for p in sidecars if (path.parent / p.name).exists()]
        if taken and not path.exists():  # files of the user's own, not of an earlier export of this one
            raise VibeError(
                f"Exporting '{path.name}' writes {', '.join(repr(p.name) for p in sidecars)} beside it, and "
                f"'{path.parent / taken[0]}' is already there; move it, or choose another name (or .glb, one file)."
            )
        for sidecar in sidecars:
            os.replace(sidecar, path.parent / sidecar.name)
        os.replace(staged, path)
    except OSError as err:
        raise VibeError(message) from err
    finally:
        if separate:
            shutil.rmtree(staging, ignore_errors=True)
        else:
            _remove_staged(staging)
    return path


def _remove_staged(staging: Path) -> None:
    """Remove every file whose name starts with ``staging``'s (a random one: only the writer's files)."""
    with suppress(OSError):
        for leftover in [p for p in staging.parent.iterdir() if p.name.startswith(staging.name)]:
            with suppress(OSError):
                leftover.unlink()


@contextmanager
def _frame_range_covering(objects, report):
    """Widen the scene's frame range to every key of the objects' actions for the export, and put it
    back after: the FBX exporter bakes the scene's range only, so keys moved past its end (Trim /
    Offset) would be lost. A scene starts at frame 0 at the earliest: keys before it are said."""
    import bpy

    scene = bpy.context.scene
    before = scene.frame_start, scene.frame_end
    from . import keyframes

    ranges = [keyed for o in objects if (keyed := keyframes.keyed_range(o)) is not None]
    try:
        if ranges:
            first = math.floor(min(start for start, _ in ranges))
            if first < 0:
                report(
                    f"Keys before frame 0 (from frame {first}) are not in the FBX: Blender's scene starts at frame 0 "
                    "at the earliest. Move them with Trim / Offset first to export them."
                )
            scene.frame_start = max(0, min(before[0], first))
            scene.frame_end = max(before[1], math.ceil(max(last for _, last in ranges)))
        yield
    finally:
        scene.frame_start, scene.frame_end = before


def _prepare(path) -> Path:
    path = Path(path).resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VibeError(f"Cannot create the folder for '{path}' ({err.strerror}); choose another place.") from err
    return path


def export_fbx(path, objects=None, *, preset: str = "DEFAULT", report=print) -> Path:
    """The armatures in ``objects`` (default: every armature) with their meshes -> one FBX."""
    import bpy

    from .visibility import shown

    if preset not in FBX_PRESETS:
        raise VibeError(f"Unknown FBX preset '{preset}'; choose one of {', '.join(FBX_PRESETS)}.")
    objects = _exportable(objects, report)
    path = _prepare(path)
    with shown(objects), _frame_range_covering(objects, report):
        _select(objects)
        return staged_export(
            "FBX",
            path,
            bpy.ops.export_scene.fbx,
            fmt="fbx",
            use_selection=True,
            object_types={"ARMATURE", "MESH"},
            add_leaf_bones=False,
            bake_anim=True,
            bake_anim_use_all_actions=False,
            bake_anim_use_nla_strips=False,
            bake_anim_simplify_factor=0.0,
            use_armature_deform_only=True,
            mesh_smooth_type="OFF",
            **FBX_PRESETS[preset],
        )


def export_bvh(
    path, armature_obj, *, frame_start: int | None = None, frame_end: int | None = None, report=print
) -> Path:
    """One armature's motion -> BVH, in the armature's own space (Blender axes: Z up when its object
    is not turned; see the module docstring); ``report`` is told when the object is moved, turned or
    scaled in the scene, which the file leaves out."""
    import bpy
    import numpy as np

    from .visibility import outside_view_layer, shown

    if armature_obj is None or armature_obj.type != "ARMATURE":
        raise VibeError("BVH holds one skeleton: pick one armature to export.")
    if outside_view_layer([armature_obj]):
        raise VibeError(
            f"'{armature_obj.name}' is in a collection excluded from the view layer; include it (the "
            "checkbox in the Outliner) and export again."
        )
    scene = bpy.context.scene
    from . import keyframes

    first, last = keyframes.keyed_range(armature_obj) or (scene.frame_start, scene.frame_end)
    path = _prepare(path)
    if not np.allclose(np.array(armature_obj.matrix_world), np.eye(4), atol=1e-6):
        report(
            f"'{armature_obj.name}' is moved, turned or scaled in the scene (its object transform, or a "
            "parent's): BVH holds the armature's own space without it, so the file's axes, units and "
            "place are the armature's (Y up and centimetres for a rig imported from FBX)."
        )
    with shown([armature_obj]):
        _select([armature_obj])
        return staged_export(
            "BVH",
            path,
            bpy.ops.export_anim.bvh,
            fmt="bvh",
            frame_start=int(frame_start or first),
            frame_end=int(frame_end or last),
            rotate_mode="NATIVE",
            # every bone not connected to its parent keeps its own position channels: the retarget
            # keys the root motion on the hips, which may hang from a bone above them (a UE or Rigify
            # `root`)
            root_transform_only=False,
        )


def export_gltf(path, objects=None, *, fmt: str, report=print) -> Path:
    """Armatures with their meshes and animation -> ``fmt``: "glb" (one binary file) or "gltf" (with its
    .bin)."""
    import bpy

    from .visibility import shown

    objects = _exportable(objects, report)
    path = _prepare(path)
    with shown(objects):
        _select(objects)
        return staged_export(
            "glTF",
            path,
            bpy.ops.export_scene.gltf,
            fmt=fmt,
            use_selection=True,
            export_format="GLB" if fmt == "glb" else "GLTF_SEPARATE",
            export_animations=True,
            export_animation_mode="ACTIVE_ACTIONS",  # each character's own motion, not every action that fits
            export_force_sampling=True,
        )


def export(path, fmt: str, objects=None, *, preset: str = "DEFAULT", report=print) -> Path:
    """One entry for the panel and the CLI; ``report`` gets the names of characters left out."""
    fmt = fmt.lower()
    if fmt == "fbx":
        return export_fbx(path, objects, preset=preset, report=report)
    if fmt == "bvh":
        return export_bvh(path, _bvh_armature(objects), report=report)
    if fmt in ("glb", "gltf"):
        return export_gltf(path, objects, fmt=fmt, report=report)
    raise VibeError(f"Unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")


def _bvh_armature(objects):
    """The one armature a BVH holds: the only one among ``objects`` (default: the scene's, as the other
    formats take them all); VibeError naming the armatures to choose from when there are several."""
    import bpy

    armatures = [o for o in (objects or bpy.context.scene.objects) if o.type == "ARMATURE"]
    if len(armatures) == 1:
        return armatures[0]
    if not objects and not armatures:
        raise VibeError(NO_ARMATURE)
    if not armatures:
        names = ", ".join(o.name for o in objects)
        raise VibeError(f"BVH holds one skeleton, and none of {names} is an armature; pick an armature to export.")
    where = "were picked" if objects else "are in the scene"
    raise VibeError(
        f"BVH holds one skeleton, and {len(armatures)} armatures {where} ({', '.join(o.name for o in armatures)}): "
        "export one at a time, naming it with --object (in Blender: select only it)."
    )


def _format_of(output: Path) -> str:
    """The export format an output file's suffix names; VibeError when it names none of FORMATS."""
    fmt = output.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        got = (
            f"ends in '{output.suffix}', no format this exports" if output.suffix else "has no suffix to name a format"
        )
        suffixes = ", ".join(f".{f}" for f in FORMATS)
        raise VibeError(f"The output '{output}' {got}; end it in {suffixes}, or give --format.")
    return fmt


def with_format_suffix(path: str, fmt: str) -> str:
    """``path`` ending in ``fmt``'s suffix: the suffix of another export format is replaced (walk.fbx
    exported as BVH is walk.bvh, not walk.fbx.bvh), any other kept (take.v2 -> take.v2.bvh)."""
    stem, suffix = os.path.splitext(path)
    if suffix.lower() == "." + fmt:
        return path
    return (stem if suffix.lstrip(".").lower() in FORMATS else path) + "." + fmt


def _open_blend(blend: Path) -> None:
    """Open the .blend file; one VibeError sentence when Blender cannot read it (its RuntimeError)."""
    import bpy

    try:
        bpy.ops.wm.open_mainfile(filepath=str(blend.resolve()))
    except RuntimeError as err:
        raise VibeError(
            f"Blender cannot open '{blend}': it is not a .blend file, or it is damaged; give the .blend file "
            "saved with your characters."
        ) from err


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when the file is written, 1 when an input or the output is unusable, 2 for a usage
    error (argparse) and when this Python has no bpy or its bpy cannot be loaded, as
    ``python -m vibe_blender.batch``."""
    parser = argparse.ArgumentParser(prog="python -m vibe_blender.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("blend", type=Path, help="the .blend file holding the characters")
    parser.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    parser.add_argument(
        "--format", choices=FORMATS, help="default: from the output's suffix, which must not name another format"
    )
    presets = {name.lower(): key for key, (name, _) in FBX_PRESET_NAMES.items()}
    presets["default"] = "DEFAULT"  # the flag's earlier name for the Blender preset: scripts keep working
    parser.add_argument(
        "--preset",
        choices=presets,
        default="blender",
        help="FBX only: "
        + "; ".join(f"{name.lower()} ({use})" for name, use in FBX_PRESET_NAMES.values())
        + "; default: blender ('default' is its earlier name)",
    )
    parser.add_argument(
        "--object",
        action="append",
        default=[],
        help="armature to export (repeatable; default: all, and for BVH the only one)",
    )
    args = parser.parse_args(argv)
    named = args.output.suffix.lstrip(".").lower()
    if args.format and named in FORMATS and named != args.format:  # a BVH under an .fbx name misleads
        parser.error(
            f"argument --format: {args.format} does not match the output '{args.output}', whose suffix is "
            f"{named.upper()}'s; end the output in .{args.format}, or leave --format out to write {named.upper()}"
        )
    bpy = import_bpy("vibe_blender.export")
    if bpy is None:
        return 2
    try:
        fmt = args.format or _format_of(args.output)
        if not args.blend.is_file():
            raise VibeError(f"'{args.blend}' does not exist; give the .blend file saved with your characters.")
        check_output_path(args.output, f"the {fmt.upper()} file", {"the .blend file": args.blend})
        _open_blend(args.blend)
        objects = []
        for name in args.object:
            obj = bpy.data.objects.get(name)
            if obj is None:
                raise VibeError(f"'{args.blend.name}' has no object named '{name}'.")
            objects.append(obj)
        path = export(args.output, fmt, objects or None, preset=presets[args.preset])
    except VibeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the file is whole or left as it was
        print("interrupted", file=sys.stderr)
        return 130
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
