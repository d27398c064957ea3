"""Evaluate a generator on a database file: MPJPE, PA-MPJPE, PVE, ACCEL, ACCEL_ERR (mm), overall and
per sequence, with the official definitions (`lib/core/evaluate.py`).

- Windows of T frames with stride T in loader order (track tails shorter than T are not scored);
  joints from `J_regressor_h36m` -> 14 LSP joints; pelvis = mean of the two hips.
- PVE: ground-truth vertices from SMPL(pose, betas) with no translation and no alignment; only for
  files with SMPL ground truth (3DPW), otherwise reported as NaN.
- ACCEL / ACCEL_ERR overall: on all scored frames concatenated, so, as in the original, the terms
  that straddle two tracks are included. Per sequence: on that track's frames only.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vibe_blender.core.errors import VibeError

from ..geometry import batch_rodrigues
from . import metrics

METRIC_NAMES = ("mpjpe", "pa_mpjpe", "pve", "accel", "accel_err")
M_TO_MM = 1000.0


@dataclass
class EvaluationResult:
    """Metrics in mm (accelerations in mm/frame^2); `per_sequence` maps track name -> the same dict."""

    overall: dict
    per_sequence: OrderedDict = field(default_factory=OrderedDict)
    num_frames: int = 0

    def table(self) -> str:
        """A plain-text table: one row per sequence, then the overall row."""
        header = f"{'sequence':<32}{'frames':>8}" + "".join(f"{name.upper():>11}" for name in METRIC_NAMES)
        rows = [header]
        for name, values in [*self.per_sequence.items(), ("ALL", self.overall)]:
            cells = "".join(f"{values[m]:>11.2f}" for m in METRIC_NAMES)
            rows.append(f"{name[:31]:<32}{values['frames']:>8d}{cells}")
        return "\n".join(rows)


def summarise(pred_j3d: np.ndarray, target_j3d: np.ndarray, pve: np.ndarray) -> dict:
    """pred_j3d, target_j3d (N, 14, 3) metres, pve (N,) metres or NaN -> the five metrics in mm."""
    pred = torch.from_numpy(pred_j3d).double()
    target = torch.from_numpy(target_j3d).double()
    pred_c, target_c = metrics.centre_on_pelvis(pred), metrics.centre_on_pelvis(target)
    return {
        "frames": len(pred_j3d),
        "mpjpe": float(metrics.mpjpe_per_frame(pred, target).mean()) * M_TO_MM,
        "pa_mpjpe": float(metrics.pa_mpjpe_per_frame(pred, target).mean()) * M_TO_MM,
        "pve": float(np.mean(pve)) * M_TO_MM,
        "accel": float(np.mean(metrics.compute_accel(pred_c.numpy()))) * M_TO_MM if len(pred) > 2 else float("nan"),
        "accel_err": (
            float(np.mean(metrics.compute_error_accel(target_c.numpy(), pred_c.numpy()))) * M_TO_MM
            if len(pred) > 2
            else float("nan")
        ),
    }


@torch.no_grad()
def evaluate_generator(
    generator: torch.nn.Module,
    dataset: Dataset,
    j_regressor_h36m: torch.Tensor,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
) -> EvaluationResult:
    """generator: features (N, T, 2048) -> VIBE dict; dataset: a non-training `SequenceDataset`.
    progress: a bar on stderr counting the batches."""
    was_training = generator.training
    generator.eval()
    j_regressor = j_regressor_h36m.to(device)
    smpl = generator.regressor.smpl
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    pred_j3d, target_j3d, pve = [], [], []
    windows_done = 0  # windows of the dataset before this batch (loader order)
    for batch in tqdm(loader, desc="evaluate", unit="batch", file=sys.stderr, disable=not progress):
        out = generator(batch["features"].to(device), j_regressor=j_regressor)
        n, t = out["kp_3d"].shape[:2]
        finite = torch.isfinite(out["kp_3d"]).reshape(n, -1).all(dim=1)
        if not bool(finite.all()):  # the Procrustes fit would fail on them with a bare linear-algebra error
            window = windows_done + int((~finite).nonzero()[0])
            raise VibeError(
                f"The generator predicted NaN or infinite joints for track {dataset.window_track(window)!r}: "
                "its weights are damaged or have diverged. Evaluate another checkpoint (while training: start "
                "over with a lower --gen_lr)."
            )
        windows_done += n
        pred_j3d.append(out["kp_3d"].reshape(n * t, 14, 3).float().cpu())
        target_j3d.append(batch["kp_3d"].reshape(n * t, 14, 3))
        w_smpl = batch["w_smpl"].reshape(-1).bool()
        if bool(w_smpl.all()):
            theta = batch["theta"].reshape(n * t, 85).to(device)
            rotmat = batch_rodrigues(theta[:, 3:75].reshape(-1, 3)).reshape(-1, 24, 3, 3)
            target_verts, _ = smpl.forward_joints(theta[:, 75:], rotmat)
            pred_verts = out["verts"].reshape(n * t, -1, 3)
            pve.append(metrics.vertex_error_per_frame(pred_verts, target_verts).cpu())
        else:
            pve.append(torch.full((n * t,), float("nan")))
    generator.train(was_training)

    pred_j3d = torch.cat(pred_j3d).double().numpy()
    target_j3d = torch.cat(target_j3d).double().numpy()
    pve = torch.cat(pve).double().numpy()
    # frame k of the concatenation belongs to window k // T
    tracks = np.repeat([dataset.window_track(i) for i in range(len(dataset))], dataset.seqlen)
    result = EvaluationResult(overall=summarise(pred_j3d, target_j3d, pve), num_frames=len(pred_j3d))
    for name in dict.fromkeys(tracks):  # first-appearance order
        rows = tracks == name
        result.per_sequence[name] = summarise(pred_j3d[rows], target_j3d[rows], pve[rows])
    return result
