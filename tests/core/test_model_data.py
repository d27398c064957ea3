import numpy as np
import pytest

from vibe_blender.core.errors import VibeError
from vibe_blender.core.model_data import read_body_model
from vibe_blender.core.smpl_model import save_body_model


def test_model_data_folder_npz_and_pkl_give_the_same_model(tmp_path, body_model):
    from vibe_server.data.synthetic import write_smpl_files

    write_smpl_files(tmp_path / "data", seed=0)
    save_body_model(tmp_path / "body_model.npz", body_model)
    from_folder = read_body_model(tmp_path / "data")
    from_npz = read_body_model(tmp_path / "body_model.npz")
    from_pkl = read_body_model(tmp_path / "data" / "SMPL_NEUTRAL.pkl")
    np.testing.assert_allclose(from_folder.J_regressor, body_model.J_regressor)
    np.testing.assert_allclose(from_npz.shapedirs, body_model.shapedirs, atol=1e-7)  # npz stores float32
    np.testing.assert_array_equal(from_pkl.faces, body_model.faces)


def test_missing_model_data_says_what_to_do(tmp_path):
    with pytest.raises(VibeError, match="has no SMPL_NEUTRAL.pkl"):
        read_body_model(tmp_path)
    with pytest.raises(VibeError, match="does not exist"):
        read_body_model(tmp_path / "nothing.npz")
