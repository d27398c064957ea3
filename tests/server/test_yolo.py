"""YOLOv3: the layer table, the Darknet weights file, decoding, VIBE's pre/post-processing, OpenCV parity."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from testdata import REAL_CLIPS

from vibe_blender.core.errors import VibeError
from vibe_server.data.loading import YOLO_FLOAT_COUNT, YOLO_WEIGHTS_BYTES
from vibe_server.pipeline.detect import make_detector
from vibe_server.pipeline.detect.boxes import merge_nms, nms
from vibe_server.pipeline.detect.darknet_weights import (
    load_darknet_weights,
    parameter_tensors,
    write_random_darknet_weights,
)
from vibe_server.pipeline.detect.yolo import YoloDetector, person_detections, preprocess_frames, rescale_boxes
from vibe_server.pipeline.detect.yolov3 import ANCHORS_WH_PX, YOLOv3, decode_heads, yolov3_layers


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    return write_random_darknet_weights(tmp_path_factory.mktemp("yolo") / "yolov3.weights", seed=0)


@pytest.fixture(scope="module")
def model(weights_file) -> YOLOv3:
    model = YOLOv3().eval()
    load_darknet_weights(model, weights_file)
    return model


@pytest.fixture(scope="module")
def frames():
    """Frames 100, 105, 110 of a real 768 x 432 clip, RGB."""
    from vibe_server.pipeline.video import open_video

    return [f for i, f in open_video(REAL_CLIPS / "one-by-one-person-detection.mp4").frames(100, 111) if i % 5 == 0]


# -- architecture and weights file --------------------------------------------------------------
def test_layer_table_is_yolov3_cfg():
    layers = yolov3_layers()
    assert len(layers) == 107
    convs = [i for i, layer in enumerate(layers) if layer.kind == "conv"]
    assert len(convs) == 75
    assert [i for i in convs if not layers[i].batch_norm] == [81, 93, 105]
    assert [i for i, layer in enumerate(layers) if layer.kind == "yolo"] == [82, 94, 106]
    routes = {i: layer.sources for i, layer in enumerate(layers) if layer.kind == "route"}
    assert routes == {83: (79,), 86: (85, 61), 95: (91,), 98: (97, 36)}
    assert sum(layer.stride == 2 for layer in layers) == 5
    assert (layers[86].out_channels, layers[98].out_channels) == (768, 384)


def test_parameter_count_is_the_official_file():
    tensors = parameter_tensors(YOLOv3())
    assert len(tensors) == 72 * 5 + 3 * 2
    assert sum(t.numel() for t in tensors) == YOLO_FLOAT_COUNT == 62_001_757
    assert YOLO_WEIGHTS_BYTES == 248_007_048


def test_weights_round_trip_puts_every_tensor_in_place(weights_file, model):
    assert weights_file.stat().st_size == YOLO_WEIGHTS_BYTES
    header = np.fromfile(weights_file, dtype="<i4", count=3)
    assert header.tolist() == [0, 2, 0]
    floats = np.fromfile(weights_file, dtype="<f4", offset=20)
    # first layer by hand: BN beta, gamma, mean, var (32 each) then the (32, 3, 3, 3) kernel
    first = model.convs[0]
    np.testing.assert_array_equal(first.bn.bias.detach().numpy(), floats[0:32])
    np.testing.assert_array_equal(first.bn.weight.detach().numpy(), floats[32:64])
    np.testing.assert_array_equal(first.bn.running_mean.numpy(), floats[64:96])
    np.testing.assert_array_equal(first.bn.running_var.numpy(), floats[96:128])
    np.testing.assert_array_equal(first.conv.weight.detach().numpy(), floats[128:992].reshape(32, 3, 3, 3))
    # last layer (81 is conv 58, 105 is the last): conv bias then kernel, no BN
    last = model.convs[-1]
    assert last.bn is None
    np.testing.assert_array_equal(last.conv.bias.detach().numpy(), floats[-65535:-65280])
    np.testing.assert_array_equal(last.conv.weight.detach().numpy(), floats[-65280:].reshape(255, 256, 1, 1))
    # and everything in between, in order
    flat = torch.cat([t.detach().reshape(-1) for t in parameter_tensors(model)]).numpy()
    np.testing.assert_array_equal(flat, floats)


def test_forward_shapes_at_416(model):
    with torch.no_grad():
        heads = model(torch.rand(1, 3, 416, 416))
    assert [tuple(h.shape) for h in heads] == [(1, 255, 13, 13), (1, 255, 26, 26), (1, 255, 52, 52)]
    rows = decode_heads(heads, 416)
    assert rows.shape == (1, 507 + 2028 + 8112, 85) == (1, 10647, 85)
    assert torch.isfinite(rows).all() and (rows[..., 4:] >= 0).all() and (rows[..., 4:] <= 1).all()


def test_wrong_weights_files_are_named_and_explained(tmp_path):
    model = YOLOv3()
    with pytest.raises(VibeError, match="yolov3.weights not found"):
        load_darknet_weights(model, tmp_path / "yolov3.weights")
    short = tmp_path / "short.weights"
    short.write_bytes(np.array([0, 2, 0, 0, 0], "<i4").tobytes() + b"\0" * 1000)
    with pytest.raises(VibeError, match="truncated"):
        load_darknet_weights(model, short)
    long = tmp_path / "long.weights"
    with open(long, "wb") as f:
        f.write(np.array([0, 2, 0, 0, 0], "<i4").tobytes())
        f.truncate(YOLO_WEIGHTS_BYTES + 4 * 1000)  # sparse: cheap to make
    with pytest.raises(VibeError, match="more parameters"):
        load_darknet_weights(model, long)
    tiny = tmp_path / "tiny.weights"
    tiny.write_bytes(b"\0\0")
    with pytest.raises(VibeError, match="too short"):
        load_darknet_weights(model, tiny)
    zeros = tmp_path / "zeros.weights"  # the official size, all zeros: the size it was told off was 4 bytes short
    with open(zeros, "wb") as f:
        f.truncate(YOLO_WEIGHTS_BYTES)
    with pytest.raises(
        VibeError, match="its header says Darknet format 0.0, where the official yolov3.weights has 0.2"
    ):
        load_darknet_weights(model, zeros)


def test_old_header_with_a_4_byte_seen_counter_is_read(tmp_path):
    path = tmp_path / "v01.weights"
    with open(path, "wb") as f:
        f.write(np.array([0, 1, 0, 7], "<i4").tobytes())
        f.truncate(16 + 4 * YOLO_FLOAT_COUNT)
    assert load_darknet_weights(YOLOv3(), path) == {"major": 0, "minor": 1, "revision": 0, "seen": 7}


def test_make_detector_names_the_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(VibeError, match="yolov3.weights"):
        make_detector("yolo", data_dir=tmp_path)
    monkeypatch.setenv("VIBE_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(VibeError, match="elsewhere"):
        make_detector("yolo")
    with pytest.raises(VibeError, match="Unknown person detector"):
        make_detector("maskrcnn")


# -- OpenCV DNN reads the same file: architecture + layout parity --------------------------------
def _darknet_cfg(input_size_px: int) -> str:
    lines = ["[net]", "batch=1", f"width={input_size_px}", f"height={input_size_px}", "channels=3", ""]
    for layer in yolov3_layers():
        if layer.kind == "conv":
            lines += (
                ["[convolutional]"]
                + ["batch_normalize=1"] * layer.batch_norm
                + [
                    f"filters={layer.out_channels}",
                    f"size={layer.kernel}",
                    f"stride={layer.stride}",
                    "pad=1",
                    "activation=leaky" if layer.batch_norm else "activation=linear",
                ]
            )
        elif layer.kind == "shortcut":
            lines += ["[shortcut]", "from=-3", "activation=linear"]
        elif layer.kind == "route":
            lines += ["[route]", "layers=" + ",".join(map(str, layer.sources))]
        elif layer.kind == "upsample":
            lines += ["[upsample]", "stride=2"]
        else:
            lines += [
                "[yolo]",
                "mask=" + ",".join(map(str, layer.anchor_mask)),
                "classes=80",
                "num=9",
                "anchors=" + ",".join(f"{w},{h}" for w, h in ANCHORS_WH_PX),
            ]
        lines.append("")
    return "\n".join(lines)


@pytest.mark.skipif(not hasattr(cv2.dnn, "readNetFromDarknet"), reason="OpenCV 5 has no Darknet importer")
def test_heads_match_opencv_dnn_on_the_same_weights(weights_file, model, tmp_path):
    size = 160  # fully convolutional: a small input keeps this fast
    (tmp_path / "yolov3.cfg").write_text(_darknet_cfg(size))
    net = cv2.dnn.readNetFromDarknet(str(tmp_path / "yolov3.cfg"), str(weights_file))
    image = np.random.default_rng(1).random((1, 3, size, size), dtype=np.float32)
    net.setInput(image)
    reference = net.forward(["conv_81", "conv_93", "conv_105"])
    net.setInput(image)
    reference_boxes = net.forward(["yolo_82", "yolo_94", "yolo_106"])
    eps = [m.bn.eps for m in model.convs if m.bn is not None]
    try:
        for m in model.convs:  # OpenCV normalises with sqrt(var + 1e-6); VIBE's detector with 1e-5
            if m.bn is not None:
                m.bn.eps = 1e-6
        with torch.no_grad():
            heads = model(torch.from_numpy(image))
    finally:
        for m, e in zip((m for m in model.convs if m.bn is not None), eps):
            m.bn.eps = e
    for ours, theirs in zip(heads, reference, strict=True):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours.numpy(), theirs, atol=2e-5)
    # decoding: OpenCV's rows are (gy, gx, anchor) with boxes divided by the input size
    rows = decode_heads(heads, size)[0].numpy()
    start = 0
    for theirs in reference_boxes:
        grid = int(round((len(theirs) / 3) ** 0.5))
        ours = rows[start : start + 3 * grid * grid].reshape(3, grid, grid, 85).transpose(1, 2, 0, 3).reshape(-1, 85)
        start += 3 * grid * grid
        np.testing.assert_allclose(ours[:, :4] / size, theirs[:, :4], atol=2e-5)
        np.testing.assert_allclose(ours[:, 4], theirs[:, 4], atol=1e-5)
    assert start == len(rows)


# -- decoding and post-processing on hand-made tensors -------------------------------------------
def test_decode_heads_places_one_cell():
    heads = [torch.zeros(1, 255, g, g) for g in (13, 26, 52)]
    # head 1 (stride 16, anchors 3,4,5), anchor 2 -> (59, 119), cell gy=4, gx=7
    base = 2 * 85
    heads[1][0, base + 0, 4, 7] = 1.0
    heads[1][0, base + 1, 4, 7] = -0.5
    heads[1][0, base + 2, 4, 7] = 0.3
    heads[1][0, base + 3, 4, 7] = -0.2
    heads[1][0, base + 4, 4, 7] = 2.0
    heads[1][0, base + 5 + 17, 4, 7] = 3.0
    rows = decode_heads(heads, 416)
    row = rows[0, 507 + 2 * 26 * 26 + 4 * 26 + 7]
    sig = torch.sigmoid
    expected = [
        (sig(torch.tensor(1.0)) + 7) * 16,
        (sig(torch.tensor(-0.5)) + 4) * 16,
        np.exp(0.3) * 59,
        np.exp(-0.2) * 119,
        sig(torch.tensor(2.0)),
    ]
    np.testing.assert_allclose(row[:5].numpy(), np.array(expected, dtype=np.float32), rtol=1e-6)
    assert row[5 + 17] == pytest.approx(float(sig(torch.tensor(3.0))))
    assert row[5] == pytest.approx(0.5)  # independent sigmoids, no softmax
    # grid cell 0 of head 0: centre at half a stride
    np.testing.assert_allclose(rows[0, 0, :4].numpy(), [16, 16, 116, 90], rtol=1e-6)


@pytest.mark.parametrize("shape", [(432, 768, 3), (300, 200, 3), (640, 640, 3)])
def test_preprocess_equals_the_official_float_pad_and_nearest_resize(shape):
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ours = preprocess_frames(torch.from_numpy(frame)[None])
    # official: to_tensor -> pad the short side with 0 (diff // 2 before) -> F.interpolate nearest
    image = torch.from_numpy(frame).permute(2, 0, 1).float() / 255
    h, w = shape[:2]
    diff = abs(h - w)
    pad = (0, 0, diff // 2, diff - diff // 2) if h <= w else (diff // 2, diff - diff // 2, 0, 0)
    official = F.interpolate(F.pad(image, pad, value=0)[None], size=416, mode="nearest")
    assert ours.shape == (1, 3, 416, 416)
    assert torch.equal(ours, official)


def test_rescale_boxes_undoes_the_padding_for_1080p():
    boxes = np.array([[0.0, 91.0, 416.0, 325.0], [208.0, 208.0, 312.0, 260.0]], np.float32)
    out = rescale_boxes(boxes, 416, 1080, 1920)
    np.testing.assert_allclose(out[0], [0, 0, 1920, 1080], rtol=1e-6)
    np.testing.assert_allclose(out[1], [960, (208 - 91) / 234 * 1080, 1440, (260 - 91) / 234 * 1080], rtol=1e-6)


def test_merge_nms_uses_plus_one_iou_and_averages_by_objectness():
    # plain IoU 1/3 (kept apart), +1-pixel IoU 0.5 (merged)
    boxes = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [50.0, 50.0, 60.0, 60.0]], np.float32)
    weights = np.array([0.9, 0.3, 0.8], np.float32)
    kept, index = merge_nms(boxes, weights, 0.4)
    assert index.tolist() == [0, 2]
    np.testing.assert_allclose(kept[0], (0.9 * boxes[0] + 0.3 * boxes[1]) / 1.2, rtol=1e-6)
    np.testing.assert_allclose(kept[1], boxes[2])
    assert nms(boxes, weights, 0.4).tolist() == [0, 2, 1]


def _row(cx, cy, w, h, obj, class_probs):
    row = torch.zeros(85)
    row[:5] = torch.tensor([cx, cy, w, h, obj])
    for c, p in class_probs.items():
        row[5 + c] = p
    return row


def test_person_detections_thresholds_classes_and_scores():
    rows = torch.stack(
        [
            _row(100, 100, 40, 80, 0.95, {0: 0.99}),  # person, kept
            _row(102, 101, 40, 80, 0.90, {0: 0.98}),  # overlaps the first: merged into it
            _row(300, 200, 30, 60, 0.79, {0: 1.0}),  # objectness under 0.8
            _row(300, 300, 30, 60, 0.99, {0: 0.9, 2: 0.95}),  # best class is a car
            _row(200, 300, 30, 60, 0.85, {0: 0.80}),  # person but obj x cls = 0.68 <= 0.7
            _row(50, 350, 20, 40, 0.90, {0: 0.90}),  # person, score 0.81
        ]
    )
    dets = person_detections(rows, 416, 416)
    assert dets.dtype == np.float32 and dets.shape == (2, 5)
    np.testing.assert_allclose(dets[:, 4], [0.95 * 0.99, 0.81], rtol=1e-6)
    merged_cx = (0.95 * 100 + 0.90 * 102) / 1.85
    np.testing.assert_allclose((dets[0, 0] + dets[0, 2]) / 2, merged_cx, rtol=1e-5)
    np.testing.assert_allclose(dets[1, :4], [40, 330, 60, 370], rtol=1e-6)
    assert person_detections(rows[2:5], 416, 416).shape == (0, 5)
    assert person_detections(torch.zeros(0, 85), 416, 416).shape == (0, 5)


# -- the detector end to end ---------------------------------------------------------------------
def _one_anchor_sees_people_everywhere(detector):
    """Random weights detect nothing. Zero the three head kernels and set their biases so that
    anchor 0 of the coarse head (116 x 90 px) says 'person' in every cell, everything else nothing."""
    heads = [block for block in detector.model.convs if block.bn is None]
    with torch.no_grad():
        for n, block in enumerate(heads):
            block.conv.weight.zero_()
            bias = block.conv.bias.view(3, 85)
            bias[:, :4] = 0.0
            bias[:, 4] = -8.0
            bias[:, 5] = 8.0
            bias[:, 6:] = -8.0
            if n == 0:
                bias[0, 4] = 8.0


def test_yolo_detector_batches_and_maps_boxes_to_the_frame(weights_file, frames):
    detector = YoloDetector(weights_file, batch_size=2, input_size_px=160)  # small input: fast
    _one_anchor_sees_people_everywhere(detector)
    frames = frames[:2]
    batched = detector.detect(frames)
    single = [detector.detect([f])[0] for f in frames]
    assert len(batched) == 2
    expected_score = float(torch.sigmoid(torch.tensor(8.0)) ** 2)
    for a, b in zip(batched, single):
        assert a.dtype == np.float32 and a.shape[1] == 5 and 1 < len(a) < 25  # merge-NMS joined cells
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a[:, 4], expected_score, rtol=1e-6)
        # equal-size boxes stay 116 x 90 network pixels after merging, then scale to the 768 x 432 frame
        # (the 432 rows fill 90 of the 160 network rows: pad 70)
        np.testing.assert_allclose(a[:, 2] - a[:, 0], 116 * 768 / 160, rtol=1e-4)
        np.testing.assert_allclose(a[:, 3] - a[:, 1], 90 * 432 / 90, rtol=1e-4)
        centres_x = (a[:, 0] + a[:, 2]) / 2
        assert (centres_x > 0).all() and (centres_x < 768).all()


def test_the_gpu_post_processing_gives_the_per_frame_detections(weights_file, frames):
    """The batched post-processing a GPU uses (all frames of a batch at once, on the device), run
    here on the CPU through the real detector, against the official per-frame loop."""
    per_frame = YoloDetector(weights_file, batch_size=3, input_size_px=160, batched_postprocess=False)
    batched = YoloDetector(weights_file, batch_size=3, input_size_px=160, batched_postprocess=True)
    assert not YoloDetector(weights_file, input_size_px=160).batched_postprocess  # CPU default: the official loop
    for detector in (per_frame, batched):
        _one_anchor_sees_people_everywhere(detector)
    expected, got = per_frame.detect(frames), batched.detect(frames)
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape and len(b) > 1
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)


def test_bf16_channels_last_fast_path_runs(weights_file, frames):
    detector = YoloDetector(weights_file, precision="bf16", batch_size=1, input_size_px=160)
    assert detector.channels_last
    rows = detector.network_rows(frames[:1])
    assert (
        rows.shape == (1, 3 * (5 * 5 + 10 * 10 + 20 * 20), 85)
        and rows.dtype == torch.float32
        and torch.isfinite(rows).all()
    )
    with pytest.raises(VibeError, match="precision"):
        YoloDetector(weights_file, precision="int8")


def test_an_on_the_spot_detection_carries_frames_ahead_only_where_they_come_for_free(weights_file):
    """A batch on a GPU (a small call costs its launches) or when compiled (every call is padded to
    a batch anyway); one frame in eager on a CPU, where each frame costs its own compute."""
    detector = YoloDetector(weights_file, batch_size=6, input_size_px=160)
    assert detector.spot_batch_size == 1
    detector.compiled = True
    assert detector.spot_batch_size == 6
    detector.runner.fallback_reason = "no compiler"  # compiling failed: eager again
    assert detector.spot_batch_size == 1
    detector.device = torch.device("cuda")  # (the rule only; no GPU here)
    assert detector.spot_batch_size == 6
