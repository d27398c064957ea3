"""The SMPL body model as plain numpy arrays, read from the official files without chumpy or scipy.

The official ``SMPL_NEUTRAL.pkl`` is a Python-2 pickle whose arrays are partly ``chumpy.Ch`` objects
and whose ``J_regressor`` is a ``scipy.sparse.csc_matrix``. :func:`load_smpl_pkl` reads it with a
restricted unpickler that only lets numpy arrays, dtypes, sparse matrices and chumpy leaves through,
and turns the last two into dense numpy arrays. Nothing else can be constructed, so a hostile pickle
cannot run code. The same arrays travel between server and add-on as a plain ``.npz``
(:func:`save_body_model` / :func:`load_body_model`), readable with ``allow_pickle=False``.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .errors import VibeError

NUM_JOINTS = 24
NUM_BETAS = 10

# SMPL joint order (index = joint id in pose vectors), readable names with .L/.R-friendly sides.
JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)
PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21], dtype=np.int64
)


@dataclass
class BodyModel:
    """SMPL arrays with the paper's names. V vertices (6890), F faces, J = 24 joints.

    v_template (V, 3) metres, SMPL frame (Y up); faces (F, 3) int64; lbs_weights (V, J);
    shapedirs (V, 3, B) with B >= 10 shape components; posedirs (V, 3, 207) pose correctives;
    J_regressor (J, V) dense; parents (J,) int64 with parents[0] = -1.
    """

    v_template: np.ndarray
    faces: np.ndarray
    lbs_weights: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    parents: np.ndarray

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def v_shaped(self, betas: np.ndarray) -> np.ndarray:
        """betas (..., B') -> rest-pose vertices (..., V, 3) with the first B' components."""
        betas = np.asarray(betas, dtype=np.float64)
        nb = betas.shape[-1]
        return self.v_template + np.einsum("...l,vkl->...vk", betas, self.shapedirs[:, :, :nb])

    def joints_rest(self, betas: np.ndarray) -> np.ndarray:
        """J(betas): betas (..., B') -> rest joint locations (..., J, 3) metres, SMPL frame."""
        return np.einsum("jv,...vk->...jk", self.J_regressor, self.v_shaped(betas))

    def to_smplx_struct(self):
        """Attributes named as in the official pkl, for ``smplx.SMPL(data_struct=...)``."""
        kintree = np.stack([self.parents.astype(np.int64), np.arange(len(self.parents))])
        kintree[0, 0] = -1
        return _Struct(
            v_template=self.v_template, f=self.faces, weights=self.lbs_weights,
            shapedirs=self.shapedirs, posedirs=self.posedirs, J_regressor=self.J_regressor,
            kintree_table=kintree,
        )

    def validate(self, source: str = "body model") -> None:
        """Raise VibeError naming ``source`` when an array has the wrong shape."""
        V = self.num_vertices
        J = self.J_regressor.shape[0]
        expected = {
            "v_template": (V, 3), "lbs_weights": (V, J), "J_regressor": (J, V),
            "parents": (J,), "posedirs": (V, 3, 9 * (J - 1)),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise VibeError(
                    f"{source}: '{name}' has shape {getattr(self, name).shape}, expected {shape}; "
                    "the file is not an SMPL model (reinstall the model data with 'vibe-mocap data install')."
                )
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or self.faces.max() >= V or self.faces.min() < 0:
            raise VibeError(f"{source}: 'faces' is not a (F, 3) array of vertex indices below {V}.")
        if self.shapedirs.shape[:2] != (V, 3) or self.shapedirs.shape[2] < NUM_BETAS:
            raise VibeError(f"{source}: 'shapedirs' has shape {self.shapedirs.shape}, expected ({V}, 3, >={NUM_BETAS}).")


class _Struct:
    def __init__(self, **kw):
        self.__dict__.update(kw)


# --------------------------------------------------------------------------------------------
# Restricted reading of the official pickle
# --------------------------------------------------------------------------------------------

class _ChumpyLeaf:
    """Stand-in for any ``chumpy`` class: keeps the pickled state; leaves hold their value in 'x'."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


class _SparseMatrix:
    """Stand-in for scipy's csc/csr matrices: densified from (data, indices, indptr) with numpy."""

    layout = "csc"

    def __setstate__(self, state):
        self.__dict__.update(state)

    def to_dense(self) -> np.ndarray:
        d = self.__dict__
        shape = tuple(int(s) for s in d.get("_shape", d.get("shape")))
        data, indices, indptr = (np.asarray(d[k]) for k in ("data", "indices", "indptr"))
        dense = np.zeros(shape, dtype=data.dtype)
        outer = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        if self.layout == "csc":
            dense[indices, outer] = data
        else:
            dense[outer, indices] = data
        return dense


class _CsrMatrix(_SparseMatrix):
    layout = "csr"


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


def _numpy_global(module: str, name: str):
    """numpy 2 moved numpy.core to numpy._core; old pickles name the former."""
    import importlib

    if module == "numpy":
        return getattr(np, name)
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


class _RestrictedUnpickler(pickle.Unpickler):
    """Lets through numpy arrays, sparse matrices and chumpy leaves; refuses every other class."""

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_global(module, name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            import copyreg

            return copyreg._reconstructor
        if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset"):
            return {"object": object, "set": set, "frozenset": frozenset}[name]
        if module == "_codecs" and name == "encode":     # how Python 3 protocol-2 pickles store bytes
            import codecs

            return codecs.encode
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyLeaf
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
            return _SparseMatrix if name == "csc_matrix" else _CsrMatrix
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of an SMPL model file")


def _as_array(value, key: str, source: str) -> np.ndarray:
    if isinstance(value, _ChumpyLeaf):
        if "x" not in value.__dict__:
            raise VibeError(f"{source}: '{key}' is a derived chumpy expression, not stored data; "
                            "the file is not an official SMPL model.")
        value = value.__dict__["x"]
    if isinstance(value, _SparseMatrix):
        value = value.to_dense()
    return np.asarray(value)


def load_smpl_pkl(path: str | Path) -> BodyModel:
    """Read an official SMPL ``.pkl`` (chumpy or plain numpy; Python 2 or 3 pickle) -> BodyModel."""
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as err:
        raise VibeError(f"Cannot read the SMPL model '{path}': {err.strerror}. "
                        "Install the model data with 'vibe-mocap data install'.") from err
    try:
        raw = _RestrictedUnpickler(io.BytesIO(raw_bytes), encoding="latin1").load()
    except Exception as err:  # any unpickling failure means: not a model file we can use
        raise VibeError(f"'{path}' is not a readable SMPL model file ({err}). "
                        "Reinstall the model data with 'vibe-mocap data install'.") from err
    if not isinstance(raw, dict):
        raise VibeError(f"'{path}' is not an SMPL model file (it holds a {type(raw).__name__}, not a dict).")
    required = ("v_template", "f", "weights", "shapedirs", "posedirs", "J_regressor", "kintree_table")
    missing = [k for k in required if k not in raw]
    if missing:
        raise VibeError(f"'{path}' lacks {', '.join(missing)}: it is not an SMPL model file.")
    a = {k: _as_array(raw[k], k, str(path)) for k in required}
    parents = a["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    model = BodyModel(
        v_template=a["v_template"].astype(np.float64),
        faces=a["f"].astype(np.int64),
        lbs_weights=a["weights"].astype(np.float64),
        shapedirs=a["shapedirs"].astype(np.float64),
        posedirs=a["posedirs"].astype(np.float64),
        J_regressor=a["J_regressor"].astype(np.float64),
        parents=parents,
    )
    model.validate(str(path))
    return model


# --------------------------------------------------------------------------------------------
# The body model as a plain .npz (server -> add-on)
# --------------------------------------------------------------------------------------------

BODY_MODEL_FORMAT = "vibe-mocap-body-model"
BODY_MODEL_VERSION = 1


def save_body_model(path_or_file, model: BodyModel) -> None:
    """Write the arrays (float32, faces/parents int64) plus joint names to an npz without pickles."""
    arrays = {f.name: getattr(model, f.name) for f in fields(BodyModel)}
    arrays = {k: (v.astype(np.int64) if k in ("faces", "parents") else v.astype(np.float32))
              for k, v in arrays.items()}
    np.savez_compressed(
        path_or_file, format=np.array(BODY_MODEL_FORMAT), format_version=np.array(BODY_MODEL_VERSION),
        joint_names=np.array(JOINT_NAMES), **arrays,
    )


def load_body_model(path_or_file) -> BodyModel:
    """Read what :func:`save_body_model` wrote (``allow_pickle=False``)."""
    try:
        with np.load(path_or_file, allow_pickle=False) as z:
            if "format" not in z or str(z["format"]) != BODY_MODEL_FORMAT:
                raise VibeError(f"'{path_or_file}' is not a VIBE Mocap body-model file.")
            if int(z["format_version"]) > BODY_MODEL_VERSION:
                raise VibeError(f"'{path_or_file}' is a body-model file of version {int(z['format_version'])}; "
                                f"this version reads up to {BODY_MODEL_VERSION}. Update the add-on.")
            model = BodyModel(**{f.name: z[f.name].astype(np.float64) if f.name not in ("faces", "parents")
                                 else z[f.name].astype(np.int64) for f in fields(BodyModel)})
    except (OSError, ValueError, KeyError) as err:
        raise VibeError(f"Cannot read the body-model file '{path_or_file}': {err}.") from err
    model.validate(str(path_or_file))
    return model
