"""The VIBE network: the documented API, and each stage checked against an independent path."""

import copy

import numpy as np
import pytest
import smplx
import torch

from vibe_blender.core.errors import VibeError
from vibe_blender.core.smpl_model import load_smpl_pkl
from vibe_server import checkpoints, geometry, load_model
from vibe_server.model.smpl import H36M_TO_J14, JOINT_MAP, JOINT_NAMES


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(2, 3, 3, 224, 224)


@pytest.fixture(scope="module")
def outputs(vibe_model, images):
    with torch.no_grad():
        return vibe_model(images)


def test_api_shapes_and_eval_mode(vibe_model, outputs):
    assert not vibe_model.training
    expected = {
        "theta": (2, 3, 85),
        "verts": (2, 3, 6890, 3),
        "kp_2d": (2, 3, 49, 2),
        "kp_3d": (2, 3, 49, 3),
        "rotmat": (2, 3, 24, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(outputs[key].shape) == shape, key
        assert outputs[key].dtype == torch.float32
    assert len(JOINT_NAMES) == len(JOINT_MAP) == 49


def test_load_model_reads_the_environment_variable(synthetic_bundle, monkeypatch):
    monkeypatch.setenv("VIBE_DATA_DIR", str(synthetic_bundle))
    model = load_model()
    assert model.model_name == "vibe_model_wo_3dpw" and float(model.performance) == pytest.approx(56.5607548)


def test_forward_is_features_then_temporal_model(vibe_model, images, outputs):
    with torch.no_grad():
        features = vibe_model.extract_features(images)
        again = vibe_model.forward_features(features)
    assert features.shape == (2, 3, 2048) and float(features.min()) >= 0.0  # post-ReLU average
    for key in ("theta", "verts", "kp_3d"):
        torch.testing.assert_close(again[key], outputs[key], rtol=0, atol=0)


def test_sequences_in_a_batch_do_not_interact(vibe_model, images, outputs):
    with torch.no_grad():
        single = vibe_model(images[1:2])
    torch.testing.assert_close(single["theta"][0], outputs["theta"][1], rtol=1e-5, atol=1e-5)


def _gru_numpy(x, state, layers=2, hidden=1024):
    """Textbook GRU (gates r, z, n in PyTorch's row order), sequence-first, from the raw weights."""
    sig = lambda a: 1 / (1 + np.exp(-a))
    seq = x
    for layer in range(layers):
        W_ih, W_hh = state[f"encoder.gru.weight_ih_l{layer}"], state[f"encoder.gru.weight_hh_l{layer}"]
        b_ih, b_hh = state[f"encoder.gru.bias_ih_l{layer}"], state[f"encoder.gru.bias_hh_l{layer}"]
        h = np.zeros((seq.shape[1], hidden))
        out = []
        for x_t in seq:
            gi, gh = x_t @ W_ih.T + b_ih, h @ W_hh.T + b_hh
            r = sig(gi[:, :hidden] + gh[:, :hidden])
            z = sig(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
            n = np.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
            h = (1 - z) * n + z * h
            out.append(h)
        seq = np.stack(out)
    return seq


def test_temporal_encoder_matches_gru_equations(vibe_model, synthetic_bundle):
    gen = checkpoints.load_vibe_checkpoint(synthetic_bundle / "vibe_model_wo_3dpw.pth.tar")["gen_state_dict"]
    state = {k: v.double().numpy() for k, v in gen.items() if k.startswith("encoder.")}
    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(size=(2, 5, 2048)))  # (N, T, F)
    y = _gru_numpy(x.transpose(1, 0, 2), state)  # (T, N, H)
    expected = (np.maximum(y, 0) @ state["encoder.linear.weight"].T + state["encoder.linear.bias"]).transpose(
        1, 0, 2
    ) + x
    with torch.no_grad():
        got, _ = vibe_model.encoder(torch.from_numpy(x).float())
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-5)


def test_body_outputs_equal_plain_smplx_with_the_checkpoint_body(vibe_model, synthetic_bundle, outputs):
    gen = checkpoints.load_vibe_checkpoint(synthetic_bundle / "vibe_model_wo_3dpw.pth.tar")["gen_state_dict"]
    body = load_smpl_pkl(synthetic_bundle / "SMPL_NEUTRAL.pkl")
    smpl = smplx.SMPL("", data_struct=body.to_smplx_struct(), create_transl=False, batch_size=6)
    smpl.load_state_dict(
        {
            k.removeprefix("regressor.smpl."): v
            for k, v in gen.items()
            if k.startswith("regressor.smpl.")
            and "extra" not in k
            and not k.endswith(("betas", "global_orient", "body_pose"))
        },
        strict=False,
    )
    rotmat = outputs["rotmat"].reshape(6, 24, 3, 3)
    betas = outputs["theta"].reshape(6, 85)[:, 75:]
    with torch.no_grad():
        ref = smpl(betas=betas, body_pose=rotmat[:, 1:], global_orient=rotmat[:, :1], pose2rot=False)
    torch.testing.assert_close(outputs["verts"].reshape(6, 6890, 3), ref.vertices, rtol=0, atol=1e-6)
    extra = torch.einsum("jv,bvk->bjk", gen["regressor.smpl.J_regressor_extra"], ref.vertices)
    all54 = torch.cat([ref.joints, extra], dim=1)
    kp_3d = outputs["kp_3d"].reshape(6, 49, 3)
    for i, name in enumerate(JOINT_NAMES):
        torch.testing.assert_close(kp_3d[:, i], all54[:, JOINT_MAP[i]], rtol=0, atol=1e-6, msg=name)
    assert JOINT_NAMES[8] == "OP MidHip" and JOINT_MAP[8] == 0 and JOINT_MAP[27] == 45


def test_theta_layout_camera_pose_betas(outputs):
    theta = outputs["theta"].reshape(6, 85)
    rotmat = outputs["rotmat"].reshape(6 * 24, 3, 3)
    np.testing.assert_allclose(
        geometry.batch_rodrigues(theta[:, 3:75].reshape(-1, 3)).numpy(), rotmat.numpy(), atol=2e-5
    )
    assert torch.allclose(torch.det(rotmat), torch.ones(6 * 24), atol=1e-5)
    kp_2d = geometry.projection(outputs["kp_3d"].reshape(6, 49, 3), theta[:, :3])
    torch.testing.assert_close(outputs["kp_2d"].reshape(6, 49, 2), kp_2d, rtol=0, atol=1e-6)


def test_h36m_regressor_gives_14_lsp_joints(vibe_model, synthetic_bundle, images, outputs):
    reg = np.load(synthetic_bundle / "J_regressor_h36m.npy").astype(np.float32)
    with torch.no_grad():
        out = vibe_model.forward_features(vibe_model.extract_features(images), j_regressor=torch.from_numpy(reg))
    assert out["kp_3d"].shape == (2, 3, 14, 3) and out["kp_2d"].shape == (2, 3, 14, 2)
    expected = np.einsum("jv,ntvk->ntjk", reg, outputs["verts"].numpy())[:, :, list(H36M_TO_J14)]
    np.testing.assert_allclose(out["kp_3d"].numpy(), expected, atol=1e-5)
    assert vibe_model.j_regressor_h36m.shape == (17, 6890)


def test_carried_gru_state_makes_chunking_invisible(vibe_model):
    torch.manual_seed(2)
    features = torch.rand(1, 12, 2048)
    with torch.no_grad():
        whole = vibe_model.forward_features(features)
        first = vibe_model.forward_features(features[:, :5])
        second = vibe_model.forward_features(features[:, 5:], h0=first["gru_state"])
        fresh = vibe_model.forward_features(features[:, 5:])  # the official chunking
    chunked = torch.cat([first["theta"], second["theta"]], dim=1)
    torch.testing.assert_close(chunked, whole["theta"], rtol=0, atol=1e-5)
    assert (fresh["theta"] - whole["theta"][:, 5:]).abs().max() > 1e-4


def _relative_error(approx: torch.Tensor, exact: torch.Tensor, *, centre: bool = False) -> float:
    """|approx - exact| / |exact| (Frobenius); centre=True first takes off exact's mean over the
    leading (N, T) axes, so that only the part that depends on the input counts."""
    approx, exact = approx.float(), exact.float()
    if centre:
        mean = exact.mean(dim=(0, 1), keepdim=True)
        approx, exact = approx - mean, exact - mean
    return float((approx - exact).norm() / exact.norm())


def test_bf16_autocast_stays_close(vibe_model, images):
    """bf16 autocast computes the same model, stage by stage. The synthetic regressor's outputs are
    scaled by 0.1 (and random images look alike to a random backbone), so every input gives nearly
    the mean body and a tolerance on the outputs in metres would pass for any model: each stage is
    compared relative to the size of what it computes."""
    with torch.no_grad():
        features = vibe_model.extract_features(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast_features = vibe_model.extract_features(images)
    assert fast_features.dtype == torch.bfloat16  # the backbone did run in bf16
    assert _relative_error(fast_features, features) < 0.02  # 0.4 % measured

    # the temporal model, regressor and SMPL at full scale (the 0.1 undone), on features that differ
    # from frame to frame as much as real ones do
    full_scale = copy.deepcopy(vibe_model)
    torch.manual_seed(3)
    varied = torch.rand(2, 12, 2048)
    with torch.no_grad():
        for layer in (full_scale.regressor.decpose, full_scale.regressor.decshape, full_scale.regressor.deccam):
            layer.weight.mul_(10)
        exact = full_scale.forward_features(varied)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = full_scale.forward_features(varied)
    assert _relative_error(fast["theta"], exact["theta"], centre=True) < 0.01  # 0.01 % measured
    assert fast["verts"].dtype == torch.bfloat16
    assert _relative_error(fast["verts"], exact["verts"]) < 0.01  # bf16 rounding: 0.3 %


def test_load_model_on_a_gpu_that_is_not_there_is_one_message(synthetic_bundle, monkeypatch):
    """The Python API passed the device straight to torch: a bare AssertionError ("Torch not compiled
    with CUDA enabled") after the whole model had loaded."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(VibeError, match="sees no CUDA GPU; use the CPU: --device cpu"):
        load_model(synthetic_bundle, device="cuda")
    assert next(load_model(synthetic_bundle, device="auto").parameters()).device.type == "cpu"
