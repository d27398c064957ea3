"""Several threads decoding one video give exactly the frames of one decoder, in order, with
bounded memory; a jump that misses its frame is caught and the decode stays exact."""

import threading
import time

import numpy as np
import pytest
from testdata import REAL_CLIPS

from vibe_server.pipeline.parallel_decode import chunk_bounds, decode_in_parallel
from vibe_server.pipeline.video import VideoReader, open_video

from .late_jumps import count_decoded_frames, record_decodes
from .recorded_hog import RecordedHog, frame_digest

CLIP = REAL_CLIPS / "one-by-one-person-detection.mp4"  # a keyframe every 10 frames, 1394 frames


def _digests(frames) -> list[tuple[int, bytes]]:
    return [(index, frame_digest(frame)) for index, frame in frames]


@pytest.fixture(scope="module")
def one_decoder():
    return _digests(open_video(CLIP).frames())


def test_chunks_start_on_jump_targets_and_cover_the_video():
    assert chunk_bounds(list(range(16, 100, 10)), 25) == [(0, 26), (26, 56), (56, 86), (86, None)]
    assert chunk_bounds([16, 266, 516], 60) == [(0, 266), (266, 516), (516, None)]
    assert chunk_bounds([16], 60) == [(0, None)]


@pytest.mark.parametrize("workers, chunk_frames", [(2, 60), (3, 20), (4, 200)])
def test_threads_give_the_frames_of_one_decoder_in_order(one_decoder, workers, chunk_frames):
    reader = open_video(CLIP)
    assert _digests(decode_in_parallel(reader, workers, chunk_frames=chunk_frames)) == one_decoder


def test_the_reader_decodes_in_parallel_when_asked(one_decoder):
    reader = open_video(CLIP, decode_workers=2)
    assert _digests(reader) == one_decoder
    assert reader.info.frame_count == 1394 and reader.warnings == []


def test_each_chunk_decodes_only_its_own_frames_and_opencv_s_preroll(monkeypatch):
    reader = open_video(CLIP)
    chunks = chunk_bounds(reader.jump_targets(), 120)  # (the packets read for this are not decoded)
    decoded = count_decoded_frames(monkeypatch)
    frames = sum(1 for _ in decode_in_parallel(reader, 3, chunk_frames=120))
    # every frame once, plus per jump the frame past a chunk's end and the 16 OpenCV decodes first
    assert frames == 1394 and len(decoded) <= 1394 + (len(chunks) - 1) * (1 + 16 + 1)


def test_decoded_frames_waiting_stay_within_the_memory_bound(monkeypatch):
    decode, produced = VideoReader._decode, []

    def counting(self, *args, **kwargs):
        for item in decode(self, *args, **kwargs):
            produced.append(item[0])
            yield item

    monkeypatch.setattr(VideoReader, "_decode", counting)
    frame_bytes = 768 * 432 * 3
    frames = decode_in_parallel(open_video(CLIP), 3, chunk_frames=30, max_bytes=30 * frame_bytes)
    next(frames)
    per_queue = 30 // 3
    deadline = time.monotonic() + 30
    while len(produced) < 3 * per_queue:  # the threads decode ahead until their queues are full
        assert time.monotonic() < deadline, len(produced)
        time.sleep(0.05)
    time.sleep(0.5)  # and no further
    # each of the 3 threads: its queue, plus one frame in hand waiting for room
    assert 3 * per_queue <= len(produced) <= 3 * (per_queue + 1) + 1
    frames.close()


def test_a_missed_jump_falls_back_to_an_exact_decode(one_decoder, monkeypatch):
    decodes = record_decodes(monkeypatch, late_at=(126,))  # the third chunk's: 0, 66, 126, ...
    reader = open_video(CLIP)
    assert _digests(decode_in_parallel(reader, 2, chunk_frames=60)) == one_decoder
    assert (126, False) in decodes  # the rest decoded from the first frame
    assert reader.info.frame_count == 1394 and reader.warnings == []  # the chunks counted nothing


def test_a_truncated_video_gives_the_frames_and_the_warning_of_one_decoder(tmp_path):
    truncated = tmp_path / "cut.mp4"
    data = CLIP.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    plain, threaded = open_video(truncated), open_video(truncated, decode_workers=3)
    assert _digests(threaded) == _digests(plain)
    assert threaded.warnings == plain.warnings and len(plain.warnings) == 1
    assert threaded.info.frame_count == plain.info.frame_count < 1394


def test_stopping_early_releases_every_thread():
    before = {t for t in threading.enumerate() if t.name.startswith("decode")}
    frames = decode_in_parallel(open_video(CLIP), 3, chunk_frames=30)
    for index, _ in frames:
        if index == 45:
            break
    frames.close()
    deadline = time.time() + 5
    while time.time() < deadline and {t for t in threading.enumerate() if t.name.startswith("decode")} - before:
        time.sleep(0.05)
    assert not {t for t in threading.enumerate() if t.name.startswith("decode")} - before


def test_a_video_with_one_keyframe_is_decoded_by_one_decoder():
    clip = REAL_CLIPS / "asl-walk.mkv"
    frames = list(decode_in_parallel(open_video(clip), 4))
    assert [i for i, _ in frames] == list(range(89))
    np.testing.assert_array_equal(frames[50][1], dict(open_video(clip).frames(50, 51))[50])


def test_the_staged_front_end_on_decoding_threads_finds_the_tracks_of_the_plain_one(one_decoder):
    """The GPU front end's pieces together on the real clip: decoding threads inside the staged
    stream's detection thread, on-the-spot detections carrying 8 frames, detections replayed from
    OpenCV HOG's recorded boxes, stride 8 with adaptive detection: the same tracks, frames and boxes
    as one decoder, one frame per on-the-spot call and the streaming front end."""
    from vibe_server.pipeline.people import find_people
    from vibe_server.pipeline.staged import stream_people_staged

    schedule = {"detection_stride": 8, "adaptive_detection": True}
    plain = find_people(open_video(CLIP), RecordedHog(CLIP, digests=one_decoder), min_track_frames=1, **schedule)
    staged = stream_people_staged(
        open_video(CLIP, decode_workers=3, prefetch=8),
        RecordedHog(CLIP, spot_batch_size=8, digests=one_decoder),
        **schedule,
    )
    assert sum(1 for _ in staged) == 1394
    threaded = staged.tracklets(min_track_frames=1)
    assert sorted(plain) == sorted(threaded) and len(plain) >= 5
    for track_id, track in plain.items():
        np.testing.assert_array_equal(track.frames, threaded[track_id].frames)
        np.testing.assert_array_equal(track.bboxes, threaded[track_id].bboxes)
