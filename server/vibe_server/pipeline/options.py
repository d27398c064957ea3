"""The job options, defined once: :class:`RunOptions`.

Each field carries its type (``Literal`` for a choice), its default and, through :func:`option`,
its help text, its bounds and where it is offered. Everything else is derived from it:

- the HTTP API's ``params`` (``api/schemas.py: JobParams``: types, bounds, descriptions), and from
  that the stand-in server the add-on's tests use;
- the ``vibe-mocap infer`` flags with their help and defaults (:func:`add_cli_flags`,
  :func:`options_from_cli`);
- the validation and its messages (:meth:`RunOptions.validate`), for the Python API;
- the ``params`` table of docs/server.md (:func:`markdown_table`; a test keeps the two the same).

Adding an option is one field here (then use it in ``engine.py``); ``http=False`` keeps it off the
HTTP API, ``cli=False`` off the command line. Live capture's ``LiveOptions`` (``pipeline/live_options.py``)
is defined the same way, and its HTTP schema, flags and checks come from the same functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import FOCAL_RANGE_PX, MAX_TRACKS

from ..value_range import ValueRange, is_finite


def option(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    label: str | None = None,
    metavar: str | None = None,
    http: bool = True,
    cli: bool = True,
) -> Any:
    """A RunOptions field. help: one line for the CLI and the HTTP schema; ge/gt/le: bounds (>=, >, <=);
    label: a choice option in words for messages (default: the name with spaces); http / cli: offered there."""
    return field(
        default=default,
        metadata={
            "help": help,
            "bounds": ValueRange(ge=ge, gt=gt, le=le),
            "label": label,
            "metavar": metavar,
            "http": http,
            "cli": cli,
        },
    )


# Chosen with benchmarks/fidelity.py (README, "The defaults"): with adaptive detection, stride 8 is
# the fastest setting whose recall against detecting on every frame is no lower than stride 2's
# (HOG's boxes on the one clip with people; its median crop IoU is lower than stride 2's).
DEFAULT_DETECTION_STRIDE = 8

# Upper bounds of the counts: past them a value is a mistake that would cost memory or give a result
# nobody can read, so it gets the range message at once instead.
MAX_DETECTION_STRIDE = 1000
# About an hour at 30 frames/s. A young track holds its backbone features (8 kB a frame) until it
# reaches the minimum, so a minimum longer than any track costs memory, then finds nobody.
MAX_MIN_TRACK_FRAMES = 100_000
# Crops wait in memory (150 kB each) until a batch is full; 4096 is far past where a GPU stays busy.
MAX_BACKBONE_BATCH = 4096
# engine.TEMPORAL_BATCH_FRAMES: one chunk stays within the frames of one temporal call on a GPU.
MAX_TEMPORAL_CHUNK_FRAMES = 4096


def detector_option() -> Any:
    """The ``detector`` field, shared with the live options."""
    return option("auto", "person detector (auto: YOLOv3 when its weights are installed, else OpenCV HOG)")


def detection_stride_option() -> Any:
    """The ``detection_stride`` field, shared with the live options."""
    return option(
        DEFAULT_DETECTION_STRIDE,
        "detect people every Nth frame; the tracker carries the boxes in between",
        ge=1,
        le=MAX_DETECTION_STRIDE,
        metavar="N",
    )


def focal_px_option(*, cli: bool = True) -> Any:
    """The ``focal_px`` field (not over HTTP), shared with the live options."""
    return option(
        None,
        "focal length in pixels for the root translation (default: the longer image side)",
        ge=FOCAL_RANGE_PX[0],  # what a result file may hold: the add-on refuses any other focal length
        le=FOCAL_RANGE_PX[1],
        metavar="PX",
        http=False,
        cli=cli,
    )


@dataclass
class RunOptions:
    """Per-job settings: the HTTP API's ``params``, the ``vibe-mocap infer`` flags, the Python API's options."""

    detector: Literal["auto", "yolo", "hog"] = detector_option()
    detection_stride: int = detection_stride_option()
    adaptive_detection: bool = option(
        True,
        "also detect at once where the tracker may be wrong (a box leaving the frame, tracks meeting, "
        "someone entering at an edge)",
    )
    min_track_frames: int = option(
        25, "drop tracks shorter than this (official MIN_NUM_FRAMES)", ge=1, le=MAX_MIN_TRACK_FRAMES, metavar="N"
    )
    smoothing: float = option(0.0, "pose smoothing: 0 (off) .. 1 (strongest)", ge=0.0, le=1.0, metavar="S")
    smoothing_method: Literal["rotation", "one_euro"] = option(
        "rotation", "rotation: quaternion Gaussian; one_euro: the official filter"
    )
    official_uncrop: bool = option(
        False, "official 1.0x-box cameras (bodies ~9% too small) instead of the corrected 1.1x"
    )
    chunking: Literal["carry", "official"] = option(
        "carry", "carry: the GRU state over the whole track; official: restart it every 450 frames"
    )
    tracks_max: int | None = option(
        None, f"keep only the N longest tracks (default: all, up to {MAX_TRACKS:,})", ge=1, le=MAX_TRACKS, metavar="N"
    )
    focal_px: float | None = focal_px_option()
    batch_size: int | None = option(
        None,
        "person crops per backbone call (default: 32 on a CPU, 128 on a GPU)",
        ge=1,
        le=MAX_BACKBONE_BATCH,
        metavar="N",
        http=False,
    )
    temporal_chunk_frames: int = option(
        256,
        "frames per GRU call with chunking 'carry' (the result does not depend on it)",
        ge=1,
        le=MAX_TEMPORAL_CHUNK_FRAMES,
        http=False,
        cli=False,
    )
    precision: Literal["fp32", "bf16", "fp16"] | None = option(
        None,
        "backbone and YOLO precision (default: the engine's; fp16 on CUDA, bf16 on CPUs with AVX512-BF16 "
        "or AMX, else fp32)",
        http=False,
    )
    compile_backbone: Literal["auto", "on", "off"] | None = option(
        None,
        "torch.compile the backbone (default: the engine's, auto: where it pays)",
        label="backbone compile mode",
        http=False,
    )
    compile_detector: bool = option(
        False,
        "torch.compile YOLOv3's network too (every call padded to one batch shape): on a CPU it makes the "
        "pipeline slower (see docs/server.md); on a GPU unmeasured",
        http=False,
    )
    official: bool = option(
        False,
        "the official demo's exact configuration: detection on every frame, fp32, a fresh GRU state every "
        "450 frames, the official un-crop (overrides those options)",
    )

    def validate(self) -> None:
        """One VibeError naming the first option out of its choices or bounds."""
        validate_options(self)

    def effective(self) -> RunOptions:
        """These options as a run uses them: with ``official``, those of :func:`official_options`."""
        return official_options(self) if self.official else self


def official_options(options: RunOptions | None = None) -> RunOptions:
    """``options`` (default: the defaults) with everything the official demo does differently put
    back: detection on every frame, fp32 eager, a fresh GRU state every 450 frames, the official 1.0x
    un-crop. Smoothing, track filters and the focal length are left as given."""
    return dataclasses.replace(
        options or RunOptions(),
        detection_stride=1,
        adaptive_detection=False,
        chunking="official",
        official_uncrop=True,
        precision="fp32",
        compile_backbone="off",
        compile_detector=False,
        official=True,
    )


@dataclass(frozen=True)
class OptionSpec:
    """One option as the derived interfaces need it."""

    name: str
    kind: Any  # the resolved annotation, e.g. Literal["carry", "official"] | int | None
    default: Any
    help: str
    bounds: ValueRange  # of a number
    label: str
    metavar: str | None
    http: bool
    cli: bool

    @property
    def optional(self) -> bool:
        """None is allowed (it means 'not set')."""
        return type(None) in typing.get_args(self.kind)

    @property
    def base(self) -> Any:
        """The type without ``| None``."""
        args = [a for a in typing.get_args(self.kind) if a is not type(None)]
        if typing.get_origin(self.kind) in (types.UnionType, typing.Union):
            return args[0]
        return self.kind

    @property
    def choices(self) -> tuple | None:
        return typing.get_args(self.base) if typing.get_origin(self.base) is Literal else None

    @property
    def scalar(self) -> type:
        """str, int, float or bool."""
        return type(self.choices[0]) if self.choices else self.base

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def problem(self, value: Any, *, on_command_line: bool = False) -> str | None:
        """None when ``value`` is allowed, else the sentence saying what is wrong and what to use;
        ``on_command_line``: naming the option by its flag (where leaving it out is its default)."""
        name = self.flag if on_command_line else f"'{self.name}'"
        if value is None:
            return None if self.optional else f"{name} needs a value (default {self.default!r})."
        if self.choices is not None:
            if value not in self.choices:
                return f"Unknown {self.label} '{value}'; use {' or '.join(repr(c) for c in self.choices)}."
            return None
        numeric = self.scalar in (int, float) and not isinstance(value, bool)
        if self.scalar is bool and not isinstance(value, bool) or numeric and not isinstance(value, (int, float)):
            return f"{name} takes a {self.scalar.__name__}; got {value!r}."
        if numeric and value not in self.bounds:
            finite = "" if is_finite(value) else "a finite number"
            allowed = " ".join(text for text in (finite, self.bounds.words()) if text)
            empty = " or empty" if self.optional and not on_command_line else ""
            return f"{name} must be {allowed}{empty}; got {value}."
        return None


def option_specs(
    options_class: type | None = None, *, http: bool | None = None, cli: bool | None = None
) -> list[OptionSpec]:
    """The options of ``options_class`` (a dataclass of :func:`option` fields; default RunOptions)
    in definition order; http / cli: only those offered (True) or not (False) there."""
    options_class = options_class or RunOptions
    hints = typing.get_type_hints(options_class)
    specs = []
    for f in dataclasses.fields(options_class):
        m = f.metadata
        spec = OptionSpec(
            name=f.name,
            kind=hints[f.name],
            default=f.default,
            help=m["help"],
            bounds=m["bounds"],
            label=m["label"] or f.name.replace("_", " "),
            metavar=m["metavar"],
            http=m["http"],
            cli=m["cli"],
        )
        if (http is None or spec.http == http) and (cli is None or spec.cli == cli):
            specs.append(spec)
    return specs


def validate_options(options: Any) -> None:
    """One VibeError naming the first field of ``options`` out of its choices or bounds."""
    for spec in option_specs(type(options)):
        problem = spec.problem(getattr(options, spec.name))
        if problem:
            raise VibeError(problem)


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def add_cli_flags(parser: argparse.ArgumentParser, options_class: type | None = None) -> None:
    """One ``--flag-name`` per CLI option, with its choices, type, default and help."""
    for spec in option_specs(options_class, cli=True):
        flag = spec.flag
        text = spec.help.replace("%", "%%")  # argparse formats help with %
        if spec.scalar is bool:
            action = argparse.BooleanOptionalAction if spec.default else "store_true"
            text += f" (default on; {flag.replace('--', '--no-', 1)} turns it off)" if spec.default else ""
            parser.add_argument(flag, action=action, default=spec.default, help=text)
            continue
        if spec.default is not None:
            text += f" (default {spec.default})"
        parser.add_argument(
            flag, type=spec.scalar, choices=spec.choices, default=spec.default, metavar=spec.metavar, help=text
        )


def options_from_cli(args: argparse.Namespace, options_class: type | None = None) -> Any:
    """The parsed flags of :func:`add_cli_flags` -> the options (CLI-less options at their defaults)."""
    options_class = options_class or RunOptions
    specs = option_specs(options_class, cli=True)
    for spec in specs:  # said by the flag the user typed
        problem = spec.problem(getattr(args, spec.name), on_command_line=True)
        if problem:
            raise VibeError(problem)
    return options_class(**{spec.name: getattr(args, spec.name) for spec in specs})


# --------------------------------------------------------------------------------------------
# The documentation
# --------------------------------------------------------------------------------------------


def _type_text(spec: OptionSpec) -> str:
    if spec.choices is not None:
        text = " \\| ".join(f'`"{c}"`' for c in spec.choices)
    else:
        text = f"{spec.scalar.__name__} {spec.bounds.symbols()}".rstrip()
    return text + (" \\| null" if spec.optional else "")


def _default_text(default: Any) -> str:
    if default is None:
        return "null"
    if isinstance(default, bool):
        return str(default).lower()
    return f"{default:g}" if isinstance(default, float) else str(default)


def markdown_table(*, http: bool = True) -> str:
    """The options offered over HTTP as the Markdown table of docs/server.md."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += [
        f"| `{s.name}` | {_type_text(s)} | {_default_text(s.default)} | {s.help} |" for s in option_specs(http=http)
    ]
    return "\n".join(rows)


if __name__ == "__main__":  # python -m vibe_server.pipeline.options: the table for docs/server.md
    print(markdown_table())
