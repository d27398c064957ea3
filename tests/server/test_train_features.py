"""Backbone features for new footage, in the database-file layout."""

import numpy as np
import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.pipeline import crop
from vibe_server.train.features import read_bboxes


def test_box_files_in_both_forms(tmp_path):
    np.save(tmp_path / "a.npy", np.array([[50.0, 40.0, 30.0, 30.0]] * 3))
    frames, boxes = read_bboxes(tmp_path / "a.npy")
    assert frames.tolist() == [0, 1, 2] and boxes.shape == (3, 4)
    (tmp_path / "b.csv").write_text("4,50,40,30,30\n7,52,41,30,30\n")
    frames, boxes = read_bboxes(tmp_path / "b.csv")
    assert frames.tolist() == [4, 7] and boxes[1].tolist() == [52, 41, 30, 30]


def test_an_empty_box_file_says_it_holds_no_boxes_and_nothing_else(tmp_path, recwarn):
    """numpy warned 'Empty input file' first, and the message spoke of an array of shape (0, 1)."""
    (tmp_path / "boxes.csv").write_text("")
    with pytest.raises(VibeError, match=r"boxes\.csv holds no boxes \(no rows of numbers\)\. Expected rows of"):
        read_bboxes(tmp_path / "boxes.csv")
    assert [str(w.message) for w in recwarn] == []


@pytest.mark.parametrize(
    "content, message",
    [
        ("1,2,3\n", "expected \\(N, 4\\)"),
        ("5,50,40,30,30\n3,50,40,30,30\n", "increasing"),
        ("50,40,0,30\n", "positive"),
        ("a,b,c,d\n", "Cannot read boxes"),
    ],
)
def test_bad_box_files_are_explained(tmp_path, content, message):
    (tmp_path / "boxes.csv").write_text(content)
    with pytest.raises(VibeError, match=message):
        read_bboxes(tmp_path / "boxes.csv")
    with pytest.raises(VibeError, match="not found"):
        read_bboxes(tmp_path / "missing.csv")


def test_extract_features_command_writes_a_database_file(tmp_path, synthetic_bundle, vibe_model, capsys):
    import cv2
    import joblib

    from vibe_server.cli import main
    from vibe_server.train.datasets import split_into_chunks

    rng = np.random.default_rng(0)
    frames_rgb = rng.integers(0, 255, (6, 96, 128, 3), dtype=np.uint8)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 25, (128, 96))
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    (tmp_path / "boxes.csv").write_text("1,60,50,40,40\n2,62,50,40,40\n4,64,48,42,42\n")

    rc = main(
        [
            "extract-features",
            str(video),
            "--bboxes",
            str(tmp_path / "boxes.csv"),
            "--out",
            str(tmp_path / "clip.pt"),
            "--data-dir",
            str(synthetic_bundle),
            "--batch-size",
            "2",
        ]
    )
    assert rc == 0
    assert "features: 100%" in capsys.readouterr().err  # the progress bar, on stderr
    db = joblib.load(tmp_path / "clip.pt")
    assert db["features"].shape == (3, 2048) and db["features"].dtype == np.float32
    assert db["frame_id"].tolist() == [1, 2, 4] and list(db["vid_name"]) == ["clip"] * 3
    assert split_into_chunks(db["vid_name"], 3, 3) == [(0, 2)]

    # the same as cropping the decoded frame ourselves and running the backbone
    capture = cv2.VideoCapture(str(video))
    decoded = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(5)]
    crops = crop.crop_person(decoded[4], np.array([64.0, 48, 42, 42]), scale=1.3)[None]
    with torch.no_grad():
        expected = vibe_model.extract_features(crop.normalize_crops(crops)[None])[0, 0].numpy()
    np.testing.assert_allclose(db["features"][2], expected, rtol=1e-4, atol=1e-4)


def test_extract_features_refuses_a_playlist(tmp_path):
    """The training command reads videos through the same reader: a playlist is never decoded."""
    import cv2

    from vibe_server.commands.extract_features import iter_frames_rgb

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 25, (64, 48))
    for i in range(10):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    assert sum(1 for _ in iter_frames_rgb(clip)) == 10
    playlist = tmp_path / "list.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{clip}\n#EXT-X-ENDLIST\n")
    with pytest.raises(VibeError, match="Playlists"):
        next(iter_frames_rgb(playlist))


