"""Streaming decode of real clips, and one clear VibeError for every kind of bad video."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hostile_files import (
    CAN_READ_PROBE,
    CAN_STILL_READ,
    run_probe,
    tiny_gif,
    unreadable_copy,
    without_read_override,
)
from testdata import REAL_CLIPS, SAMPLE

from vibe_blender.core.errors import VibeError
from vibe_server.pipeline import video as video_module
from vibe_server.pipeline.video import JUMP_PREROLL_FRAMES, DecodeStopped, VideoReader, open_video

from .late_jumps import count_decoded_frames, record_decodes

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name, fps, width, height, frame_count",
    [
        ("one-by-one-person-detection.mp4", 10.0, 768, 432, 1394),
        ("asl-walk.mkv", 30.0, 640, 480, 89),
        ("face-demographics-walking.gif", 12.5, 480, 270, 35),
        ("bottle-detection-negative.mp4", 29.833, 640, 360, 1189),
    ],
)
def test_real_clips_report_container_facts(name, fps, width, height, frame_count):
    info = open_video(REAL_CLIPS / name).info
    assert info.name == name
    assert (info.width, info.height, info.frame_count) == (width, height, frame_count)
    assert info.fps == pytest.approx(fps, abs=1e-3)


@pytest.mark.parametrize("name, frame_count", [("asl-walk.mkv", 89), ("face-demographics-walking.gif", 35)])
def test_iteration_yields_every_frame_as_rgb(name, frame_count):
    reader = open_video(REAL_CLIPS / name)
    indices, last = [], None
    for frame_index, frame in reader:
        assert frame.dtype == np.uint8 and frame.shape == (reader.info.height, reader.info.width, 3)
        indices.append(frame_index)
        last = frame
    assert indices == list(range(frame_count))
    capture = cv2.VideoCapture(str(REAL_CLIPS / name))
    _, first_bgr = capture.read()
    capture.release()
    first = next(iter(reader))[1]
    np.testing.assert_array_equal(first, first_bgr[:, :, ::-1])  # RGB, not OpenCV's BGR
    assert not np.array_equal(first, last)


def test_batches_and_ranges():
    reader = open_video(REAL_CLIPS / "asl-walk.mkv")
    sizes, seen = [], []
    for indices, frames in reader.batches(32):
        assert indices.dtype == np.int64 and len(indices) == len(frames)
        sizes.append(len(frames))
        seen += indices.tolist()
    assert sizes == [32, 32, 25] and seen == list(range(89))
    ranged = list(reader.frames(40, 45))
    assert [i for i, _ in ranged] == [40, 41, 42, 43, 44]
    full = dict(reader.frames(0, 45))
    np.testing.assert_array_equal(ranged[0][1], full[40])


def test_keyframes_are_read_from_the_packets():
    assert open_video(REAL_CLIPS / "one-by-one-person-detection.mp4").keyframes() == list(range(0, 1394, 10))
    assert open_video(REAL_CLIPS / "bottle-detection-negative.mp4").keyframes() == [0, 250, 500, 750, 1000]
    assert open_video(REAL_CLIPS / "asl-walk.mkv").keyframes() == [0]


def test_keyframes_are_only_the_first_frame_when_packets_and_frames_disagree():
    reader = open_video(REAL_CLIPS / "bottle-detection-negative.mp4")
    reader.info.frame_count += 1  # a header counting a frame the packets do not hold
    assert reader.keyframes() == [0]


def test_an_opencv_that_cannot_hand_out_packets_gives_one_decoder(monkeypatch):
    open_capture = VideoReader._open_capture

    def no_raw_packets(self, *, raw_packets=False):
        if raw_packets:
            raise cv2.error("raw packets are not supported by this build")
        return open_capture(self)

    monkeypatch.setattr(VideoReader, "_open_capture", no_raw_packets)
    reader = open_video(SAMPLE, decode_workers=3)
    assert reader.keyframes() == [0]
    assert [i for i, _ in reader] == list(range(150))  # still every frame, from one decoder


def test_the_cheapest_frames_to_jump_to_follow_each_keyframe():
    reader = open_video(REAL_CLIPS / "one-by-one-person-detection.mp4")
    assert reader.jump_targets() == [k + JUMP_PREROLL_FRAMES for k in range(0, 1394 - JUMP_PREROLL_FRAMES, 10)]
    assert open_video(REAL_CLIPS / "asl-walk.mkv").jump_targets() == [JUMP_PREROLL_FRAMES]


@pytest.mark.parametrize(
    "clip, cuts",
    [(REAL_CLIPS / "one-by-one-person-detection.mp4", (0, 506, 916, 1000)), (SAMPLE, (0, 3, 47, None))],
    ids=["at jump targets", "elsewhere, to the end"],
)
def test_segments_decode_exactly_the_frames_of_one_decode_and_meet(clip, cuts):
    reader = open_video(clip)
    whole = dict(reader.frames(0, cuts[-1]))
    segments = [reader.segment(start, stop) for start, stop in zip(cuts, cuts[1:])]
    seen = {}
    for segment in segments:
        for index, frame in segment:
            seen[index] = frame
    assert sorted(seen) == sorted(whole)
    for index, frame in whole.items():
        np.testing.assert_array_equal(seen[index], frame)
    assert sum(s.decoded for s in segments) == len(whole)
    assert all(later.continues(earlier) for earlier, later in zip(segments, segments[1:]))


def test_a_segment_jumps_instead_of_decoding_the_frames_before_it(monkeypatch):
    reader = open_video(REAL_CLIPS / "one-by-one-person-detection.mp4")
    decoded = count_decoded_frames(monkeypatch)
    assert [i for i, _ in reader.segment(916, 1000)] == list(range(916, 1000))
    # 84 frames, the one past the end (to check the next cut) and OpenCV's 16 before a jump target
    assert len(decoded) <= 84 + 1 + JUMP_PREROLL_FRAMES + 1
    decoded.clear()
    list(reader.segment(916, 1000, seek=False))
    assert len(decoded) >= 1000


def test_a_segment_stops_at_its_next_frame_once_told_even_before_its_start(monkeypatch):
    """A segment decoded from the first frame drops the frames before its start (minutes of video
    for a late segment): ``stopped`` is asked before each of those too, not only once it yields."""
    reader = open_video(REAL_CLIPS / "one-by-one-person-detection.mp4")
    decoded = count_decoded_frames(monkeypatch)
    yielded = []
    with pytest.raises(DecodeStopped):
        for index, _ in reader.segment(900, 1000, seek=False, stopped=lambda: len(decoded) >= 10):
            yielded.append(index)
    assert len(decoded) == 10 and not yielded  # 10 of the 900 frames before the start
    stop_after = 5
    with pytest.raises(DecodeStopped):
        for index, _ in reader.segment(916, 1000, stopped=lambda: len(yielded) >= stop_after):
            yielded.append(index)
    assert yielded == list(range(916, 916 + stop_after))


def test_a_jump_that_lands_on_the_wrong_frame_is_caught_where_segments_meet(monkeypatch):
    record_decodes(monkeypatch, late_everywhere=True)
    reader = open_video(REAL_CLIPS / "one-by-one-person-detection.mp4")
    first, second, exact = reader.segment(0, 40), reader.segment(40, 80), reader.segment(40, 80, seek=False)
    for segment in (first, second, exact):
        frames = dict(segment)
    assert not second.continues(first)
    assert exact.continues(first) and sorted(frames) == list(range(40, 80))


def test_prefetch_thread_gives_the_same_frames_and_stops_early():
    plain = open_video(REAL_CLIPS / "face-demographics-walking.gif")
    ahead = open_video(REAL_CLIPS / "face-demographics-walking.gif", prefetch=4)
    for (i, a), (j, b) in zip(plain, ahead, strict=True):
        assert i == j
        np.testing.assert_array_equal(a, b)
    for frame_index, _ in ahead:  # leaving early must not hang the decoding thread
        if frame_index == 2:
            break


def test_count_frames_pass_agrees_with_the_container():
    assert open_video(REAL_CLIPS / "asl-walk.mkv", count_frames=True).info.frame_count == 89


def test_a_count_by_decoding_is_made_once_per_unchanged_file(tmp_path, monkeypatch):
    """The server's probe and its job both open the video: one that states no frame count was decoded
    whole twice. A changed file is counted again, and a stopped count is not kept."""
    video = tmp_path / "walk.mkv"
    shutil.copyfile(REAL_CLIPS / "asl-walk.mkv", video)
    counts = []
    real_count = VideoReader._count_by_decoding
    monkeypatch.setattr(
        VideoReader, "_count_by_decoding", lambda self, stopped: counts.append(self.path) or real_count(self, stopped)
    )
    with pytest.raises(DecodeStopped):
        open_video(video, count_frames=True, stopped=lambda: True)
    assert open_video(video, count_frames=True).info.frame_count == 89
    assert open_video(video, count_frames=True).info.frame_count == 89
    assert len(counts) == 2  # the stopped one, then one count for both opens
    os.utime(video, ns=(time.time_ns(), time.time_ns() + 10**9))  # written again (same size)
    assert open_video(video, count_frames=True).info.frame_count == 89
    assert len(counts) == 3


def test_a_count_is_kept_for_the_file_held_not_for_a_path_swapped_meanwhile(tmp_path, monkeypatch):
    """An export saved over the video (a new file renamed onto its path) while a reader opens it: the
    count of the file the reader held was kept under the new file's identity, and its next open took it."""
    video, export = tmp_path / "walk.mkv", tmp_path / "export.gif"
    shutil.copyfile(REAL_CLIPS / "asl-walk.mkv", video)
    shutil.copyfile(REAL_CLIPS / "face-demographics-walking.gif", export)
    real_read_header = VideoReader._read_header

    def saved_over_then_read(self, *args):
        if export.exists():
            os.replace(export, video)
        return real_read_header(self, *args)

    monkeypatch.setattr(VideoReader, "_read_header", saved_over_then_read)
    assert open_video(video, count_frames=True).info.frame_count == 89  # the file held: the .mkv
    assert open_video(video, count_frames=True).info.frame_count == 35  # the one the path names now


