"""Capture from the panel's point of view: worker thread + UI tick, against a fake server."""

import time
from pathlib import Path

import bpy
import pytest
from capture_states import until_capture_state
from fake_vibe_server import FakeVibeServer, count_body_model_reads

from vibe_blender import jobs
from vibe_blender.core import capture, user_dirs
from vibe_blender.core.errors import VibeError
from vibe_blender.importer import ImportOptions

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def registered():
    import vibe_blender

    vibe_blender.register()
    yield
    vibe_blender.unregister()


@pytest.fixture(autouse=True)
def token(tmp_path, monkeypatch):
    """A config folder of the test's own; the fake server's token comes from $VIBE_MOCAP_TOKEN."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv(user_dirs.TOKEN_ENV_VAR, "fake-token")
    return "fake-token"


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "dance.mp4"
    path.write_bytes(b"\x00" * 4096)
    return path


def _follow(timeout_s=20.0):
    """What Blender's timer does, called by hand (timers never fire in the bpy module)."""
    deadline = time.monotonic() + timeout_s
    while jobs.tick() is not None:
        assert time.monotonic() < deadline, jobs.current_job().snapshot()
        time.sleep(0.01)
    return jobs.current_job().snapshot()


def test_capture_imports_the_result(registered, empty_scene, reference_dir, video):
    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz") as server:
        jobs.start_capture(str(video), ImportOptions(), server_url=server.url, use_timer=False, poll_interval_s=0.01)
        status = _follow()
    assert status.state == "done", status.message
    assert [a.name for a, _ in jobs.last_import()] == ["track_1", "track_2"]
    assert bpy.data.objects["track_1"].animation_data.action is not None
    assert empty_scene.frame_end == 10
    from vibe_blender.preferences import user_dir

    assert status.result_path.parent == user_dir("results")  # written only in the user dir
    assert jobs.current_job().upload is False and server.local_paths == [str(video.resolve())]
    placeholder, warning = jobs.last_warnings()  # the fake's result is the placeholder's; its video holds none
    assert "made by the synthetic placeholder model" in placeholder
    assert warning.endswith("is not a video Blender can read; the camera has no background.")
    assert jobs.last_outcome() == f"Imported 2 character(s) from '{status.result_path}'. {placeholder} {warning}"


def test_a_capture_done_before_the_timer_saw_it_is_imported_when_the_next_starts(
    registered, empty_scene, reference_dir, video, monkeypatch
):
    """Capture pressed again within the timer's step after a capture ended: that capture's result was
    never imported (the new capture replaced it). It is imported first, and its line is given."""
    from vibe_blender import preferences

    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz") as server:
        first = jobs.start_capture(str(video), ImportOptions(), server_url=server.url, use_timer=False)
        first.join(20)
        assert first.snapshot().state == "done" and "track_1" not in bpy.data.objects  # the timer has not run
        line = jobs.import_finished_capture()
        assert line.startswith(f"Imported 2 character(s) from '{first.snapshot().result_path}'.")
        assert {"track_1", "track_2"} <= set(bpy.data.objects.keys())
        assert jobs.import_finished_capture() is None  # imported once

        second = jobs.start_capture(str(video), ImportOptions(), server_url=server.url, use_timer=False)
        second.join(20)
        monkeypatch.setattr(preferences._Defaults, "server_url", server.url)
        empty_scene.vibe_mocap.video_path = str(video)
        assert bpy.ops.vibe_mocap.capture() == {"FINISHED"}  # the panel's button
        assert len([o for o in bpy.data.objects if o.type == "ARMATURE"]) == 4  # the second's too
        _follow()


def test_undo_after_a_capture_keeps_the_imported_characters(registered, empty_scene, reference_dir, video):
    """The import runs in a timer, not an operator, so no undo step followed it: undoing the user's
    next action took the characters away too."""
    bpy.ops.ed.undo_push(message="before the capture")
    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz") as server:
        jobs.start_capture(str(video), ImportOptions(), server_url=server.url, use_timer=False, poll_interval_s=0.01)
        assert _follow().state == "done"
    bpy.ops.mesh.primitive_cube_add()
    bpy.ops.ed.undo_push(message="Add Cube")  # as Blender does after an operator
    bpy.ops.ed.undo()
    names = {o.name for o in bpy.data.objects}
    assert "Cube" not in names and {"track_1", "track_2"} <= names


