"""A synthetic SMPL-format body model and model-data bundle, for tests and the placeholder demo.

The real SMPL model is licensed to each user, so nothing of it ships here. This module writes files
with the official names, array names, shapes and dtypes (``SMPL_NEUTRAL.pkl`` as chumpy-style or
plain pickle, ``J_regressor_extra.npy``, ``J_regressor_h36m.npy``, ``smpl_mean_params.npz``) holding
a stick-figure body: one tube of vertices per joint, so that skinning, joints and shape keys behave
like a body, but it is *not* a human mesh. Pure numpy: Blender's Python can import it too.

Each file is written atomically (``vibe_blender.core.atomic_file``); :func:`install_synthetic_bundle` writes the whole
bundle into a temporary sibling folder and renames it into place only when whole, so the placeholder
folder that the demo falls back on is never a cut-short one; one process at a time installs or
discards it (a lock file beside it), so concurrent first runs write it once.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import sys
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vibe_blender.core.atomic_file import PART_SUFFIX, atomic_save, atomic_write, atomic_write_bytes
from vibe_blender.core.model_data import (
    EXTRA_REGRESSOR,
    H36M_REGRESSOR,
    MEAN_PARAMS,
    SMPL_FILE,
    SPIN_CHECKPOINT,
    VIBE_CHECKPOINT,
)
from vibe_blender.core.smpl_model import PARENTS, BodyModel

from ..folder_lock import waiting_folder_lock

NUM_VERTICES = 6890
NUM_FACES = 13776
TUBE_SIDES = 12

# Rest joint locations of a neutral adult (metres, SMPL frame: Y up, +X = the body's left).
REST_JOINTS = np.array(
    [
        [0.00, 0.00, 0.00],
        [0.06, -0.09, 0.00],
        [-0.06, -0.09, 0.00],
        [0.00, 0.11, -0.01],
        [0.10, -0.47, 0.00],
        [-0.10, -0.47, 0.00],
        [0.00, 0.24, 0.00],
        [0.09, -0.87, -0.04],
        [-0.09, -0.87, -0.04],
        [0.00, 0.29, 0.02],
        [0.11, -0.93, 0.08],
        [-0.11, -0.93, 0.08],
        [0.00, 0.51, -0.01],
        [0.08, 0.42, 0.00],
        [-0.08, 0.42, 0.00],
        [0.00, 0.58, 0.04],
        [0.17, 0.45, -0.01],
        [-0.17, 0.45, -0.01],
        [0.43, 0.44, -0.03],
        [-0.43, 0.44, -0.03],
        [0.68, 0.45, -0.03],
        [-0.68, 0.45, -0.03],
        [0.76, 0.44, -0.04],
        [-0.76, 0.44, -0.04],
    ]
)
# Where each joint's tube ends: its first child, or a short extension for the leaves.
_LEAF_TIPS = {
    10: [0.0, -0.02, 0.10],
    11: [0.0, -0.02, 0.10],
    15: [0.0, 0.20, 0.0],
    22: [0.08, 0.0, 0.0],
    23: [-0.08, 0.0, 0.0],
}
_RADII = np.array(
    [
        0.12,
        0.07,
        0.07,
        0.11,
        0.05,
        0.05,
        0.12,
        0.04,
        0.04,
        0.12,
        0.03,
        0.03,
        0.05,
        0.05,
        0.05,
        0.09,
        0.045,
        0.045,
        0.035,
        0.035,
        0.03,
        0.03,
        0.025,
        0.025,
    ]
)


def _tube_ends() -> np.ndarray:
    ends = np.zeros((24, 3))
    for j in range(24):
        children = np.flatnonzero(PARENTS == j)
        ends[j] = REST_JOINTS[children[0]] if len(children) else REST_JOINTS[j] + _LEAF_TIPS[j]
    return ends


def make_body_model(seed: int = 0) -> BodyModel:
    """A stick-figure SMPL: V = 6890, F = 13776, 24 joints, 10 shape components, 207 correctives."""
    rng = np.random.default_rng(seed)
    ends = _tube_ends()
    rings_total = (NUM_VERTICES - 2) // TUBE_SIDES  # 574 rings, 2 spare vertices
    rings = np.full(24, rings_total // 24)
    rings[: rings_total - rings.sum()] += 1
    verts, weights, faces, other_diagonals, ring0 = [], [], [], [], []
    angle = 2 * np.pi * np.arange(TUBE_SIDES) / TUBE_SIDES
    for j in range(24):
        a, b = REST_JOINTS[j], ends[j]
        axis = (b - a) / np.linalg.norm(b - a)
        u = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0])
        u /= np.linalg.norm(u)
        w = np.cross(axis, u)
        start = sum(len(v) for v in verts)
        for r in range(rings[j]):
            t = r / (rings[j] - 1)
            circle = np.cos(angle)[:, None] * u + np.sin(angle)[:, None] * w
            verts.append(a + t * (b - a) + _RADII[j] * circle)
            wj = np.zeros((TUBE_SIDES, 24))
            parent = PARENTS[j]
            own = 1.0 if parent < 0 else min(1.0, 0.5 + 2.0 * t)  # blend into the parent near the joint
            wj[:, j] = own
            if parent >= 0:
                wj[:, parent] += 1.0 - own
            weights.append(wj)
        ring0.append(start)
        for r in range(rings[j] - 1):
            for s in range(TUBE_SIDES):
                p, q = start + r * TUBE_SIDES + s, start + r * TUBE_SIDES + (s + 1) % TUBE_SIDES
                faces += [[p, q, p + TUBE_SIDES], [q, q + TUBE_SIDES, p + TUBE_SIDES]]
                other_diagonals += [[p, q, q + TUBE_SIDES], [p, q + TUBE_SIDES, p + TUBE_SIDES]]
    verts.append(np.zeros((2, 3)))  # two spare vertices at the pelvis
    w_spare = np.zeros((2, 24))
    w_spare[:, 0] = 1.0
    weights.append(w_spare)
    v_template = np.concatenate(verts)
    lbs_weights = np.concatenate(weights)
    # Pad to the official count with the first quads split along their other diagonal: the same
    # surface, and no face repeated (Blender's Mesh.validate(), which the glTF exporter runs, would
    # delete a repeated face from the character's body).
    faces = np.array(faces + other_diagonals[: NUM_FACES - len(faces)], dtype=np.int64)

    # J_regressor: each joint is the mean of its tube's first ring, whose centre is the joint.
    J_regressor = np.zeros((24, NUM_VERTICES))
    for j, start in enumerate(ring0):
        J_regressor[j, start : start + TUBE_SIDES] = 1.0 / TUBE_SIDES

    # Shape space: beta 0 = overall size, beta 1 = girth, the rest small smooth random fields.
    shapedirs = rng.normal(0.0, 0.002, size=(NUM_VERTICES, 3, 10))
    shapedirs[:, :, 0] = 0.03 * v_template
    radial = v_template - lbs_weights @ REST_JOINTS
    shapedirs[:, :, 1] = 0.15 * radial
    posedirs = rng.normal(0.0, 0.001, size=(NUM_VERTICES, 3, 207))
    model = BodyModel(
        v_template=v_template,
        faces=faces,
        lbs_weights=lbs_weights,
        shapedirs=shapedirs,
        posedirs=posedirs,
        J_regressor=J_regressor,
        parents=PARENTS.copy(),
    )
    model.validate("synthetic body model")
    return model


def random_joint_regressor(num_joints: int, seed: int) -> np.ndarray:
    """(num_joints, 6890) float64: each row averages 8 random vertices (like the extra/H36M files)."""
    rng = np.random.default_rng(seed)
    reg = np.zeros((num_joints, NUM_VERTICES))
    for j in range(num_joints):
        reg[j, rng.choice(NUM_VERTICES, 8, replace=False)] = 1.0 / 8
    return reg


# --------------------------------------------------------------------------------------------
# Writing the official-format pickle
# --------------------------------------------------------------------------------------------


def _fake_class(module: str, name: str):
    """A class that pickles under ``module.name`` (chumpy / old scipy) without those packages."""
    cls = type(name, (), {"__getstate__": lambda self: self.state, "__module__": module})
    cls.__qualname__ = name
    return cls


def write_smpl_pkl(path: str | Path, model: BodyModel, *, chumpy_style: bool = True) -> None:
    """Write ``model`` as the official ``SMPL_NEUTRAL.pkl`` layout (protocol 2, latin1-readable).

    chumpy_style: arrays as ``chumpy.ch.Ch`` leaves and ``J_regressor`` as a
    ``scipy.sparse.csc.csc_matrix``, with numpy 1.x module paths, as the official file has them.
    """
    kintree = np.stack([model.parents, np.arange(24)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # the official file stores the root's parent as uint32 -1
    data = {
        "v_template": model.v_template,
        "f": model.faces.astype(np.uint32),
        "weights": model.lbs_weights,
        "shapedirs": model.shapedirs,
        "posedirs": model.posedirs,
        "J_regressor": model.J_regressor,
        "kintree_table": kintree,
        "J": model.J_regressor @ model.v_template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "vert_sym_idxs": np.arange(NUM_VERTICES),
    }
    saved_modules = {}
    try:
        if chumpy_style:
            names = ("chumpy", "chumpy.ch", "scipy.sparse.csc")
            for n in names:
                saved_modules[n] = sys.modules.get(n)
            ch_mod, csc_mod = types.ModuleType("chumpy.ch"), types.ModuleType("scipy.sparse.csc")
            ch_mod.Ch, csc_mod.csc_matrix = (
                _fake_class("chumpy.ch", "Ch"),
                _fake_class("scipy.sparse.csc", "csc_matrix"),
            )
            sys.modules.update({"chumpy": types.ModuleType("chumpy"), "chumpy.ch": ch_mod, "scipy.sparse.csc": csc_mod})
            if "scipy" not in sys.modules and importlib.util.find_spec("scipy") is None:
                for parent in ("scipy", "scipy.sparse"):  # pickle imports the parents; Blender has no scipy
                    saved_modules[parent] = None
                    sys.modules[parent] = types.ModuleType(parent)
            for key in ("v_template", "weights", "shapedirs", "posedirs", "J"):
                leaf = ch_mod.Ch()
                leaf.state = {"x": data[key], "_dirty_vars": set(), "_itr": None}
                data[key] = leaf
            dense = model.J_regressor
            cols = [np.flatnonzero(dense[:, c]) for c in range(dense.shape[1])]
            sparse = csc_mod.csc_matrix()
            sparse.state = {
                "_shape": dense.shape,
                "maxprint": 50,
                "format": "csc",
                "indices": np.concatenate(cols).astype(np.int32),
                "indptr": np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32),
                "data": np.concatenate([dense[c, i] for i, c in enumerate(cols)]),
            }
            data["J_regressor"] = sparse
        blob = pickle.dumps(data, protocol=2)
    finally:
        for n, mod in saved_modules.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod
    blob = blob.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    atomic_write_bytes(path, blob)


def mean_params() -> dict[str, np.ndarray]:
    """``smpl_mean_params.npz``: 6D mean pose (upright, facing the camera), zero shape, a camera."""
    pose6d = np.tile(np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]), 24)
    pose6d[:6] = [1.0, 0.0, 0.0, -1.0, 0.0, 0.0]  # root: 180 degrees about x (camera frame, y down)
    return {
        "pose": pose6d.astype(np.float32),
        "shape": np.zeros(10, np.float32),
        "cam": np.array([0.9, 0.0, 0.0], np.float32),
    }


def write_smpl_files(folder: str | Path, *, seed: int = 0, chumpy_style: bool = True) -> BodyModel:
    """Write the body-model part of the bundle into ``folder``; returns the model written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = make_body_model(seed)
    write_smpl_pkl(folder / SMPL_FILE, model, chumpy_style=chumpy_style)
    # (file objects: given a path, numpy would append ".npy"/".npz" to the temporary name)
    atomic_write(folder / EXTRA_REGRESSOR, lambda f: np.save(f, random_joint_regressor(9, seed + 1)))
    atomic_write(folder / H36M_REGRESSOR, lambda f: np.save(f, random_joint_regressor(17, seed + 2)))
    atomic_write(folder / MEAN_PARAMS, lambda f: np.savez(f, **mean_params()))
    return model


