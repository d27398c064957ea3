"""Batched grid_sample crops against the official cv2.warpAffine crop (pipeline.crop)."""

import numpy as np
import pytest
import torch
from testdata import SAMPLE

from vibe_server.pipeline.batched.crop import crop_people_batched, crop_to_image_affines
from vibe_server.pipeline.crop import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, crop_people, crop_transform


@pytest.fixture(scope="module")
def frames():
    from vibe_server.pipeline.video import open_video

    return np.stack([f for i, f in open_video(SAMPLE).frames(0, 40) if i % 10 == 0])  # (4, H, W, 3)


def boxes_for(frames, rng, count):
    """Boxes of every kind: inside, across the border, tiny, large, non-integer centres."""
    height, width = frames.shape[1:3]
    centre = rng.uniform([-40, -40], [width + 40, height + 40], (count, 2))
    size = rng.uniform([8, 16], [width * 0.8, height * 1.2], (count, 2))
    return np.concatenate([centre, size], axis=1)


def to_levels(crops: torch.Tensor) -> np.ndarray:
    """Normalised (K, 3, c, c) -> grey levels (K, c, c, 3) float."""
    mean = torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1)
    return (crops * std + mean).mul(255).permute(0, 2, 3, 1).numpy()


def test_affines_invert_the_official_transform():
    boxes = boxes_for(np.zeros((1, 432, 768, 3), np.uint8), np.random.default_rng(0), 50)
    for box, inverse in zip(boxes, crop_to_image_affines(boxes)):
        forward = np.vstack([crop_transform(box), [0, 0, 1]])
        # the official points are stored as float32 (cx + half_w is rounded to ~1e-4 px): 1e-3 px covers it
        np.testing.assert_allclose(forward @ np.vstack([inverse, [0, 0, 1]]), np.eye(3), atol=1e-3)


def test_batched_crops_match_the_official_crop(frames):
    rng = np.random.default_rng(1)
    boxes = boxes_for(frames, rng, 40)
    frame_index = rng.integers(0, len(frames), len(boxes))
    ours = to_levels(crop_people_batched(torch.from_numpy(frames), torch.from_numpy(frame_index), boxes))
    official = to_levels(torch.cat([crop_people(frames[i], box[None]) for i, box in zip(frame_index, boxes)]))
    difference = np.abs(ours - official)
    # the stated tolerance: mean under 0.3 grey levels per crop, 99.9 % of pixels within 3 levels
    assert difference.reshape(len(boxes), -1).mean(axis=1).max() < 0.3
    assert np.quantile(difference, 0.999) <= 3.0
    # and both agree on where the black border is (the image edge maps to the same crop pixels)
    assert np.mean((ours < 1) != (official < 1)) < 0.01


def test_one_frame_many_people_and_dtype(frames):
    boxes = np.array([[200, 150, 80, 200], [400, 160, 90, 210]], float)
    out = crop_people_batched(torch.from_numpy(frames), torch.tensor([2, 2]), boxes, dtype=torch.bfloat16)
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.bfloat16
    official = crop_people(frames[2], boxes)
    assert (out.float() - official).abs().mean() < 0.02


def test_the_device_crop_takes_several_frames_in_one_call_with_the_one_frame_result(frames, monkeypatch):
    from vibe_server.pipeline.batched import crop as batched_crop
    from vibe_server.pipeline.batched.crop import crop_people_on_device

    rng = np.random.default_rng(2)
    boxes = [boxes_for(frames, rng, count) for count in (1, 3, 2, 1)]  # each frame its own people
    together = crop_people_on_device(list(frames), boxes, "cpu")
    one_by_one = torch.cat([crop_people_on_device([frame], [b], "cpu") for frame, b in zip(frames, boxes)])
    assert together.shape == (7, 3, 224, 224)
    torch.testing.assert_close(together, one_by_one, rtol=0, atol=0)
    # the same crops as grid_sample over the stacked frames, each box from its own frame
    frame_index = torch.tensor([0, 1, 1, 1, 2, 2, 3])
    expected = crop_people_batched(torch.from_numpy(frames), frame_index, np.concatenate(boxes))
    torch.testing.assert_close(together, expected, rtol=0, atol=0)
    # frames of two sizes (not from one video) are cropped one by one; no boxes gives no crops
    small = np.ascontiguousarray(frames[0][:200, :300])
    mixed = crop_people_on_device([frames[1], small], [boxes[1], boxes[0]], "cpu")
    torch.testing.assert_close(mixed[:3], one_by_one[1:4], rtol=0, atol=0)
    torch.testing.assert_close(mixed[3:], crop_people_on_device([small], [boxes[0]], "cpu"), rtol=0, atol=0)
    assert crop_people_on_device([frames[0]], [np.zeros((0, 4))], "cpu").shape == (0, 3, 224, 224)
    # where the frames hold more pixels than one call may make float, they are cropped in parts
    height, width = frames.shape[1:3]
    monkeypatch.setattr(batched_crop, "CALL_PIXELS", 2 * height * width + 1)
    calls = []
    monkeypatch.setattr(
        batched_crop, "crop_people_batched", lambda f, *a, **k: calls.append(len(f)) or crop_people_batched(f, *a, **k)
    )
    torch.testing.assert_close(crop_people_on_device(list(frames), boxes, "cpu"), together, rtol=0, atol=0)
    assert calls == [2, 2]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CI has none; the CPU runs the same code above)")
def test_on_a_gpu_the_device_crop_does_not_make_the_host_wait(frames):
    from vibe_server.pipeline.batched.crop import crop_people_on_device

    boxes = [boxes_for(frames, np.random.default_rng(3), 2) for _ in frames]
    on_cpu = crop_people_on_device(list(frames), boxes, "cpu")
    crop_people_on_device(list(frames), boxes, "cuda")  # the constants are made, once
    torch.cuda.set_sync_debug_mode("error")  # a call that waits for the GPU raises
    try:
        on_gpu = crop_people_on_device(list(frames), boxes, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # the same samples up to float rounding, which may move a level by one
    assert np.abs(to_levels(on_gpu.cpu()) - to_levels(on_cpu)).max() <= 1.0 + 1e-3
