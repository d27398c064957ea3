"""Batch capture: many videos, one manifest, resumable.

    inputs.py          files, folders and path lists -> ``BatchItem`` (input key, input path, output path)
    names.py           the names of the batch's own files in OUTDIR (manifest, summary, lock)
    manifest.py        ``manifest.jsonl`` (one record per video), the summary table, killed writes' leftovers
    settings.py        the fingerprint of what a result depends on: a video done otherwise runs again
    engine_adapter.py  the engine's side: load an engine, run one video, write its result
    progress.py        the overall progress bar and one status line per worker
    local_pool.py      local worker processes (one model each), bounded in-flight, crash retries
    ray_runner.py      the same on a Ray cluster (optional extra ``.[ray]``)
    runner.py          plan (skip finished videos), run on either pool, write the manifest

How many workers, on which devices (one per GPU, else as many CPU workers as cores and memory allow),
is ``pipeline/devices.py``'s, shared with the server. The CLI is ``vibe-mocap batch``
(``commands/batch.py``); docs/batch.md describes the layout.
"""
