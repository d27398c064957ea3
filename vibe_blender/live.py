"""Live capture in Blender: characters that follow the server's live stream, and recordings of it.

A worker thread connects (starting the add-on's own server when nothing answers on this machine),
fetches the body model and starts the :class:`~.core.live_client.LiveConnection`, which receives the
stream in its own thread. :func:`live_tick` runs on the main thread from ``bpy.app.timers``: it takes
the newest frame and poses each person's character for it (a character is built the first time a
track id is seen). Timers never fire in the ``bpy`` module build, so tests call :func:`live_tick`
directly. Stopping a recording saves it as a standard result file in the add-on's results folder
and imports it, so the keys are written in bulk on the usual character: one key per scene frame, placed
by the server's frame times so that the motion plays at real speed in the scene's frame rate (frames
the server dropped are interpolated across; a frame without the person is a gap, and so is a stall of
the stream). The file appears
whole or not at all; a take that could not be saved stays with the session until Stop Recording
saves it, and no new session starts over a take that was not saved. A take Stop Recording has not
saved when Blender quits or the add-on is disabled or reloaded is saved there on the way out
(:func:`save_take_on_exit`), and the panel says where on the next run. While it records, a take is
also appended to a journal in the cache folder (:mod:`.core.take_journal`), which goes once the take
is saved or thrown away: when Blender crashes or is killed, the next run saves what the journal holds
the same way (:func:`recover_crashed_takes`) and says so in the same notice.
Nothing here blocks Blender: network calls and the session's stop run in worker threads.
"""

from __future__ import annotations

import functools
import sys
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import bpy
import numpy as np

from . import exit_hooks, keyframes, server_control
from .core import live_client
from .core.client import ServerClient
from .core.errors import VibeError
from .core.live_client import (
    START_TIMEOUT_S,
    LiveConnection,
    LiveFrameMessage,
    LivePersonFrame,
    LiveTake,
    dropped_people_note,
    take_on_frames,
)
from .core.model_data import cached_body_model_note, load_served_body_model
from .core.motion import MAX_CHARACTERS, TrackMotion, ground_offset
from .core.result_file import (
    MAX_TRACKS,
    META_UNKNOWN,
    WARNINGS_META_KEY,
    MocapResult,
    Track,
    VideoInfo,
    load_result,
    longest_track_ids,
    save_result,
)
from .core.skeleton import CAMERA_TO_BLENDER, bone_basis_quats, root_locations
from .core.smpl_model import JOINT_NAMES, BodyModel
from .core.take_files import (
    forget_takes_saved_on_exit,
    new_take_path,
    note_take_saved_on_exit,
    takes_saved_on_exit,
)
from .core.take_journal import JOURNAL_FOLDER, JournalError, TakeJournal, orphaned_journals, recovering
from .core.user_dirs import write_private_file
from .importer import ImportOptions, import_motion_file, units_per_metre
from .preferences import BODY_MODEL_CACHE, user_dir
from .redraw import redraw_panels
from .rig_builder import build_character, current_betas, joints_for_betas, rest_quats
from .undo_steps import push_undo_step
from .visibility import collection_outside_view_layer

TICK_S = 1.0 / 30.0
FINAL_STATES = ("ended", "lost", "failed")
# The live stream carries no video size or focal length: the recording's result file says so, and
# these stand in for the fields the format requires (the import adds no camera for it).
UNKNOWN_VIDEO_SIDE_PX = 1000
UNKNOWN_FOCAL_PX = 1000.0
# On a live character's armature: "<session id>:<track id>". The live view finds its characters by this
# tag, never by name alone: a renamed character goes on following its person, and an object that
# merely has the name (another file's, the user's own) is never taken over.
LIVE_TAG = "vibe_live"


@dataclass
class _LiveCharacter:
    """A character following one track: its armature's name and what posing it needs each frame."""

    armature_name: str
    object_uid: int  # the armature's session_uid: a duplicate (Shift+D) carries the same tag
    q_rest: np.ndarray  # (24, 4) bone rest rotations
    J0: np.ndarray  # (3,) rest pelvis joint, SMPL frame
    offset: np.ndarray  # (3,) Blender world shift that put the first frame's feet on z = 0
    last_shown: int = 0  # the session's frames_shown when it was last posed