def test_a_capture_reads_the_body_model_file_once_for_its_import(
    registered, empty_scene, reference_dir, video, monkeypatch
):
    """Downloaded by the first capture, cached for the next: each capture reads the file once, and
    imports the body model it read."""
    from vibe_blender.preferences import BODY_MODEL_CACHE, user_dir

    (user_dir("cache") / BODY_MODEL_CACHE).unlink(missing_ok=True)
    reads = count_body_model_reads(monkeypatch)
    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz") as server:
        for downloads in (1, 1):  # the second capture finds it cached
            reads.clear()
            options = ImportOptions(add_camera=False)
            jobs.start_capture(str(video), options, server_url=server.url, use_timer=False, poll_interval_s=0.01)
            status = _follow()
            assert status.state == "done" and len(jobs.last_import()) == 2, (status.message, jobs.last_outcome())
            assert len(reads) == 1
            assert sum(path.endswith("/body_model") for _, path in server.requests) == downloads


def test_the_body_model_is_let_go_once_the_capture_is_imported(registered, empty_scene, reference_dir, video):
    """The finished capture's status kept the body model it read (tens of MB) alive until the next
    capture; the import is its only use."""
    import gc
    import weakref

    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz") as server:
        options = ImportOptions(add_camera=False)
        job = jobs.start_capture(str(video), options, server_url=server.url, use_timer=False, poll_interval_s=0.01)
        job.join(20)
        body_model = weakref.ref(job.snapshot().body_model)
        status = _follow()
    assert status.state == "done" and len(jobs.last_import()) == 2, jobs.last_outcome()
    assert jobs.current_job().snapshot().body_model is None
    gc.collect()
    assert body_model() is None


def test_what_the_capture_import_warns_about_is_in_the_panels_outcome(
    registered, empty_scene, reference_dir, body_model, video
):
    from vibe_blender.importer import import_motion_file

    import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())  # a character already...
    empty_scene.render.fps, empty_scene.render.fps_base = 24, 1.0  # ...in a scene at another frame rate
    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz") as server:
        options = ImportOptions(add_camera=False)
        jobs.start_capture(str(video), options, server_url=server.url, use_timer=False, poll_interval_s=0.01)
        status = _follow()
    assert status.state == "done" and len(jobs.last_import()) == 2
    placeholder, warning = jobs.last_warnings()
    assert "but the scene, which has animation already, plays at 24 fps" in warning
    assert jobs.last_outcome() == f"Imported 2 character(s) from '{status.result_path}'. {placeholder} {warning}"
    labels = [(kw.get("text", ""), kw.get("icon")) for name, _, kw in _draw_panel(bpy.context) if name == "label"]
    first = next(i for i, (text, _) in enumerate(labels) if text.startswith("Imported 2 character(s)"))
    assert labels[first][1] == "ERROR" and "plays at 24 fps" in " ".join(text for text, _ in labels[first:])


def test_a_result_of_the_placeholder_model_warns_once(registered, empty_scene, reference_dir, body_model, tmp_path):
    from dataclasses import replace

    from vibe_blender.core.result_file import load_result, save_result
    from vibe_blender.importer import import_motion_file

    real = tmp_path / "real.npz"
    save_result(real, replace(load_result(reference_dir / "result.npz"), model_name="vibe_model_wo_3dpw"))
    warned = {}
    for path in (reference_dir / "result.npz", real):
        warnings = []
        import_motion_file(
            path, body_model, ImportOptions(add_camera=False), report=lambda _: None, warn=warnings.append
        )
        warned[path.name] = [w for w in warnings if "placeholder" in w]
    (warning,) = warned["result.npz"]
    assert warning.startswith("result.npz was made by the synthetic placeholder model")
    assert "HOG detector, which also finds people who are not there" in warning  # its characters may be no one
    # the advice holds for the command line (batch) and the add-on alike
    assert "Install the model data ('vibe-mocap data install', or the add-on's Server & Model Data panel)" in warning
    assert warned["real.npz"] == []


