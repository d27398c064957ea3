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
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from .errors import VibeError
from .regular_file import open_user_file
from .safe_npz import read_npz
from .safe_pickle import RestrictedUnpickler, StandIn, describe_failure
from .shown_text import shown_value

NUM_JOINTS = 24
NUM_BETAS = 10
NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)  # 207: one 3x3 rotation per joint but the root
# Largest magnitude of each array a body model may hold (metres, or weights), far above any real one's:
# finite numbers beyond these would only overflow Blender's float32 mesh and shape keys.
VALUE_LIMITS = {"v_template": 10.0, "shapedirs": 1.0, "posedirs": 1.0, "J_regressor": 2.0, "lbs_weights": 2.0}
MAX_VERTICES = 100_000  # SMPL has 6890, SMPL-X 10475: more is no body model (and bounds the dense J_regressor)
MAX_FACES = 4 * MAX_VERTICES  # a closed triangle mesh has about 2 a vertex (SMPL 13776 for 6890)
MAX_SHAPE_COMPONENTS = 512  # SMPL 1.1 has 300, SMPL-X 400 (300 shape and 100 expression)
# The most an SMPL .pkl may hold: the official files are tens of MB. The file is read whole before it
# is unpickled, so a larger one is refused unread (a sparse file of gigabytes would fill the memory).
MAX_SMPL_PKL_BYTES = 256 << 20

# SMPL joint order (index = joint id in pose vectors), readable names with .L/.R-friendly sides.
JOINT_NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)
PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21], dtype=np.int64)


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
            v_template=self.v_template,
            f=self.faces,
            weights=self.lbs_weights,
            shapedirs=self.shapedirs,
            posedirs=self.posedirs,
            J_regressor=self.J_regressor,
            kintree_table=kintree,
        )

    def validate(self, source: str = "body model") -> None:
        """Raise VibeError naming ``source`` unless the arrays are SMPL's: the shapes
        :func:`check_body_model_shapes` checks, faces indexing the vertices, SMPL's joint parents, and
        values within :data:`VALUE_LIMITS`."""
        check_body_model_shapes({f.name: getattr(self, f.name) for f in fields(self)}, source)
        V = self.num_vertices
        if self.faces.max() >= V or self.faces.min() < 0:
            raise VibeError(f"{source}: 'faces' is not a (F, 3) array of vertex indices below {V}.")
        if not np.array_equal(self.parents, PARENTS):
            raise VibeError(
                f"{source}: the joint parents {self.parents.tolist()} are not SMPL's {PARENTS.tolist()}; "
                "the file is not an SMPL model."
            )
        for name, limit in VALUE_LIMITS.items():  # finite numbers far off a body overflow Blender's float32
            array = getattr(self, name)
            if array.size and not np.max(np.abs(array)) <= limit:
                raise VibeError(
                    f"{source}: '{name}' holds a value of {float(np.max(np.abs(array))):.3g}, beyond the ±{limit:g} "
                    "any body model has; the file is damaged (reinstall the model data with 'vibe-mocap data install')."
                )


def check_body_model_shapes(arrays: dict[str, np.ndarray], source: str) -> None:
    """VibeError naming ``source`` unless ``arrays`` (named as :class:`BodyModel`'s fields) have SMPL's
    shapes: V vertices (1..MAX_VERTICES), 24 joints, (V, 3, 207) pose correctives, (V, 3, B) shape
    components with 10 <= B <= MAX_SHAPE_COMPONENTS, (F, 3) faces with 1 <= F <= MAX_FACES. The readers
    check them on the arrays as stored, before converting them: as float64, a bool or uint8 array
    takes 8 times its bytes."""
    template = arrays["v_template"]
    V = int(template.shape[0]) if template.ndim else 0
    J = NUM_JOINTS
    expected = {
        "v_template": (V, 3),
        "lbs_weights": (V, J),
        "J_regressor": (J, V),
        "parents": (J,),
        "posedirs": (V, 3, NUM_POSE_BASIS),
    }
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise VibeError(
                f"{source}: '{name}' has shape {arrays[name].shape}, expected {shape}; "
                "the file is not an SMPL model (reinstall the model data with 'vibe-mocap data install')."
            )
    if not 0 < V <= MAX_VERTICES:
        raise VibeError(
            f"{source}: {V} vertices, outside the 1..{MAX_VERTICES} of any body model; the file is damaged."
        )
    faces = arrays["faces"]
    if faces.ndim != 2 or faces.shape[1] != 3 or not 0 < len(faces) <= MAX_FACES:
        raise VibeError(
            f"{source}: 'faces' has shape {faces.shape}, not (F, 3) with 1..{MAX_FACES} faces; the file is damaged."
        )
    shapedirs = arrays["shapedirs"]
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (V, 3) or shapedirs.shape[2] < NUM_BETAS:
        raise VibeError(f"{source}: 'shapedirs' has shape {shapedirs.shape}, expected ({V}, 3, >={NUM_BETAS}).")
    if shapedirs.shape[2] > MAX_SHAPE_COMPONENTS:
        raise VibeError(
            f"{source}: 'shapedirs' has {shapedirs.shape[2]} shape components, more than any body model's "
            f"{MAX_SHAPE_COMPONENTS}; the file is damaged."
        )