PLACEHOLDER_NOTICE = (
    " (the server has no model data: the motion is random and the body a stick figure; install the model "
    "data in the Server & Model Data panel)"
)


@dataclass
class LiveSession:
    """One live session as Blender sees it (read by the panel, changed by the operators)."""

    source: str
    connection: LiveConnection | None = None
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)  # in each of its characters' LIVE_TAG
    body_model: BodyModel | None = None
    placeholder: bool = False  # the server runs the synthetic placeholder: random motion, a stick figure
    error: str | None = None  # why connecting failed
    frames_shown: int = 0
    characters: dict[int, _LiveCharacter] = field(default_factory=dict)
    characters_taken_over: bool = False  # more people than MAX_CHARACTERS: new ones took over characters
    collection_name: str = ""
    record_on_connect: bool = False
    stop_requested: bool = False
    stop_sent: bool = False
    connector: threading.Thread | None = None  # the thread connecting (it ends once the stream runs)
    unsaved_take: LiveTake | None = None  # recording stopped, its file not written yet (Stop Recording retries)
    # Where and at what rate a take left unsaved is saved on the way out, read when Record is pressed:
    # Blender's data may be gone by then.
    results_dir: Path | None = None
    scene_fps: float = 24.0
    journal_dir: Path | None = None  # where the take's journal goes (None: the cache folder cannot be made)
    last_take: LiveTake | None = None
    last_result_path: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def state(self) -> str:
        """connecting | streaming | ended | lost | failed."""
        if self.error is not None:
            return "failed"
        if self.connection is None:
            return "ended" if self.stop_requested else "connecting"
        return self.connection.state

    @property
    def message(self) -> str:
        if self.error is not None:
            return self.error
        connection = self.connection
        if connection is None and self.stop_requested:
            return "Stopped before the live session started."
        if connection is None or connection.state in ("idle", "connecting"):
            return "Connecting to the server (starting one on this machine if none runs)"
        if connection.error:
            return connection.error
        if connection.state == "streaming":
            fps = connection.server_stats.get("fps")
            text = f"Streaming: {connection.frames_received} frames" + (f", {fps:g} frames/s" if fps else "")
        else:
            text = f"The live session ended after {connection.frames_received} frames."
        text = " ".join([text, *connection.warnings, *filter(None, [connection.journal_problem])])
        if self.characters_taken_over:
            text += (
                f" More than {MAX_CHARACTERS} people were tracked: each new one takes over the character of the one "
                "seen longest ago (a recording keeps every person)."
            )
        return text + PLACEHOLDER_NOTICE if self.placeholder else text

    @property
    def recording(self) -> bool:
        """Recording, or holding a take Stop Recording has still to save."""
        with self._lock:
            return (
                self.record_on_connect
                or self.unsaved_take is not None
                or (self.connection is not None and self.connection.recording)
            )


_current: dict = {"session": None}


def current_session() -> LiveSession | None:
    return _current["session"]


# -- start / stop (main thread; the work runs in threads) ---------------------------------------
def start_live(
    source: str,
    params: dict | None = None,
    *,
    server_url: str | None = None,
    token: str | None = None,
    use_timer: bool = True,
) -> LiveSession:
    """Connect and start a live session from ``source`` (a camera index such as "0", a stream URL on
    the server's machine, or a video file there); :func:`live_tick` shows what arrives."""
    session = current_session()
    if session is not None and session.state not in FINAL_STATES:
        raise VibeError("A live session is already running; stop it first.")
    if session is not None and _holds_unsaved_motion(session):  # a new session would replace it
        raise VibeError(
            "The last live session holds a recording that is not saved: press Stop Recording to keep the "
            "take, then start again."
        )
    source = source.strip()
    if not source:
        raise VibeError(
            "Choose a live source first: a camera number (0 for the first camera), a stream URL or a video file."
        )
    server = server_control.chosen_server(server_url, token)  # on the main thread: the worker never reads bpy
    body_model_path = user_dir("cache") / BODY_MODEL_CACHE
    session = LiveSession(source=source)
    _current["session"] = session
    session.connector = threading.Thread(
        target=_connect,
        args=(session, server, dict(params or {}), body_model_path),
        daemon=True,
        name="vibe-live-connect",
    )
    session.connector.start()
    if use_timer and not bpy.app.timers.is_registered(live_tick):
        bpy.app.timers.register(live_tick, first_interval=TICK_S, persistent=True)  # outlives File > Open/New
    return session


