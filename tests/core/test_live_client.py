"""The live client against a hostile or slow live server (tests/fake_live_server.py), for what the real
server never sends or does, and the placing of a recording on the scene's timeline. The normal flow
runs against the real server in tests/server/test_live_api.py."""

import io
import json
import threading
import time

import numpy as np
import pytest
from fake_live_server import (
    END,
    HOLD,
    LIVE_ID,
    OMEGA,
    SPEED,
    FakeLiveServer,
    frame_message,
    moving_take,
    person,
    raw_frame,
    text_frame,
)

from vibe_blender.core import live_client
from vibe_blender.core.client import ServerClient
from vibe_blender.core.errors import VibeError
from vibe_blender.core.live_client import (
    START_TIMEOUT_S,
    LiveConnection,
    LiveFrameMessage,
    LivePersonFrame,
    LiveTake,
    take_on_frames,
)
from vibe_blender.core.result_file import MocapResult, Track, VideoInfo, load_result, save_result
from vibe_blender.core.rotations import axis_angle_to_quat
from vibe_blender.core.websocket import MAX_FRAGMENTS, OP_CONT, OP_PING, OP_TEXT

FRAME = frame_message(0, 100.0, [person(1)])
DEEP = "[" * 200_000 + "]" * 200_000  # 400 kB, under the 1 MiB message cap: json.loads alone recurses out


def follow(server: FakeLiveServer, *, record: bool = False, timeout_s: float = 20.0, **kwargs) -> LiveConnection:
    """A session on ``server`` followed until its receiver thread ends."""
    live = LiveConnection(ServerClient(server.url, server.token), **kwargs)
    if record:
        live.recording_start()
    live.start("0")
    live._thread.join(timeout_s)
    assert not live._thread.is_alive(), (live.state, live.error)
    return live


def frame_with_pose(index: int, pose) -> str:
    message = json.loads(frame_message(index, 100.0 + index / 30, [person(1)]))
    message["people"][0]["pose"] = pose
    return json.dumps(message)


def frame_with(index: int, **fields) -> str:
    """A frame of track 1 at ``index`` with the message's ``fields`` (``latency_s``: the person's) replaced."""
    message = json.loads(frame_message(index, 100.0 + index / 30, [person(1)]))
    if "latency_s" in fields:
        message["people"][0]["latency_s"] = fields.pop("latency_s")
    return json.dumps({**message, **fields})


def test_a_deeply_nested_message_is_skipped_as_bad_and_the_session_goes_on():
    """json.loads alone raised RecursionError there, which killed the receiver thread: the session
    stayed "streaming" for ever."""
    second = frame_message(1, 100.1, [person(1)])
    with FakeLiveServer([FRAME, "{not json", DEEP, second, END]) as server:
        live = follow(server, record=True)
    assert live.state == "ended" and live.error is None, (live.state, live.error)
    assert live.frames_received == 2 and live.bad_messages == 2
    take = live.recording_stop()
    assert take is not None and take.track_ids == [1] and take.rows == 2


def test_malformed_fields_are_skipped_as_bad_messages_and_the_session_goes_on():
    """A pose of objects raised TypeError (only ValueError was caught), which killed the receiver
    thread; a pose of pairs was taken as a (72, 2) array that broke the timer step later."""
    bad = [
        frame_with_pose(1, [{}] * 72),
        frame_with_pose(2, [[0.1, 0.2]] * 72),
        frame_with_pose(3, [True] * 72),
        frame_with_pose(4, [10**400] + [0.0] * 71),  # past float64's range
        frame_with_pose(5, ["0.1"] * 72),
        frame_message(6, 100.2, [person(1), person(1)]),  # one track twice in a frame
        json.dumps({"type": "frame", "frame_index": 7, "people": []}),  # no frame time
        frame_message(8, float("nan"), []),
        frame_message(0, 100.3, []),  # an index the stream already passed
        frame_with(10, frame_time_s=10**400),  # past a float's range: math.isfinite raised OverflowError
        frame_with(11, latency_s=10**400),
        frame_with(12, latency_s=True),
    ]
    with FakeLiveServer([FRAME, *bad, frame_message(13, 100.5, [person(1)]), END]) as server:
        live = follow(server, record=True)
    assert live.state == "ended" and live.error is None, (live.state, live.error)
    assert live.frames_received == 2 and live.bad_messages == len(bad)
    take = live.recording_stop()
    assert take.received_index == [0, 13] and take.track_ids == [1] and take.frame_ids[1].tolist() == [0, 13]
    assert all(p.shape == (72,) for p in take.pose[1])


