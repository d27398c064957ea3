"""Batch capture: many videos, one manifest, resumable.

    inputs.py          files, folders and path lists -> ``BatchItem`` (input key, input path, output path)
    manifest.py        atomic file writes, ``manifest.jsonl`` (one record per video) and the summary table
    engine_adapter.py  the one place that calls the pipeline: load an engine, run one video
    progress.py        the overall progress bar and one status line per worker
    local_pool.py      local worker processes (one model each), bounded in-flight, crash retries
    ray_runner.py      the same on a Ray cluster (optional extra ``.[ray]``)
    runner.py          plan (skip finished videos), run on either pool, write the manifest

How many workers, on which devices (one per GPU, else as many CPU workers as cores and memory allow),
is ``pipeline/devices.py``'s, shared with the server. The CLI is ``vibe-mocap batch``
(``commands/batch.py``); docs/batch.md describes the layout.
"""
