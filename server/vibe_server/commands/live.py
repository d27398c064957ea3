"""``vibe-mocap live SOURCE``: capture a camera, a stream on this machine or a video file (played at
its own frame rate) live, printing frames/s, latency and dropped frames; ``--record`` saves the
standard result file."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time

from vibe_blender.core.atomic_file import atomic_write
from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import MAX_FRAME_ID, save_result

from ..command_signals import Stopped, signals_stop_the_command, stops_ignored
from ..data.loading import checked_data_dir, resolve_device
from ..pipeline.live_options import LiveOptions
from ..pipeline.live_source import MAX_WAITING, open_live_source, parse_source
from ..pipeline.options import add_cli_flags, options_from_cli
from .model_data_outputs import check_output_file
from .shared_arguments import add_data_dir_argument, add_device_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "live",
        help="live capture from a camera, a local stream or a file at its frame rate",
        description=f"Run VIBE on frames as they arrive. At most {MAX_WAITING} frames wait for the model (a slow "
        "frame is absorbed); when it stays slower than the source, the oldest waiting frame is dropped (and counted).",
    )
    p.add_argument("source", help="camera index (0), a video file, or a stream URL on 127.0.0.1 (rtsp://, udp://, ...)")
    p.add_argument("--record", metavar="OUT.npz", help="write what was captured as a result file when it stops")
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: until the source ends or Ctrl-C)"
    )
    add_cli_flags(p, LiveOptions)  # the live options (pipeline/live_options.py)
    p.add_argument(
        "--lossless",
        action="store_true",
        help="a file: wait for the model instead of dropping frames (a replay that keeps every frame)",
    )
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The command; SIGTERM (``kill``, a service or container stopping) and SIGHUP (a closed terminal)
    stop the capture as Ctrl-C does, and the recording is saved."""
    try:
        with signals_stop_the_command():
            return _capture(args)
    except Stopped as stop:  # before the capture began (the model loading): nothing recorded yet
        print("interrupted", file=sys.stderr)
        return stop.exit_status


