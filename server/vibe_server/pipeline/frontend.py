"""The front end the pipeline calls: video reading, person detection, tracking and cropping, passed
in as functions so that tests can swap them (``FrontEnd.default()``: the real ones)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class FrontEnd:
    """The video/detection/tracking/crop functions the pipeline calls (``default()``: the real ones).

    open_video(path, stopped=None) -> reader (``.info`` with name/fps/width/height/frame_count; iterates
        (frame_index, frame_rgb)); ``stopped()``, when given, is asked during a long open (a decode
        to count the frames), which gives up once it is true; make_detector(name, data_dir=, device=) -> detector;
    stream_people(reader, detector, detection_stride=) -> iterator of
        (frame_index, frame_rgb, [(track_id, bbox_cxcywh), ...]);
    crop_people(frame_rgb, bboxes (K, 4) cxcywh) -> (K, 3, 224, 224) ImageNet-normalised float32.

    For a GPU (``Engine(gpu_front_end=True)``, the default on CUDA):
    stream_people_staged: ``stream_people`` with decoding, detection and tracking overlapping;
    crop_people_on_device(frames_rgb, bboxes per frame, device) -> the crops of a few frames made
        together on the device (grid_sample), in order.
    """

    open_video: Callable
    make_detector: Callable
    stream_people: Callable
    crop_people: Callable
    stream_people_staged: Callable | None = None
    crop_people_on_device: Callable | None = None

    @classmethod
    def default(cls) -> FrontEnd:
        from . import crop, detect, people, staged, video  # start-up: OpenCV and the detectors load only when used
        from .batched.crop import crop_people_on_device

        return cls(
            open_video=video.open_video,
            make_detector=detect.make_detector,
            stream_people=people.stream_people,
            crop_people=crop.crop_people,
            stream_people_staged=staged.stream_people_staged,
            crop_people_on_device=crop_people_on_device,
        )