def test_a_jump_of_the_servers_clock_is_a_gap_and_the_stream_goes_on():
    """A frame stamped more than a minute after the one before was skipped as bad, and so was every
    later one (each measured against the frame before the jump): the view froze for good while the
    server streamed on. A jump ahead or back now starts a new stretch a minute after the last frame."""
    times = [0.0, 0.1, 0.2, 70.0, 70.1, 70.2, 70.3, 70.4, 30.0, 30.1]  # a stall of 70 s, then the clock going back
    messages = [frame_message(i, 100.0 + t, [person(1)]) for i, t in enumerate(times)]
    with FakeLiveServer([*messages, END]) as server:
        live = follow(server, record=True)
    assert live.state == "ended" and live.error is None, (live.state, live.error)
    assert live.frames_received == len(times) and live.bad_messages == 0 and live.clock_jumps == 2
    take = live.recording_stop()
    stretch = [0.0, 0.1, 0.2, 60.2, 60.3, 60.4, 60.5, 60.6, 120.6, 120.7]
    np.testing.assert_allclose(np.asarray(take.received_time_s) - 100.0, stretch, atol=1e-9)
    placed = take_on_frames(take, 10.0)  # each jump a gap: nothing interpolated across it
    assert placed.frame_count == 1208 and placed.frame_ids[1].tolist() == [0, 1, 2, *range(602, 607), 1206, 1207]


def test_a_clock_jumping_a_hundred_billion_seconds_leaves_a_take_that_saves():
    """One frame stamped 1e11 s after the one before was taken: the recording then needed 1e11 s of
    scene frames, so no frame rate could save it, and Start Live was refused until it was thrown away."""
    normal = [frame_message(i, 100.0 + i / 30, [person(1)]) for i in range(30)]
    jumped = [frame_message(30 + i, 100.0 + 1e11 + i / 30, [person(1)]) for i in range(3)]
    with FakeLiveServer([*normal, *jumped, END]) as server:
        live = follow(server, record=True)
    assert live.frames_received == 33 and live.bad_messages == 0 and live.clock_jumps == 1
    take = live.recording_stop()
    assert take_on_frames(take, 24.0).frame_count == round((29 / 30 + 60.0 + 2 / 30) * 24) + 1


def frame_with_person(index: int, **fields) -> str:
    """A frame of track 1 at ``index`` with the person's ``fields`` (pose, betas, trans_cam_m) replaced."""
    message = json.loads(frame_message(index, 100.0 + index / 30, [person(1)]))
    message["people"][0].update(fields)
    return json.dumps(message)


