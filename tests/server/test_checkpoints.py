"""Official checkpoint containers: load unchanged, write back, and refuse wrong files clearly."""

import io
import pickletools
import re
import shutil
import warnings
import zipfile

import numpy as np
import pytest
import torch
from hostile_files import (
    APPEND,
    EMPTY_DICT,
    EMPTY_LIST,
    NOT_REGULAR_KINDS,
    POP,
    SETITEM,
    TUPLE1,
    TUPLE2,
    call_with_deadline,
    get,
    make_not_regular,
    put,
    read_in_sandbox,
    run_probe,
)
from hostile_files import value as ops_of

from vibe_blender.core.errors import VibeError
from vibe_server import checkpoints, load_model
from vibe_server.data import bundle
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


def test_mposer_file_given_as_vibe(tmp_path):
    """MPoser's checkpoint holds 'model' too: it was called the SPIN checkpoint."""
    from vibe_server.model.mposer import MPoser

    path = tmp_path / "mposer.pth.tar"
    torch.save({"model": MPoser(hidden_size=4, latent_size=2, num_layers=1).state_dict(), "best_val_loss": 1.0}, path)
    with pytest.raises(VibeError, match=r"looks like an MPoser checkpoint .*takes it as --mposer_checkpoint") as err:
        checkpoints.load_vibe_checkpoint(path)
    assert "SPIN" not in str(err.value)


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


@pytest.mark.parametrize(
    "file_name, container, key",
    [
        ("vibe_model_wo_3dpw.pth.tar", "gen_state_dict", "regressor.fc1.weight"),
        ("spin_model_checkpoint.pth.tar", "model", "layer1.0.conv1.weight"),
    ],
)
def test_a_checkpoint_with_a_nan_weight_is_refused_by_name(synthetic_bundle, tmp_path, file_name, container, key):
    """One NaN weight makes every prediction NaN, which would only fail in the metrics (or not at all)."""
    ckpt = torch.load(synthetic_bundle / file_name, map_location="cpu", weights_only=False)
    ckpt[container][key].view(-1)[0] = float("nan")
    torch.save(ckpt, tmp_path / file_name)
    load = checkpoints.load_vibe_checkpoint if container == "gen_state_dict" else checkpoints.load_spin_checkpoint
    with pytest.raises(VibeError, match=rf"its '{container}' holds NaN or infinite weights in '{key}'.*damaged"):
        load(tmp_path / file_name)
    status = bundle.check_file(file_name, tmp_path / file_name)  # what data check says of it
    assert status.status == "invalid" and f"NaN or infinite weights in '{key}'" in status.detail


def _beyond_float32(weights: torch.Tensor) -> torch.Tensor:
    weights = weights.double()
    weights.view(-1)[0] = 1e39  # finite in float64, infinite once loaded into the float32 model
    return weights


@pytest.mark.parametrize(
    "file_name, container, key",
    [
        ("vibe_model_wo_3dpw.pth.tar", "gen_state_dict", "regressor.fc1.weight"),
        ("spin_model_checkpoint.pth.tar", "model", "layer1.0.conv1.weight"),
    ],
)
@pytest.mark.parametrize(
    "change, words",
    [
        (_beyond_float32, "NaN or infinite weights in '{key}' (infinite in float32"),
        (lambda weights: weights.to(torch.complex64), "complex64 values in '{key}', where the"),
        (lambda weights: weights.long(), "int64 values in '{key}', where the"),
    ],
    ids=["float64 beyond float32", "complex", "integer"],
)
def test_weights_that_are_no_float32_numbers_are_refused_by_name(
    synthetic_bundle, tmp_path, file_name, container, key, change, words
):
    """Finiteness was checked in the file's own type, and only of floating-point tensors: these loaded
    (as infinities, the real parts, or whole numbers)."""
    ckpt = torch.load(synthetic_bundle / file_name, map_location="cpu", weights_only=False)
    ckpt[container][key] = change(ckpt[container][key])
    torch.save(ckpt, tmp_path / file_name)
    load = checkpoints.load_vibe_checkpoint if container == "gen_state_dict" else checkpoints.load_spin_checkpoint
    with pytest.raises(VibeError, match=re.escape(f"its '{container}' holds {words.format(key=key)}")):
        load(tmp_path / file_name)
    status = bundle.check_file(file_name, tmp_path / file_name)
    assert status.status == "invalid" and words.format(key=key) in status.detail


