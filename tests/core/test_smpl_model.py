"""The SMPL model files: restricted reading of the official pickle, the npz that travels to Blender."""

import copy
import io
import pickle
import re
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from vibe_blender.core.errors import VibeError
from vibe_blender.core.smpl_model import (
    MAX_FACES,
    MAX_SHAPE_COMPONENTS,
    MAX_SMPL_PKL_BYTES,
    MAX_VERTICES,
    PARENTS,
    load_body_model,
    load_smpl_pkl,
    save_body_model,
)
from vibe_server.data.synthetic import REST_JOINTS, make_body_model, write_smpl_pkl

ARRAYS = ("v_template", "faces", "lbs_weights", "shapedirs", "posedirs", "J_regressor", "parents")


@pytest.fixture(scope="module")
def body():
    return make_body_model(seed=3)


@pytest.mark.parametrize("chumpy_style", [True, False])
def test_official_pickle_layouts_read_back_exactly(tmp_path, body, chumpy_style):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    write_smpl_pkl(path, body, chumpy_style=chumpy_style)
    blob = path.read_bytes()
    if chumpy_style:  # the file really names chumpy, old scipy and numpy-1 modules
        assert b"chumpy.ch" in blob and b"scipy.sparse.csc" in blob and b"numpy.core.multiarray" in blob
    loaded = load_smpl_pkl(path)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(body, name), err_msg=name)
    assert loaded.parents[0] == -1


def test_real_scipy_sparse_regressor_is_densified(tmp_path, body):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    data = {
        "v_template": body.v_template,
        "f": body.faces,
        "weights": body.lbs_weights,
        "shapedirs": body.shapedirs,
        "posedirs": body.posedirs,
        "J_regressor": scipy_sparse.csc_matrix(body.J_regressor),
        "kintree_table": np.stack([np.r_[4294967295, PARENTS[1:]], np.arange(24)]),
    }
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    np.testing.assert_array_equal(load_smpl_pkl(path).J_regressor, body.J_regressor)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Evil()}, protocol=2))
    with pytest.raises(VibeError, match="refusing to load posix.system|refusing to load os.system|not a readable"):
        load_smpl_pkl(path)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"not a pickle at all", "not a readable SMPL model"),
        (pickle.dumps([1, 2, 3]), "holds a list"),
        (pickle.dumps({"v_template": np.zeros((5, 3))}), "lacks f, weights"),
    ],
)
def test_bad_model_files_get_one_clear_error(tmp_path, payload, message):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(payload)
    with pytest.raises(VibeError, match=message):
        load_smpl_pkl(path)


def test_missing_model_file_says_how_to_install(tmp_path):
    with pytest.raises(VibeError, match="vibe-mocap data install"):
        load_smpl_pkl(tmp_path / "SMPL_NEUTRAL.pkl")


def test_wrong_shapes_are_named(tmp_path, body):
    bad = make_body_model(seed=3)
    bad.lbs_weights = bad.lbs_weights[:, :20]
    path = tmp_path / "m.pkl"
    write_smpl_pkl(path, bad, chumpy_style=False)
    with pytest.raises(VibeError, match="'lbs_weights' has shape"):
        load_smpl_pkl(path)


def test_body_model_npz_round_trip_without_pickles(body):
    buf = io.BytesIO()
    save_body_model(buf, body)
    buf.seek(0)
    loaded = load_body_model(buf)
    for name in ARRAYS:
        np.testing.assert_allclose(getattr(loaded, name), getattr(body, name), atol=1e-6, err_msg=name)


def test_body_model_npz_rejects_other_npz():
    buf = io.BytesIO()
    np.savez(buf, poses=np.zeros((3, 72)))
    buf.seek(0)
    with pytest.raises(VibeError, match="not a VIBE Mocap body-model file"):
        load_body_model(buf)


def test_joints_rest_follow_the_shape_space(body):
    np.testing.assert_allclose(body.joints_rest(np.zeros(10)), REST_JOINTS, atol=1e-12)
    taller = body.joints_rest(np.r_[2.0, np.zeros(9)])
    # beta 0 of the synthetic model scales the body: the head moves away from the pelvis
    assert np.linalg.norm(taller[15] - taller[0]) > np.linalg.norm(REST_JOINTS[15] - REST_JOINTS[0])


