"""Shared fixtures: a synthetic SMPL-format model-data bundle with random weights in the official
checkpoint containers, generated once per test session (nothing is downloaded)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # testdata.py, fake_vibe_server.py, reference_sort.py
from testdata import UNIT_REFERENCE


@pytest.fixture(scope="session")
def unit_reference():
    """The official utility functions' inputs and outputs (see tests/data/fixtures/README.md)."""
    import numpy as np

    with np.load(UNIT_REFERENCE) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def synthetic_smpl_dir(tmp_path_factory) -> Path:
    """SMPL_NEUTRAL.pkl (chumpy-style), J_regressor_extra/h36m.npy, smpl_mean_params.npz. numpy only."""
    from vibe_server.data.synthetic import write_smpl_files

    folder = tmp_path_factory.mktemp("smpl")
    write_smpl_files(folder, seed=0)
    return folder


@pytest.fixture(scope="session")
def synthetic_bundle(tmp_path_factory) -> Path:
    """The whole model-data folder: SMPL files + official-format random checkpoints, written as the
    originals are (legacy serialisation, CUDA-tagged storages, numpy-1 ``performance``)."""
    from vibe_server.data.synthetic import write_synthetic_bundle

    folder = tmp_path_factory.mktemp("vibe_data")
    write_synthetic_bundle(folder, seed=0, cuda_tagged=True)
    return folder


@pytest.fixture(scope="session")
def vibe_model(synthetic_bundle):
    from vibe_server import load_model

    return load_model(synthetic_bundle)