class _Struct:
    def __init__(self, **kw):
        self.__dict__.update(kw)


# --------------------------------------------------------------------------------------------
# Restricted reading of the official pickle
# --------------------------------------------------------------------------------------------


class _ChumpyLeaf(StandIn):
    """Stand-in for any ``chumpy`` class: keeps the pickled state; leaves hold their value in 'x'."""

    def __setstate__(self, state):
        super().__setstate__(state if isinstance(state, dict) else {"state": state})


class _SparseMatrix(StandIn):
    """Stand-in for scipy's csc/csr matrices: densified from (data, indices, indptr) with numpy."""

    layout = "csc"

    def to_dense(self, expected_shape: tuple[int, int], key: str, source: str) -> np.ndarray:
        """-> expected_shape (rows, cols) float64, after checking the stored shape and indices against it."""
        d = self.state
        shape = d.get("_shape", d.get("shape"))
        if not isinstance(shape, tuple) or shape != tuple(expected_shape):
            raise VibeError(
                f"{source}: the sparse '{key}' has shape {shown_value(shape)}, expected {expected_shape}; "
                "the file is not an SMPL model."
            )
        data, indices, indptr = (
            _as_array(d.get(k), f"{key}.{k}", source).reshape(-1) for k in ("data", "indices", "indptr")
        )
        inner, outer = expected_shape if self.layout == "csc" else expected_shape[::-1]
        inconsistent = f"{source}: the sparse '{key}' has inconsistent indices; the file is damaged."
        # lengths before the int64 copies (8 times a stored uint8's bytes): at most one entry a cell
        if len(indptr) != outer + 1 or len(indices) != len(data) or len(data) > inner * outer:
            raise VibeError(inconsistent)
        indices, indptr = indices.astype(np.int64), indptr.astype(np.int64)
        if (
            indptr[0] != 0
            or indptr[-1] != len(data)
            or np.any(np.diff(indptr) < 0)
            or (len(indices) and (indices.min() < 0 or indices.max() >= inner))
        ):
            raise VibeError(inconsistent)
        dense = np.zeros((inner, outer), dtype=np.float64)
        dense[indices, np.repeat(np.arange(outer), np.diff(indptr))] = data
        return dense if self.layout == "csc" else dense.T


class _CsrMatrix(_SparseMatrix):
    layout = "csr"


_SPARSE = {"csc_matrix": _SparseMatrix, "csr_matrix": _CsrMatrix}


class _SmplUnpickler(RestrictedUnpickler):
    """Numpy arrays, scipy csc/csr matrices and chumpy leaves; every other class is refused."""

    MODULE_PREFIXES: ClassVar[dict] = {"chumpy": _ChumpyLeaf}
    OUTPUT_TYPES: ClassVar[tuple] = (_ChumpyLeaf, _SparseMatrix)
    what = "an SMPL model file"

    def find_class(self, module, name):
        if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name in _SPARSE:
            return _SPARSE[name]
        return super().find_class(module, name)

    def extra_callables(self) -> tuple:
        return tuple(_SPARSE.values())


def _as_array(value, key: str, source: str) -> np.ndarray:
    """An array read from the file (a chumpy leaf's value unwrapped) -> that array, plain and finite."""
    if isinstance(value, _ChumpyLeaf):
        if "x" not in value.state:
            raise VibeError(
                f"{source}: '{key}' is a derived chumpy expression, not stored data; "
                "the file is not an official SMPL model."
            )
        value = value.state["x"]
    if not isinstance(value, np.ndarray):
        raise VibeError(f"{source}: '{key}' is a {type(value).__name__}, not an array; the file is not an SMPL model.")
    if value.dtype.kind not in "biuf":
        raise VibeError(
            f"{source}: '{key}' holds {value.dtype} values where numbers belong; the file is not an SMPL model."
        )
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        raise VibeError(f"{source}: '{key}' holds NaN/infinite numbers; the file is not a usable SMPL model.")
    return value