def test_values_a_result_file_refuses_leave_that_person_out_and_the_take_saves_as_one():
    """The stream took numbers up to 1e6 where a result file holds translations to 10 km and betas to
    ±10: one such frame (a tiny camera scale gives a person 20 km away) was recorded, and the whole
    saved recording was then refused by every import. Then such a person made the whole frame a bad
    message: everyone else in it was lost too, and the panel told to update the server."""
    bad = [
        frame_with_person(1, trans_cam_m=[0.0, 0.0, 20_000.0]),
        frame_with_person(2, betas=[50.0] + [0.0] * 9),
        frame_with_person(3, pose=[1001.0] + [0.0] * 71),
        frame_with_person(4, trans_cam_m=[0.0, float("nan"), 3.0]),
    ]
    beside = json.loads(frame_with_person(5, trans_cam_m=[0.0, 0.0, 1e9]))  # track 1 far away, track 2 fine
    beside["people"].append(person(2))
    edge = frame_with_person(6, trans_cam_m=[0.0, 0.0, -10_000.0], betas=[10.0] * 10)  # the bounds themselves
    messages = [FRAME, *bad, json.dumps(beside), edge, frame_message(7, 100.5, [person(1)]), END]
    with FakeLiveServer(messages) as server:
        live = follow(server, record=True)
    assert live.state == "ended" and live.error is None, (live.state, live.error)
    assert live.frames_received == 8 and live.bad_messages == 0 and live.people_dropped == len(bad) + 1
    take = live.recording_stop()
    assert take.received_index == list(range(8)) and take.track_ids == [1, 2] and take.people_dropped == 5
    assert take.frame_ids[1].tolist() == [0, 6, 7] and take.frame_ids[2].tolist() == [5]
    assert take.trans_cam_m[1][1][2] == -10_000.0 and take.betas[1][1].max() == 10.0  # kept as sent

    placed = take_on_frames(take, 24.0)  # saved as Stop Recording saves it (vibe_blender/live.py)
    T = len(placed.frame_ids[1])
    track = Track(
        1,
        placed.frame_ids[1],
        placed.pose[1],
        placed.betas[1],
        np.median(take.betas[1], axis=0).astype(np.float32),
        np.zeros((T, 3), np.float32),
        np.zeros((T, 4), np.float32),
        np.zeros((T, 4), np.float32),
        np.zeros((T, 0, 3), np.float32),
        placed.trans_cam_m[1],
    )
    saved = io.BytesIO()
    save_result(saved, MocapResult(VideoInfo("live", 24.0, 1000, 1000, placed.frame_count), [track], "live", 1000.0))
    saved.seek(0)
    (loaded,) = load_result(saved).tracks
    assert loaded.num_frames == T > 1


def test_stats_keep_only_finite_numbers_and_the_end_error_is_made_displayable():
    """A huge integer in the stats reached the panel, whose f"{fps:g}" raised OverflowError on every
    draw; the end message's error was only cut, control characters and all."""
    stats = {"fps": 10**400, "frames_processed": 2, "latency_p50_s": None, "frames_dropped": True, "x": "7"}
    frame = frame_with(1, stats=stats)
    end = json.dumps({"type": "end", "status": "failed", "error": "camera\x1b[2J gone\n" + "x" * 5000})
    with FakeLiveServer([FRAME, frame, end]) as server:
        live = follow(server)
    assert live.frames_received == 2 and live.bad_messages == 0
    assert live.server_stats == {"frames_processed": 2.0}
    assert live.state == "failed" and live.error.startswith("camera [2J gone ")
    assert live.error.isprintable() and len(live.error) <= 1000


@pytest.mark.parametrize(
    "end, state, error",
    [
        ({"status": "failed", "error": "The camera stopped sending."}, "failed", "The camera stopped sending."),
        ({"status": "failed"}, "failed", "The live session failed on the server."),
        ({"status": "ended", "error": None}, "ended", None),
        ({"status": "stopped", "error": "Stopped: nobody watched this session for 30 s."}, "ended", "Stopped: nobody"),
    ],
    ids=["failed", "failed without a reason", "ended", "stopped"],
)
def test_the_end_message_says_whether_the_session_failed_and_why(end, state, error):
    """A session the server ended as failed was shown as ended, under the icon of a normal end; a
    session over on the server is not asked to stop there."""
    with FakeLiveServer([FRAME, json.dumps({"type": "end", **end, "stats": {}})]) as server:
        live = follow(server, record=True)
    assert live.state == state and (live.error or "").startswith(error or ""), (live.state, live.error)
    assert (live.error is None) == (error is None)
    assert server.stop_requests == [] and live.recording_stop().rows == 1  # the recording so far is kept


def test_warnings_the_end_brings_reach_the_panel_and_the_recording():
    """A video file cut short says so only when its session ends: the end message carried the warning
    and the add-on dropped it, so the recording looked whole. A malformed list adds nothing."""
    cut_short = "The video breaks off after frame 3\x1b[2J; the rest was not read."
    end = {"type": "end", "status": "ended", "stats": {}, "warnings": [cut_short]}
    with FakeLiveServer([FRAME, json.dumps(end)]) as server:
        live = follow(server, record=True)
    assert live.state == "ended" and live.warnings == ["The video breaks off after frame 3 [2J; the rest was not read."]
    assert live.recording_stop().warnings == live.warnings
    with FakeLiveServer([FRAME, json.dumps({**end, "warnings": "not a list"})]) as server:
        live = follow(server, record=True)
    assert live.state == "ended" and live.warnings == [] and live.recording_stop().warnings == []