@pytest.mark.parametrize(
    "content, row",
    [
        ("50,40,30,30\n100,100,nan,50\n", 2),  # a NaN size
        ("nan,40,30,30\n", 1),  # a NaN centre
        ("3,50,40,30,30\n4,50,inf,30,30\n", 2),
    ],
)
def test_boxes_must_be_finite(tmp_path, content, row):
    (tmp_path / "boxes.csv").write_text(content)
    with pytest.raises(VibeError, match=f"row {row} .* not a finite number"):
        read_bboxes(tmp_path / "boxes.csv")
    boxes = np.loadtxt(tmp_path / "boxes.csv", delimiter=",", ndmin=2)
    np.save(tmp_path / "boxes.npy", boxes)
    with pytest.raises(VibeError, match=f"row {row} "):
        read_bboxes(tmp_path / "boxes.npy")


@pytest.mark.parametrize("content", ["50,40,30,1e308\n", "0,50,40,30,30\n1,-1e6,40,30,30\n"])
def test_boxes_far_larger_than_any_frame_are_refused(tmp_path, content):
    """Before: a box 1e308 pixels high overflowed the crop's float32 maths (raw RuntimeWarnings) and was
    stored in the training file."""
    (tmp_path / "boxes.csv").write_text(content)
    with pytest.raises(VibeError, match=r"row \d .* holds a box value beyond 81,920 pixels, far past any frame"):
        read_bboxes(tmp_path / "boxes.csv")
    (tmp_path / "boxes.csv").write_text("0,-8000,40,30000,30\n")  # a person partly out of an 8K frame: a box
    assert read_bboxes(tmp_path / "boxes.csv")[1].tolist() == [[-8000, 40, 30000, 30]]