def test_a_frame_count_by_decoding_stops_when_asked():
    """A server's probe past its time limit asks the count to stop: it gives up at the next frame,
    and the file it held is closed (a deleted upload is not kept open)."""
    asked = []

    def stop_at_the_tenth():
        asked.append(True)
        return len(asked) >= 10

    fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with pytest.raises(DecodeStopped):
        open_video(REAL_CLIPS / "asl-walk.mkv", count_frames=True, stopped=stop_at_the_tenth)
    assert len(asked) == 10  # asked at each frame, not after the whole file
    if fds_before is not None:
        assert len(os.listdir("/proc/self/fd")) == fds_before
    assert open_video(REAL_CLIPS / "asl-walk.mkv", count_frames=True, stopped=lambda: False).info.frame_count == 89


def test_a_small_container_miscount_is_corrected_not_fatal():
    reader = open_video(REAL_CLIPS / "face-demographics-walking.gif")
    reader._container_frame_count = 37  # a header that over-counts by two frames
    assert sum(1 for _ in reader) == 35
    assert reader.info.frame_count == 35
    reader._container_frame_count = reader.info.frame_count = 30  # and one that under-counts
    assert sum(1 for _ in reader) == 35
    assert reader.info.frame_count == 35


# -- bad input ---------------------------------------------------------------------------------
def _write_video(path, num_frames, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25, size)
    for i in range(num_frames):
        writer.write(np.full((size[1], size[0], 3), (10 * i) % 256, np.uint8))
    writer.release()
    return path


