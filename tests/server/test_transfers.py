"""Host data to a device without waiting for it (pipeline/batched/transfers.py)."""

import numpy as np
import pytest
import torch

from vibe_server.pipeline.batched.transfers import device_constant, to_device


def test_a_device_constant_is_made_once_per_device_with_its_values():
    first = device_constant(((10.0, 13.0), (16.0, 30.0)), "cpu")
    assert first.dtype == torch.float32 and first.tolist() == [[10.0, 13.0], [16.0, 30.0]]
    assert device_constant(((10.0, 13.0), (16.0, 30.0)), torch.device("cpu")) is first  # shared
    assert device_constant((0.5, 0.25), "cpu") is not first


def test_a_device_constant_first_made_in_inference_mode_serves_gradients_later():
    with torch.inference_mode():
        device_constant((3.0, 4.0), "cpu")
    weight = torch.ones(2, requires_grad=True)
    (weight * device_constant((3.0, 4.0), "cpu")).sum().backward()  # an inference tensor would raise here
    assert weight.grad.tolist() == [3.0, 4.0]


def test_to_device_keeps_the_values_and_dtype():
    array = np.arange(12, dtype=np.int64).reshape(3, 4)
    moved = to_device(array, "cpu")
    assert moved.dtype == torch.int64 and np.array_equal(moved.numpy(), array)
    assert to_device(torch.ones(2), "cpu").tolist() == [1.0, 1.0]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_frames_are_stacked_once_and_for_a_gpu_straight_into_pinned_memory(device, monkeypatch):
    """The frames are stacked into the buffer that goes to the device (one host copy), which for a
    GPU is allocated pinned, so the copy over needs no pinned copy of its own. The GPU's copy itself
    is recorded here (CI has no GPU; to_device's own branches are tested above)."""
    from vibe_server.pipeline.batched import transfers

    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(3)]
    pinned, stacked_into, handed = [], [], []
    empty, stack = torch.empty, np.stack

    def recording_empty(*args, pin_memory=False, **kwargs):
        pinned.append(pin_memory)
        return empty(*args, **kwargs)  # (not pinned: that needs CUDA)

    def recording_stack(arrays, *args, out=None, **kwargs):
        stacked_into.append(out)
        return stack(arrays, *args, out=out, **kwargs)

    monkeypatch.setattr(torch, "empty", recording_empty)
    monkeypatch.setattr(np, "stack", recording_stack)
    monkeypatch.setattr(transfers, "to_device", lambda tensor, where: handed.append((tensor, where)) or tensor)
    moved = transfers.stacked_to_device(frames, device)
    assert pinned == [device == "cuda"]
    assert len(stacked_into) == 1 and stacked_into[0] is not None  # one stack, into the buffer
    ((buffer, where),) = handed
    assert buffer is moved and torch.device(where).type == device
    assert np.shares_memory(stacked_into[0], buffer.numpy())
    assert moved.dtype == torch.uint8 and np.array_equal(moved.numpy(), stack(frames))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CI has none; the CPU branches are above)")
def test_on_a_gpu_neither_makes_the_host_wait():
    device_constant((1.0, 2.0), "cuda")  # made (and waited for) once
    torch.cuda.set_sync_debug_mode("error")  # a synchronising call raises
    try:
        moved = to_device(np.arange(1000, dtype=np.float32), "cuda")
        again = device_constant((1.0, 2.0), "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert moved.device.type == "cuda" and again.device.type == "cuda"
    assert moved.cpu()[-1] == 999.0