# --------------------------------------------------------------------------------------------
# Random weights in the official checkpoint containers
# --------------------------------------------------------------------------------------------


def write_synthetic_bundle(
    folder: str | Path,
    *,
    seed: int = 0,
    chumpy_style: bool = True,
    cuda_tagged: bool = False,
    numpy1_names: bool = True,
) -> Path:
    """SMPL files + ``spin_model_checkpoint.pth.tar`` + ``vibe_model_wo_3dpw.pth.tar`` with random
    weights, written like the originals: legacy (non-zip) serialisation, ``performance`` as a numpy
    float64 pickled under numpy 1's module names, optionally CUDA-tagged storages. The regressor's
    output layers are scaled down so that the placeholder body stays near the mean pose.
    """
    import torch  # start-up: the SMPL-file writers above are pure numpy (Blender's Python uses them)

    from .. import checkpoints  # start-up: imports torch
    from ..model.vibe import VIBE  # start-up: imports torch

    folder = Path(folder)
    body_model = write_smpl_files(folder, seed=seed, chumpy_style=chumpy_style)
    torch.manual_seed(seed)
    # from the arrays just written (the same values the loader reads back from the files)
    model = VIBE(body_model, random_joint_regressor(9, seed + 1).astype(np.float32), mean_params())
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # realistic running statistics
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
        for layer in (model.regressor.decpose, model.regressor.decshape, model.regressor.deccam):
            layer.weight.mul_(0.1)
            layer.bias.zero_()
    head = {
        k.removeprefix("regressor."): v
        for k, v in checkpoints.generator_state_dict(model).items()
        if k.removeprefix("regressor.") in checkpoints.SPIN_HEAD_KEYS
    }
    spin_path, vibe_path = folder / SPIN_CHECKPOINT, folder / VIBE_CHECKPOINT

    def save_vibe(tmp: Path) -> None:
        checkpoints.save_vibe_checkpoint(tmp, model, epoch=30, performance=56.56075477600098)
        if numpy1_names:  # the official file was pickled by numpy 1.x, whose scalars live in numpy.core
            tmp.write_bytes(tmp.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))

    original_tag = torch.serialization.location_tag
    try:
        if cuda_tagged:  # what a file saved from a GPU model looks like
            torch.serialization.location_tag = lambda storage: "cuda:0"
        atomic_save(spin_path, lambda tmp: checkpoints.save_spin_checkpoint(tmp, model.backbone.state_dict(), head))
        atomic_save(vibe_path, save_vibe)
    finally:
        torch.serialization.location_tag = original_tag
    return folder