def test_the_capture_goes_on_when_another_file_is_opened(registered, reference_dir, video):
    """File > New or Open during a capture: the result is still imported (into the file then open)."""
    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz") as server:
        jobs.start_capture(str(video), ImportOptions(), server_url=server.url, poll_interval_s=0.01)
        try:
            bpy.ops.wm.read_factory_settings(use_empty=True)
            assert bpy.app.timers.is_registered(jobs.tick)
        finally:
            bpy.app.timers.unregister(jobs.tick)
        status = _follow()
    assert status.state == "done" and [a.name for a, _ in jobs.last_import()] == ["track_1", "track_2"]


def test_an_import_that_fails_says_why_and_where_the_result_is(
    registered, empty_scene, reference_dir, video, monkeypatch
):
    def broken_import(*args, **kwargs):
        raise KeyError("pose")  # a bug, not a VibeError: still reported, the timer still ends cleanly

    monkeypatch.setattr(jobs, "import_motion_file", broken_import)
    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz") as server:
        jobs.start_capture(str(video), ImportOptions(), server_url=server.url, use_timer=False, poll_interval_s=0.01)
        status = _follow()
    assert jobs.last_import() is None and status.result_path.is_file()
    assert (
        jobs.last_outcome()
        == jobs.last_error()
        == (
            "The capture's result could not be imported (unexpected KeyError: 'pose'; please report it). "
            f"It is kept in '{status.result_path}': import it with File > Import > VIBE Mocap."
        )
    )
    labels = " ".join(kw.get("text", "") for name, _, kw in _draw_panel(bpy.context) if name == "label")
    assert "could not be imported" in labels


def test_the_token_file_is_read_when_none_is_typed(registered, empty_scene, reference_dir, video, monkeypatch):
    monkeypatch.delenv(user_dirs.TOKEN_ENV_VAR)
    token = user_dirs.ensure_token()
    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz", token=token) as server:
        jobs.start_capture(str(video), ImportOptions(), server_url=server.url, use_timer=False, poll_interval_s=0.01)
        status = _follow()
    assert status.state == "done", status.message
    assert server.authorizations[-1] == f"Bearer {token}"


def test_without_a_token_a_local_server_is_not_sent_the_video_and_the_addons_own_is_started(
    registered, reference_dir, video, monkeypatch
):
    """A server on this machine that cannot prove the user's token (here: the user has none) may be
    another account's: the add-on's own server is started instead (here its program is missing, so the
    capture fails saying so), and the video never goes to the other."""
    from vibe_blender import preferences, server_control

    monkeypatch.delenv(user_dirs.TOKEN_ENV_VAR)
    monkeypatch.setattr(preferences._Defaults, "server_program", "/nonexistent/vibe-mocap")
    monkeypatch.setattr(server_control._state, "program", None)
    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz", token="t") as server:
        jobs.start_capture(str(video), ImportOptions(), server_url=server.url, use_timer=False)
        status = _follow()
    assert status.state == "failed" and "program set in the preferences" in status.message, status.message
    assert server.jobs == {} and not any(method == "POST" for method, _ in server.requests)


def test_no_server_and_no_program_is_reported_not_imported(registered, empty_scene, video, monkeypatch):
    """Nothing answers on this machine and the server program cannot be found: one clear message."""
    from vibe_blender import preferences, server_control

    monkeypatch.setattr(preferences._Defaults, "server_program", "/nonexistent/vibe-mocap")
    monkeypatch.setattr(server_control._state, "program", None)
    jobs.start_capture(str(video), ImportOptions(), server_url="http://127.0.0.1:9", use_timer=False)
    status = _follow()
    assert status.state == "failed" and "program set in the preferences" in status.message
    assert jobs.last_import() is None and not bpy.data.objects