def _holds_unsaved_motion(session: LiveSession) -> bool:
    """True while ``session`` holds recorded motion that Stop Recording has not saved (a recording
    in which nobody was tracked holds nothing to lose)."""
    connection = session.connection
    return session.unsaved_take is not None or (connection is not None and connection.recorded_rows > 0)


def _connect(session: LiveSession, server: server_control.ChosenServer, params: dict, body_model_path: Path) -> None:
    """Worker thread: server (the add-on's started when ``server`` says so and nothing answers), body
    model (cached at ``body_model_path``), then the session's own receiver."""
    try:
        url, token = server.reach()
        client = ServerClient(url, token)
        session.body_model = load_served_body_model(client, body_model_path)
        note = cached_body_model_note(body_model_path)
        session.placeholder = note is not None and note.placeholder
        connection = LiveConnection(client, start_client=ServerClient(url, token, timeout_s=START_TIMEOUT_S))
        with session._lock:
            if session.stop_requested:  # stopped while connecting: start nothing
                return
            if session.record_on_connect:
                connection.recording_start(_journal_opener(session))
                session.record_on_connect = False
            connection.start(session.source, params)  # only starts its thread
            session.connection = connection  # seen "connecting" at once: a stop from now on reaches the server
    except VibeError as err:
        session.error = str(err)
    except Exception as err:  # the thread must never die silently: show what broke
        session.error = f"Unexpected error while starting the live session: {err!r}. Please report it."
    finally:
        with session._lock:  # no connection came (a failure, Stop Live): a Record pressed meanwhile ends
            if session.connection is None:
                session.record_on_connect = False


def stop_live() -> None:
    """Stop the session (on the server too, from a worker thread); the characters and any recording
    stay. Stopped while connecting, the session never starts."""
    session = current_session()
    if session is not None:
        with session._lock:
            session.stop_requested = True
        _send_stop(session)


def _drop_empty_take(session: LiveSession) -> None:
    """Once the connection is over, a recording in which nobody was tracked (Record pressed while the
    start request was out, then the session ended or failed) ends: nothing is left for Stop Recording."""
    connection = session.connection
    with session._lock:
        if (
            connection is not None
            and connection.state in FINAL_STATES
            and connection.recording
            and connection.recorded_rows == 0
        ):
            connection.recording_stop().drop_journal()


def _send_stop(session: LiveSession) -> None:
    """Once the connection exists (the connecting thread may not have made it yet), stop it: on the
    server too, when the server answers the start request if it has not yet."""
    connection = session.connection
    if not session.stop_requested or session.stop_sent or connection is None or connection.state in FINAL_STATES:
        return
    session.stop_sent = True
    threading.Thread(target=connection.stop, daemon=True, name="vibe-live-stop").start()


# -- recording ----------------------------------------------------------------------------------
def record_refusal() -> str | None:
    """Why Record cannot start a recording now, None when it can (the operator's poll shows it)."""
    session = current_session()
    if session is not None and session.unsaved_take is not None:
        return UNSAVED_TAKE
    if session is not None and session.recording:  # a second start would replace the take
        return TAKE_AFTER_END if session.state in FINAL_STATES else RECORDING_RUNS
    if session is None or session.state in FINAL_STATES:
        return "Start a live session first, then record."
    return None


def stop_recording_refusal() -> str | None:
    """Why Stop Recording has nothing to do now, None when it has (the operator's poll shows it)."""
    session = current_session()
    if session is None or not session.recording:
        return "Nothing is being recorded: press Record while a live session runs."
    return None