# --------------------------------------------------------------------------------------------
# The placeholder folder: whole or absent
# --------------------------------------------------------------------------------------------

DISCARDED_SUFFIX = ".old"
LOCK_SUFFIX = ".lock"  # the lock file beside the folder: ".<name>.lock" (kept; never a leftover)
INSTALL_TOKEN = ".install-token"  # in the folder: which install wrote it (see folder_identity)
STALE_SECONDS = 3600  # a temporary sibling older than this was left by a killed process


def _sibling(folder: Path, suffix: str) -> Path:
    return folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _remove_stale_siblings(folder: Path) -> None:
    """The temporary siblings of ``folder`` that killed processes left behind (a bundle is ~270 MB)."""
    prefix, now = f".{folder.name}.", time.time()
    try:
        entries = list(os.scandir(folder.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if name.startswith(prefix) and name.endswith((PART_SUFFIX, DISCARDED_SUFFIX)):
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
            except OSError:
                continue
            if stale:
                _remove(Path(entry.path))


def repeats_a_face(faces: np.ndarray) -> bool:
    """Whether two of the (F, 3) ``faces`` use the same vertices (placeholders before this check did)."""
    corners = np.sort(np.asarray(faces), axis=1)
    return len(np.unique(corners, axis=0)) < len(corners)


def is_placeholder_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is one :func:`install_synthetic_bundle` wrote (the placeholder's, not the user's data)."""
    return (Path(folder) / INSTALL_TOKEN).is_file()


def folder_identity(folder: str | Path) -> str | None:
    """Which install ``folder`` holds: the random token :func:`install_synthetic_bundle` wrote into it or,
    for a folder without one (made by hand or by an older version), its device and inode; None when
    nothing is there. (Not the inode alone: a folder made right after another was deleted often gets the
    deleted one's inode number, so a fresh install would pass for the damaged one it replaced.)"""
    folder = Path(folder)
    try:
        st = os.lstat(folder)
    except OSError:
        return None
    try:
        token = (folder / INSTALL_TOKEN).read_text(encoding="ascii").strip()
    except (OSError, ValueError):  # none, or not ours
        token = ""
    return f"install {token}" if token else f"inode {st.st_dev}:{st.st_ino}"


def _placeholder_lock(folder: Path, log: Callable[[str], None] | None):
    """One process at a time installs or discards the placeholder ``folder`` (the others wait)."""

    def waiting() -> None:
        if log:
            log(f"Waiting for another process writing the placeholder model to {folder}.")

    return waiting_folder_lock(folder.parent, f".{folder.name}{LOCK_SUFFIX}", waiting)


def install_synthetic_bundle(folder: str | Path, *, log: Callable[[str], None] | None = None, **options) -> Path:
    """:func:`write_synthetic_bundle` (``options``) into a temporary sibling of ``folder``, renamed to
    ``folder`` only when whole: a failed write leaves nothing, a killed one only a hidden sibling (removed
    by a later install once stale), never a cut-short bundle under ``folder``.

    One process at a time, the others waiting (said through ``log``): a ``folder`` that exists by then
    (installed meanwhile by another process) is kept and nothing is written; so is one that appears by
    the time of the rename where there are no locks. A caller replacing an incomplete ``folder`` discards
    it first (:func:`discard_synthetic_bundle`)."""
    folder = Path(folder)
    with _placeholder_lock(folder, log):
        if os.path.lexists(folder):
            return folder
        if log:
            log(f"Writing the synthetic placeholder model to {folder} (once).")
        _remove_stale_siblings(folder)
        tmp = _sibling(folder, PART_SUFFIX)
        tmp.mkdir()
        try:
            write_synthetic_bundle(tmp, **options)
            (tmp / INSTALL_TOKEN).write_text(uuid.uuid4().hex, encoding="ascii")  # written last: whole
            os.rename(tmp, folder)  # POSIX: replaces an empty folder; fails on a non-empty one, as on Windows
        except OSError:
            _remove(tmp)
            if not os.path.lexists(folder):
                raise
            # without locks: another process's bundle (whole: it got there by the same rename), or a
            # leftover the caller finds incomplete and discards
        except BaseException:
            _remove(tmp)
            raise
    return folder


def discard_synthetic_bundle(
    folder: str | Path, identity: str | None, *, log: Callable[[str], None] | None = None
) -> None:
    """Delete the placeholder ``folder`` found damaged, if it is still the one with ``identity`` (see
    :func:`folder_identity`): when another process has replaced it meanwhile, theirs is kept. Decided
    under the lock of :func:`install_synthetic_bundle`, so no install happens in between."""
    folder = Path(folder)
    with _placeholder_lock(folder, log):
        if identity is None or folder_identity(folder) != identity:
            return  # discarded already, or another process's bundle since
        aside = _sibling(folder, DISCARDED_SUFFIX)
        try:
            os.rename(folder, aside)  # first out of the way (one rename), then deleted at leisure
        except FileNotFoundError:
            return  # without locks: another process discarded it already
    _remove(aside)