def _npy_claiming_shape(path, shape):
    """A tiny .npy whose header claims ``shape`` (float64) but which holds 32 bytes of data."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}".ljust(117) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(32))


BAD_NPY = {  # what the .npy holds -> words of the one message
    "records": (np.zeros(3, dtype=[(k, "f8") for k in "abcd"]), "refusing dtype"),
    "text": (np.array([["a", "b", "c", "d"]]), "refusing dtype '<U1'"),
    "complex numbers": (np.full((3, 4), 1 + 2j), "refusing dtype '<c16'"),
    "true/false": (np.ones((3, 4), dtype=bool), "holds bool values, not numbers"),
}


@pytest.mark.parametrize("case", list(BAD_NPY))
def test_box_arrays_of_other_kinds_are_refused_naming_the_file(tmp_path, case):
    array, words = BAD_NPY[case]
    np.save(tmp_path / "boxes.npy", array)
    with pytest.raises(VibeError, match=f"Cannot read boxes from .*boxes.npy: .*{words}.* Expected rows of"):
        read_bboxes(tmp_path / "boxes.npy")


def test_a_box_file_claiming_a_huge_shape_is_refused_before_any_allocation(tmp_path):
    _npy_claiming_shape(tmp_path / "boxes.npy", (10**11, 4))  # 3.2 TB claimed, 160 bytes on disk
    with pytest.raises(VibeError, match=r"boxes.npy: an array of shape \(100000000000, 4\) float64 would need"):
        read_bboxes(tmp_path / "boxes.npy")
    _npy_claiming_shape(tmp_path / "boxes.npy", (2, 4))  # 64 bytes claimed, 32 held
    with pytest.raises(VibeError, match="needs 64 bytes but 32 are declared"):
        read_bboxes(tmp_path / "boxes.npy")


def test_integer_box_arrays_are_read(tmp_path):
    with open(tmp_path / "boxes.NPY", "wb") as f:  # np.save would add '.npy' to the name
        np.save(f, np.array([[3, 50, 40, 30, 30], [8, 51, 40, 30, 30]], dtype=np.int32))
    frames, boxes = read_bboxes(tmp_path / "boxes.NPY")
    assert frames.tolist() == [3, 8] and boxes.dtype == np.float64 and boxes[1].tolist() == [51, 40, 30, 30]


@pytest.mark.parametrize(
    "content, row, number",
    [
        ("0.9,320,240,100,200\n1.2,320,240,100,200\n", 1, "0.9"),  # would become frames 0 and 1
        ("0,320,240,100,200\n2.5,320,240,100,200\n", 2, "2.5"),
        ("-1,320,240,100,200\n", 1, "-1"),
        ("0,320,240,100,200\n1e30,320,240,100,200\n", 2, "1e\\+30"),  # no integer conversion wraps it
    ],
)
def test_frame_numbers_must_be_whole_numbers(tmp_path, content, row, number):
    (tmp_path / "boxes.csv").write_text(content)
    with pytest.raises(VibeError, match=f"row {row} has frame number {number}; frame numbers must be whole numbers"):
        read_bboxes(tmp_path / "boxes.csv")
    np.save(tmp_path / "boxes.npy", np.loadtxt(tmp_path / "boxes.csv", delimiter=",", ndmin=2))
    with pytest.raises(VibeError, match=f"row {row} has frame number {number}"):
        read_bboxes(tmp_path / "boxes.npy")


@pytest.mark.parametrize("scale", ["0", "-1", "nan", "inf"])
def test_extract_features_refuses_a_bad_scale_before_loading_the_model(tmp_path, capsys, scale):
    from vibe_server.cli import main

    (tmp_path / "clip.avi").write_bytes(b"not read: the scale is refused first")
    (tmp_path / "boxes.csv").write_text("50,40,30,30\n")
    argv = ["extract-features", str(tmp_path / "clip.avi"), "--bboxes", str(tmp_path / "boxes.csv")]
    argv += ["--out", str(tmp_path / "clip.pt"), "--data-dir", str(tmp_path / "no_data"), "--scale", scale]
    assert main(argv) == 2
    assert "The crop scale (--scale) must be a number more than 0" in capsys.readouterr().err
    assert not (tmp_path / "clip.pt").exists()


def test_extract_video_features_refuses_a_bad_scale():
    from vibe_server.train.features import extract_video_features

    with pytest.raises(VibeError, match="crop scale"):
        extract_video_features(None, [], np.array([0]), np.array([[50.0, 40, 30, 30]]), scale=0.0)


def _argv(tmp_path, *extra):
    (tmp_path / "clip.avi").write_bytes(b"not read: refused first")
    (tmp_path / "boxes.csv").write_text("50,40,30,30\n")
    argv = ["extract-features", str(tmp_path / "clip.avi"), "--bboxes", str(tmp_path / "boxes.csv")]
    return argv + ["--out", str(tmp_path / "clip.pt"), "--data-dir", str(tmp_path / "no_data"), *extra]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch-size", "0"], "--batch-size=0 is out of range: it must be a whole number, between 1 and 4096 "),
        (["--batch-size", "-3"], "--batch-size=-3 is out of range"),
        (["--batch-size", "100000000"], "--batch-size=100000000 is out of range"),  # as infer's
        (["--device", "tpu"], "Unknown device 'tpu'; use auto, cpu or cuda[:N]."),
        (["--device", "cuda:x"], "Unknown device 'cuda:x'"),
    ],
)
def test_extract_features_refuses_bad_settings_at_once(tmp_path, capsys, extra, message):
    from vibe_server.cli import main

    assert main(_argv(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "clip.pt").exists()


def test_extract_features_refuses_a_gpu_that_is_not_there(tmp_path, capsys, monkeypatch):
    from vibe_server.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(_argv(tmp_path, "--device", "cuda")) == 2
    assert "sees no CUDA GPU; use the CPU: --device cpu" in capsys.readouterr().err


def test_extract_features_without_joblib_says_how_to_install_it_before_any_work(tmp_path, capsys, monkeypatch):
    import sys

    from vibe_server.cli import main

    monkeypatch.setitem(sys.modules, "joblib", None)  # import joblib raises ImportError
    assert main(_argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: extract-features writes its .pt file with joblib, which is not installed. Install the training "
        'extras with: pip install -e ".[train]" (or: pip install joblib).\n'
    )


def test_extract_features_help_gives_the_defaults(capsys):
    from vibe_server.cli import main

    with pytest.raises(SystemExit):
        main(["extract-features", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("(default 1.3,", "(default 200)", "(default cpu)", "the whole installed bundle"):
        assert words in text, words