def start_recording() -> None:
    refusal = record_refusal()
    if refusal is not None:
        raise VibeError(refusal)
    session = current_session()
    session.results_dir, session.scene_fps = user_dir("results"), keyframes.scene_fps()  # for save_take_on_exit
    session.journal_dir = _journal_dir()
    with session._lock:
        if session.connection is None:
            session.record_on_connect = True  # begins with the first frame received
        else:
            session.connection.recording_start(_journal_opener(session))


def _journal_dir() -> Path | None:
    """The folder of the takes' journals; None when the cache folder cannot be made (no journal then)."""
    try:
        return user_dir("cache") / JOURNAL_FOLDER
    except VibeError:
        return None


def _journal_opener(session: LiveSession):
    """What makes the journal of the take Record starts (any thread: nothing of Blender's is read)."""
    if session.journal_dir is None or session.results_dir is None:
        return None
    return functools.partial(
        TakeJournal.create, session.journal_dir, scene_fps=session.scene_fps, results_dir=session.results_dir
    )


def stop_recording(options: ImportOptions | None = None) -> list:
    """Save what was recorded as a result file and import it -> [(armature_obj, mesh_obj)].
    Works after the session ended or its connection dropped: the recording so far is kept. When the
    file cannot be written, or the take has more frames of motion at the scene's frame rate than a
    result may hold, the take stays with the session (``unsaved_take``) and the next call saves it
    (at a lower frame rate), unless :func:`discard_take` threw it away."""
    refusal = stop_recording_refusal()
    if refusal is not None:
        raise VibeError(refusal)
    session = current_session()
    take = _take_to_save(session)
    if take is None or not take.track_ids:
        session.unsaved_take = None
        if take is not None:
            take.drop_journal()
        raise VibeError(
            "Nothing was recorded: nobody was tracked while recording. Make sure a whole person is "
            "in view, then record again."
        )
    path = new_take_path(user_dir("results"))
    fps = keyframes.scene_fps()
    try:
        result = take_to_result(take, path.stem, fps=fps)
    except VibeError:  # too many frames at this rate: the take is kept for a lower one, which places fewer
        raise VibeError(
            f"The recording is too long for the scene's frames: at {fps:g} frames/s it takes more than "
            f"{live_client.MAX_RECORDED_FRAMES:,} frames of motion. The take is kept: lower the scene's frame "
            "rate (Output Properties > Format), then press Stop Recording again."
        ) from None
    _write_result(path, result)  # a failure leaves the take in unsaved_take for the next try
    take.drop_journal()
    session.unsaved_take = None
    session.last_take, session.last_result_path = take, path
    options = replace(options or ImportOptions(), add_camera=False)  # the stream has no camera to match
    try:
        return import_motion_file(path, session.body_model, options)
    except VibeError as err:  # e.g. more motion than Blender can hold: the saved take must be findable
        try:
            load_result(path)
        except VibeError as unreadable:  # the file itself: File > Import would refuse it the same way
            raise VibeError(
                f"The recording is saved as '{path}' but does not read back as a VIBE Mocap result "
                f"({str(unreadable).rstrip('.')}), so it could not be imported, nor can File > Import read it. "
                "The file is kept with every recorded frame: report this with that file."
            ) from None
        raise VibeError(
            f"The recording is saved as '{path}' but could not be imported ({str(err).rstrip('.')}). Import it "
            "with File > Import > VIBE Mocap."
        ) from None


TAKE_AFTER_END = "The session is over and the recording stopped with it: press Stop Recording to save the take."
RECORDING_RUNS = "A recording is running: press Stop Recording to save it, then Record starts the next one."
RECORDING_FULL = (
    f"The recording reached its size limit ({live_client.MAX_RECORDED_FRAMES:,} person-frames) and records no more: "
    "press Stop Recording to save it, then Record starts the next one."
)
UNSAVED_TAKE = (
    "The last recording is not saved yet: press Stop Recording to save it first (lower the scene's frame "
    "rate first if it was too long for the scene's frames), or Discard Recording to throw it away."
)