# ---- the shapes a sparse J_regressor is densified to, and SMPL's own structure ---------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/hostile_files.py
from hostile_files import (  # noqa: E402
    BUILD,
    EMPTY_DICT,
    EMPTY_TUPLE,
    MARK,
    NEWOBJ,
    PLAIN_F8_STATE,
    SETITEMS,
    dtype_ops,
    glob,
    program,
    reconstructed_array,
    smpl_dict,
    value,
)


def _csr(shape: tuple[int, int], entries: int = 1) -> bytes:
    """A scipy csr_matrix of ``shape`` whose ``entries`` are all in its first cell (one entry: a few
    hundred bytes whatever the shape)."""
    i8 = dtype_ops("i8", (3, "<", None, None, None, -1, -1, 0))
    return (
        glob("scipy.sparse.csr", "csr_matrix")
        + EMPTY_TUPLE
        + NEWOBJ
        + EMPTY_DICT
        + MARK
        + value("_shape")
        + value(shape)
        + value("data")
        + reconstructed_array(dtype_ops("f8", PLAIN_F8_STATE), (entries,), np.ones(entries).tobytes())
        + value("indices")
        + reconstructed_array(i8, (entries,), np.zeros(entries, "<i8").tobytes())
        + value("indptr")
        + reconstructed_array(i8, (shape[0] + 1,), np.r_[0, np.full(shape[0], entries)].astype("<i8").tobytes())
        + SETITEMS
        + BUILD
    )


def _peak_mb(read, path) -> tuple[float, str]:
    tracemalloc.start()
    try:
        with pytest.raises(VibeError) as err:
            read(path)
        return tracemalloc.get_traced_memory()[1] / 2**20, str(err.value)
    finally:
        tracemalloc.stop()


def test_a_file_larger_than_any_smpl_model_is_refused_unread(tmp_path):
    """The whole file was read before unpickling: a sparse 3 GiB file took 3 GB of Blender's memory."""
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    with open(path, "wb") as f:
        f.truncate(MAX_SMPL_PKL_BYTES + 1)  # sparse: nothing on the disk
    peak_mb, message = _peak_mb(load_smpl_pkl, path)
    assert message == (
        f"'{path}' is larger than any SMPL model file ({MAX_SMPL_PKL_BYTES:,} bytes at most), so it was not read. "
        "Install the model data with 'vibe-mocap data install'."
    )
    assert peak_mb < 8


@pytest.mark.parametrize(
    "v_template, joints, match",
    [
        # zero bytes of vertices that would size a (24, 20 000 000) dense regressor (3.8 GB)
        (
            reconstructed_array(dtype_ops("f8", PLAIN_F8_STATE), (20_000_000, 0), b""),
            24,
            r"'v_template' \(20000000, 0\)",
        ),
        # 600 kB of bool vertices: more vertices than any body model
        (value(np.zeros((MAX_VERTICES + 1, 3), bool)), 24, "1..100000 vertices"),
        # a kintree of 1000 joints
        (value(np.zeros((4, 3))), 1000, r"'kintree_table' has shape \(2, 1000\)"),
    ],
)
def test_a_sparse_regressor_is_densified_only_to_a_bounded_smpl_shape(tmp_path, v_template, joints, match):
    V = 20_000_000 if joints == 24 else 4
    kintree = value(np.stack([np.r_[-1, np.zeros(joints - 1, int)], np.arange(joints)]))
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(program(smpl_dict(v_template=v_template, J_regressor=_csr((joints, V)), kintree_table=kintree)))
    peak_mb, message = _peak_mb(load_smpl_pkl, path)
    assert re.search(match, message), message
    assert peak_mb < 16, peak_mb  # refused before any (J, V) matrix exists


def test_the_synthetic_body_has_smpls_counts_and_no_repeated_or_degenerate_face(body):
    """Blender deletes a repeated face from a mesh when it validates it (its glTF exporter does)."""
    faces = np.sort(body.faces, axis=1)
    assert body.faces.shape == (13776, 3) and body.v_template.shape == (6890, 3)
    assert len(np.unique(faces, axis=0)) == len(faces)
    assert (faces[:, 0] < faces[:, 1]).all() and (faces[:, 1] < faces[:, 2]).all()