def test_failed_job_is_reported(registered, empty_scene, reference_dir, video):
    with FakeVibeServer(
        reference_dir / "result.npz", reference_dir / "body_model.npz", fail_with="The video has no frames."
    ) as server:
        jobs.start_capture(str(video), ImportOptions(), server_url=server.url, use_timer=False, poll_interval_s=0.01)
        status = _follow()
    assert status.state == "failed" and "The video has no frames." in status.message


def test_cancel_from_the_panel(registered, empty_scene, reference_dir, video, monkeypatch):
    monkeypatch.setattr(capture, "CANCEL_TIMEOUT_S", 10.0)  # what is tested is that it asks, not how fast
    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz", polls_per_job=10_000) as server:
        jobs.start_capture(str(video), ImportOptions(), server_url=server.url, use_timer=False, poll_interval_s=0.01)
        until_capture_state("running")
        bpy.ops.vibe_mocap.cancel_capture()
        status = _follow()  # 'cancelled' at once, for the panel
        jobs.current_job().join(30)  # the worker then tells the server
        (record,) = server.jobs.values()
        assert record["status"] == "cancelled"
    assert status.state == "cancelled" and not bpy.data.objects


def test_remote_server_needs_online_access(registered, video):
    assert not bpy.app.online_access  # the bpy module's default
    with pytest.raises(VibeError, match="online access"):
        jobs.start_capture(str(video), ImportOptions(), server_url="http://192.0.2.1:8765", use_timer=False)


@pytest.mark.parametrize(
    "url, warned",
    [("http://192.0.2.1:8765", True), ("http://127.0.0.1:8765", False), ("https://192.0.2.1:8765", False)],
)
def test_the_preferences_warn_under_an_http_url_of_another_machine(registered, url, warned):
    from vibe_blender.preferences import VIBE_AddonPreferences

    calls = []
    prefs = type("Prefs", (), {"layout": _RecordingLayout(calls), "server_url": url})()
    prefs._draw_program = VIBE_AddonPreferences._draw_program
    VIBE_AddonPreferences.draw(prefs, bpy.context)
    labels = " ".join(kw.get("text", "") for name, _, kw in calls if name == "label")
    assert ("unencrypted" in labels) is warned


@pytest.mark.parametrize("field", ["", "  "])
def test_an_empty_server_url_is_the_local_server_for_capture_and_live(registered, video, monkeypatch, field):
    """It said "The server None is on another machine and Blender's online access is off"."""
    from vibe_blender import live, server_control

    reached = []

    def local_server(url, token, start):
        reached.append(url)
        raise VibeError("stopped here by the test")

    monkeypatch.setattr(server_control, "server_for_capture", local_server)
    jobs.start_capture(str(video), ImportOptions(), server_url=field, use_timer=False)
    jobs.current_job().join(30)
    session = live.start_live("0", server_url=field, token="")
    session.connector.join(30)
    assert reached == ["http://127.0.0.1:8765"] * 2 and session.error == "stopped here by the test"


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "localhost:8765"])
def test_a_malformed_server_url_is_reported_for_capture_and_live(registered, empty_scene, video, monkeypatch, url):
    """The Capture operator raised a Python traceback for "http://[::1", live said "Unexpected error …
    Please report it" for a port out of range, and both said a server without http:// was "on another
    machine". Both now refuse the URL at once, naming the setting and an example."""
    from vibe_blender import live, preferences

    message = "not a server URL: set the Server URL .*http://127.0.0.1:8765"
    with pytest.raises(VibeError, match=message):
        live.start_live("0", server_url=url, token="", use_timer=False)
    assert live.current_session() is None or live.current_session().state in live.FINAL_STATES
    monkeypatch.setattr(preferences._Defaults, "server_url", url)
    empty_scene.vibe_mocap.video_path = str(video)
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.vibe_mocap.capture()


def test_capture_operator_without_video_reports(registered, empty_scene):
    empty_scene.vibe_mocap.video_path = ""
    with pytest.raises(RuntimeError, match="Choose a video"):
        bpy.ops.vibe_mocap.capture()