def discard_take() -> None:
    """Throw away the take Stop Recording has not saved: the user's explicit choice, never a side
    effect of a failed save."""
    session = current_session()
    if session is None or session.unsaved_take is None:
        raise VibeError("There is no unsaved recording to discard.")
    with session._lock:
        take, session.unsaved_take = session.unsaved_take, None
    take.drop_journal()


_saved_on_exit: dict = {"paths": []}  # read from the note once, when the add-on is registered


def _take_to_save(session) -> LiveTake | None:
    """The take Stop Recording saves: the one kept after a failed save, else the recording, stopped now."""
    with session._lock:
        session.record_on_connect = False
        if session.unsaved_take is None and session.connection is not None:
            session.unsaved_take = session.connection.recording_stop()
        return session.unsaved_take


def save_take_on_exit() -> None:
    """Blender quits, or the add-on is disabled or reloaded: the take Stop Recording has not saved
    (recording, or kept after a failed save) is saved as Stop Recording would, at the scene's frame
    rate when Record was pressed, halved until the take fits, and noted for the next run's panel
    (:func:`takes_saved_on_exit_notice`). Reads nothing of Blender's data, which may be gone at exit.
    What fails is printed (nobody is left to tell): a take not saved stays with the session."""
    session = current_session()
    if session is None:
        return
    take = _take_to_save(session)
    if take is None or not take.track_ids:
        if take is not None:
            take.drop_journal()  # nobody was tracked: nothing to save, nor to recover
        return
    try:
        folder = session.results_dir if session.results_dir is not None else user_dir("results")
        path = _save_at_a_rate_that_fits(take, folder, session.scene_fps)
    except Exception as err:  # noqa: BLE001  the add-on's unregister goes on (Blender's quit too), whatever broke
        reason = str(err) if isinstance(err, VibeError) else f"unexpected {type(err).__name__}: {err}"
        print(f"VIBE Mocap: the live recording not saved could not be saved on exit: {reason}", file=sys.stderr)
        return
    take.drop_journal()
    session.unsaved_take = None
    session.last_take, session.last_result_path = take, path
    _note_saved_on_exit(path)


def _save_at_a_rate_that_fits(take: LiveTake, folder: Path, fps: float) -> Path:
    """Save ``take`` as a new take file in ``folder`` at ``fps``, halved until the take fits (no
    Blender to ask for a lower rate) -> its path; VibeError when it cannot be written."""
    path = new_take_path(folder)
    result = None
    while result is None:
        try:
            result = take_to_result(take, path.stem, fps=fps)
        except VibeError:  # too many frames at this rate: one that places fewer
            if fps <= 1.0:
                raise
            fps = max(1.0, fps / 2)
    _write_result(path, result)
    return path


def _note_saved_on_exit(path: Path) -> None:
    try:
        note_take_saved_on_exit(path)
    except OSError as err:  # the take is saved: only the next run's notice is missing
        print(f"VIBE Mocap: the live recording not saved was saved on exit as '{path}' ({err}).", file=sys.stderr)


def recover_crashed_takes(journal_dir: Path) -> list[Path]:
    """Save the takes whose journals in ``journal_dir`` a run of Blender that stopped unexpectedly
    (crashed, killed) left, as :func:`save_take_on_exit` would have -> their paths, noted for the
    panel. A journal that cannot be read or saved stays where it is, and one line says so on the
    console: register goes on whatever happens."""
    saved = []
    try:
        journals = orphaned_journals(journal_dir)
    except Exception as err:  # noqa: BLE001  never the add-on's register
        print(f"VIBE Mocap: the live take journals in '{journal_dir}' could not be looked at ({err}).", file=sys.stderr)
        return saved
    for journal in journals:
        try:
            path = _recover(journal)
        except Exception as err:  # noqa: BLE001  never the add-on's register
            reason = str(err) if isinstance(err, VibeError) else f"unexpected {type(err).__name__}: {err}"
            print(
                f"VIBE Mocap: a live recording left when Blender stopped unexpectedly could not be recovered; "
                f"it is kept in '{journal}' ({reason})",
                file=sys.stderr,
            )
            continue
        if path is not None:
            saved.append(path)
    return saved