@pytest.mark.parametrize(
    "frame",
    [raw_frame(OP_PING, b"x" * 70_000), raw_frame(OP_PING, b"x" * 126), raw_frame(OP_PING, b"x", fin=False)],
    ids=["70 kB ping", "126-byte ping", "fragmented ping"],
)
def test_a_control_frame_that_breaks_the_protocol_fails_the_session_with_one_message(frame):
    """A ping of 64 KiB or more made the pong's '!H' length overflow (struct.error): the receiver
    thread died with the panel saying "streaming"."""
    with FakeLiveServer([FRAME, frame, text_frame(FRAME)]) as server:
        live = follow(server, record=True)
        assert server.wait_for_stop()  # nobody follows the session any more: stopped on the server
    assert live.state == "failed"
    assert live.error.startswith("The server broke the WebSocket protocol") and "control frame" in live.error
    assert live.recording_stop().rows == 1  # the recording so far is kept


def fragments(text: str, sizes: list[int], *, first: int = OP_TEXT) -> bytes:
    """``text`` as one message in frames of these byte ``sizes`` (the rest in the last frame)."""
    data, frames, at = text.encode(), [], 0
    for i, size in enumerate([*sizes, None]):
        end = len(data) if size is None else at + size
        frames.append(raw_frame(first if i == 0 else OP_CONT, data[at:end], fin=size is None))
        at = end
    return b"".join(frames)


def test_a_message_in_fragments_is_received_whole():
    """Empty fragments too (RFC 6455 allows them), and a ping between two fragments."""
    message = fragments(FRAME, [10, 0, 200, 1])
    cut = message.index(raw_frame(OP_CONT, b"", fin=False))
    message = message[:cut] + raw_frame(OP_PING, b"p") + message[cut:]
    with FakeLiveServer([message, text_frame(END)]) as server:
        live = follow(server, record=True)
    assert live.state == "ended", live.error
    assert live.recording_stop().rows == 1


@pytest.mark.parametrize(
    "frames, what",
    [
        (fragments(FRAME, [0] * MAX_FRAGMENTS), f"a message in more than {MAX_FRAGMENTS} frames"),
        (raw_frame(OP_CONT, FRAME.encode()), "a continuation frame outside a message"),
        (raw_frame(OP_TEXT, FRAME.encode()[:5], fin=False) + text_frame(FRAME), "a new message inside an unfinished"),
        (raw_frame(0x3, FRAME.encode()), "a frame of the reserved type 0x3"),
        (
            raw_frame(OP_TEXT, b"{", fin=False) + raw_frame(0xB, b"x") + raw_frame(OP_CONT, b"}"),
            "a frame of the reserved type 0xb",
        ),
    ],
    ids=["too many fragments", "a continuation without a start", "a new message inside one", "type 3", "type 11"],
)
def test_frames_that_break_the_protocol_fail_the_session_with_one_message(frames, what):
    """Empty fragments add no bytes to a message but a list entry each: 20 MiB of them took 900 MB; a
    reserved control frame inside a message was spliced into its text."""
    with FakeLiveServer([FRAME, frames, text_frame(FRAME)]) as server:
        live = follow(server, record=True)
    assert live.state == "failed"
    assert live.error.startswith(f"The server broke the WebSocket protocol with {what}"), live.error
    assert live.recording_stop().rows == 1  # the recording so far is kept


def test_an_unexpected_error_in_the_receiver_fails_the_session(monkeypatch):
    def broken_add(self, frame):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(LiveTake, "add", broken_add)
    with FakeLiveServer([FRAME]) as server:
        live = follow(server, record=True)
        assert server.wait_for_stop()
    assert live.state == "failed"
    assert "unexpected error" in live.error and "disk on fire" in live.error