SMPL_COPY = "regressor.smpl."
OUT_OF_RANGE = "are not vertex indices below 6890"


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("parents", lambda t: t.index_fill(0, torch.tensor([5]), 40), "joint parents that are not SMPL's"),
        ("vertex_joint_selector.extra_joints_idxs", lambda t: t.index_fill(0, torch.tensor([0]), 10**9), OUT_OF_RANGE),
        ("faces_tensor", lambda t: t.index_fill(0, torch.tensor([0]), -1), f"faces_tensor {OUT_OF_RANGE}"),
        ("faces_tensor", lambda t: t.double(), "faces_tensor are not vertex indices"),
    ],
)
def test_a_checkpoint_whose_smpl_copy_indexes_outside_itself_is_refused(synthetic_bundle, tmp_path, key, value, words):
    """The checkpoint's SMPL copy wins over the pkl, and only its weights were checked: data check said
    'present', and every run failed in the middle with a raw IndexError (on a GPU, a device assert)."""
    ckpt = torch.load(synthetic_bundle / "vibe_model_wo_3dpw.pth.tar", map_location="cpu", weights_only=False)
    ckpt["gen_state_dict"][SMPL_COPY + key] = value(ckpt["gen_state_dict"][SMPL_COPY + key])
    torch.save(ckpt, tmp_path / "vibe_model_wo_3dpw.pth.tar")
    status = bundle.check_file("vibe_model_wo_3dpw.pth.tar", tmp_path / "vibe_model_wo_3dpw.pth.tar")
    assert status.status == "invalid" and words in status.detail and "Download it again" in status.detail
    with pytest.raises(VibeError, match=re.escape(words)):
        load_model(synthetic_bundle, vibe_checkpoint=tmp_path / "vibe_model_wo_3dpw.pth.tar")


def test_wrong_shapes_are_named(synthetic_bundle, tmp_path):
    ckpt = checkpoints.load_vibe_checkpoint(synthetic_bundle / "vibe_model_wo_3dpw.pth.tar")
    ckpt["gen_state_dict"]["encoder.linear.weight"] = torch.zeros(2048, 512)
    torch.save(ckpt, tmp_path / "v.pth.tar")
    with pytest.raises(VibeError, match=r"wrong shape.*encoder.linear.weight \(2048, 512\)"):
        load_model(synthetic_bundle, vibe_checkpoint=tmp_path / "v.pth.tar")


LOADER = "vibe_server.checkpoints"


def test_a_view_of_a_huge_shape_over_one_stored_value_is_refused_before_its_values_are_converted(tmp_path):
    """1.7 KB: one float16 zero expanded to 32768 x 32768. Its values were checked as float32 first, 4 GiB
    (and 23 GB, OOM-killed, at 65536 x 65536); the sandbox's 3 GB would have failed that allocation."""
    path = tmp_path / "spin_model_checkpoint.pth.tar"
    torch.save({"model": {"conv1.weight": torch.zeros(1, dtype=torch.float16).expand(32768, 32768)}}, path)
    assert path.stat().st_size < 4096
    baseline = read_in_sandbox(f"{LOADER}:load_spin_checkpoint", tmp_path / "absent", memory_mb=3072)
    outcome = read_in_sandbox(f"{LOADER}:load_spin_checkpoint", path, memory_mb=3072)
    assert outcome.refused and "holds tensors of 2147483648 bytes in all, more than the file's" in outcome.message, (
        outcome
    )
    assert outcome.peak_mb < baseline.peak_mb + 100, (outcome.peak_mb, baseline.peak_mb)


