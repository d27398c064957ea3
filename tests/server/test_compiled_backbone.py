"""The compiled backbone: torch.compile'd once and reused, within 1e-3 of eager, padded to one batch
shape, used only where it pays, and never breaking a run (eager with a logged reason instead)."""

import logging

import numpy as np
import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.model.backbone import Bottleneck
from vibe_server.pipeline.compiled_backbone import COMPILE_MIN_CROPS, BackboneRunner, compile_pays
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
    runner = BackboneRunner(module)
    with torch.inference_mode():
        eager = runner(images, compiled=False)
        compiled = runner(images, compiled=True, batch_size=2)
    assert runner.fallback_reason is None and runner.compiled
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), atol=1e-3, rtol=0)


def test_short_batches_are_padded_and_long_ones_split_so_the_compiled_module_sees_one_shape():
    compiler = CountingCompiler()
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.Flatten())
    runner = BackboneRunner(module, compiler=compiler)
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
    runner = BackboneRunner(module, compiler=broken_compiler, on_fallback=notes.append)
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
            raise torch.OutOfMemoryError("inductor kernel failed")  # any error in the compiled call

        return compiled

    module = torch.nn.Linear(3, 2)
    runner = BackboneRunner(module, compiler=failing_at_run)
    x = torch.randn(2, 3)
    torch.testing.assert_close(runner(x, compiled=True, batch_size=2), module(x))
    assert "inductor kernel failed" in runner.fallback_reason


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
    for a, b in zip(eager.result.tracks, compiled.result.tracks):
        np.testing.assert_allclose(a.pose, b.pose, atol=1e-5)


def test_engine_falls_back_to_eager_when_compiling_fails(make_engine):
    notes = []
    engine = make_engine()
    engine.backbone_runner = BackboneRunner(
        engine.model.backbone,
        on_fallback=notes.append,
        compiler=lambda m: (_ for _ in ()).throw(RuntimeError("inductor: no cc")),
    )
    reference = make_engine().run("clip.mp4", RunOptions())
    out = engine.run("clip.mp4", RunOptions(compile_backbone="on"))
    assert notes and "no cc" in notes[0] and out.result.meta["backbone_compiled"] == "False"
    for a, b in zip(reference.result.tracks, out.result.tracks):
        np.testing.assert_allclose(a.pose, b.pose, atol=1e-6)


def test_engine_refuses_an_unknown_compile_mode():
    with pytest.raises(VibeError, match="compile mode"):
        Engine(torch.nn.Module(), model_name="t", data_dir=None, compile_backbone="yes")
