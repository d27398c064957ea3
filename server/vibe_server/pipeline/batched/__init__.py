"""Batched, device-side versions of the pipeline's per-frame steps (detection post-processing,
crops). They run on any torch device; on CUDA they keep the frames on the GPU. Each is tested
against the exact per-frame CPU step it replaces, which stays in use for ``--official``."""