def _capture(args: argparse.Namespace) -> int:
    from ..pipeline.engine import load_engine  # start-up: torch loads when the command runs, not for --help
    from ..pipeline.live import MAX_RECORDED_FRAMES, LiveRecording, LiveSession, LiveStats, run_live

    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise VibeError(
            f"--duration must be a number of seconds more than 0; got {args.duration:g}. "
            "Leave it out to capture until the source ends or Ctrl-C."
        )
    options = options_from_cli(args, LiveOptions)
    options.validate()
    kind, target = parse_source(args.source)  # a bad source is refused before the model loads
    record = None
    if args.record:  # a file of another kind is never replaced: a video given as --record, say
        inputs = {"the video": target if kind == "file" else None}
        record = check_output_file(args.record, None, "the recording", "--record", args.data_dir, inputs, suffix=".npz")
    data_dir = checked_data_dir(args.data_dir)  # a folder the user named: no placeholder
    device = resolve_device(args.device)
    # a camera that is not there, or a file that is no video, is said before the model loads; a stream is
    # opened once it has loaded (left unread meanwhile, it would fall behind)
    opened = open_live_source(args.source, lossless=args.lossless) if kind != "stream" else None
    try:
        engine = load_engine(data_dir, device=device, allow_synthetic=True, log=lambda msg: print(msg, file=sys.stderr))
    except BaseException:
        if opened is not None:
            opened.discard()
        raise
    source = opened if opened is not None else open_live_source(args.source, lossless=args.lossless)
    session = LiveSession(engine, options, width=source.info.width, height=source.info.height)
    recording = (
        LiveRecording(
            source.info.name,
            source.info.fps,
            source.info.width,
            source.info.height,
            session.focal_px,
            engine.model_name,
        )
        if record
        else None
    )
    t_end = time.monotonic() + args.duration if args.duration is not None else None
    last_print, last_stats, warned = [0.0], [LiveStats()], [0]

    def print_new_warnings() -> None:  # the session's (also in the recording's meta["warnings"]), once each
        for warning in session.warnings[warned[0] :]:
            _tell(f"WARNING: {warning}", sys.stderr)
        warned[0] = len(session.warnings)

    def should_stop() -> bool:  # the duration is over, or the recording is full
        return (t_end is not None and time.monotonic() > t_end) or (recording is not None and recording.full)

    def show(frame, people, stats) -> None:
        last_stats[0] = stats
        now = time.monotonic()
        if now - last_print[0] >= 1.0:
            last_print[0] = now
            print(_stats_line(stats, len(people)), file=sys.stderr, flush=True)
        print_new_warnings()

    print(
        f"Live from {source.info.name} ({source.info.width}x{source.info.height}, {source.info.fps:g} fps), "
        f"model: {engine.model_name}, detector: {session.detector_name}. Ctrl-C stops.",
        file=sys.stderr,
    )
    print_new_warnings()
    stop, failure, stats = None, None, None  # stop: the Ctrl-C, SIGTERM or SIGHUP that ended it
    try:
        with source:
            try:
                stats = run_live(
                    source,
                    session,
                    on_frame=show,
                    recording=recording,
                    should_stop=should_stop,
                )
            except KeyboardInterrupt as interrupt:
                stop = interrupt
            except Exception as err:  # the source broke (a camera unplugged, a new frame size), out of memory...:
                failure = err  # what was recorded is saved first
    except KeyboardInterrupt as interrupt:  # Ctrl-C again while the source stops
        stop = stop or interrupt
    if stats is None:  # Ctrl-C or a broken source: the last figures, with the counts as they are now
        stats = dataclasses.replace(
            last_stats[0],
            frames_processed=session.frames_processed,
            frames_arrived=source.arrived,
            frames_dropped=source.dropped,
            people_left_out=session.people_left_out,
        )
    ending = f" ({stop})" if isinstance(stop, Stopped) else " (interrupted)" if stop else " (failed)" if failure else ""
    _tell(_stats_line(stats, None) + ending)
    print_new_warnings()  # e.g. a file that breaks off, said as the source ended
    if recording is not None and recording.full:
        hours = MAX_RECORDED_FRAMES / recording.frame_rate / 3600
        _tell(
            f"The recording is full: {MAX_RECORDED_FRAMES:,} person-frames (about {hours:.0f} h of one person at "
            f"{recording.frame_rate:g} frames/s), or {MAX_FRAME_ID:,} frames of the source, the most a result file "
            "counts. The session stopped there and what was recorded is saved; record shorter takes.",
            sys.stderr,
        )
    if record is not None:
        if recording.rows:  # a long take takes a while (about a minute for the largest): said first
            _tell(f"Saving the recording to {record}...", sys.stderr)
        with stops_ignored():  # a Ctrl-C pressed again meanwhile would lose the whole take
            result = recording.result(
                frames_seen=stats.frames_arrived, dropped=stats.frames_dropped, warnings=session.warnings
            )
            if result.tracks:
                atomic_write(record, lambda f: save_result(f, result))
        if result.tracks:
            print(f"Recorded {len(result.tracks)} track(s), {recording.frames_recorded} frames: {record}")
            if result.video.fps != source.info.fps:
                print(
                    f"{source.info.name} states {source.info.fps:g} frames/s but sent {result.video.fps:g}: the "
                    f"recording is saved at {result.video.fps:g} frames/s, so that it plays at real speed.",
                    file=sys.stderr,
                )
        elif failure is None:
            raise VibeError(
                f"Nobody was tracked from {source.info.name}: nothing to record. Make sure a whole person is in view."
            )
    if failure is not None:  # reported once what was recorded is saved; the exit status says it failed
        raise failure
    return 0


def _tell(line: str, file=None) -> None:
    """Print ``line`` (to stdout by default), and go on when that fails: after SIGHUP the terminal is
    gone and writing to it fails (EIO), which must not stop the recording being saved."""
    try:
        print(line, file=file or sys.stdout, flush=True)
    except OSError:
        pass


def _stats_line(stats, people: int | None) -> str:
    p50 = f"{1000 * stats.latency_p50_s:.0f}" if stats.latency_p50_s is not None else "-"
    p95 = f"{1000 * stats.latency_p95_s:.0f}" if stats.latency_p95_s is not None else "-"
    line = (
        f"{stats.fps:5.1f} frames/s  latency p50 {p50} ms  p95 {p95} ms  "
        f"processed {stats.frames_processed}  dropped {stats.frames_dropped} of {stats.frames_arrived}"
    )
    if stats.people_left_out:
        line += f"  left out {stats.people_left_out} person-frame(s)"  # values a result file cannot hold
    return line + (f"  people {people}" if people is not None else "")