def _recover(journal: Path) -> Path | None:
    """Save the take of one orphaned journal, then delete the journal -> the take file (None: nobody
    was tracked, nothing to save; or another run holds the journal)."""
    with recovering(journal) as found:
        if found is None:  # another run recovers it (or has)
            return None
        take = found.take
        if not take.track_ids and found.damage:
            raise JournalError(found.damage)
        path = None
        if take.track_ids:
            if found.damage:
                take.warnings.append(found.damage)
            path = _save_recovered(take, found.results_dir, found.scene_fps)
            _note_saved_on_exit(path)
        try:
            found.delete()  # while held: no other run recovers it too
        except OSError as err:  # the take is saved: the next run would save it again
            print(f"VIBE Mocap: the live take journal '{journal}' could not be removed ({err}).", file=sys.stderr)
    return path


def _save_recovered(take: LiveTake, results_dir: Path, fps: float) -> Path:
    """Save a recovered take in the results folder of then, else (gone, or it refuses: a drive
    unplugged, its permissions changed) in the user's results folder now."""
    if results_dir.is_dir():  # (never made again: an unplugged drive's mount point is no place for it)
        try:
            return _save_at_a_rate_that_fits(take, results_dir, fps)
        except VibeError:
            if user_dir("results") == results_dir:
                raise
    return _save_at_a_rate_that_fits(take, user_dir("results"), fps)


def takes_saved_on_exit_notice() -> str | None:
    """What the panel says of the takes saved on the way out of an earlier run, until the user
    dismisses it (:func:`dismiss_takes_saved_on_exit`); None when there are none."""
    paths = _saved_on_exit["paths"]
    if not paths:
        return None
    names = ", ".join(f"'{p}'" for p in paths)
    what, was, it = (
        ("A live recording", "was", "it") if len(paths) == 1 else (f"{len(paths)} live recordings", "were", "them")
    )
    return (
        f"{what} that Stop Recording had not saved when Blender quit or stopped unexpectedly, or when the add-on "
        f"was disabled or reloaded, {was} saved: {names}. Import {it} with File > Import > VIBE Mocap."
    )


def dismiss_takes_saved_on_exit() -> None:
    """The user read the notice: it goes, and so does its note (the files stay)."""
    paths, _saved_on_exit["paths"] = _saved_on_exit["paths"], []
    for folder in dict.fromkeys(p.parent for p in paths):  # a recovered take may lie in an earlier results folder
        try:
            forget_takes_saved_on_exit(folder)
        except OSError as err:
            raise VibeError(f"The note of those recordings in {folder} could not be removed ({err}).") from None


def _write_result(path: Path, result: MocapResult) -> None:
    """The result file at ``path``, whole or not at all; what stops the write -> VibeError. The
    arrays are compressed straight into the file: a long take never sits in memory compressed too."""
    try:
        write_private_file(path, lambda file: save_result(file, result))
    except OSError as err:
        raise VibeError(
            f"The recording could not be saved in {path.parent} ({err.strerror or err}). Free some disk space "
            "or make that folder writable, then press Stop Recording again: the take is kept until it is saved."
        ) from None


