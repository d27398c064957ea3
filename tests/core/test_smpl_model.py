"""The SMPL model files: restricted reading of the official pickle, the npz that travels to Blender."""

import io
import pickle

import numpy as np
import pytest

from vibe_blender.core.errors import VibeError
from vibe_blender.core.smpl_model import PARENTS, load_body_model, load_smpl_pkl, save_body_model
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
