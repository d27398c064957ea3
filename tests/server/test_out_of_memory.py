"""A GPU that runs out of memory is one clear message naming the stage and what to change, in a run,
a run across devices, a job and the command line (CPU engines raise PyTorch's error here)."""

import dataclasses
import gc
import weakref

import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.pipeline.engine import Engine
from vibe_server.pipeline.options import RunOptions
from vibe_server.pipeline.segmented import run_across_devices

from .conftest import FakeDetector, TinyVIBE


def out_of_memory(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_the_backbone_running_out_of_memory_says_to_lower_the_batch_where_that_can_be_done(make_engine):
    """The batch is a command-line option only (not over HTTP): the message says where it is set,
    and what a server's job, which cannot set it, does instead."""
    engine = make_engine()
    engine.model.extract_features = out_of_memory
    with pytest.raises(VibeError, match=r"ran out of memory in the backbone stage") as caught:
        engine.run("clip.mp4")
    message = str(caught.value)
    assert "lower it on the command line (vibe-mocap infer or batch --batch-size N; 128 by default" in message
    assert "a server's jobs always use that default, so for a job free more of the GPU's memory" in message
    assert "nvidia-smi" in message and "--device cpu" in message


def test_the_temporal_model_running_out_of_memory_says_to_keep_fewer_tracks(make_engine):
    engine = make_engine()
    engine.model.forward_features = out_of_memory
    with pytest.raises(VibeError, match=r"ran out of memory in the temporal stage.*tracks_max"):
        engine.run("clip.mp4")


@pytest.mark.parametrize("gpu_front_end", [False, True])
def test_detection_running_out_of_memory_is_named_also_from_the_detect_thread(short_clip, gpu_front_end):
    """The GPU front end detects in a thread of its own: its error reaches the run, named."""

    class Detector(FakeDetector):
        batch_size = 4
        detect = staticmethod(out_of_memory)

    engine = Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cpu", gpu_front_end=gpu_front_end)
    engine.frontend = dataclasses.replace(engine._frontend(), make_detector=lambda name, **kw: Detector())
    with pytest.raises(VibeError, match=r"ran out of memory in the detect stage.*lower resolution"):
        engine.run(short_clip, RunOptions(detector="yolo"))


def test_a_run_across_devices_running_out_of_memory_names_the_stage(short_clip):
    engines = [Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cpu") for _ in range(2)]
    engines[1].model.extract_features = out_of_memory
    with pytest.raises(VibeError, match=r"ran out of memory in the backbone stage"):
        run_across_devices(engines, short_clip, RunOptions(detector="hog", min_track_frames=5))


def test_a_job_and_the_command_line_say_it_in_words_too(monkeypatch, capsys):
    """Anything else on the GPU (loading the model onto it, say): a job's message, the CLI's error."""
    import argparse

    from vibe_server import cli
    from vibe_server.api.jobs import INTERNAL_ERROR_MESSAGE, failure_message

    err = torch.cuda.OutOfMemoryError("CUDA out of memory")
    assert failure_message(err).startswith("The GPU ran out of memory.")
    # what a job can change, and the batch as the command line's (a job cannot set it)
    assert "Lower the video's resolution, the number of tracks (tracks_max) or, on the command line," in (
        failure_message(err)
    )
    assert "(vibe-mocap infer or batch --batch-size N; a server's jobs cannot set it)" in failure_message(err)
    assert failure_message(RuntimeError("other")) == INTERNAL_ERROR_MESSAGE

    def parser():
        p = argparse.ArgumentParser()
        p.set_defaults(run=out_of_memory)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main([]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith("error: The GPU ran out of memory.") and "--batch-size N" in printed


def test_the_out_of_memory_message_gives_its_memory_back(monkeypatch):
    from vibe_server.pipeline import devices

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    assert "backbone" in str(devices.out_of_memory_error("backbone")) and emptied
    assert devices.is_out_of_memory(torch.cuda.OutOfMemoryError())
    assert not devices.is_out_of_memory(MemoryError())  # the host's: not the GPU's


class _Held:
    """Stands for the device tensors of the step that ran out of memory."""


@pytest.mark.parametrize("devices", [1, 2])
def test_the_failed_step_s_memory_is_freed_before_the_cache_is_handed_back(short_clip, monkeypatch, devices):
    """With several devices the error comes from a segment's thread; it reaches the run without a
    reference cycle, so the failed step's tensors are freed as it leaves (here with the garbage
    collector off) before the out-of-memory message hands the cache back to the device."""
    from vibe_server.pipeline import engine as engine_module

    held = []

    class Detector(FakeDetector):
        batch_size = 1

        def detect(self, frames):
            tensors = _Held()
            held.append(weakref.ref(tensors))
            out_of_memory()

    alive_at_message = []
    message = engine_module.out_of_memory_error
    monkeypatch.setattr(
        engine_module,
        "out_of_memory_error",
        lambda stage=None: (alive_at_message.append([ref() is not None for ref in held]), message(stage))[1],
    )
    engines = [Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cpu") for _ in range(devices)]
    engines[0].frontend = dataclasses.replace(engines[0]._frontend(), make_detector=lambda name, **kw: Detector())
    for engine in engines[1:]:
        engine.frontend = dataclasses.replace(engine._frontend(), make_detector=lambda name, **kw: FakeDetector())
    enabled = gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(VibeError, match=r"ran out of memory in the detect stage"):
            run_across_devices(engines, short_clip, RunOptions(detector="yolo"))
    finally:
        if enabled:
            gc.enable()
    assert alive_at_message == [[False]]


def test_the_out_of_memory_message_collects_what_reference_cycles_hold_first(monkeypatch):
    from vibe_server.pipeline import devices

    class Cycle:
        pass

    cycle = Cycle()
    cycle.itself = cycle
    ref = weakref.ref(cycle)
    alive_when_emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: alive_when_emptied.append(ref() is not None))
    enabled = gc.isenabled()
    gc.disable()
    try:
        del cycle
        devices.out_of_memory_error("detect")
    finally:
        if enabled:
            gc.enable()
    assert alive_when_emptied == [False]