def test_missing_file(tmp_path):
    with pytest.raises(VibeError, match="not found"):
        open_video(tmp_path / "nope.mp4")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(VibeError, match="folder"):
        open_video(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VibeError, match="empty"):
        open_video(tmp_path / "empty.mp4")


def test_text_file_named_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("these are not frames\n" * 50)
    with pytest.raises(VibeError, match="not a video"):
        open_video(tmp_path / "notes.mp4")


@pytest.mark.parametrize("user_level", [None, "24"])
def test_a_bad_video_is_one_message_without_ffmpegs_own_lines(tmp_path, user_level):
    """FFmpeg and OpenCV print their own lines (\"moov atom not found\", a WARN) before our message;
    they stay silent unless the user asks for them with OPENCV_FFMPEG_LOGLEVEL (24: warnings)."""
    (tmp_path / "notes.mp4").write_bytes(SAMPLE.read_bytes()[:3000])  # an mp4 cut off before its index
    script = (
        "from vibe_blender.core.errors import VibeError\n"
        "from vibe_server.pipeline.video import open_video\n"
        "try:\n    open_video('notes.mp4')\nexcept VibeError as err:\n    print(err)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "server")])
    if user_level:
        env["OPENCV_FFMPEG_LOGLEVEL"] = user_level
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.stdout.splitlines()[-1].startswith("Cannot open notes.mp4 as a video")
    ffmpeg_lines = done.stdout + done.stderr  # OpenCV's FFmpeg callback prints to stdout
    assert ("moov atom not found" in ffmpeg_lines) == bool(user_level)
    if not user_level:
        assert done.stderr == "" and done.stdout.count("\n") == 1


@pytest.mark.parametrize("width, height", [(16000, 16000), (8193, 100), (100, 8193), (8192, 4321)])
def test_frames_larger_than_8k_are_refused_before_one_is_decoded(tmp_path, monkeypatch, width, height):
    """An 89-byte GIF can claim a 16000 x 16000 screen: 768 MB a decoded frame."""
    (tmp_path / "huge.gif").write_bytes(tiny_gif(width, height))
    reads, real_open = [], video_module.open_ffmpeg_capture

    def counting_capture(*args, **kwargs):
        capture = real_open(*args, **kwargs)
        return SimpleNamespace(
            get=capture.get, isOpened=capture.isOpened, release=capture.release, read=lambda: reads.append(1)
        )

    monkeypatch.setattr(video_module, "open_ffmpeg_capture", counting_capture)
    with pytest.raises(VibeError, match=rf"frames of {width} x {height} pixels; the largest this program reads is 8K"):
        open_video(tmp_path / "huge.gif")
    assert reads == []


@pytest.mark.parametrize("stated", [0.001, 1e6, 0.0, float("nan")])
def test_a_frame_rate_no_result_file_can_hold_is_taken_as_unknown(tmp_path, monkeypatch, stated):
    """A header stating 0.001 frames/s went into the result, which the reader then called damaged."""
    from vibe_blender.core.result_file import FPS_RANGE

    real_open = video_module.open_ffmpeg_capture

    def stating(*args, **kwargs):
        capture = real_open(*args, **kwargs)
        get = capture.get
        return SimpleNamespace(
            get=lambda prop: stated if prop == cv2.CAP_PROP_FPS else get(prop),
            isOpened=capture.isOpened,
            release=capture.release,
            read=capture.read,
        )

    monkeypatch.setattr(video_module, "open_ffmpeg_capture", stating)
    info = open_video(_write_video(tmp_path / "v.mp4", 4)).info
    assert info.fps == 30.0 and FPS_RANGE[0] <= info.fps <= FPS_RANGE[1]


def test_frames_up_to_8k_either_way_up_are_read(tmp_path):
    for width, height in [(64, 48), (8192, 8), (8, 8192)]:  # landscape or portrait, up to 8192 a side
        (tmp_path / "ok.gif").write_bytes(tiny_gif(width, height))
        info = open_video(tmp_path / "ok.gif").info
        assert (info.width, info.height, info.frame_count) == (width, height, 3)


def test_png_renamed_mp4_is_a_still_image(tmp_path):
    cv2.imwrite(str(tmp_path / "still.png"), np.full((48, 64, 3), 128, np.uint8))
    shutil.move(tmp_path / "still.png", tmp_path / "still.mp4")
    with pytest.raises(VibeError, match="still images are not videos here"):
        open_video(tmp_path / "still.mp4")


NOT_A_VIDEO = "Playlists \\(.m3u8\\), concat lists, image sequences and still images are not videos here"


@pytest.mark.parametrize("suffix", [".m3u8", ".mp4"])
def test_a_playlist_naming_a_real_video_is_refused(tmp_path, suffix):
    """FFmpeg's HLS demuxer would decode whatever file the playlist names."""
    playlist = tmp_path / f"list{suffix}"
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{REAL_CLIPS / 'asl-walk.mkv'}\n#EXT-X-ENDLIST\n"
    )
    with pytest.raises(VibeError, match=NOT_A_VIDEO):
        open_video(playlist)