@pytest.mark.parametrize(
    "weights, words",
    [
        (
            lambda: torch.empty(2**40, device="meta"),
            "holds a tensor on the 'meta' device (shapes without values) under 'encoder.linear.bias'",
        ),
        (
            lambda: torch.sparse_coo_tensor(torch.zeros(2, 1, dtype=torch.long), torch.ones(1), size=(64, 64)),
            "holds a sparse_coo tensor under 'encoder.linear.bias'",
        ),
        (
            lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]),
            "holds a nested tensor under 'encoder.linear.bias'",
        ),
        (  # small enough for the file's size in all, but 100 values over 4 stored bytes
            lambda: torch.zeros(1).expand(100),
            "holds under 'encoder.linear.bias' a tensor of shape (100,) over only 4 stored bytes",
        ),
    ],
    ids=["meta", "sparse", "nested", "expanded"],
)
def test_a_tensor_that_is_no_plain_one_of_stored_values_is_refused_in_words(tmp_path, weights, words):
    """torch.load rebuilds these from a few bytes; checking their values raised torch's own errors
    (Tensor.item() cannot be called on meta tensors, aten::ne.Scalar for the SparseCPU backend)."""
    path = tmp_path / "vibe_model_wo_3dpw.pth.tar"
    with warnings.catch_warnings():  # torch's notes on prototype layouts
        warnings.simplefilter("ignore")
        torch.save({"gen_state_dict": {"encoder.linear.bias": weights(), "padding": torch.zeros(1000)}}, path)
    with pytest.raises(VibeError, match=re.escape(words)) as err:
        checkpoints.load_vibe_checkpoint(path)
    assert "never writes for a model's weights" in str(err.value) and "Download it again" in str(err.value)


def test_many_views_of_one_storage_are_refused_by_their_bytes_in_all(tmp_path):
    """Each view fits its storage, which the file holds once: checking them all costs time the file
    never paid for (a million views would)."""
    path = tmp_path / "vibe_model_wo_3dpw.pth.tar"
    shared = torch.zeros(1000)
    torch.save({"gen_state_dict": {f"w{i}": shared for i in range(100)}}, path)
    with pytest.raises(VibeError, match=r"holds tensors of 400000 bytes in all, more than the file's \d+"):
        checkpoints.load_vibe_checkpoint(path)


def test_spins_shape_table_is_the_backbones_and_the_regressor_heads():
    with torch.device("meta"):
        backbone = {name: tuple(value.shape) for name, value in ResNet50Features().state_dict().items()}
    assert checkpoints.SPIN_SHAPES == {**backbone, **checkpoints.SPIN_HEAD_SHAPES}


def test_shapes_are_compared_before_values_are_checked(tmp_path):
    """A tensor of another shape under an official name is named as such (its values are not converted)."""
    path = tmp_path / "spin_model_checkpoint.pth.tar"
    torch.save({"model": {"module.conv1.weight": torch.full((5,), float("nan"))}}, path)
    words = "its 'model' has 1 with the wrong shape (e.g. conv1.weight (5,) != (64, 3, 7, 7)) keys: it is not the SPIN"
    with pytest.raises(VibeError, match=re.escape(words)):
        checkpoints.load_spin_checkpoint(path)


def _legacy_storage_of_another_size(path):
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(77777)}}, buffer, _use_new_zipfile_serialization=False)
    size = b"J" + (77777).to_bytes(4, "little")  # BININT: the storage's element count, recorded first
    path.write_bytes(buffer.getvalue().replace(size, b"J" + (77778).to_bytes(4, "little"), 1))


def _view_past_its_storage(path):
    """Two of eight stored values, the view's size rewritten to 4 (storage offset 6, size (2,))."""
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(8)[6:]}}, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"K\x06K\x02\x85", b"K\x06K\x04\x85")
            target.writestr(info.filename, data)


@pytest.mark.parametrize(
    "make, words",
    [
        (_legacy_storage_of_another_size, "a tensor storage whose recorded size is not the number of bytes it holds"),
        (_view_past_its_storage, "a tensor that reaches past the bytes stored for it"),
    ],
    ids=["legacy storage size", "view past its storage"],
)
def test_tensors_that_do_not_fit_their_stored_bytes_are_said_in_words(tmp_path, make, words):
    """torch's message came with its format string unfilled ("expected %ld got %ld311108311112"), or
    spoke of storage that is not resizable."""
    path = tmp_path / "spin_model_checkpoint.pth.tar"
    make(path)
    with pytest.raises(VibeError, match=f"is damaged or not a PyTorch checkpoint \\({words}\\)") as err:
        checkpoints.load_spin_checkpoint(path)
    assert "%ld" not in str(err.value) and "resizable" not in str(err.value)