def take_to_result(take: LiveTake, name: str, *, fps: float) -> MocapResult:
    """A recording -> the standard result at ``fps`` (:func:`.core.live_client.take_on_frames`): one
    track per id, frame 0 at the recording's first received frame. The stream sends no crop camera,
    image box or 3D joints: those arrays are zero (joints3d has no joints) and the video size and focal
    length are marked unknown in ``meta``."""
    kept, too_many = longest_track_ids({t: len(take.track_rows(t)) for t in take.track_ids}, MAX_TRACKS)
    dropped = [dropped_people_note(take.people_dropped)] if take.people_dropped else []
    warnings = take.warnings + too_many + dropped
    on_frames = take_on_frames(take, fps, kept)
    tracks = []
    for track_id in kept:
        T = len(on_frames.frame_ids[track_id])
        tracks.append(
            Track(
                track_id=track_id,
                frame_ids=on_frames.frame_ids[track_id],
                pose=on_frames.pose[track_id],
                betas=on_frames.betas[track_id],
                betas_track=np.median(take.betas[track_id], axis=0).astype(np.float32),
                pred_cam=np.zeros((T, 3), np.float32),
                orig_cam=np.zeros((T, 4), np.float32),
                bboxes=np.zeros((T, 4), np.float32),
                joints3d=np.zeros((T, 0, 3), np.float32),
                trans_cam_m=on_frames.trans_cam_m[track_id],
            )
        )
    return MocapResult(
        video=VideoInfo(
            name=name,
            fps=fps,
            width=UNKNOWN_VIDEO_SIDE_PX,
            height=UNKNOWN_VIDEO_SIDE_PX,
            frame_count=on_frames.frame_count,
        ),
        tracks=tracks,
        model_name="live",
        focal_length_px=UNKNOWN_FOCAL_PX,
        meta={
            "source": "live",
            "first_frame_index": str(take.received_index[0]),
            "frames_received": str(len(take.received_index)),
            "video_size": META_UNKNOWN,
            "focal_length": META_UNKNOWN,
            **({WARNINGS_META_KEY: "\n".join(warnings)} if warnings else {}),
        },
    )


# -- the timer step (main thread) ---------------------------------------------------------------
def live_tick() -> float | None:
    """Pose the characters for the newest frame. Returns the delay until the next call, or None once
    the session is over (ended, dropped or failed) and everything received was shown."""
    session = current_session()
    if session is None:
        return None
    _send_stop(session)
    _drop_empty_take(session)
    connection = session.connection
    frame = connection.take_latest() if connection is not None else None
    if frame is not None and session.body_model is not None:
        try:
            show_frame(session, frame)
        except Exception as err:  # noqa: BLE001  Blender drops a timer that raises: the panel would freeze on "streaming"
            reason = str(err) if isinstance(err, VibeError) else f"unexpected {type(err).__name__}: {err}"
            session.error = f"The live view stopped: {reason.rstrip('.')}. Start it again; any recording is kept."
            stop_live()
            redraw_panels()
            return None
    redraw_panels()
    if session.state in FINAL_STATES and frame is None:
        return None
    return TICK_S


def show_frame(session: LiveSession, frame: LiveFrameMessage) -> None:
    """Pose each person's character as in ``frame``. A track id seen for the first time gets a
    character: one built (one a frame, each taking a few hundredths of a second: a crowd arriving at
    once is built over the next frames, not in one long step), or, once MAX_CHARACTERS are built, the one of
    the person seen longest ago (the tracker gives a person a new id after a missed detection: an
    hour's session built hundreds, without end)."""
    built = False
    in_frame = {person.track_id for person in frame.people}
    for person in frame.people:
        character = session.characters.get(person.track_id)
        armature_obj = _character_armature(session, person.track_id, character)
        if armature_obj is None:  # new, or gone (deleted, another file opened)
            taken_over = _taken_over_character(session, person.track_id, in_frame)
            if taken_over is None:
                if built:
                    continue  # built on one of the next frames
                taken_over, built = _new_character(session, person), True
            character, armature_obj = taken_over
        character.last_shown = session.frames_shown
        quats = bone_basis_quats(person.pose[None], character.q_rest, CAMERA_TO_BLENDER)[0]  # (24, 4)
        location = root_locations(
            person.trans_cam_m[None], character.J0, character.q_rest[0], CAMERA_TO_BLENDER, character.offset
        )[0]
        bones = armature_obj.pose.bones
        for j, name in enumerate(JOINT_NAMES):
            bones[name].rotation_quaternion = quats[j].tolist()
        bones[JOINT_NAMES[0]].location = location.tolist()
    session.frames_shown += 1