def test_a_live_playlist_is_refused_at_once(tmp_path):
    """No end marker: FFmpeg would wait for more segments."""
    playlist = tmp_path / "live.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{REAL_CLIPS / 'asl-walk.mkv'}\n")
    with pytest.raises(VibeError, match=NOT_A_VIDEO):
        open_video(playlist)


def test_a_concat_list_is_refused(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"ffconcat version 1.0\nfile '{REAL_CLIPS / 'asl-walk.mkv'}'\n")
    with pytest.raises(VibeError, match=NOT_A_VIDEO):
        open_video(listing)


def test_an_image_sequence_pattern_is_refused(tmp_path):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"frame{i:03d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    pattern = tmp_path / "frame%03d.png"  # exists as a file, so only FFmpeg's reading decides
    shutil.copy(tmp_path / "frame000.png", pattern)
    with pytest.raises(VibeError, match=NOT_A_VIDEO):
        open_video(pattern)


@pytest.mark.parametrize("name", ["x" * 5000 + ".mp4", "bad\x00name.mp4"])
def test_a_path_the_os_refuses_is_a_clear_error(tmp_path, name):
    with pytest.raises(VibeError, match="Cannot read the video file"):
        open_video(tmp_path / name)


@pytest.mark.parametrize("name", ["zero.mp4", "zero.avi"])
def test_a_video_without_frames_is_said_to_be_one(tmp_path, name):
    """A recording stopped before its first frame: the mp4 read as 'not a video ... or it is damaged'."""
    video = _write_video(tmp_path / name, 0)
    with pytest.raises(VibeError) as err:
        open_video(video)
    assert str(err.value) == (
        f"{video} is a video file without frames (a recording stopped before its first frame?). "
        "Record or export the clip again."
    )