def test_a_full_recording_says_so_until_it_is_stopped_and_the_next_one_records(monkeypatch):
    """The size limit was reported as the connection's error: once that take was saved, the panel
    went on saying so, over the next recording too."""
    monkeypatch.setattr(live_client, "MAX_RECORDED_FRAMES", 2)
    messages = [frame_message(i, 100.0 + i / 30, [person(1)]) for i in range(3)]
    with FakeLiveServer([*messages, HOLD, frame_message(3, 100.1, [person(1)]), END]) as server:
        live = LiveConnection(ServerClient(server.url, server.token))
        live.recording_start()
        live.start("0")
        deadline = time.monotonic() + 10
        while live.frames_received < 3:
            assert time.monotonic() < deadline, (live.state, live.error)
            time.sleep(0.02)
        assert live.recording_full and live.error is None
        full = live.recording_stop()
        assert full.rows == 2 and full.full and not live.recording_full
        live.recording_start()
        assert not live.recording_full
        server.resume.set()
        live._thread.join(10)
    assert live.state == "ended" and live.error is None, (live.state, live.error)
    take = live.recording_stop()
    assert take.rows == 1 and not take.full


def test_a_lost_connection_asks_the_server_to_stop_the_session():
    with FakeLiveServer([FRAME], after="close") as server:
        live = follow(server)
        assert server.wait_for_stop()
    assert live.state == "lost" and "lost" in live.error and live.frames_received == 1


def test_a_stop_the_server_does_not_confirm_is_reported():
    with FakeLiveServer([FRAME], stop_status=500) as server:
        live = LiveConnection(ServerClient(server.url, server.token)).start("0")
        deadline = time.monotonic() + 10
        while live.frames_received < 1:
            assert time.monotonic() < deadline, (live.state, live.error)
            time.sleep(0.02)
        live.stop()
    assert server.stop_requests == [LIVE_ID]
    assert live.state == "ended"
    assert "may still run on the server" in live.error and "could not be stopped" in live.error


def test_stop_while_the_server_starts_the_session_ends_it_at_once_and_stops_it_there():
    """The start request waits for the server to open the source; a stop meanwhile must not wait
    for it, and the session the server then starts must not run for nobody."""
    opened = threading.Event()  # the server answers the start once the test opens it
    with FakeLiveServer([FRAME], start_gate=opened) as server:
        live = LiveConnection(ServerClient(server.url, server.token)).start("0")
        stopper = threading.Thread(target=live.stop)
        stopper.start()
        deadline = time.monotonic() + 30
        while live.state != "ended":
            assert time.monotonic() < deadline, live.state
            time.sleep(0.01)
        assert not server.stop_requests  # the server has not answered yet
        opened.set()
        assert server.wait_for_stop()
        stopper.join(10)
        live._thread.join(10)
    assert live.state == "ended" and live.error is None
    assert server.streams_opened == 0 and live.frames_received == 0


def test_the_sessions_warnings_are_kept_displayable_and_go_into_the_take():
    said = "yolov3.weights is not in the model data\x1b[31m, so people were found with HOG"
    with FakeLiveServer([FRAME, END], start_answer={"warnings": [said]}) as server:
        live = follow(server, record=True)
    assert live.state == "ended" and live.error is None
    assert live.warnings == ["yolov3.weights is not in the model data [31m, so people were found with HOG"]
    assert live.recording_stop().warnings == live.warnings


@pytest.mark.parametrize("warnings", ["HOG", [1], ["HOG"] * 9, {"a": "b"}])
def test_malformed_warnings_fail_the_session_and_stop_it_on_the_server(warnings):
    with FakeLiveServer([FRAME, END], start_answer={"warnings": warnings}) as server:
        live = follow(server)
        assert server.wait_for_stop()
    assert live.state == "failed" and "warnings that are not a short list of texts" in live.error
    assert server.streams_opened == 0 and live.warnings == []


def test_a_start_slower_than_the_client_timeout_is_waited_for():
    """The server answers the start once the source is open and the detector loaded: with the
    client's usual timeout, Blender reported the server unreachable while the session started."""
    with FakeLiveServer([FRAME, END], start_delay_s=1.0) as server:
        quick = ServerClient(server.url, server.token, timeout_s=0.3)
        with pytest.raises(VibeError, match="Cannot reach"):
            quick.start_live("0")
        slow_start = ServerClient(server.url, server.token, timeout_s=START_TIMEOUT_S)
        live = follow(server, start_client=slow_start)
    assert live.state == "ended" and live.error is None and live.frames_received == 1


