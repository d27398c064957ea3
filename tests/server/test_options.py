"""The job options are defined once (pipeline/options.py: RunOptions); the HTTP schema, the CLI flags,
the validation and the docs table follow from it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pydantic
import pytest

from vibe_blender.core.errors import VibeError
from vibe_server.api.jobs import params_to_options
from vibe_server.api.schemas import JobParams
from vibe_server.cli import build_parser
from vibe_server.pipeline import options as options_module
from vibe_server.pipeline.options import RunOptions, add_cli_flags, markdown_table, option_specs, options_from_cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "server.md"


def test_every_option_has_help_and_a_valid_default():
    for spec in option_specs():
        assert spec.help and spec.problem(spec.default) is None, spec.name
    RunOptions().validate()


def test_http_params_are_the_http_options_with_their_defaults_and_bounds():
    http = {s.name: s for s in option_specs(http=True)}
    assert list(JobParams.model_fields) == list(http)
    assert JobParams().model_dump() == {name: s.default for name, s in http.items()}
    assert params_to_options(JobParams()) == RunOptions()
    schema = JobParams.model_json_schema()["properties"]
    assert schema["detection_stride"]["maximum"] == 1000 and schema["detection_stride"]["minimum"] == 1
    assert schema["chunking"]["enum"] == ["carry", "official"]
    assert schema["smoothing"]["description"] == http["smoothing"].help
    with pytest.raises(pydantic.ValidationError):
        JobParams(detection_stride=1001)
    with pytest.raises(pydantic.ValidationError):
        JobParams(batch_size=8)  # CLI-only: not offered over HTTP
    # null stands for the default (what older clients and stored job records send)
    assert JobParams(detector=None, tracks_max=None).detector == "auto"


def test_cli_flags_are_the_cli_options_with_help_and_defaults():
    parser = argparse.ArgumentParser()
    add_cli_flags(parser)
    assert options_from_cli(parser.parse_args([])) == RunOptions()
    args = parser.parse_args(
        [
            "--detector",
            "hog",
            "--detection-stride",
            "3",
            "--tracks-max",
            "2",
            "--official-uncrop",
            "--focal-px",
            "900",
            "--smoothing-method",
            "one_euro",
        ]
    )
    assert options_from_cli(args) == RunOptions(
        detector="hog",
        detection_stride=3,
        tracks_max=2,
        official_uncrop=True,
        focal_px=900.0,
        smoothing_method="one_euro",
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--chunking", "overlap"])  # choices come from the Literal
    help_text = parser.format_help()
    for spec in option_specs(cli=True):
        assert "--" + spec.name.replace("_", "-") in help_text
    assert "--temporal-chunk-frames" not in help_text
    assert "(default 25)" in help_text
    text = " ".join(help_text.split()).replace("--no-adaptive- detection", "--no-adaptive-detection")  # (wrapped)
    assert "(default on; --no-adaptive-detection turns it off)" in text
    assert "--detection-stride" in build_parser()._subparsers._group_actions[0].choices["infer"].format_help()


def test_a_new_option_is_one_field(monkeypatch):
    """Adding a field to RunOptions offers it on the command line, over HTTP and in validation."""

    @dataclasses.dataclass
    class Extended(RunOptions):
        pose_scale: float = options_module.option(1.0, "a made-up option", gt=0.0)

    monkeypatch.setattr(options_module, "RunOptions", Extended)
    parser = argparse.ArgumentParser()
    add_cli_flags(parser)
    assert options_from_cli(parser.parse_args(["--pose-scale", "2"])).pose_scale == 2.0
    assert "pose_scale" in [s.name for s in option_specs(http=True)]
    with pytest.raises(VibeError, match="^'pose_scale' must be more than 0; got -1.0.$"):
        Extended(pose_scale=-1.0).validate()


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"detector": "ssd"}, "Unknown detector 'ssd'; use 'auto' or 'yolo' or 'hog'."),
        ({"detection_stride": 0}, "'detection_stride' must be between 1 and 1000; got 0."),
        ({"detection_stride": 5000}, "'detection_stride' must be between 1 and 1000; got 5000."),
        ({"tracks_max": 0}, "'tracks_max' must be between 1 and 10000 or empty; got 0."),
        ({"tracks_max": 10001}, "'tracks_max' must be between 1 and 10000 or empty; got 10001."),
        ({"min_track_frames": 100001}, "'min_track_frames' must be between 1 and 100000; got 100001."),
        ({"batch_size": 4097}, "'batch_size' must be between 1 and 4096 or empty; got 4097."),
        ({"temporal_chunk_frames": 4097}, "'temporal_chunk_frames' must be between 1 and 4096; got 4097."),
        ({"focal_px": 0.5}, "'focal_px' must be between 1 and 1000000 or empty; got 0.5."),
        ({"focal_px": 2e6}, "'focal_px' must be between 1 and 1000000 or empty; got 2000000.0."),
        ({"official_uncrop": "yes"}, "'official_uncrop' takes a bool; got 'yes'."),
        ({"min_track_frames": None}, "'min_track_frames' needs a value (default 25)."),
    ],
)
def test_validation_messages(bad, message):
    with pytest.raises(VibeError) as err:
        RunOptions(**bad).validate()
    assert str(err.value) == message


def test_every_number_has_an_upper_bound_too():
    """A count with no upper bound took any mistake (min_track_frames had none): a job ran through
    the whole video holding every young track's features, to find nobody at the end."""
    from vibe_server.api.schemas import LiveParams
    from vibe_server.pipeline.live_options import LiveOptions

    for options_class in (RunOptions, LiveOptions):
        for spec in option_specs(options_class):
            if spec.scalar in (int, float):
                assert spec.bounds.le is not None or spec.bounds.lt is not None, spec.name
                assert spec.bounds.ge is not None or spec.bounds.gt is not None, spec.name
    for model in (JobParams, LiveParams):
        for name, schema in model.model_json_schema()["properties"].items():
            kinds = {schema.get("type"), *(branch.get("type") for branch in schema.get("anyOf", ()))}
            if kinds & {"integer", "number"}:
                assert "maximum" in schema or any("maximum" in b for b in schema.get("anyOf", ())), name