def test_the_small_hostile_model_builder_makes_a_valid_model(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(program(smpl_dict(J_regressor=_csr((24, 4)))))
    assert load_smpl_pkl(path).J_regressor.shape == (24, 4)


@pytest.mark.parametrize(
    "key, array, words",
    [
        (
            "shapedirs",
            np.zeros((4, 3, MAX_SHAPE_COMPONENTS + 1), np.float32),
            f"'shapedirs' has {MAX_SHAPE_COMPONENTS + 1} shape components, more than any body model's",
        ),
        ("f", np.zeros((MAX_FACES + 1, 3), np.uint8), f"'faces' has shape ({MAX_FACES + 1}, 3), not (F, 3) with 1.."),
    ],
)
def test_more_shape_components_or_faces_than_any_body_model_has_are_refused(tmp_path, key, array, words):
    """Only V was bounded: these sizes were not, and both are converted to 8-byte numbers."""
    path = tmp_path / "m.pkl"
    path.write_bytes(program(smpl_dict(**{key: value(array)})))
    with pytest.raises(VibeError, match=re.escape(words)):
        load_smpl_pkl(path)


def test_a_sparse_regressor_with_more_entries_than_cells_is_refused(tmp_path):
    """Its indices are copied to int64 (8 times a stored uint8's bytes) only once their number is
    bounded by the cells: 97 entries of a 24 x 4 matrix were all written to its first cell."""
    path = tmp_path / "m.pkl"
    path.write_bytes(program(smpl_dict(J_regressor=_csr((24, 4), entries=24 * 4 + 1))))
    with pytest.raises(VibeError, match="the sparse 'J_regressor' has inconsistent indices"):
        load_smpl_pkl(path)


def _bad_parents(model):
    model.parents = model.parents.copy()
    model.parents[23] = 20  # right hand on the left wrist: still a tree, not SMPL's
    return model


def _fewer_joints(model):
    model.J_regressor, model.lbs_weights = model.J_regressor[:23], model.lbs_weights[:, :23]
    model.parents, model.posedirs = model.parents[:23], model.posedirs[:, :, : 9 * 22]
    return model


@pytest.mark.parametrize(
    "spoil, match",
    [
        (_bad_parents, "are not SMPL's"),
        (
            _fewer_joints,
            r"'lbs_weights' has shape \(6890, 23\), expected \(6890, 24\)|'kintree_table' has shape \(2, 23\)",
        ),
        (
            lambda m: setattr(m, "posedirs", m.posedirs[:, :, :200]) or m,
            r"'posedirs' has shape .* expected \(6890, 3, 207\)",
        ),
        # finite, but shape keys and the ground offset made from them overflowed Blender's float32
        (
            lambda m: setattr(m, "v_template", m.v_template * 3e37) or m,
            r"'v_template' holds a value of .*e\+37, beyond the ±10 ",
        ),
        (lambda m: setattr(m, "shapedirs", m.shapedirs * 1e6) or m, r"'shapedirs' holds a value of .*beyond the ±1 "),
        # 2-D: it passed the (V, 3) test, then its third size was read (an IndexError, not a refusal)
        (
            lambda m: setattr(m, "shapedirs", m.shapedirs[:, :, 0]) or m,
            r"'shapedirs' has shape \(6890, 3\), expected \(6890, 3, >=10\)",
        ),
    ],
)
@pytest.mark.parametrize("form", ["pkl", "npz"])
def test_a_model_that_is_not_smpls_structure_is_refused(tmp_path, body, spoil, match, form):
    bad = spoil(copy.deepcopy(body))
    path = tmp_path / f"m.{form}"
    if form == "pkl":
        arrays = {
            "v_template": bad.v_template,
            "f": bad.faces,
            "weights": bad.lbs_weights,
            "shapedirs": bad.shapedirs,
            "posedirs": bad.posedirs,
            "J_regressor": bad.J_regressor,
            "kintree_table": np.stack([bad.parents, np.arange(len(bad.parents))]),
        }
        path.write_bytes(pickle.dumps(arrays, protocol=2))
        read = load_smpl_pkl
    else:
        save_body_model(path, bad)
        read = load_body_model
    with pytest.raises(VibeError, match=match):
        read(path)