def test_import_operator(registered, empty_scene, reference_dir):
    import shutil

    from vibe_blender.preferences import BODY_MODEL_CACHE, user_dir

    shutil.copy(reference_dir / "body_model.npz", user_dir("cache") / BODY_MODEL_CACHE)
    assert bpy.ops.vibe_mocap.import_motion(filepath=str(reference_dir / "result.npz"), correctives="baked") == {
        "FINISHED"
    }
    assert {"track_1", "track_2"} <= set(bpy.data.objects.keys())
    empty_scene.frame_end = 3
    bpy.ops.vibe_mocap.import_motion(filepath=str(reference_dir / "result.npz"), set_scene=False)
    assert empty_scene.frame_end == 3 and "track_1.001" in bpy.data.objects
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.vibe_mocap.import_motion(filepath=str(reference_dir / "missing.npz"))


def test_the_import_frame_rate_stops_where_blenders_does(registered):
    """A typed 50000 fps is held at Blender's 32767 (the reader would call such a rate damage of the file)."""
    fps = bpy.ops.vibe_mocap.import_motion.get_rna_type().properties["fps"]
    assert (fps.hard_min, fps.hard_max) == (1.0, 32767.0)


def test_importing_with_the_placeholders_cached_body_model_warns(registered, reference_dir):
    """A body model cached from a server without model data is the stick figure: File > Import built
    on it silently."""
    import json
    import shutil

    from vibe_blender.core.model_data import body_model_note_path
    from vibe_blender.preferences import BODY_MODEL_CACHE, resolve_body_model, user_dir

    cache = user_dir("cache") / BODY_MODEL_CACHE
    shutil.copy(reference_dir / "body_model.npz", cache)
    warnings = []
    try:
        for placeholder in (False, True):
            body_model_note_path(cache).write_text(json.dumps({"fingerprint": None, "placeholder": placeholder}))
            assert resolve_body_model(warn=warnings.append).num_vertices == 6890
            assert len(warnings) == placeholder
    finally:
        body_model_note_path(cache).unlink(missing_ok=True)
    assert "stick figure of a server without model data" in warnings[0]


class _RecordingLayout:
    """Stands in for UILayout (panels cannot draw without a window): records what draw() asks for,
    and the properties the panel sets on each operator button (``operators``, by idname)."""

    def __init__(self, calls, operators=None):
        self.calls, self.operators = calls, {} if operators is None else operators

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name in ("box", "column", "row"):
                return _RecordingLayout(self.calls, self.operators)
            props = _OperatorProps()
            if name == "operator":
                self.operators[args[0]] = props
            return props

        return record


class _OperatorProps:
    pass


def _draw_panel(context, operators=None):
    from vibe_blender.panels import VIEW3D_PT_vibe_mocap

    calls = []
    panel = type("P", (), {"layout": _RecordingLayout(calls, operators)})()
    VIEW3D_PT_vibe_mocap.draw(panel, context)
    return calls


def test_panel_offers_its_video_to_the_import_and_shows_a_renamed_bodys_shape(
    registered, empty_scene, reference_dir, body_model, video
):
    from vibe_blender.importer import import_motion_file

    empty_scene.vibe_mocap.video_path = str(video)
    ((armature_obj, mesh_obj), _) = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    mesh_obj.name = "Dancer"
    bpy.context.view_layer.objects.active = armature_obj
    operators = {}
    calls = _draw_panel(bpy.context, operators)
    button = operators["vibe_mocap.import_motion"]
    assert button.capture_video_path == str(video)  # used only for a result captured from it
    assert not hasattr(button, "video_path")  # the import's own Video option is left to the user
    sliders = [kw["text"] for name, _, kw in calls if name == "prop" and kw.get("text", "").startswith("Beta")]
    assert sliders == [f"Beta {i}" for i in range(10)]


CLIP, CLIP_FRAMES = "asl-walk.mkv", 89  # as Blender and the server's decoder count its frames


def _result_captured_from(reference_dir, folder, video_name: str, frame_count: int):
    """The reference result file, as if captured from a video ``video_name`` of ``frame_count`` frames."""
    from dataclasses import replace

    from vibe_blender.core.result_file import load_result, save_result

    result = load_result(reference_dir / "result.npz")
    result.video = replace(result.video, name=video_name, frame_count=frame_count)
    path = folder / f"captured_{frame_count}.npz"
    save_result(path, result)
    return path


