"""The compiled backbone: torch.compile'd once and reused, within 1e-3 of eager, padded to one batch
shape, used only where it pays, and never breaking a run (eager with a logged reason instead)."""

import logging

import numpy as np
import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.model.backbone import Bottleneck
from vibe_server.pipeline.compiled import COMPILE_MIN_CROPS, CompiledRunner, compile_pays
from vibe_server.pipeline.engine import Engine
from vibe_server.pipeline.options import RunOptions

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


class CountingCompiler:
    """Stands in for torch.compile where only the runner's bookkeeping is tested: records the batch
    shapes the 'compiled' module sees."""

    def __init__(self):
        self.compiles, self.shapes = 0, []

    def __call__(self, module):
        self.compiles += 1

        def compiled(images):
            self.shapes.append(tuple(images.shape))
            return module(images)

        return compiled


def test_compiled_resnet_matches_eager_within_1e3():
    """The real torch.compile (inductor) on a small network of ResNet-50's own blocks and a small
    input (a short compile; the full-size figure is printed by benchmarks/pipeline.py)."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 7, stride=4, padding=3, bias=False),
        torch.nn.BatchNorm2d(64),
        torch.nn.ReLU(),
        Bottleneck(64, 16),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()
    images = torch.randn(2, 3, 64, 64)
    runner = CompiledRunner(module)
    with torch.inference_mode():
        eager = runner(images, compiled=False)
        compiled = runner(images, compiled=True, batch_size=2)
    assert runner.fallback_reason is None and runner.compiled
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), atol=1e-3, rtol=0)


def test_short_batches_are_padded_and_long_ones_split_so_the_compiled_module_sees_one_shape():
    compiler = CountingCompiler()
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.Flatten())
    runner = CompiledRunner(module, compiler=compiler)
    images = torch.randn(11, 3, 16, 16)
    with torch.inference_mode():
        out = runner(images, compiled=True, batch_size=4)
        again = runner(images[:3], compiled=True, batch_size=4)
    torch.testing.assert_close(out, module(images))
    torch.testing.assert_close(again, module(images[:3]))
    assert compiler.compiles == 1  # compiled once, kept
    assert set(compiler.shapes) == {(4, 3, 16, 16)}


def test_a_failing_compile_falls_back_to_eager_with_the_reason_logged(caplog):
    def broken_compiler(module):
        raise RuntimeError("no C compiler found")

    notes = []
    module = torch.nn.Linear(3, 2)
    runner = CompiledRunner(module, compiler=broken_compiler, on_fallback=notes.append)
    x = torch.randn(5, 3)
    with caplog.at_level(logging.WARNING, logger="vibe_server.compile"):
        out = runner(x, compiled=True, batch_size=8)
    torch.testing.assert_close(out, module(x))
    assert "no C compiler found" in runner.fallback_reason and not runner.compiled
    assert notes and "using the eager one" in notes[0] and "no C compiler found" in caplog.text
    runner(x, compiled=True)  # not tried again
    assert len(notes) == 1


def test_a_compiled_module_that_fails_when_called_also_falls_back():
    def failing_at_run(module):
        def compiled(images):
            raise RuntimeError("inductor kernel failed")  # any error in the compiled call

        return compiled

    module = torch.nn.Linear(3, 2)
    runner = CompiledRunner(module, compiler=failing_at_run)
    x = torch.randn(2, 3)
    torch.testing.assert_close(runner(x, compiled=True, batch_size=2), module(x))
    assert "inductor kernel failed" in runner.fallback_reason


@pytest.mark.parametrize("when", ["compiling", "running"])
def test_a_device_out_of_memory_is_raised_and_compiling_stays_on(when):
    """Out of GPU memory is no compile failure: the run fails with it (and its stage's hint) as it
    would eagerly, instead of turning compiling off for the process and retrying eagerly."""
    calls = []

    def out_of_memory_compiler(module):
        if when == "compiling" and not calls:
            calls.append("compile")
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        def compiled(images):
            if not calls:
                calls.append("run")
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return module(images)

        return compiled

    module = torch.nn.Linear(3, 2)
    runner = CompiledRunner(module, compiler=out_of_memory_compiler)
    x = torch.randn(2, 3)
    with pytest.raises(torch.OutOfMemoryError):
        runner(x, compiled=True, batch_size=2)
    assert runner.fallback_reason is None
    torch.testing.assert_close(runner(x, compiled=True, batch_size=2), module(x))
    assert runner.compiled


@pytest.mark.parametrize(
    "mode, device, precision, crops, already, expected",
    [
        ("on", "cpu", "fp32", 10, False, True),
        ("off", "cpu", "bf16", 10**6, True, False),
        ("auto", "cpu", "bf16", COMPILE_MIN_CROPS, False, True),
        ("auto", "cpu", "bf16", 100, False, False),
        ("auto", "cpu", "bf16", 100, True, True),  # compiled for an earlier job: reuse
        ("auto", "cpu", "fp32", 10**6, False, False),
        ("auto", "cuda:0", "fp16", 10**6, False, False),
    ],
)
def test_compiling_is_chosen_where_it_pays(mode, device, precision, crops, already, expected):
    assert (
        compile_pays(mode, device=device, precision=precision, expected_crops=crops, compiled_already=already)
        is expected
    )


def test_bad_compile_mode_is_refused(tiny_engine):
    with pytest.raises(VibeError, match="compile mode"):
        compile_pays("maybe", device="cpu", precision="bf16", expected_crops=0, compiled_already=False)
    with pytest.raises(VibeError, match="compile mode"):
        tiny_engine.run("clip.mp4", RunOptions(compile_backbone="always"))


def test_engine_uses_the_compiled_backbone_when_asked_and_records_it(tiny_engine):
    compiler = CountingCompiler()
    tiny_engine.backbone_runner._compiler = compiler
    eager = tiny_engine.run("clip.mp4", RunOptions(compile_backbone="off"))
    assert compiler.compiles == 0 and eager.result.meta["backbone_compiled"] == "False"
    compiled = tiny_engine.run("clip.mp4", RunOptions(compile_backbone="on", batch_size=16))
    assert compiler.compiles == 1 and set(compiler.shapes) == {(16, 3, 224, 224)}
    assert compiled.result.meta["backbone_compiled"] == "True"
    for a, b in zip(eager.result.tracks, compiled.result.tracks, strict=True):
        np.testing.assert_allclose(a.pose, b.pose, atol=1e-5)


def test_engine_falls_back_to_eager_when_compiling_fails(make_engine):
    notes = []
    engine = make_engine()
    engine.backbone_runner = CompiledRunner(
        engine.model.backbone,
        on_fallback=notes.append,
        compiler=lambda m: (_ for _ in ()).throw(RuntimeError("inductor: no cc")),
    )
    reference = make_engine().run("clip.mp4", RunOptions())
    out = engine.run("clip.mp4", RunOptions(compile_backbone="on"))
    assert notes and "no cc" in notes[0] and out.result.meta["backbone_compiled"] == "False"
    for a, b in zip(reference.result.tracks, out.result.tracks, strict=True):
        np.testing.assert_allclose(a.pose, b.pose, atol=1e-6)


def test_engine_refuses_an_unknown_compile_mode():
    with pytest.raises(VibeError, match="compile mode"):
        Engine(torch.nn.Module(), model_name="t", data_dir=None, compile_backbone="yes")


def test_compiled_yolo_matches_eager_and_sees_one_batch_shape(tmp_path):
    """The real torch.compile on YOLOv3's full network (random weights, a small input for a short
    compile): within 1e-3 of eager; a single frame (an on-the-spot detection) and a short last batch
    are padded, so it is compiled once."""
    from vibe_server.pipeline.compiled import _torch_compile
    from vibe_server.pipeline.detect.darknet_weights import write_random_darknet_weights
    from vibe_server.pipeline.detect.yolo import YoloDetector

    weights = write_random_darknet_weights(tmp_path / "yolov3.weights")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    eager = YoloDetector(weights, input_size_px=64, batch_size=2)
    compiled = YoloDetector(weights, input_size_px=64, batch_size=2, compiled=True)
    shapes, compiles = [], []

    def recording_compiler(module):
        compiles.append(module)
        real = _torch_compile(module)
        return lambda images: (shapes.append(tuple(images.shape)), real(images))[1]

    compiled.runner._compiler = recording_compiler
    for group in (frames[:1], frames[:2], frames):
        np.testing.assert_allclose(
            compiled.network_rows(group).numpy(), eager.network_rows(group).numpy(), atol=1e-3, rtol=0
        )
    for mine, theirs in zip(compiled.detect(frames), eager.detect(frames), strict=True):
        assert mine.shape == theirs.shape  # (random weights: boxes only where a score passes)
    assert len(compiles) == 1 and compiled.runner.compiled and set(shapes) == {(2, 3, 64, 64)}


def test_threads_sharing_a_runner_compile_its_module_once():
    """The staged front end detects in two threads (batches ahead, single frames on the spot)."""
    import threading
    import time

    compiles = []

    def slow_compiler(module):
        compiles.append(module)
        time.sleep(0.2)  # wide open for a second thread to start compiling too
        return module

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.Flatten())
    runner = CompiledRunner(module, compiler=slow_compiler)
    outputs = []
    threads = [
        threading.Thread(target=lambda: outputs.append(runner(torch.randn(1, 3, 16, 16), compiled=True, batch_size=2)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(compiles) == 1 and len(outputs) == 4 and all(o.shape == (1, 16) for o in outputs)


def test_runs_compile_the_detector_only_when_asked(tiny_engine, scripted):
    tiny_engine.run("clip.mp4", RunOptions(detector="yolo"))
    tiny_engine.run("clip.mp4", RunOptions(detector="yolo", compile_detector=True))
    eager_calls = scripted.detectors[0].calls
    tiny_engine.run("clip.mp4", RunOptions(detector="yolo", compile_detector=True, official=True))
    assert scripted.detectors[0].calls > eager_calls  # the official run used the eager detector
    tiny_engine.run("clip.mp4", RunOptions(detector="hog", compile_detector=True))  # OpenCV's: nothing to compile
    made = [(d.name, d.options.get("compiled", False)) for d in scripted.detectors]
    assert made == [("yolo", False), ("yolo", True), ("hog", False)]