def test_text_file_and_missing_file(synthetic_bundle, tmp_path):
    text = tmp_path / "notes.pth.tar"
    text.write_text("these are not weights")
    with pytest.raises(VibeError, match="notes.pth.tar"):
        load_model(synthetic_bundle, vibe_checkpoint=text)
    with pytest.raises(VibeError, match="Model data missing: .*nowhere.pth.tar"):
        load_model(synthetic_bundle, vibe_checkpoint=tmp_path / "nowhere.pth.tar")


@pytest.mark.parametrize("kind", NOT_REGULAR_KINDS)
def test_a_checkpoint_path_that_is_no_regular_file_is_refused_unread(tmp_path, kind):
    """--checkpoint names any path: a FIFO would block the load, /dev/zero would read without end."""
    path = make_not_regular(tmp_path / "vibe_model_wo_3dpw.pth.tar", kind)
    ran, err = call_with_deadline(lambda: checkpoints.load_vibe_checkpoint(path), fifo=path)
    assert not ran and isinstance(err, VibeError), err
    assert str(err) == (
        f"The VIBE checkpoint '{path}' is not a regular file (a device, FIFO or socket), so it was not read. "
        "Install the model data with 'vibe-mocap data install' or pass the right path."
    )


def test_checkpoint_holding_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth.tar"
    torch.save({"gen_state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(VibeError, match="other than weights"):
        checkpoints.load_vibe_checkpoint(path)


WEB_PAGE = b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>\n"


@pytest.mark.parametrize("content", [WEB_PAGE, np.random.default_rng(0).bytes(5000)], ids=["web page", "random bytes"])
def test_a_web_page_or_random_bytes_named_as_a_checkpoint_is_said_to_be_no_checkpoint(tmp_path, content):
    """torch's refusal of an unknown opcode read as "contains Python objects other than weights"."""
    path = tmp_path / "vibe_model_wo_3dpw.pth.tar"
    path.write_bytes(content)
    with pytest.raises(VibeError) as err:
        checkpoints.load_vibe_checkpoint(path)
    assert str(err.value) == (
        f"The VIBE checkpoint '{path}' is not a PyTorch checkpoint (a web page saved under its name, or other "
        "data), or it is damaged. Download it again."
    )


def test_a_plain_pickle_given_as_a_checkpoint_gets_our_message_alone(tmp_path, recwarn):
    """torch warned first of a pickle protocol it did not write: a line of its own before ours."""
    import pickle

    path = tmp_path / "notes.pth"
    path.write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=4))  # FRAME opcodes, which torch never writes
    with pytest.raises(VibeError, match="is not a PyTorch checkpoint"):
        checkpoints.load_vibe_checkpoint(path)
    assert [str(w.message) for w in recwarn] == []


# --- crafted files: numpy state and zip records are checked before anything is built -----------