def load_smpl_pkl(
    path: str | Path, *, hint: str = "Install the model data with 'vibe-mocap data install'."
) -> BodyModel:
    """Read an official SMPL ``.pkl`` (chumpy or plain numpy; Python 2 or 3 pickle) -> BodyModel.

    The pickle is read by :mod:`.safe_pickle` (no code, no numpy internals, bounded size); anything
    that is not an SMPL model raises one VibeError naming the file, a file that cannot be read one
    that ends with ``hint`` (the server's names the model-data folder in use).
    """
    path = Path(path)
    advice = f" {hint}" if hint else ""
    with open_user_file(path, "the SMPL model", hint) as file:
        try:
            size = os.fstat(file.fileno()).st_size
            too_large = size > MAX_SMPL_PKL_BYTES
            # as much as it holds (read(n) reserves n bytes at once), +1 to see one that grew meanwhile
            raw_bytes = b"" if too_large else file.read(size + 1)
        except OSError as err:
            raise VibeError(f"Cannot read the SMPL model '{path}': {err.strerror or err}.{advice}") from err
    if too_large or len(raw_bytes) > MAX_SMPL_PKL_BYTES:
        raise VibeError(
            f"'{path}' is larger than any SMPL model file ({MAX_SMPL_PKL_BYTES:,} bytes at most), so it was not "
            f"read.{advice}"
        )
    try:
        raw = _SmplUnpickler(io.BytesIO(raw_bytes)).load()
    except Exception as err:  # any unpickling failure means: not a model file we can use
        raise VibeError(f"'{path}' is not a readable SMPL model file ({describe_failure(err)}).{advice}") from err
    if not isinstance(raw, dict):
        raise VibeError(f"'{path}' is not an SMPL model file (it holds a {type(raw).__name__}, not a dict).")
    required = ("v_template", "f", "weights", "shapedirs", "posedirs", "J_regressor", "kintree_table")
    missing = [k for k in required if k not in raw]
    if missing:
        raise VibeError(f"'{path}' lacks {', '.join(missing)}: it is not an SMPL model file.")
    source = str(path)
    a = {k: _as_array(raw[k], k, source) for k in required if k != "J_regressor"}
    # the sparse J_regressor is densified to (J, V) from these two shapes: both checked (and V bounded) first
    V = a["v_template"].shape[0] if a["v_template"].ndim == 2 else -1
    if a["v_template"].shape != (V, 3) or a["kintree_table"].shape != (2, NUM_JOINTS) or not 0 < V <= MAX_VERTICES:
        raise VibeError(
            f"{source}: 'kintree_table' has shape {a['kintree_table'].shape} and 'v_template' "
            f"{a['v_template'].shape}, expected (2, {NUM_JOINTS}) and (V, 3) with 1..{MAX_VERTICES} vertices; "
            "the file is not an SMPL model."
        )
    regressor, regressor_shape = raw["J_regressor"], (NUM_JOINTS, V)
    a["J_regressor"] = (
        regressor.to_dense(regressor_shape, "J_regressor", source)
        if isinstance(regressor, _SparseMatrix)
        else _as_array(regressor, "J_regressor", source)
    )
    stored = {
        "v_template": a["v_template"],
        "faces": a["f"],
        "lbs_weights": a["weights"],
        "shapedirs": a["shapedirs"],
        "posedirs": a["posedirs"],
        "J_regressor": a["J_regressor"],
        "parents": a["kintree_table"][0],
    }
    check_body_model_shapes(stored, source)
    model = _converted(stored)
    model.parents[0] = -1
    model.validate(source)
    return model


def _converted(arrays: dict[str, np.ndarray]) -> BodyModel:
    """Arrays of a body model's shapes -> a BodyModel of int64 indices and float64 values (new arrays)."""
    return BodyModel(
        **{name: a.astype(np.int64 if name in ("faces", "parents") else np.float64) for name, a in arrays.items()}
    )


# --------------------------------------------------------------------------------------------
# The body model as a plain .npz (server -> add-on)
# --------------------------------------------------------------------------------------------

BODY_MODEL_FORMAT = "vibe-mocap-body-model"
BODY_MODEL_VERSION = 1


def save_body_model(path_or_file, model: BodyModel) -> None:
    """Write the arrays (float32, faces/parents int64) plus joint names to an npz without pickles."""
    arrays = {f.name: getattr(model, f.name) for f in fields(BodyModel)}
    arrays = {k: (v.astype(np.int64) if k in ("faces", "parents") else v.astype(np.float32)) for k, v in arrays.items()}
    np.savez_compressed(
        path_or_file,
        format=np.array(BODY_MODEL_FORMAT),
        format_version=np.array(BODY_MODEL_VERSION),
        joint_names=np.array(JOINT_NAMES),
        **arrays,
    )


def load_body_model(path_or_file) -> BodyModel:
    """Read what :func:`save_body_model` wrote, through :mod:`.safe_npz` (bounded, no pickles)."""
    label = f"the body-model file '{path_or_file}'" if isinstance(path_or_file, (str, Path)) else "the body-model file"
    z = read_npz(path_or_file, label=label, hint="Download it again from the server.")
    if "format" not in z or z["format"].dtype.kind != "U" or str(z["format"]) != BODY_MODEL_FORMAT:
        raise VibeError(f"'{path_or_file}' is not a VIBE Mocap body-model file.")
    version = z.get("format_version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise VibeError(f"{label} has no format version; it is damaged.")
    if int(version) > BODY_MODEL_VERSION:
        raise VibeError(
            f"'{path_or_file}' is a body-model file of version {int(version)}; "
            f"this version reads up to {BODY_MODEL_VERSION}. Update the add-on."
        )
    missing = [f.name for f in fields(BodyModel) if f.name not in z]
    if missing:
        raise VibeError(f"{label} lacks {', '.join(missing)}; download it again from the server.")
    arrays = {f.name: _as_array(z[f.name], f.name, label) for f in fields(BodyModel)}
    check_body_model_shapes(arrays, label)
    model = _converted(arrays)
    model.validate(label)
    return model