def _taken_over_character(session: LiveSession, track_id: int, in_frame: set[int]):
    """Once MAX_CHARACTERS characters stand, the one of the person seen longest ago (not in this frame)
    made ``track_id``'s: (character, armature); None while fewer stand (characters the user deleted no
    longer count)."""
    armatures = {tid: _character_armature(session, tid, c) for tid, c in session.characters.items()}
    session.characters = {tid: c for tid, c in session.characters.items() if armatures[tid] is not None}
    free = [tid for tid in session.characters if tid not in in_frame]
    if len(session.characters) < MAX_CHARACTERS or not free:
        return None
    oldest = min(free, key=lambda tid: session.characters[tid].last_shown)
    character, armature_obj = session.characters.pop(oldest), armatures[oldest]
    armature_obj[LIVE_TAG] = _live_tag(session, track_id)
    session.characters[track_id] = character
    session.characters_taken_over = True
    return character, armature_obj


def _live_tag(session: LiveSession, track_id: int) -> str:
    return f"{session.uid}:{track_id}"


def _character_armature(session: LiveSession, track_id: int, character: _LiveCharacter | None):
    """The armature of ``character`` (track ``track_id``) by its LIVE_TAG, under whatever name it has
    now (``character.armature_name`` follows a rename); of several with the tag (a duplicate copies
    it), the one built, while this Blender session knows it; None when no armature carries the tag."""
    if character is None:
        return None
    tag = _live_tag(session, track_id)
    armature_obj = bpy.data.objects.get(character.armature_name)
    if armature_obj is None or armature_obj.get(LIVE_TAG) != tag or armature_obj.session_uid != character.object_uid:
        tagged = [obj for obj in bpy.data.objects if obj.get(LIVE_TAG) == tag]
        built = [obj for obj in tagged if obj.session_uid == character.object_uid]
        armature_obj = (built or tagged or [None])[0]  # (a file opened again: new uids, the tag only)
    if armature_obj is None or armature_obj.type != "ARMATURE":
        return None
    character.armature_name, character.object_uid = armature_obj.name, armature_obj.session_uid
    return armature_obj


def _live_collection(session: LiveSession):
    """The session's collection, or a new one where the user excluded it from the view layer or
    removed it from the scene (a character must be in the view layer to be built and seen)."""
    collection = bpy.data.collections.get(session.collection_name)
    if collection is None or collection_outside_view_layer(collection):
        collection = bpy.data.collections.new("Mocap live")
        bpy.context.scene.collection.children.link(collection)
        session.collection_name = collection.name
    return collection


def _new_character(session: LiveSession, person: LivePersonFrame):
    """(character, armature) built for ``person``'s track."""
    collection = _live_collection(session)
    armature_obj, _ = build_character(
        session.body_model, person.betas, f"live_{person.track_id}", collection=collection
    )
    # Built in metres and posed in metres, like an imported character: the object's scale gives it
    # its real size (and place) in a scene that counts in other units.
    armature_obj.scale = (units_per_metre(bpy.context.scene),) * 3
    armature_obj[LIVE_TAG] = _live_tag(session, person.track_id)
    first = TrackMotion(
        name=armature_obj.name,
        frame_ids=np.zeros(1, np.int64),
        pose=person.pose[None].astype(np.float64),
        trans_m=person.trans_cam_m[None].astype(np.float64),
        betas=person.betas.astype(np.float64),
    )
    character = _LiveCharacter(
        armature_obj.name,
        armature_obj.session_uid,
        rest_quats(armature_obj),
        joints_for_betas(armature_obj, current_betas(armature_obj))[0],
        ground_offset(session.body_model, [first]),
    )
    session.characters[person.track_id] = character
    push_undo_step("live character")
    return character, armature_obj


def register():
    exit_hooks.run_at_exit(save_take_on_exit)
    journal_dir = _journal_dir()
    recovered = recover_crashed_takes(journal_dir) if journal_dir is not None else []
    try:
        noted = takes_saved_on_exit(user_dir("results"))
    except VibeError:  # no results folder: Stop Recording names the problem when it matters
        noted = []
    _saved_on_exit["paths"] = noted + [p for p in recovered if p not in noted]


def unregister():
    stop_live()
    exit_hooks.run_now(save_take_on_exit)
    if bpy.app.timers.is_registered(live_tick):
        bpy.app.timers.unregister(live_tick)