class _Reduce:
    """Pickles as ``reduce`` says: how a crafted file's opcodes are written with torch.save."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


_SCALAR = np.float64(0).__reduce__()[0]  # numpy's scalar(dtype, bytes), under this numpy's module name
_OBJECT_DTYPE = _Reduce(np.dtype, ("O8", False, True))  # no BUILD: torch's allow-list could not build it
_FIELDS = {
    "object": {"a": (_OBJECT_DTYPE, 0), "b": (np.dtype("i8"), 0)},  # a pointer over an int: crashes on use
    "record": {"a": (np.dtype("i8"), 0)},
}


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
@pytest.mark.parametrize("fields", _FIELDS)
def test_crafted_dtype_state_is_refused(tmp_path, legacy, fields):
    names = tuple(_FIELDS[fields])
    state = (3, "|", None, names, _FIELDS[fields], 8, 1, 63)  # given to numpy's dtype.__setstate__ before the fix
    path = tmp_path / "crafted.pth.tar"
    crafted = _Reduce(np.dtype, ("f8", False, True), state)
    torch.save({"gen_state_dict": {}, "performance": crafted}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(VibeError, match=r"crafted.pth.tar' contains Python objects other than weights.*Download"):
        checkpoints.load_vibe_checkpoint(path)


def test_dtype_flags_from_the_file_are_ignored(tmp_path):
    flagged = _Reduce(np.dtype, ("f8", False, True), (3, "<", None, None, None, -1, -1, 63))  # 63: "holds objects"
    path = tmp_path / "flags.pth.tar"
    torch.save({"gen_state_dict": {}, "performance": _Reduce(_SCALAR, (flagged, np.float64(2.5).tobytes()))}, path)
    value = checkpoints.load_vibe_checkpoint(path)["performance"]
    assert type(value) is np.float64 and value == 2.5 and not value.dtype.hasobject


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-numpy1", "zip-numpy2"])
def test_numpy_scalars_of_real_checkpoints_load(tmp_path, legacy):
    values = {
        "performance": np.float64(56.56075477600098),
        "best": np.float32(1.5),
        "step": np.int64(-3),
        "count": np.uint8(7),
        "flag": np.bool_(True),
    }
    path = tmp_path / "v.pth.tar"
    torch.save({"gen_state_dict": {"w": torch.ones(2)}, **values}, path, _use_new_zipfile_serialization=not legacy)
    if legacy:  # the official files were pickled by numpy 1 (a GLOBAL line: its length may change)
        path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
        assert b"numpy.core.multiarray" in path.read_bytes()
    ckpt = checkpoints.load_vibe_checkpoint(path)
    for key, value in values.items():
        assert type(ckpt[key]) is type(value) and ckpt[key] == value, key
    assert torch.equal(ckpt["gen_state_dict"]["w"], torch.ones(2))


def _stored_checkpoint(tmp_path):
    path = tmp_path / "stored.pth.tar"
    torch.save({"gen_state_dict": {"w": torch.zeros(1 << 20)}}, path)  # 4 MiB of zeros, stored as torch writes it
    return path


def _deflated(stored, path):
    with zipfile.ZipFile(stored) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    assert path.stat().st_size < 100_000
    assert torch.load(path, weights_only=True)["gen_state_dict"]["w"].numel() == 1 << 20  # torch inflates it


def _oversized(stored, path):
    blob = bytearray(stored.read_bytes())
    name = b"stored.pth/data/0"  # torch names records after the file
    entry = blob.rindex(name) - 46  # the central directory (after the records) repeats each name
    assert blob[entry : entry + 4] == b"PK\x01\x02"
    blob[entry + 24 : entry + 28] = (256 << 20).to_bytes(4, "little")  # its uncompressed size: 256 MiB
    path.write_bytes(blob)


@pytest.mark.parametrize(
    "make, match",
    [(_deflated, r"\d+ compressed records"), (_oversized, r"records of \d+ bytes in all, more than the file's")],
    ids=["deflated", "oversized"],
)
def test_zip_records_torch_save_never_writes_are_refused_before_loading(tmp_path, monkeypatch, make, match):
    path = tmp_path / "vibe_model_wo_3dpw.pth.tar"
    make(_stored_checkpoint(tmp_path), path)
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or pytest.fail("torch.load was reached"))
    with pytest.raises(VibeError, match=rf"vibe_model_wo_3dpw.pth.tar' was not loaded: it has {match}.*Download the"):
        checkpoints.load_vibe_checkpoint(path)
    assert loads == []


def test_a_checkpoint_zip_with_data_before_it_is_refused_before_loading(tmp_path, monkeypatch):
    """zipfile finds a directory that is not where the end record says and moves every record by the
    difference; torch's reader may take the recorded offsets: the data.pkl checked would not be the
    one loaded. Here a local-header start before the archive, so it is read as a zip at all."""
    path = tmp_path / "vibe_model_wo_3dpw.pth.tar"
    torch.save({"gen_state_dict": {"w": torch.zeros(3)}}, path)
    path.write_bytes(b"PK\x03\x04" + bytes(60) + path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # zipfile reads it whole
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was reached"))
    with pytest.raises(VibeError, match=r"pth.tar' was not loaded: it has a zip directory 64 bytes from where"):
        checkpoints.load_vibe_checkpoint(path)


def test_a_legacy_checkpoint_that_cannot_be_read_is_not_called_a_damaged_zip(tmp_path, monkeypatch):
    path = tmp_path / "vibe_model_wo_3dpw.pth.tar"
    torch.save({"gen_state_dict": {"w": torch.zeros(3)}}, path, _use_new_zipfile_serialization=False)

    def unreadable(file):
        raise OSError("Input/output error")

    monkeypatch.setattr(checkpoints, "_legacy_problem", unreadable)
    with pytest.raises(VibeError, match=r"it has a legacy \(non-zip\) layout that could not be read") as err:
        checkpoints.load_vibe_checkpoint(path)
    assert "zip structure" not in str(err.value)


def test_zip_directory_is_bounded_before_zipfile_reads_it(tmp_path, monkeypatch):
    path = _stored_checkpoint(tmp_path)
    opened = []
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: opened.append(a) or pytest.fail("ZipFile was reached"))
    monkeypatch.setattr(checkpoints, "MAX_ZIP_DIRECTORY_BYTES", 200)  # torch's 7 entries take ~500 bytes
    with pytest.raises(VibeError, match=r"stored.pth.tar' was not loaded: it has a zip directory of \d+ bytes"):
        checkpoints.load_vibe_checkpoint(path)
    assert opened == []


# A dict key or value whose tuples hold one tuple twice, 60 levels deep (no POP: torch's unpickler has
# none): torch's unpickler hashed the key at SETITEM, 2**60 steps, before any check of ours.
def _shared_tuples(depth: int) -> bytes:
    ops = ops_of((1,)) + put(6000)
    for level in range(depth):
        ops += get(6000 + level) + TUPLE2 + put(6001 + level)
    return ops


_EXPANDING = {
    "key": EMPTY_DICT + _shared_tuples(60) + ops_of(1) + SETITEM,
    "performance": EMPTY_DICT + ops_of("performance") + _shared_tuples(60) + SETITEM,
    # a list put inside a tuple, then filled: counted when it was empty, so counts would not hold
    "filled after use": EMPTY_DICT
    + ops_of("a")
    + EMPTY_LIST
    + put(7000)
    + TUPLE1
    + SETITEM
    + get(7000)
    + ops_of(1)
    + APPEND
    + POP,
}


def _with_pickle(tmp_path, main: bytes, legacy: bool):
    """A checkpoint as torch.save writes it, its (main) pickle replaced by ``main``."""
    path = tmp_path / "crafted.pth.tar"
    torch.save({"gen_state_dict": {}}, path, _use_new_zipfile_serialization=not legacy)
    blob, main = path.read_bytes(), b"\x80\x02" + main + b"."
    if legacy:  # magic number, protocol version, system info, the checkpoint, its storage keys
        ends = [0]
        stream = io.BytesIO(blob)
        for _ in range(4):
            list(pickletools.genops(stream))
            ends.append(stream.tell())
        path.write_bytes(blob[: ends[3]] + main + blob[ends[4] :])
    else:
        with zipfile.ZipFile(io.BytesIO(blob)) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, main if info.filename.endswith("data.pkl") else zin.read(info))
    return path


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
@pytest.mark.parametrize("where", list(_EXPANDING))
def test_pickled_data_that_expands_is_refused_before_loading(tmp_path, monkeypatch, legacy, where):
    """About 1 kB: torch.load never ended (a dict key), or handed back a value whose every walk never ends."""
    path = _with_pickle(tmp_path, _EXPANDING[where], legacy)
    assert path.stat().st_size < 4000
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was reached"))
    words = "changes a value after putting it inside another" if where == "filled after use" else "expands to more"
    with pytest.raises(VibeError, match=rf"crafted.pth.tar' was not loaded: it has pickled data that {words}"):
        checkpoints.load_vibe_checkpoint(path)


@pytest.mark.parametrize(
    "body",
    [b"(" + b"K\x01" * 1001, b"K\x01" + b"\x94" * 1001],  # MARK and ints never closed; one int memoized over and over
    ids=["stack", "memo"],
)
def test_pickled_values_never_put_inside_one_are_counted_as_they_pile_up(body):
    """The limit was checked only when an op took values off the stack: a MARK and 50 million one-byte
    ints with no APPENDS had the walk (and torch's unpickler) build 50 million objects first."""
    problem = checkpoints.pickle_expansion_problem(io.BytesIO(b"\x80\x04" + body + b"."), limit=1000)
    assert problem == "pickled data that holds more than 1000 values at once"


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_a_checkpoint_with_optimizer_states_passes_the_pickle_walk(tmp_path, legacy):
    """What a training run saves shares objects (Adam's param groups share their betas tuple, numpy
    scalars their dtype): counted each time, it stays far below the limit."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GRU(3, 2))
    optimizer = torch.optim.Adam([{"params": net[0].parameters()}, {"params": net[1].parameters(), "lr": 0.1}])
    net[0](torch.ones(1, 4)).sum().backward()
    optimizer.step()
    path = tmp_path / "trained.pth.tar"
    ckpt = {"gen_state_dict": net.state_dict(), "gen_optimizer": optimizer.state_dict(), "performance": np.float64(2)}
    torch.save({**ckpt, "best": np.float64(1)}, path, _use_new_zipfile_serialization=not legacy)
    loaded = checkpoints.load_vibe_checkpoint(path)
    assert loaded["gen_optimizer"]["param_groups"][1]["lr"] == 0.1 and loaded["performance"] == 2


# --- files that load under weights_only but are not the containers' structure ----------------


@pytest.mark.parametrize(
    "ckpt, load, match",
    [
        ({"gen_state_dict": [1, 2, 3]}, "vibe", "'gen_state_dict' is a list, not a dict of named tensors"),
        ({"gen_state_dict": {1: torch.zeros(1)}}, "vibe", "'gen_state_dict' has the key 1, which is not a name"),
        ({"gen_state_dict": {None: torch.zeros(1)}}, "vibe", "'gen_state_dict' has the key None"),
        (
            {"gen_state_dict": {"a": torch.zeros(1), "b": 0}},
            "vibe",
            "'gen_state_dict' holds a value of type int under 'b'",
        ),
        ({"gen_state_dict": {"a": [torch.zeros(1)]}}, "vibe", "'gen_state_dict' holds a value of type list under 'a'"),
        ({"model": [1]}, "spin", "'model' is a list, not a dict of named tensors"),
        ({"model": {("a",): torch.zeros(1)}}, "spin", r"'model' has the key \('a',\)"),
    ],
)
def test_a_container_whose_weights_are_not_named_tensors_is_refused(tmp_path, ckpt, load, match):
    path = tmp_path / "odd.pth.tar"
    torch.save(ckpt, path)
    loader = checkpoints.load_vibe_checkpoint if load == "vibe" else checkpoints.load_spin_checkpoint
    with pytest.raises(VibeError, match=rf"odd.pth.tar': its {match}.*Download it again"):
        loader(path)


@pytest.mark.parametrize("performance", ["abc", torch.zeros(2), [1.0], np.float64(np.inf), True, {"pa": 1.0}])
def test_a_performance_that_is_not_one_finite_number_is_refused(tmp_path, performance):
    path = tmp_path / "perf.pth.tar"
    torch.save({"gen_state_dict": {"w": torch.ones(1)}, "performance": performance}, path)
    with pytest.raises(VibeError, match=r"perf.pth.tar': its 'performance' is .*not one finite number"):
        checkpoints.load_vibe_checkpoint(path)


# A tuple that holds one tuple twice, 60 levels deep (weights-only loading builds plain tuples): its whole
# repr has 2**60 leaves. Run in a child with a deadline, as the unbounded repr never ends. A dict key is
# hashed when the dict is built (2**depth steps: the opcode scan refuses such files), so keys are 24 deep.
_NAMED_BOMB = """
import sys
from vibe_server import checkpoints
from vibe_blender.core.errors import VibeError

bombs = [(1,)]
for _ in range(60):
    bombs.append((bombs[-1], bombs[-1]))
where = sys.argv[1]
try:
    if where == "performance":
        checkpoints._performance(bombs[60], "v.pth.tar", "VIBE checkpoint")
    elif where == "weight name":
        checkpoints._check_state_dict({bombs[24]: None}, "its 'gen_state_dict'", "VIBE checkpoint")
    else:  # the keys of a container without 'gen_state_dict'
        checkpoints.torch_load = lambda path, what: {bombs[24]: 1}
        checkpoints.load_vibe_checkpoint("v.pth.tar")
except VibeError as err:
    print(err)
"""


@pytest.mark.parametrize("where", ["performance", "weight name", "top-level key"])
def test_a_value_named_in_a_refusal_cannot_expand(where):
    """The message formatted it with {x!r:.60} (or str()), which builds the whole repr first: the
    checkpoint never finished loading (24 deep: seconds and a 200 MB repr, of which 60 characters shown)."""
    done = run_probe(_NAMED_BOMB, where, timeout_s=60)
    assert "((...), (...))" in done.stdout, done.stdout


@pytest.mark.parametrize(
    "performance, expected",
    [(np.float64(51.5), 51.5), (torch.tensor(2.5), 2.5), (7, 7.0), (np.float64(np.nan), None), (None, None)],
)
def test_performance_reads_as_one_number_or_none(tmp_path, performance, expected):
    """NaN is how the container says "not validated" (the original's code and ours write it so)."""
    path = tmp_path / "perf.pth.tar"
    torch.save({"gen_state_dict": {"w": torch.ones(1)}, "performance": performance}, path)
    value = checkpoints.load_vibe_checkpoint(path)["performance"]
    assert value == expected if expected is not None else value is None
    assert expected is None or type(value) is np.float64


def test_a_generator_of_non_tensors_stops_model_loading_with_one_clear_error(synthetic_bundle, tmp_path):
    path = tmp_path / "v.pth.tar"
    torch.save({"gen_state_dict": dict.fromkeys(checkpoints.GENERATOR_SHAPES, 0)}, path)
    with pytest.raises(VibeError, match="v.pth.tar': its 'gen_state_dict' holds a value of type int"):
        load_model(synthetic_bundle, vibe_checkpoint=path)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "it ends too early: cut short"),
        (b"\x80\x02h\x65.", "its content is not laid out as expected"),  # a memo lookup: KeyError 101
    ],
)
def test_a_file_that_is_no_checkpoint_is_said_in_words_not_by_the_parsers_exception(tmp_path, content, words):
    """It said "(EOFError: )" and "(KeyError: 101)"."""
    from vibe_server import checkpoints

    path = tmp_path / "vibe_model_wo_3dpw.pth.tar"
    path.write_bytes(content)
    with pytest.raises(VibeError) as err:
        checkpoints.torch_load(path, "VIBE checkpoint")
    assert words in str(err.value) and "Error" not in str(err.value)


