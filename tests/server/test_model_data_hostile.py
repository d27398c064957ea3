"""The server's readers of user-installed model data (J_regressor_*.npy, smpl_mean_params.npz) use
the bounded readers: hostile files give one VibeError, never an allocation the file does not hold."""

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/hostile_files.py
from hostile_files import Member, npy, read_in_sandbox, zip_bytes

from vibe_blender.core.errors import VibeError
from vibe_server.data.loading import install_hint, load_joint_regressor, load_mean_params
from vibe_server.data.synthetic import mean_params, random_joint_regressor


def test_real_files_still_load(tmp_path):
    np.save(tmp_path / "J.npy", random_joint_regressor(9, 0))
    np.savez(tmp_path / "m.npz", **mean_params())
    assert load_joint_regressor(tmp_path / "J.npy", 9).shape == (9, 6890)
    assert load_mean_params(tmp_path / "m.npz")["pose"].shape == (144,)


@pytest.mark.parametrize(
    "content, match",
    [
        (
            npy(header="{'descr': '|O', 'fortran_order': False, 'shape': (9, 6890), }", data=bytes(8 * 9 * 6890)),
            "dtype",
        ),
        (npy(header="{'descr': '<f8', 'fortran_order': False, 'shape': (9, 6890), }", data=bytes(80)), "needs"),
        (pickle.dumps({"J": list(range(100))}), ".npy format"),
        (npy(np.full((9, 6890), np.nan)), "finite"),
    ],
)
def test_hostile_regressor_is_refused(tmp_path, content, match):
    path = tmp_path / "J_regressor_extra.npy"
    path.write_bytes(content)
    with pytest.raises(VibeError, match=match):
        load_joint_regressor(path, 9)


def test_a_regressor_or_mean_params_of_nan_say_so_not_that_their_shape_is_wrong(tmp_path):
    """Before: "has shape (9, 6890), expected (9, 6890) finite numbers", with no word of what to do."""
    hint = install_hint(tmp_path)
    regressor = tmp_path / "J_regressor_extra.npy"
    np.save(regressor, np.full((9, 6890), np.nan))
    with pytest.raises(VibeError) as refused:
        load_joint_regressor(regressor, 9, hint=hint)
    assert (
        str(refused.value)
        == f"'{regressor}' holds values that are not finite numbers (NaN or infinite): it is damaged. {hint}"
    )
    np.save(regressor, np.zeros((9, 6889)))
    with pytest.raises(VibeError) as refused:
        load_joint_regressor(regressor, 9)  # no hint: data check's table, which ends with one
    assert str(refused.value) == f"'{regressor}' has shape (9, 6889), expected (9, 6890)."
    mean = tmp_path / "smpl_mean_params.npz"
    np.savez(mean, **{**mean_params(), "cam": np.array([0.9, np.inf, 0.0])})
    with pytest.raises(VibeError) as refused:
        load_mean_params(mean, hint=hint)
    assert (
        str(refused.value)
        == f"'{mean}': 'cam' holds values that are not finite numbers (NaN or infinite): it is damaged. {hint}"
    )


def test_mean_params_declaring_gigabytes_are_refused_in_a_sandbox(tmp_path):
    """A 1 MB member whose header asks for 3.4 GB: refused before numpy allocates anything."""
    huge = npy(header="{'descr': '<f8', 'fortran_order': False, 'shape': (425000000,), }", data=bytes(1 << 20))
    path = tmp_path / "smpl_mean_params.npz"
    path.write_bytes(
        zip_bytes(
            [
                Member("pose.npy", huge),
                Member("shape.npy", npy(np.zeros(10, np.float32))),
                Member("cam.npy", npy(np.zeros(3, np.float32))),
            ]
        )
    )
    baseline = read_in_sandbox("vibe_server.data.loading:build_model", tmp_path / "absent", memory_mb=3072)
    outcome = read_in_sandbox("vibe_server.data.loading:load_mean_params", path, memory_mb=3072)
    assert outcome.refused and "pose" in outcome.message, outcome
    assert outcome.peak_mb < baseline.peak_mb + 100, (outcome.peak_mb, baseline.peak_mb)


def test_hostile_mean_params_are_refused(tmp_path):
    members = [
        Member(
            "pose.npy", npy(header="{'descr': '|O', 'fortran_order': False, 'shape': (144,), }", data=bytes(8 * 144))
        ),
        Member("shape.npy", npy(np.zeros(10, np.float32))),
        Member("cam.npy", npy(np.zeros(3, np.float32))),
    ]
    path = tmp_path / "smpl_mean_params.npz"
    path.write_bytes(zip_bytes(members))
    with pytest.raises(VibeError, match="smpl_mean_params.npz.*dtype"):
        load_mean_params(path)