# -- the recording on the scene's timeline ------------------------------------------------------
def test_dropped_frames_are_interpolated_across_at_real_speed():
    """2 s of a 30 frames/s camera with every other frame dropped, in a 24 frames/s scene: the person
    is there in every scene frame (no gap per dropped frame), the take spans 2 s of the scene's
    frames, and each frame holds the motion of its own time."""
    take = moving_take(range(0, 60, 2))
    placed = take_on_frames(take, 24.0)
    assert abs(placed.frame_count - 2 * 24) <= 1
    np.testing.assert_array_equal(placed.frame_ids[1], np.arange(placed.frame_count))
    t = np.minimum(placed.frame_ids[1] / 24.0, 58 / 30)  # the last frame may round past the last received
    np.testing.assert_allclose(placed.pose[1][:, 5], OMEGA * t, atol=1e-5)
    np.testing.assert_allclose(placed.trans_cam_m[1][:, 0], SPEED * t, atol=1e-5)
    assert placed.pose[1].dtype == np.float32 and placed.pose[1].shape == (placed.frame_count, 72)


def test_a_person_absent_from_a_processed_frame_is_a_gap():
    indices = list(range(0, 60, 2))
    absent = {20, 22, 24}  # processed (received, empty of this person), not dropped
    take = moving_take(indices, absent=absent)
    take.add(LiveFrameMessage(60, 5000.0 + 60 / 30, (), None))  # a last frame with nobody
    placed = take_on_frames(take, 24.0)
    times = placed.frame_ids[1] / 24.0
    assert not np.any((times >= 20 / 30) & (times <= 24 / 30))
    grid = np.arange(placed.frame_count) / 24.0
    seen = (grid <= 18 / 30) | ((grid >= 26 / 30) & (grid <= 58 / 30))
    assert set(np.flatnonzero(seen)) <= set(placed.frame_ids[1].tolist())
    assert placed.frame_ids[1][-1] < placed.frame_count - 1  # gone before the take's last frame


def test_a_stalled_stream_leaves_a_gap_instead_of_slow_motion():
    """A stalled stream's last frame comes 10 s late, when FFmpeg gives up: the take was interpolated
    across the stall, 10 s of slow motion. A hole of under MAX_INTERPOLATED_GAP_S (frames dropped while
    the model was busy) is still interpolated across."""
    received = [*range(0, 60, 3), *range(84, 151, 3), 453]  # 10 frames/s of a 30 frames/s source
    take = moving_take(received, omega=0.2)  # dropped for 0.9 s from 57, stalled for 10 s from 150
    placed = take_on_frames(take, 24.0)
    assert placed.frame_count == 363 and placed.frame_ids[1].tolist() == [*range(121), 362]
    t = np.array([*np.arange(121) / 24.0, 453 / 30])
    np.testing.assert_allclose(placed.pose[1][:, 5], 0.2 * t, atol=1e-5)  # each frame its own time's motion
    np.testing.assert_allclose(placed.trans_cam_m[1][:, 0], SPEED * t, atol=1e-5)


def test_rotations_are_interpolated_the_short_way():
    """A root turning from 179° to 181° about x (stored as -179°) passes 180°, not 0°."""
    take = LiveTake()
    for i, angle in enumerate((np.pi - 0.02, -(np.pi - 0.02))):
        pose = np.zeros(72, np.float32)
        pose[0] = angle
        take.add(
            LiveFrameMessage(
                i, i / 10, (LivePersonFrame(1, i, pose, np.zeros(10, np.float32), np.zeros(3, np.float32)),), None
            )
        )
    placed = take_on_frames(take, 20.0)  # frames at 0, 0.05 (halfway) and 0.1 s
    halfway = axis_angle_to_quat(placed.pose[1][1, :3].astype(np.float64))
    np.testing.assert_allclose(abs(halfway[0]), 0.0, atol=1e-6)  # w = cos(180° / 2)


