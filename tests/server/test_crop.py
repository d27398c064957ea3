"""The official person crop (scale 1.1, 3-point affine, cv2.warpAffine) and ImageNet normalisation."""

import numpy as np
import pytest
import torch

from vibe_server.pipeline.crop import crop_people, crop_people_uint8, crop_transform, normalize_crops


@pytest.fixture(scope="module")
def reference(unit_reference):
    return {k: unit_reference[k] for k in ("fn_crop_img", "fn_crop_bboxes", "fn_crop_raw")}


def test_crop_matches_the_official_demo_crop_bit_for_bit(reference):
    # square, non-square and partly off-image boxes, float64 as SORT gives them
    crops = crop_people_uint8(reference["fn_crop_img"], reference["fn_crop_bboxes"])
    assert crops.dtype == np.uint8 and crops.shape == (3, 224, 224, 3)
    np.testing.assert_array_equal(crops, reference["fn_crop_raw"])


def test_crop_per_frame_list_equals_one_frame_for_all_boxes(reference):
    img, bboxes = reference["fn_crop_img"], reference["fn_crop_bboxes"]
    np.testing.assert_array_equal(crop_people_uint8([img] * 3, bboxes), crop_people_uint8(img, bboxes))


def test_crop_transform_maps_the_scaled_box_onto_the_crop():
    cx, cy, w, h = 300.0, 200.0, 100.0, 160.0
    T = crop_transform(np.array([cx, cy, w, h]))

    def apply(x, y):
        return T @ np.array([x, y, 1.0])

    np.testing.assert_allclose(apply(cx, cy), [112, 112], atol=1e-4)
    np.testing.assert_allclose(apply(cx + 0.55 * w, cy + 0.55 * h), [224, 224], atol=1e-4)
    np.testing.assert_allclose(apply(cx - 0.55 * w, cy - 0.55 * h), [0, 0], atol=1e-4)


def test_normalisation_is_imagenet_mean_std_on_rgb_in_0_1():
    crops = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    out = normalize_crops(crops)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 224, 224)
    expected = (crops.astype(np.float32) / 255 - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)


def test_crop_people_gives_the_models_input(reference):
    out = crop_people(reference["fn_crop_img"], reference["fn_crop_bboxes"])
    assert out.shape == (3, 3, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, normalize_crops(reference["fn_crop_raw"]))
    assert crop_people(reference["fn_crop_img"], np.zeros((0, 4))).shape == (0, 3, 224, 224)
