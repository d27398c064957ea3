"""Evaluation of a generator on a database file: what it does with predictions it cannot score."""

from types import SimpleNamespace

import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.evaluate.evaluate import evaluate_generator
from vibe_server.train.datasets import SequenceDataset
from vibe_server.train.synthetic_db import write_synthetic_db


class _DivergedGenerator(torch.nn.Module):
    """Predicts NaN joints for one window of its second batch (as a generator whose weights blew up)."""

    def __init__(self):
        super().__init__()
        self.regressor = SimpleNamespace(smpl=None)
        self.calls = 0

    def forward(self, features, j_regressor=None):
        n, t = features.shape[:2]
        kp_3d = torch.zeros(n, t, 14, 3)
        self.calls += 1
        if self.calls == 2:
            kp_3d[1, 5, 0, 0] = float("nan")
        return {"kp_3d": kp_3d, "verts": torch.zeros(n, t, 6890, 3)}


def test_non_finite_predictions_are_named_not_passed_to_the_procrustes_fit(tmp_path):
    db_dir = write_synthetic_db(tmp_path, seed=3, lengths=[40, 40])
    dataset = SequenceDataset(db_dir, "mpii3d", "val")  # windows: 0-1 track 0, 2-3 track 1; no SMPL
    with pytest.raises(VibeError, match=r"NaN or infinite joints for track 'subj1_seg_1'.*another checkpoint"):
        evaluate_generator(_DivergedGenerator(), dataset, torch.zeros(17, 6890), batch_size=2)
