"""Official checkpoint containers: load unchanged, write back, and refuse wrong files clearly."""

import shutil

import numpy as np
import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server import checkpoints, load_model
from vibe_server.model.backbone import ResNet50Features


def test_originals_are_legacy_cuda_tagged_with_numpy_performance(synthetic_bundle):
    vibe = synthetic_bundle / "vibe_model_wo_3dpw.pth.tar"
    blob = vibe.read_bytes()
    assert not blob.startswith(b"PK")  # legacy, not zip
    assert b"cuda:0" in blob and b"numpy.core.multiarray" in blob
    with pytest.raises(RuntimeError, match="CUDA"):  # why map_location is needed
        torch.load(vibe, weights_only=False)
    ckpt = checkpoints.load_vibe_checkpoint(vibe)
    assert isinstance(ckpt["performance"], np.float64)
    assert ckpt["gen_state_dict"]["encoder.gru.weight_ih_l0"].device.type == "cpu"
    checkpoints.check_generator_keys(ckpt["gen_state_dict"], vibe)
    assert len(ckpt["gen_state_dict"]) == 35
    assert len(checkpoints.load_spin_checkpoint(synthetic_bundle / "spin_model_checkpoint.pth.tar")) == 331


def test_every_weight_comes_from_the_checkpoints(synthetic_bundle, vibe_model):
    gen = checkpoints.load_vibe_checkpoint(synthetic_bundle / "vibe_model_wo_3dpw.pth.tar")["gen_state_dict"]
    spin = checkpoints.load_spin_checkpoint(synthetic_bundle / "spin_model_checkpoint.pth.tar")
    state = vibe_model.state_dict()
    for k, v in gen.items():
        if k not in checkpoints.SMPL_BATCH_PARAMS:
            assert torch.equal(state[k], v), k
    for k, v in spin.items():
        if k not in checkpoints.SPIN_HEAD_KEYS:
            assert torch.equal(state[f"backbone.{k}"], v), k


def test_smpl_copy_inside_the_vibe_checkpoint_wins_over_the_pkl(synthetic_bundle, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_bundle, data)
    ckpt = torch.load(data / "vibe_model_wo_3dpw.pth.tar", map_location="cpu", weights_only=False)
    ckpt["gen_state_dict"]["regressor.smpl.v_template"] += 0.25
    torch.save(ckpt, data / "vibe_model_wo_3dpw.pth.tar")
    model = load_model(data)
    reference = load_model(synthetic_bundle)
    assert torch.allclose(model.regressor.smpl.v_template, reference.regressor.smpl.v_template + 0.25)


def test_save_round_trip_official_container(tmp_path, vibe_model):
    for legacy in (True, False):
        path = tmp_path / f"gen_{legacy}.pth.tar"
        checkpoints.save_vibe_checkpoint(path, vibe_model, epoch=7, performance=51.5, legacy_format=legacy)
        ckpt = checkpoints.load_vibe_checkpoint(path)
        assert set(checkpoints.VIBE_TOP_LEVEL) <= set(ckpt) and ckpt["epoch"] == 7
        assert float(ckpt["performance"]) == 51.5
        checkpoints.check_generator_keys(ckpt["gen_state_dict"], path)


@pytest.mark.parametrize(
    "prefix",
    ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."],
    ids=["ddp", "compile", "ddp-of-compiled", "compiled-ddp"],
)
def test_prefixes_of_ddp_and_compile_are_stripped(tmp_path, synthetic_bundle, prefix):
    ckpt = checkpoints.load_vibe_checkpoint(synthetic_bundle / "vibe_model_wo_3dpw.pth.tar")
    plain = ckpt["gen_state_dict"]
    ckpt["gen_state_dict"] = {f"{prefix}{k}": v for k, v in plain.items()}
    torch.save(ckpt, tmp_path / "wrapped.pth.tar")
    stripped = checkpoints.load_vibe_checkpoint(tmp_path / "wrapped.pth.tar")["gen_state_dict"]
    assert stripped.keys() == plain.keys()
    assert all(torch.equal(stripped[k], plain[k]) for k in plain)
    checkpoints.check_generator_keys(stripped, "x")


# --- wrong files: one clear message naming the file ------------------------------------------


def test_spin_file_given_as_vibe(synthetic_bundle):
    with pytest.raises(VibeError, match="looks like the SPIN checkpoint"):
        load_model(synthetic_bundle, vibe_checkpoint=synthetic_bundle / "spin_model_checkpoint.pth.tar")


def test_vibe_file_given_as_spin(synthetic_bundle):
    with pytest.raises(VibeError, match="looks like a VIBE checkpoint"):
        load_model(synthetic_bundle, spin_checkpoint=synthetic_bundle / "vibe_model_wo_3dpw.pth.tar")


def test_truncated_checkpoint(synthetic_bundle, tmp_path):
    path = tmp_path / "vibe_model_wo_3dpw.pth.tar"
    path.write_bytes((synthetic_bundle / "vibe_model_wo_3dpw.pth.tar").read_bytes()[:5_000_000])
    with pytest.raises(VibeError, match=r"vibe_model_wo_3dpw.pth.tar' is damaged|is not a PyTorch checkpoint"):
        load_model(synthetic_bundle, vibe_checkpoint=path)


def test_random_pth_is_not_a_vibe_checkpoint(synthetic_bundle, tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"gen_state_dict": ResNet50Features().state_dict()}, path)
    with pytest.raises(VibeError, match=r"resnet.pth' does not fit the VIBE generator .*: 32 missing"):
        load_model(synthetic_bundle, vibe_checkpoint=path)
    torch.save(ResNet50Features().state_dict(), path)
    with pytest.raises(VibeError, match="no 'gen_state_dict'"):
        load_model(synthetic_bundle, vibe_checkpoint=path)


def test_wrong_shapes_are_named(synthetic_bundle, tmp_path):
    ckpt = checkpoints.load_vibe_checkpoint(synthetic_bundle / "vibe_model_wo_3dpw.pth.tar")
    ckpt["gen_state_dict"]["encoder.linear.weight"] = torch.zeros(2048, 512)
    torch.save(ckpt, tmp_path / "v.pth.tar")
    with pytest.raises(VibeError, match=r"wrong shape.*encoder.linear.weight \(2048, 512\)"):
        load_model(synthetic_bundle, vibe_checkpoint=tmp_path / "v.pth.tar")


def test_text_file_and_missing_file(synthetic_bundle, tmp_path):
    text = tmp_path / "notes.pth.tar"
    text.write_text("these are not weights")
    with pytest.raises(VibeError, match="notes.pth.tar"):
        load_model(synthetic_bundle, vibe_checkpoint=text)
    with pytest.raises(VibeError, match="Model data missing: .*nowhere.pth.tar"):
        load_model(synthetic_bundle, vibe_checkpoint=tmp_path / "nowhere.pth.tar")


def test_checkpoint_holding_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth.tar"
    torch.save({"gen_state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(VibeError, match="other than weights"):
        checkpoints.load_vibe_checkpoint(path)