def test_a_cut_short_database_is_said_in_words(tmp_path):
    from vibe_server.train.datasets import load_db

    (tmp_path / "3dpw_test_db.pt").write_bytes(b"")
    with pytest.raises(VibeError, match="it ends too early: cut short") as err:
        load_db(tmp_path / "3dpw_test_db.pt")
    assert "EOFError" not in str(err.value)


def test_a_spin_head_of_the_wrong_shape_is_refused_by_data_check_and_training(synthetic_bundle, tmp_path):
    """Only the backbone was checked: data check said 'present' and training from SPIN's head failed
    with a raw 'size mismatch' in the regressor."""
    from vibe_server.data.loading import load_training_model

    data = tmp_path / "data"
    data.mkdir()
    for file in synthetic_bundle.iterdir():
        if file.name != "spin_model_checkpoint.pth.tar":
            (data / file.name).symlink_to(file)
    ckpt = torch.load(synthetic_bundle / "spin_model_checkpoint.pth.tar", map_location="cpu", weights_only=False)
    ckpt["model"]["fc1.weight"] = torch.zeros(1024, 2048)
    torch.save(ckpt, data / "spin_model_checkpoint.pth.tar")
    words = "1 with the wrong shape (e.g. fc1.weight (1024, 2048) != (1024, 2205)) keys"
    status = bundle.check_file("spin_model_checkpoint.pth.tar", data / "spin_model_checkpoint.pth.tar")
    assert status.status == "invalid" and words in status.detail
    with pytest.raises(VibeError, match=re.escape(words)):
        load_training_model(data, init_from_spin=True)