def test_the_import_button_shows_the_capture_video_behind_a_result_captured_from_it(
    registered, empty_scene, reference_dir, real_data_dir, tmp_path
):
    import shutil

    from vibe_blender.preferences import BODY_MODEL_CACHE, user_dir

    shutil.copy(reference_dir / "body_model.npz", user_dir("cache") / BODY_MODEL_CACHE)
    empty_scene.vibe_mocap.video_path = str(real_data_dir / CLIP)
    operators = {}
    _draw_panel(bpy.context, operators)
    result = _result_captured_from(reference_dir, tmp_path, CLIP, CLIP_FRAMES)
    capture_video = operators["vibe_mocap.import_motion"].capture_video_path
    assert bpy.ops.vibe_mocap.import_motion(filepath=str(result), capture_video_path=capture_video) == {"FINISHED"}
    (background,) = empty_scene.camera.data.background_images
    assert background.clip.frame_duration == CLIP_FRAMES
    assert Path(bpy.path.abspath(background.clip.filepath)) == real_data_dir / CLIP


@pytest.mark.parametrize(
    "source, message",
    [
        (
            ("other.mp4", CLIP_FRAMES),
            "was captured from 'other.mp4', not from the capture panel's video 'asl-walk.mkv'",
        ),
        ((CLIP, 300), "captured from a video named 'asl-walk.mkv' of 300 frames, but the capture panel's video"),
        ("official", "does not record which video it was captured from, so the capture panel's video 'asl-walk.mkv'"),
    ],
)
def test_a_result_not_captured_from_the_capture_video_is_imported_without_it_saying_so_once(
    registered, empty_scene, reference_dir, body_model, real_data_dir, official_pkl, tmp_path, source, message
):
    from vibe_blender.importer import import_motion_file

    path = official_pkl if source == "official" else _result_captured_from(reference_dir, tmp_path, *source)
    warnings = []
    options = ImportOptions(capture_video_path=str(real_data_dir / CLIP))
    characters = import_motion_file(path, body_model, options, report=lambda _: None, warn=warnings.append)
    assert characters and empty_scene.camera is not None
    assert [w for w in warnings if "capture panel's video" in w] == [w for w in warnings if message in w]
    assert len([w for w in warnings if message in w]) == 1, warnings
    assert not empty_scene.camera.data.background_images and not bpy.data.movieclips  # none loaded, none kept


def test_a_result_names_the_video_as_the_server_records_it(tmp_path):
    from vibe_blender.importer import SERVER_VIDEO_NAME_CHARS, is_named_as_recorded

    (tmp_path / "clip_0001.MP4").write_bytes(b"")
    (tmp_path / "take.mp4").symlink_to(tmp_path / "clip_0001.MP4")  # a local capture sends the target's path
    assert is_named_as_recorded(str(tmp_path / "take.mp4"), "clip_0001.MP4")
    assert is_named_as_recorded(str(tmp_path / "take.mp4"), "take.mp4")  # uploaded by the link's name

    assert is_named_as_recorded("/clips/walk.mp4", "walk.mp4")
    assert not is_named_as_recorded("/clips/walk.mp4", "walk")
    assert is_named_as_recorded('/clips/a "b".mp4', "a _b_.mp4")  # uploaded: quotes become _
    long_name = "w" * (SERVER_VIDEO_NAME_CHARS + 20) + ".mp4"
    assert is_named_as_recorded(f"/clips/{long_name}", long_name[:SERVER_VIDEO_NAME_CHARS])