def test_every_focal_length_accepted_is_one_a_result_file_may_hold():
    """focal_px took anything above 0: a run with 0.5 wrote a result the add-on refuses as damaged."""
    from vibe_blender.core.result_file import FOCAL_RANGE_PX

    low, high = FOCAL_RANGE_PX
    RunOptions(focal_px=low).validate()
    RunOptions(focal_px=high).validate()
    for outside in (low / 2, high * 2):
        with pytest.raises(VibeError, match="^'focal_px' must be between"):
            RunOptions(focal_px=outside).validate()


def test_a_temporal_chunk_fits_one_temporal_call():
    from vibe_server.pipeline import engine

    assert options_module.MAX_TEMPORAL_CHUNK_FRAMES == engine.TEMPORAL_BATCH_FRAMES


def test_the_docs_table_is_the_definition():
    assert markdown_table() in DOCS.read_text(), "run: python -m vibe_server.pipeline.options"


def test_the_live_options_are_defined_once_too():
    """The live API's params and the `vibe-mocap live` flags come from LiveOptions, with its bounds."""
    import pydantic

    from vibe_server.api.schemas import LiveParams
    from vibe_server.pipeline.live_options import LiveOptions

    http = [s.name for s in option_specs(LiveOptions, http=True)]
    assert list(LiveParams.model_fields) == [*http, "lossless", "max_frames"]
    assert "focal_px" not in http
    for bad in ({"max_people": 33}, {"smoothing": 1.5}, {"detection_stride": 0}, {"detector": "ssd"}):
        with pytest.raises(pydantic.ValidationError):
            LiveParams(**bad)
        with pytest.raises(VibeError):
            LiveOptions(**bad).validate()
    parser = argparse.ArgumentParser()
    add_cli_flags(parser, LiveOptions)
    parsed = options_from_cli(parser.parse_args(["--max-people", "2", "--no-adaptive-detection"]), LiveOptions)
    assert parsed == LiveOptions(max_people=2, adaptive_detection=False)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_every_float_option_must_be_finite(value):
    """NaN passes every bound and inf a one-sided one: a run would write inf into the result file."""
    from vibe_server.pipeline.live_options import LiveOptions

    for options_class in (RunOptions, LiveOptions):
        floats = [s for s in option_specs(options_class) if s.scalar is float]
        assert {"smoothing", "focal_px"} <= {s.name for s in floats}
        for spec in floats:
            with pytest.raises(VibeError, match=f"^'{spec.name}' must be a finite number"):
                options_class(**{spec.name: value}).validate()


def test_non_finite_messages():
    with pytest.raises(VibeError) as err:
        RunOptions(smoothing=float("nan")).validate()
    assert str(err.value) == "'smoothing' must be a finite number between 0 and 1; got nan."
    with pytest.raises(VibeError) as err:
        RunOptions(focal_px=float("inf")).validate()
    assert str(err.value) == "'focal_px' must be a finite number between 1 and 1000000 or empty; got inf."


def test_http_params_refuse_non_finite_numbers():
    """Python's json reads NaN and Infinity; the HTTP models refuse them for every float option."""
    from vibe_server.api.routes.jobs import parse_params
    from vibe_server.api.schemas import LiveParams
    from vibe_server.pipeline.live_options import LiveOptions

    for model, options_class in ((JobParams, RunOptions), (LiveParams, LiveOptions)):
        for spec in option_specs(options_class, http=True):
            if spec.scalar is float:
                for value in (float("nan"), float("inf"), float("-inf")):
                    with pytest.raises(pydantic.ValidationError):
                        model(**{spec.name: value})
    for text in ('{"smoothing": NaN}', '{"smoothing": Infinity}'):
        with pytest.raises(Exception, match="smoothing") as err:
            parse_params(text)
        assert err.value.status_code == 422


def test_a_huge_whole_number_gets_the_range_message():
    with pytest.raises(VibeError, match="^'detection_stride' must be between 1 and 1000; got 1000000"):
        RunOptions(detection_stride=10**400).validate()