def test_an_mp4_cut_before_its_media_data_is_no_video_without_frames(tmp_path):
    """Only a whole file without media data is one: a header cut short, or one whose media data is
    missing, is a damaged file."""
    whole = _write_video(tmp_path / "five.mp4", 5).read_bytes()
    empty = _write_video(tmp_path / "zero.mp4", 0).read_bytes()
    for cut in (empty[:-10], whole[: len(whole) // 2]):
        (tmp_path / "cut.mp4").write_bytes(cut)
        with pytest.raises(VibeError, match="Cannot open .* as a video"):
            open_video(tmp_path / "cut.mp4")


def test_tiny_valid_video_opens(tmp_path):
    reader = open_video(_write_video(tmp_path / "five.mp4", 5))
    assert reader.info.frame_count == 5 and (reader.info.width, reader.info.height) == (64, 48)
    assert [i for i, _ in reader] == [0, 1, 2, 3, 4]


def test_truncated_mp4_keeps_the_frames_that_decode_and_warns(tmp_path):
    data = (REAL_CLIPS / "one-by-one-person-detection.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:300_000])  # the header survives, most frames do not
    reader = open_video(tmp_path / "cut.mp4")
    assert reader.warnings == []
    frames = dict(reader)
    assert 50 < len(frames) < 1394 and sorted(frames) == list(range(len(frames)))
    assert reader.info.frame_count == len(frames)
    assert len(reader.warnings) == 1
    assert f"stopped at frame {len(frames)} of the 1394" in reader.warnings[0] and "truncated" in reader.warnings[0]
    whole = open_video(REAL_CLIPS / "one-by-one-person-detection.mp4")
    np.testing.assert_array_equal(frames[len(frames) - 1], dict(whole.frames(0, len(frames)))[len(frames) - 1])


def test_truncated_mkv_warns_up_front_with_count_frames(tmp_path):
    data = (REAL_CLIPS / "asl-walk.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    reader = open_video(tmp_path / "cut.mkv", count_frames=True)
    assert 10 < reader.info.frame_count < 89 and "of the 89" in reader.warnings[0]
    assert sum(1 for _ in reader) == reader.info.frame_count and len(reader.warnings) == 1


def test_truncated_mp4_without_its_index_cannot_open(tmp_path):
    (tmp_path / "head.mp4").write_bytes(_write_video(tmp_path / "full.mp4", 30).read_bytes()[:2000])
    with pytest.raises(VibeError):
        open_video(tmp_path / "head.mp4")


def test_bad_batch_size():
    with pytest.raises(VibeError, match="batch_size"):
        next(open_video(REAL_CLIPS / "asl-walk.mkv").batches(0))


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(sys.platform != "linux", reason="file permissions as on Linux")
def test_a_video_this_user_may_not_read_is_said_so(tmp_path):
    """The file's status passes (a regular, non-empty file), but reading it is refused: the message
    says so, where the video reader alone would call it not a video. Run in a child that may not
    read it: the suite's user, or root without its power to read anything."""
    video = unreadable_copy(REAL_CLIPS / "asl-walk.mkv", tmp_path)
    probe = CAN_READ_PROBE + (
        "from vibe_blender.core.errors import VibeError\n"
        "from vibe_server.pipeline.live_source import open_live_source\n"
        "from vibe_server.pipeline.video import open_video\n"
        "for opener in (open_video, open_live_source):\n"
        "    try:\n"
        "        opener(sys.argv[1])\n"
        "    except VibeError as err:\n"
        "        print(err)\n"
    )
    said = run_probe(probe, video, preexec_fn=without_read_override if os.geteuid() == 0 else None)
    said = said.stdout.splitlines()
    if said == ["READABLE"]:
        pytest.skip(CAN_STILL_READ)
    assert said == [f"Cannot read the video file {video} (Permission denied). Give this user read permission."] * 2


@pytest.mark.skipif(not video_module._FD_NAMES, reason="open files have names (and the swap is guarded) on Linux only")
def test_a_file_swapped_for_a_pipe_after_the_check_is_still_the_file_read(tmp_path):
    """The reader opens the video again for each decode; a name given to a pipe meanwhile (by anyone
    who may write to its folder) blocked that open forever, with every other video open waiting."""
    video = tmp_path / "clip.mkv"
    shutil.copy(REAL_CLIPS / "asl-walk.mkv", video)
    probe = (
        "import os, sys\n"
        "from vibe_server.pipeline.video import open_video\n"
        "reader = open_video(sys.argv[1], decode_workers=2)\n"
        "os.mkfifo(sys.argv[1] + '.fifo')\n"
        "os.replace(sys.argv[1] + '.fifo', sys.argv[1])\n"
        "print(sum(1 for _ in reader), sum(len(b) for _, b in reader.batches(16)))\n"
    )
    done = run_probe(probe, video)
    assert done.stdout.split() == ["89", "89"]


@pytest.mark.skipif(not video_module._FD_NAMES, reason="the file is held open only where open files have names")
def test_the_file_a_reader_holds_is_let_go_on_close_and_on_failure(tmp_path):
    """A failed open kept its descriptor for as long as its exception was kept (a server keeps the
    last error of each job); a reader's, until it was collected."""
    (tmp_path / "notes.mp4").write_text("these are not frames\n" * 50)
    before = len(os.listdir("/proc/self/fd"))
    failures = []
    for _ in range(3):
        try:
            open_video(tmp_path / "notes.mp4")
        except VibeError as err:
            failures.append(err)  # kept, as a job keeps its error
    assert len(failures) == 3 and len(os.listdir("/proc/self/fd")) == before
    with open_video(REAL_CLIPS / "asl-walk.mkv") as reader:
        assert len(os.listdir("/proc/self/fd")) == before + 1
        assert sum(1 for _ in reader) == 89
    assert len(os.listdir("/proc/self/fd")) == before