def test_panel_shows_progress_cancel_and_errors(registered, empty_scene, reference_dir, video, monkeypatch):
    from vibe_blender import preferences, server_control

    progress = bpy.types.UILayout.bl_rna.functions["progress"]  # the call the panel makes exists
    assert {"factor", "type", "text"} <= {p.identifier for p in progress.parameters}
    with FakeVibeServer(reference_dir / "result.npz", reference_dir / "body_model.npz", polls_per_job=10_000) as server:
        jobs.start_capture(str(video), ImportOptions(), server_url=server.url, use_timer=False, poll_interval_s=0.01)
        until_capture_state("running")
        calls = _draw_panel(bpy.context)
        assert any(name == "progress" for name, _, _ in calls)
        assert ("operator", ("vibe_mocap.cancel_capture",), {"icon": "CANCEL"}) in calls
        jobs.cancel_capture()
        _follow()
    # nothing answers and no server program is found: the panel says why and offers Capture again
    monkeypatch.setattr(preferences._Defaults, "server_program", "/nonexistent/vibe-mocap")
    monkeypatch.setattr(server_control._state, "program", None)
    jobs.start_capture(str(video), ImportOptions(), server_url="http://127.0.0.1:9", use_timer=False)
    _follow()
    calls = _draw_panel(bpy.context)
    labels = " ".join(kw.get("text", "") for name, _, kw in calls if name == "label")
    assert "does not exist" in labels and ("operator", ("vibe_mocap.capture",), {"icon": "REC"}) in calls


def test_disabling_the_add_on_cancels_the_capture_before_its_server_stops(registered, monkeypatch):
    """The other way round the capture's cancel could no longer reach its server, which put the job
    back in its queue at the stop."""
    import vibe_blender
    from vibe_blender import server_control

    order = []
    monkeypatch.setattr(jobs, "cancel_capture", lambda: order.append("cancel the capture"))
    monkeypatch.setattr(server_control, "_stop_at_exit", lambda: order.append("stop the server"))
    vibe_blender.unregister()
    vibe_blender.register()
    assert order == ["cancel the capture", "stop the server"]


def test_the_capture_box_names_the_add_ons_server_when_it_runs_elsewhere_than_the_preferences_url(
    registered, monkeypatch
):
    from vibe_blender import server_control
    from vibe_blender.core.local_server import ServerStatus

    def labels():
        return [kw.get("text", "") for name, _, kw in _draw_panel(bpy.context) if name == "label"]

    monkeypatch.setattr(server_control, "server_status", lambda: ServerStatus("stopped"))
    assert not any("the add-on's, at" in text for text in labels())
    running = ServerStatus("ready", url="http://127.0.0.1:44133")
    monkeypatch.setattr(server_control, "server_status", lambda: running)
    assert "(when no server answers there: the add-on's, at http://127.0.0.1:44133)" in labels()
    from vibe_blender import preferences

    monkeypatch.setattr(preferences._Defaults, "server_url", "http://localhost:44133/")  # that very server
    assert not any("the add-on's, at" in text for text in labels())


def test_the_import_takes_the_body_model_written_beside_the_result(registered, empty_scene, reference_dir, tmp_path):
    """With no model-data folder and nothing cached, a result whose infer run wrote RESULT_body_model.npz
    beside it was a dead end (the message named only the preferences and capturing); the import
    operator's Body model option picks one by hand."""
    import shutil

    from vibe_blender.preferences import BODY_MODEL_CACHE, user_dir

    (user_dir("cache") / BODY_MODEL_CACHE).unlink(missing_ok=True)
    result = tmp_path / "walk.npz"
    shutil.copy(reference_dir / "result.npz", result)
    with pytest.raises(RuntimeError, match="Pick the body model \\(.npz\\) written with the result"):
        bpy.ops.vibe_mocap.import_motion(filepath=str(result), add_camera=False)
    picked = tmp_path / "bodies" / "any_name.npz"
    picked.parent.mkdir()
    shutil.copy(reference_dir / "body_model.npz", picked)
    assert bpy.ops.vibe_mocap.import_motion(filepath=str(result), add_camera=False, body_model_path=str(picked)) == {
        "FINISHED"
    }
    shutil.copy(reference_dir / "body_model.npz", tmp_path / "walk_body_model.npz")
    assert bpy.ops.vibe_mocap.import_motion(filepath=str(result), add_camera=False) == {"FINISHED"}
    assert len([o for o in bpy.data.objects if o.type == "ARMATURE"]) == 4  # two people, twice