def test_a_recording_whose_times_span_too_long_is_refused():
    take = moving_take([0, 1])
    take.received_time_s[1] = take.received_time_s[0] + 1e6  # a broken clock: 11 days between two frames
    with pytest.raises(VibeError, match="too long to keep"):
        take_on_frames(take, 24.0)


def test_a_person_seen_only_between_timeline_frames_keeps_one_frame():
    """A 120 frames/s source in a 24 frames/s scene: a person seen in one received frame that is not the
    nearest to any scene frame was saved with no frame at all (a short take imported as "no person")."""
    take = LiveTake()
    for i in range(12):
        pose = np.full(72, 0.01 * i, np.float32)
        people = (LivePersonFrame(4, i, pose, np.zeros(10, np.float32), np.zeros(3, np.float32)),) if i == 2 else ()
        take.add(LiveFrameMessage(i, 100.0 + i / 120, people, None))
    placed = take_on_frames(take, 24.0)  # scene frames at 0, 5 and 10 received frames; the person at 2
    assert placed.frame_ids[4].tolist() == [0]  # 2/120 s is nearest to scene frame 0 (at 0 s)
    np.testing.assert_allclose(placed.pose[4], np.full((1, 72), 0.02), atol=1e-6)


@pytest.mark.parametrize("new_track_every_row", [False, True], ids=["one track", "a new track id every row"])
def test_a_take_holds_a_row_in_under_500_bytes_however_many_tracks(new_track_every_row):
    """A take kept arrays and lists per track: 800 bytes a row, and 1,350 when the tracker gave each
    row a new id, 2.7 GB at the recording's limit (its comment said 1.6)."""
    import tracemalloc

    take, n = LiveTake(), 2 * 4096  # whole chunks of the take's rows: none allocated unused
    tracemalloc.start()
    try:
        for i in range(n):  # each frame's arrays new, as parse_frame_message makes them
            track_id = i if new_track_every_row else 1
            arrays = np.zeros(72, np.float32), np.zeros(10, np.float32), np.zeros(3, np.float32)
            take.add(LiveFrameMessage(i, i / 30, (LivePersonFrame(track_id, i, *arrays),), None))
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert take.rows == n and len(take.track_ids) == (n if new_track_every_row else 1)
    assert used / n < 500, used / n


def test_many_tracks_are_placed_as_each_alone(monkeypatch):
    """The tracks are interpolated together (in batches), each from its own rows only."""
    monkeypatch.setattr(live_client, "RESAMPLE_CHUNK", 7)  # batches of a few tracks, one track split
    rng = np.random.default_rng(3)
    take = LiveTake()
    for i in range(40):
        people = tuple(
            LivePersonFrame(
                t,
                i,
                rng.normal(0, 1, 72).astype(np.float32),
                rng.normal(0, 1, 10).astype(np.float32),
                rng.normal(0, 1, 3).astype(np.float32),
            )
            for t in range(6)
            if (i + t) % (t + 2) and i >= 3 * t  # gaps, and tracks starting later
        )
        take.add(LiveFrameMessage(i, 10.0 + i / 25, people, None))
    together = take_on_frames(take, 30.0)
    for t in take.track_ids:
        alone = take_on_frames(take, 30.0, [t])
        np.testing.assert_array_equal(together.frame_ids[t], alone.frame_ids[t])
        for name in ("pose", "betas", "trans_cam_m"):
            np.testing.assert_array_equal(getattr(together, name)[t], getattr(alone, name)[t])
        assert len(alone.frame_ids[t]) > 1


def test_a_take_can_be_placed_for_some_of_its_tracks():
    take = moving_take(range(10))
    assert take.track_ids == [1]  # read before a track is added: the take reads it afterwards too
    seven = LivePersonFrame(7, 10, np.zeros(72, np.float32), np.zeros(10, np.float32), np.zeros(3, np.float32))
    take.add(LiveFrameMessage(10, 5000.0 + 10 / 30, (seven,), None))
    assert sorted(take_on_frames(take, 24.0).frame_ids) == [1, 7]
    assert sorted(take_on_frames(take, 24.0, [7]).frame_ids) == [7]
