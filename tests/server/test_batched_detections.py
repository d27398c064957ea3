"""Batched device-side YOLO post-processing against the per-frame reference (detect.yolo)."""

import numpy as np
import pytest
import torch

from vibe_server.pipeline.batched.detections import box_iou_plus_one_matrix, person_detections_batched
from vibe_server.pipeline.detect.boxes import box_iou_plus_one
from vibe_server.pipeline.detect.yolo import person_detections


def synthetic_rows(rng, batch, n=600, people=6, height=432, width=768):
    """Decoded rows (B, n, 85) in network pixels: clusters of overlapping person boxes around a
    few centres (what NMS has to merge), other classes, and low-objectness clutter."""
    rows = np.zeros((batch, n, 85), np.float32)
    for b in range(batch):
        centres = rng.uniform([40, 80], [376, 336], size=(people, 2))
        sizes = rng.uniform([30, 60], [90, 200], size=(people, 2))
        which = rng.integers(0, people, n)
        rows[b, :, :2] = centres[which] + rng.normal(0, 6, (n, 2))
        rows[b, :, 2:4] = sizes[which] * rng.uniform(0.85, 1.15, (n, 2))
        rows[b, :, 4] = rng.choice([rng.uniform(0.5, 0.79), 1.0], n) * rng.uniform(0.8, 1.0, n)
        rows[b, :, 5:] = rng.uniform(0, 0.6, (n, 80))
        person = rng.random(n) < 0.8
        rows[b, person, 5] = rng.uniform(0.6, 1.0, person.sum())
    rows[0, 10:20] = rows[0, 5]  # exact duplicates: ties in score
    return torch.from_numpy(rows)


@pytest.mark.parametrize("shape", [(432, 768), (480, 640), (640, 480)])
def test_batched_equals_per_frame_reference(shape):
    rows = synthetic_rows(np.random.default_rng(1), batch=5)
    batched = person_detections_batched(rows, *shape)
    total = 0
    for b in range(len(rows)):
        reference = person_detections(rows[b], *shape)
        assert batched[b].shape == reference.shape
        np.testing.assert_allclose(batched[b], reference, rtol=0, atol=1e-3)
        total += len(reference)
    assert total > 10  # the case merged and kept several people


def test_frames_without_candidates_give_empty_arrays():
    rows = synthetic_rows(np.random.default_rng(2), batch=3)
    rows[1, :, 4] = 0.1  # nothing passes the objectness threshold
    out = person_detections_batched(rows, 432, 768)
    assert out[1].shape == (0, 5)
    assert len(out[0]) == len(person_detections(rows[0], 432, 768)) > 0
    rows[:, :, 4] = 0.1
    assert all(o.shape == (0, 5) for o in person_detections_batched(rows, 432, 768))


def test_iou_matrix_is_the_reference_iou_bit_for_bit():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 400, (1, 50, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 80, (1, 50, 2)).astype(np.float32)], axis=-1)
    matrix = box_iou_plus_one_matrix(torch.from_numpy(boxes))[0].numpy()
    for i in range(50):
        np.testing.assert_array_equal(matrix[i], box_iou_plus_one(boxes[0, i], boxes[0]))


def test_the_boxes_cross_to_the_host_in_one_copy(monkeypatch):
    """On a GPU each copy back makes the host wait for the device: the merged boxes, their scores and
    what is kept come back together (the batch's width is the only other wait)."""
    rows = synthetic_rows(np.random.default_rng(3), batch=4)
    expected = person_detections_batched(rows, 432, 768)
    copies = []
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(self.shape) or cpu(self, *a, **k))
    out = person_detections_batched(rows, 432, 768)
    assert len(copies) == 1
    for a, b in zip(out, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_nan_score_sorts_after_every_real_one_as_in_the_reference():
    """A NaN person probability gives a NaN score: numpy's argsort puts it last, so its box only
    joins the merges of real boxes and is then dropped; it must not claim the real boxes first."""
    rows = synthetic_rows(np.random.default_rng(4), batch=3)
    candidate = (rows[..., 4] >= 0.8) & (rows[..., 5:].argmax(dim=-1) == 0)
    for b in range(3):
        columns = torch.nonzero(candidate[b]).flatten()
        rows[b, columns[:: 3 + b], 5] = float("nan")
    rows[2, 0, 5:] = float("nan")  # NaN in every class, person's index first
    out = person_detections_batched(rows, 432, 768)
    for b in range(3):
        reference = person_detections(rows[b], 432, 768)
        assert len(reference) > 2
        assert out[b].shape == reference.shape
        np.testing.assert_allclose(out[b], reference, rtol=0, atol=1e-3)


def test_the_device_work_does_not_grow_with_the_number_of_candidates():
    """On a GPU every PyTorch operation is a kernel launch: the greedy merge walks its candidates on
    the host, so a batch with many candidates costs the device as many operations as one with few."""
    from torch.overrides import TorchFunctionMode

    class Counting(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            return func(*args, **(kwargs or {}))

    counts = {}
    for people, n in ((1, 20), (12, 600)):
        rows = synthetic_rows(np.random.default_rng(5), batch=4, n=n, people=people)
        with Counting() as counting:
            out = person_detections_batched(rows, 432, 768)
        counts[n] = counting.calls
        for b in range(4):
            np.testing.assert_allclose(out[b], person_detections(rows[b], 432, 768), rtol=0, atol=1e-3)
    assert counts[600] == counts[20]
