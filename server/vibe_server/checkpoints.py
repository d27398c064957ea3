"""The official checkpoint containers, in and out. All official-key mapping lives here.

- VIBE (``vibe_model_wo_3dpw.pth.tar`` / ``vibe_model_w_3dpw.pth.tar``): a dict with ``epoch``,
  ``gen_state_dict`` (35 entries: ``encoder.*``, ``regressor.*`` including 12 ``regressor.smpl.*``
  buffers), ``performance`` (a numpy float64) and optionally the optimiser/discriminator states.
- SPIN (``spin_model_checkpoint.pth.tar``): a dict whose ``model`` holds the HMR network: the
  ResNet-50 (which VIBE uses as its backbone) and SPIN's own regression head (unused by VIBE).

Files written on GPUs carry CUDA-tagged storages and older PyTorch's legacy (non-zip) format; both
load here with ``map_location='cpu'``. Loading is ``weights_only``, so a checkpoint cannot run code;
its numpy scalars are rebuilt by :mod:`vibe_blender.core.safe_pickle`'s stand-ins, so no dtype state
from the file reaches numpy. Zip-format files must hold uncompressed records no larger in total than
the file, so nothing is inflated, and their directory where the end record says (nothing added before
the archive), so the records checked are the ones torch reads. Before torch.load, the pickles are
walked opcode by opcode (:func:`pickle_expansion_problem`): a value that holds one object many times over, which torch's
unpickler would hash (a dict key) or later code would walk for time exponential in the file's size, is
refused; torch.save writes trees, sharing only a few small objects.
"""

from __future__ import annotations

import math
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from vibe_blender.core.bounded_arrays import UntrustedDataError
from vibe_blender.core.errors import VibeError, failure_words
from vibe_blender.core.regular_file import open_user_file
from vibe_blender.core.safe_npz import open_bounded_zip
from vibe_blender.core.safe_pickle import BASE_GLOBALS, MAX_NODES, ReadsWithin
from vibe_blender.core.shown_text import shown_value
from vibe_blender.core.smpl_model import PARENTS
from vibe_blender.core.zip_directory import recorded_directory_offset

# The official gen_state_dict holds SMPL's per-batch default parameters (batch 64). They are not
# model weights: dropped on load, written as zeros for the original code's strict loading.
SMPL_BATCH_PARAMS = {
    "regressor.smpl.betas": (64, 10),
    "regressor.smpl.global_orient": (64, 3),
    "regressor.smpl.body_pose": (64, 69),
}
SPIN_HEAD_KEYS = (
    "init_pose",
    "init_shape",
    "init_cam",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
    "decpose.weight",
    "decpose.bias",
    "decshape.weight",
    "decshape.bias",
    "deccam.weight",
    "deccam.bias",
)
VIBE_TOP_LEVEL = (
    "epoch",
    "gen_state_dict",
    "performance",
    "gen_optimizer",
    "disc_motion_state_dict",
    "disc_motion_optimizer",
)


# A numpy scalar (``performance``) is pickled as scalar(dtype('f8') + its BUILD state, bytes). Given the
# real np.dtype, the weights-only unpickler hands the file's state to numpy's dtype.__setstate__ (object
# fields, flags): these names map to safe_pickle's stand-ins instead, which accept only a plain
# numeric dtype and build the value from exactly its bytes with np.frombuffer.
NUMPY_SAFE_GLOBALS = [
    (BASE_GLOBALS[(module, name)], f"{module}.{name}")
    for module, name in (
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),  # numpy 1 pickles (the official files)
        ("numpy._core.multiarray", "scalar"),  # numpy 2
    )
]
ZIP_MAGIC = b"PK\x03\x04"  # how torch.load tells its zip format from the legacy one
# zipfile builds one ZipInfo (several times an entry's size) per central-directory entry: checked first.
# A VIBE checkpoint with its optimiser states has a few hundred entries of ~100 bytes.
MAX_ZIP_DIRECTORY_BYTES = 4 << 20


class _Value:
    """One object a pickle builds, as :func:`pickle_expansion_problem` models it: how many values it
    expands to (the objects it holds counted each time they are held), and whether it is inside another."""

    __slots__ = ("inside", "size")

    def __init__(self, size: int):
        self.size = size
        self.inside = False


_MARK = object()
_FROM_MEMO = {"GET", "BINGET", "LONG_BINGET"}
_TO_MEMO = {"PUT", "BINPUT", "LONG_BINPUT"}
_ADD_TO_TARGET = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}  # change the value below


def pickle_expansion_problem(stream: BinaryIO, limit: int = MAX_NODES) -> str | None:
    """What in the pickle at ``stream``'s position torch.save never writes (None when nothing), read
    up to its STOP: a value that expands to more than ``limit`` values (shared references counted each
    time, as a hash or a walk of it costs) or more than ``limit`` values held at once (on the stack or
    in the memo, each an object torch's unpickler builds), or one changed after it was put inside another
    (the counts would no longer hold). Linear in the pickle's length. A pickle that does not parse raises
    ValueError (torch.load then fails at the same place)."""
    stack: list = []
    memo: dict = {}

    def pop_to_mark() -> list:
        items = []
        while (item := stack.pop()) is not _MARK:
            items.append(item)
        return items[::-1]

    try:
        for op, arg, _ in pickletools.genops(stream):
            name = op.name
            if name in _TO_MEMO or name == "MEMOIZE":
                memo[arg if name in _TO_MEMO else len(memo)] = stack[-1]
            elif name in _FROM_MEMO:
                stack.append(memo[arg])  # the same object again: counted each time it is put inside another
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                pop_to_mark()
            else:
                before = op.stack_before
                marked = pickletools.markobject in before
                items = pop_to_mark() if marked else []
                fixed = before.index(pickletools.markobject) if marked else len(before)
                below = [stack.pop() for _ in range(fixed)][::-1]
                if any(v is _MARK for v in below):
                    raise ValueError(f"{name} meets a MARK")
                if name in _ADD_TO_TARGET:
                    target, added = below[0], below[1:] + items
                else:
                    target, added = _Value(1), below + items
                for v in added:
                    v.inside = True
                if target.inside:  # torch.save fills a container before it puts it inside another
                    return "pickled data that changes a value after putting it inside another"
                target.size += sum(v.size for v in added)
                if target.size > limit:
                    return f"pickled data that expands to more than {limit} values (shared or circular references)"
                stack.extend([target] * len(op.stack_after))
            if len(stack) > limit or len(memo) > limit:  # values not yet put inside one (no closing APPENDS)
                return f"pickled data that holds more than {limit} values at once"
    except (IndexError, KeyError) as err:
        raise ValueError(f"a malformed pickle ({failure_words(err)})") from None
    return None


def _zip_problem(file: BinaryIO, size: int) -> str | None:
    """What in this zip-format file torch.save never writes (None when nothing)."""
    try:
        recorded = recorded_directory_offset(file)
        with open_bounded_zip(file, max_directory_bytes=MAX_ZIP_DIRECTORY_BYTES) as archive:
            if recorded is not None and archive.start_dir != recorded:  # zipfile then moves every record
                return (
                    f"a zip directory {archive.start_dir - recorded} bytes from where its end record says "
                    "(data added before the archive: the records checked would not be the ones torch reads)"
                )
            infos = archive.infolist()
            packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
            if packed:
                return f"{len(packed)} compressed records (e.g. '{packed[0][:80]}')"
            total = sum(i.file_size for i in infos)
            if total > size:  # overlapping or inflated records: torch.load would allocate what they claim
                return f"records of {total} bytes in all, more than the file's {size}"
            for info in infos:
                if info.filename.endswith(".pkl"):  # data.pkl: what torch.load unpickles
                    with archive.open(info) as member:
                        problem = _parsed_problem(member)
                    if problem:
                        return problem
    except UntrustedDataError as err:
        return str(err)
    return None


def _parsed_problem(stream: BinaryIO) -> str | None:
    """:func:`pickle_expansion_problem`, None for a pickle that does not parse: torch.load says so."""
    try:
        return pickle_expansion_problem(stream)
    except ValueError:
        return None


LEGACY_PICKLES = 5  # magic number, protocol version, system info, the checkpoint, its storage keys


def _legacy_problem(file: BinaryIO) -> str | None:
    """What in the pickles of a legacy-format file torch.save never writes (None when nothing); their
    lengths are read within the file (a claimed 4 GiB string reserves nothing)."""
    stream = ReadsWithin(file)
    for _ in range(LEGACY_PICKLES):
        try:
            problem = pickle_expansion_problem(stream)
        except ValueError:
            return None  # not a pickle (or not one here): torch.load says so
        if problem:
            return problem
    return None


def check_zip_records(file: BinaryIO, path: Path, what: str) -> None:
    """Refuse a checkpoint that holds what torch.save never writes: zip records torch.load would
    inflate (it does so without a limit) or that claim more bytes than the file holds (torch.save
    stores its records uncompressed), and pickled values that expand past any real checkpoint's."""
    file.seek(0)
    legacy = False
    try:
        legacy = file.read(len(ZIP_MAGIC)) != ZIP_MAGIC
        if legacy:
            file.seek(0)
            problem = _legacy_problem(file)
        else:
            problem = _zip_problem(file, os.fstat(file.fileno()).st_size)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        structure = "a legacy (non-zip) layout that could not be read" if legacy else "a damaged zip structure"
        problem = f"{structure} ({failure_words(err)})"
    if problem:
        raise VibeError(
            f"The {what} '{path}' was not loaded: it has {problem}, which torch.save never writes "
            "(a damaged or altered file). Download the official checkpoint again."
        )


def torch_load(path: str | Path, what: str) -> object:
    """torch.load on CPU, weights only (+ numpy scalars), with one clear error for each failure."""
    path = Path(path)
    advice = "Install the model data with 'vibe-mocap data install' or pass the right path."
    with open_user_file(path, f"the {what}", advice) as file:  # one handle: the file checked is the file loaded
        check_zip_records(file, path, what)
        file.seek(0)
        return _torch_load_checked(file, path, what)


# What torch's weights-only unpickler says of data that is no pickle torch writes (an unknown opcode:
# a web page, random bytes). Its other refusals (a class it does not allow, a value safe_pickle's
# stand-ins refuse) are of a pickle that holds objects.
_NOT_TORCH_PICKLE = ("Unsupported operand", "String is too long", "persistent_load", "unsupported persistent id")


def _torch_load_checked(file, path: Path, what: str) -> object:
    try:
        # (torch warns of a pickle protocol it did not write: a file that is no checkpoint, which gets
        # one message of ours instead)
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        refused = "Weights only load failed" in text or "Unsupported global" in text
        if refused and not any(words in text for words in _NOT_TORCH_PICKLE):
            raise VibeError(
                f"The {what} '{path}' contains Python objects other than weights, so it was "
                "not loaded (it may not be an official checkpoint). Download the official checkpoint again."
            ) from err
        raise VibeError(
            f"The {what} '{path}' is not a PyTorch checkpoint (a web page saved under its name, or other data), "
            "or it is damaged. Download it again."
        ) from err
    except Exception as err:  # noqa: BLE001 - any parse failure means a damaged or foreign file
        raise VibeError(
            f"The {what} '{path}' is damaged or not a PyTorch checkpoint ({_load_failure_words(err)}). "
            "Download it again."
        ) from err


# torch's words for tensors that do not fit the bytes stored for them, in a user's words: a legacy file's
# storage that records another size than it holds (torch's format string comes unfilled, "expected %ld
# got %ld" with the numbers run together after it), or a tensor that reaches past its storage.
_STORAGE_FAILURES = {
    "storage has wrong byte size": "a tensor storage whose recorded size is not the number of bytes it holds",
    "Trying to resize storage that is not resizable": "a tensor that reaches past the bytes stored for it",
}


def _load_failure_words(err: BaseException) -> str:
    text = str(err)
    for torch_words, words in _STORAGE_FAILURES.items():
        if torch_words in text:
            return words
    return failure_words(err)


def _strip_prefixes(state: dict) -> dict:
    """Drop ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes, in whichever
    order the wrappers were nested (DDP of a compiled model, or a compiled DDP model)."""
    wrappers = ("module.", "_orig_mod.")
    out = {}
    for k, v in state.items():
        while k.startswith(wrappers):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def _load_container(path, what: str, key: str, looks_like: Callable[[dict], str | None], shapes: dict) -> dict:
    """torch_load + check that the dict has ``key``, a dict of str -> tensor (the weights, their wrapper
    prefixes stripped), each a plain tensor of the bytes the file holds, of the shape ``shapes`` gives
    its name (a name missing on either side is left to the caller's key check), with values of its kind; else
    ``looks_like(the dict)`` names the other kind of checkpoint it is (None: none known). The values are
    checked last, as checking them converts each tensor."""
    path = Path(path)
    ckpt = torch_load(path, what)
    if not isinstance(ckpt, dict) or key not in ckpt:
        found = sorted(shown_value(k, 40) for k in ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        hint = looks_like(ckpt) if isinstance(ckpt, dict) else None
        raise VibeError(f"'{path}' is not the {what}: it has no '{key}' (found {found}).{f' {hint}' if hint else ''}")
    label = f"'{path}': its '{key}'"
    _check_state_dict(ckpt[key], label, what)
    problem = stored_tensors_problem(ckpt[key], path.stat().st_size)
    if problem:
        raise VibeError(
            f"{label} holds {problem}, which torch.save never writes for a model's weights: a damaged or "
            "altered file. Download it again."
        )
    ckpt[key] = _strip_prefixes(ckpt[key])
    _check_known_shapes(ckpt[key], shapes, label, what)
    _check_weight_values(ckpt[key], label, what)
    return ckpt


def stored_tensors_problem(state: dict, file_size: int) -> str | None:
    """What in ``state`` (name -> tensor, loaded from a file of ``file_size`` bytes) is no tensor of
    weights as torch.save writes one, in the words that follow "holds" (None when nothing): a tensor
    that is not a plain one of values on the CPU (sparse, nested, or on the meta device: torch fails to
    check their values with errors of its own), tensors that claim more bytes in all than the file holds,
    or one with more elements than its storage holds values (a view that repeats one stored value over
    a huge shape: converting or checking it allocates the whole shape). (A view that reaches past its
    storage fails in torch.load.)"""
    for name, tensor in state.items():
        kind = None
        if tensor.is_nested:
            kind = "a nested tensor"
        elif tensor.layout != torch.strided:
            kind = f"a {str(tensor.layout).removeprefix('torch.')} tensor"
        elif tensor.device.type != "cpu":
            kind = f"a tensor on the '{tensor.device.type}' device (shapes without values)"
        if kind:
            return f"{kind} under '{str(name)[:80]}'"
    claimed = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    if claimed > file_size:
        return f"tensors of {claimed} bytes in all, more than the file's {file_size}"
    for name, tensor in state.items():
        stored = tensor.untyped_storage().nbytes()
        if tensor.numel() * tensor.element_size() > stored:
            return (
                f"under '{str(name)[:80]}' a tensor of shape {tuple(tensor.shape)} over only {stored} stored bytes "
                "(values repeated)"
            )
    return None


def _check_known_shapes(state: dict, shapes: dict, label: str, what: str) -> None:
    """VibeError when a tensor under a name of ``shapes`` (name -> shape) has another shape."""
    known = {name: shape for name, shape in shapes.items() if name in state}
    problem = state_dict_mismatch(known, {name: state[name] for name in known})
    if problem:
        raise VibeError(f"{label} has {problem}: it is not the {what} (a damaged or altered file). Download it again.")


# The official state dicts' only integer tensors (by the last part of their names): batch norm's step
# counters and the SMPL copy's indices. Every other tensor is a weight, real and floating-point.
INTEGER_TENSORS = ("num_batches_tracked", "faces_tensor", "parents", "extra_joints_idxs")


def _is_weight_type(name: str, tensor: torch.Tensor) -> bool:
    if tensor.dtype.is_complex:
        return False
    return tensor.is_floating_point() or name.rsplit(".", 1)[-1] in INTEGER_TENSORS


def _check_weight_values(state: dict, label: str, what: str) -> None:
    """Every tensor of a state dict of its kind (real floating-point weights, integers only where
    :data:`INTEGER_TENSORS` says), and every weight finite as float32, the model's type (float64 weights
    beyond its range would become infinite when loaded); else one VibeError. A NaN weight makes every
    prediction NaN, which only fails much later, e.g. in the metrics' Procrustes fit."""
    mistyped = [(k, v.dtype) for k, v in state.items() if not _is_weight_type(k, v)]
    if mistyped:
        others = f" and {len(mistyped) - 1} other tensors" if len(mistyped) > 1 else ""
        name, dtype = mistyped[0]
        raise VibeError(
            f"{label} holds {str(dtype).removeprefix('torch.')} values in '{str(name)[:80]}'{others}, where the "
            f"{what} holds real floating-point weights: a damaged or altered file. Download it again."
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v.float()).all())]
    if bad:
        others = f" and {len(bad) - 1} other tensors" if len(bad) > 1 else ""
        raise VibeError(
            f"{label} holds NaN or infinite weights in '{str(bad[0])[:80]}'{others} (infinite in float32, the "
            f"model's type, beyond ±3.4e38): the {what} is damaged or comes from a training run that diverged. "
            "Download it again, or use an earlier checkpoint of the run."
        )


def _check_state_dict(state, label: str, what: str) -> None:
    """A state dict as torch.save writes one: a dict of str -> torch.Tensor; else one VibeError."""
    if not isinstance(state, dict):
        problem = f"is a {type(state).__name__}, not a dict of named tensors"
    else:
        bad_keys = [k for k in state if not isinstance(k, str)][:1]
        bad_value = next(((k, v) for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
        if bad_keys:
            problem = f"has the key {shown_value(bad_keys[0])}, which is not a name"
        elif bad_value is not None:
            problem = (
                f"holds a value of type {type(bad_value[1]).__name__} under '{str(bad_value[0])[:80]}', not a tensor"
            )
        else:
            return
    raise VibeError(f"{label} {problem}: it is not the {what} (a damaged or altered file). Download it again.")


def _performance(value, path, what: str) -> np.float64 | None:
    """``performance`` as the official container stores it (a numpy float64; NaN when unknown, as this
    code and the original write it without validation) -> a finite np.float64 or None; else VibeError."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        number = float(value)
        if math.isnan(number):
            return None
        if math.isfinite(number):
            return np.float64(number)
    raise VibeError(
        f"'{path}': its 'performance' is {shown_value(value)}, not one finite number (the validation error the "
        f"{what} was saved with): a damaged or altered file. Download it again."
    )


def _not_vibe(ckpt: dict) -> str | None:
    """What a checkpoint without 'gen_state_dict' looks like: MPoser's and SPIN's both hold 'model'."""
    if "model" not in ckpt:
        return None
    weights = ckpt["model"]
    if isinstance(weights, dict) and any(isinstance(k, str) and k.startswith("encoder_gru.") for k in weights):
        return (
            "It looks like an MPoser checkpoint (its 'model' has encoder_gru weights), the motion prior that "
            "'vibe-mocap train mposer' writes: 'vibe-mocap train vibe' takes it as --mposer_checkpoint (with "
            "--motion_prior=mposer). A VIBE checkpoint is vibe_model_wo_3dpw.pth.tar or a run's checkpoint.pth.tar."
        )
    return "It looks like the SPIN checkpoint (it has 'model'); the VIBE checkpoint is vibe_model_wo_3dpw.pth.tar."


def load_vibe_checkpoint(path: str | Path) -> dict:
    """The VIBE container as a dict: ``gen_state_dict`` a dict of str -> tensor, ``performance`` a
    finite np.float64 or None (absent, or NaN as written without validation)."""
    ckpt = _load_container(path, "VIBE checkpoint", "gen_state_dict", _not_vibe, GENERATOR_SHAPES)
    ckpt["performance"] = _performance(ckpt.get("performance"), path, "VIBE checkpoint")
    return ckpt


def load_spin_checkpoint(path: str | Path) -> dict:
    """SPIN's ``model`` state dict (backbone + its unused regression head), a dict of str -> tensor."""
    ckpt = _load_container(
        path,
        "SPIN checkpoint",
        "model",
        lambda ckpt: (
            "It looks like a VIBE checkpoint (it has 'gen_state_dict'); the SPIN checkpoint is "
            "spin_model_checkpoint.pth.tar."
            if "gen_state_dict" in ckpt
            else None
        ),
        SPIN_SHAPES,
    )
    return ckpt["model"]


def state_dict_mismatch(expected_shapes: dict, state: dict) -> str | None:
    """How the weights ``state`` (name -> tensor) differ from ``expected_shapes`` (name -> shape): how
    many keys are missing, unexpected or of the wrong shape, with examples; None when they fit."""
    shape = lambda value: tuple(getattr(value, "shape", ()))
    missing = [k for k in expected_shapes if k not in state]
    unexpected = [k for k in state if k not in expected_shapes]
    wrong = [
        f"{k} {shape(state[k])} != {tuple(s)}"
        for k, s in expected_shapes.items()
        if k in state and shape(state[k]) != tuple(s)
    ]
    parts = [
        f"{len(keys)} {kind} (e.g. {', '.join(map(str, keys[:3]))})"
        for kind, keys in (("missing", missing), ("unexpected", unexpected), ("with the wrong shape", wrong))
        if keys
    ]
    return f"{', '.join(parts)} keys" if parts else None


def _load_exact(module: torch.nn.Module, state: dict, source, what: str) -> None:
    """Load ``state`` into ``module`` requiring the same keys and shapes, else one clear VibeError."""
    problem = state_dict_mismatch({k: v.shape for k, v in module.state_dict().items()}, state)
    if problem:
        raise VibeError(f"'{source}' does not fit the {what}: {problem}. Is it the right file?")
    module.load_state_dict(state, strict=True)


def check_spin_head(spin_state: dict, source: str | Path) -> None:
    """VibeError unless SPIN ``model`` holds the 13 regressor-head keys with the regressor's shapes
    (training loads them into the regressor, where a wrong shape would fail mid-load)."""
    head = {k: spin_state[k] for k in SPIN_HEAD_KEYS if k in spin_state}
    problem = state_dict_mismatch(SPIN_HEAD_SHAPES, head)
    if problem:
        raise VibeError(f"'{source}' is not SPIN's HMR checkpoint: its regressor head has {problem}.")


def load_spin_into(model: torch.nn.Module, spin_state: dict, source: str | Path) -> None:
    """Backbone <- SPIN ``model`` (every key accounted for: ResNet-50 + the 13 head keys)."""
    check_spin_head(spin_state, source)
    backbone = {k: v for k, v in spin_state.items() if k not in SPIN_HEAD_KEYS}
    _load_exact(model.backbone, backbone, source, "ResNet-50 backbone")


def load_vibe_into(model: torch.nn.Module, gen_state: dict, source: str | Path) -> None:
    """Encoder and regressor (with its SMPL copy) <- VIBE ``gen_state_dict``."""
    for key, shape in SMPL_BATCH_PARAMS.items():
        if key in gen_state and tuple(gen_state[key].shape) != shape:
            raise VibeError(f"'{source}': {key} has shape {tuple(gen_state[key].shape)}, expected {shape}.")
    check_smpl_indices(gen_state, source)
    state = {k: v for k, v in gen_state.items() if k not in SMPL_BATCH_PARAMS}
    generator = torch.nn.ModuleDict({"encoder": model.encoder, "regressor": model.regressor})
    _load_exact(generator, state, source, "VIBE generator (encoder + regressor)")


def generator_state_dict(model: torch.nn.Module) -> dict:
    """The official 35-entry ``gen_state_dict`` of a model with ``.encoder`` and ``.regressor``."""
    model = getattr(model, "module", model)  # DDP
    model = getattr(model, "_orig_mod", model)  # torch.compile
    state = {}
    for name in ("encoder", "regressor"):
        for k, v in getattr(model, name).state_dict().items():
            state[f"{name}.{k}"] = v.detach().cpu().clone()
    for key, shape in SMPL_BATCH_PARAMS.items():
        state[key] = torch.zeros(shape)
    return state


def save_vibe_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    epoch: int = 0,
    performance: float | None = None,
    gen_optimizer: dict | None = None,
    disc_motion_state_dict: dict | None = None,
    disc_motion_optimizer: dict | None = None,
    extra: dict | None = None,
    legacy_format: bool = True,
) -> None:
    """Write the official VIBE container (legacy serialisation by default, readable by the original
    code's PyTorch 1.4). ``extra`` adds keys (e.g. a training config) beside the official ones."""
    ckpt = {
        "epoch": int(epoch),
        "gen_state_dict": generator_state_dict(model),
        "performance": np.float64(performance if performance is not None else np.nan),  # as the original
        "gen_optimizer": gen_optimizer,
        "disc_motion_state_dict": disc_motion_state_dict,
        "disc_motion_optimizer": disc_motion_optimizer,
    }
    ckpt.update(extra or {})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy_format)


def save_spin_checkpoint(
    path: str | Path, backbone_state: dict, head_state: dict, *, legacy_format: bool = True
) -> None:
    """Write SPIN's container (``model`` = backbone + head keys; the saver's other fields)."""
    missing = [k for k in SPIN_HEAD_KEYS if k not in head_state]
    if missing:
        raise ValueError(f"head_state lacks {missing}")
    model_state = {
        **{k: v.detach().cpu().clone() for k, v in backbone_state.items()},
        **{k: head_state[k].detach().cpu().clone() for k in SPIN_HEAD_KEYS},
    }
    ckpt = {
        "model": model_state,
        "optimizer": None,
        "epoch": 0,
        "batch_idx": 0,
        "batch_size": 64,
        "dataset_perm": None,
        "total_step_count": 0,
    }
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy_format)


# The official gen_state_dict, key -> shape (``spec``: vibe_state_dict_keys.md).
GENERATOR_SHAPES = {
    "encoder.gru.weight_ih_l0": (3072, 2048),
    "encoder.gru.weight_hh_l0": (3072, 1024),
    "encoder.gru.bias_ih_l0": (3072,),
    "encoder.gru.bias_hh_l0": (3072,),
    "encoder.gru.weight_ih_l1": (3072, 1024),
    "encoder.gru.weight_hh_l1": (3072, 1024),
    "encoder.gru.bias_ih_l1": (3072,),
    "encoder.gru.bias_hh_l1": (3072,),
    "encoder.linear.weight": (2048, 1024),
    "encoder.linear.bias": (2048,),
    "regressor.init_pose": (1, 144),
    "regressor.init_shape": (1, 10),
    "regressor.init_cam": (1, 3),
    "regressor.fc1.weight": (1024, 2205),
    "regressor.fc1.bias": (1024,),
    "regressor.fc2.weight": (1024, 1024),
    "regressor.fc2.bias": (1024,),
    "regressor.decpose.weight": (144, 1024),
    "regressor.decpose.bias": (144,),
    "regressor.decshape.weight": (10, 1024),
    "regressor.decshape.bias": (10,),
    "regressor.deccam.weight": (3, 1024),
    "regressor.deccam.bias": (3,),
    **SMPL_BATCH_PARAMS,
    "regressor.smpl.shapedirs": (6890, 3, 10),
    "regressor.smpl.faces_tensor": (13776, 3),
    "regressor.smpl.v_template": (6890, 3),
    "regressor.smpl.J_regressor": (24, 6890),
    "regressor.smpl.posedirs": (207, 20670),
    "regressor.smpl.parents": (24,),
    "regressor.smpl.lbs_weights": (6890, 24),
    "regressor.smpl.J_regressor_extra": (9, 6890),
    "regressor.smpl.vertex_joint_selector.extra_joints_idxs": (21,),
}

# SPIN's regressor head has the VIBE regressor's own key names and shapes.
SPIN_HEAD_SHAPES = {k: GENERATOR_SHAPES[f"regressor.{k}"] for k in SPIN_HEAD_KEYS}


def _batch_norm_shapes(prefix: str, channels: int) -> dict:
    return {
        **{f"{prefix}.{name}": (channels,) for name in ("weight", "bias", "running_mean", "running_var")},
        f"{prefix}.num_batches_tracked": (),
    }


def _resnet50_shapes() -> dict:
    """SPIN's backbone, name -> shape: ResNet-50 (bottleneck blocks 3, 4, 6, 3, four times wider out
    than in; the first of each layer with a projection shortcut), without its classifier."""
    shapes = {"conv1.weight": (64, 3, 7, 7), **_batch_norm_shapes("bn1", 64)}
    inputs = 64
    for layer, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for block in range(blocks):
            name = f"layer{layer}.{block}"
            shapes |= {
                f"{name}.conv1.weight": (width, inputs, 1, 1),
                **_batch_norm_shapes(f"{name}.bn1", width),
                f"{name}.conv2.weight": (width, width, 3, 3),
                **_batch_norm_shapes(f"{name}.bn2", width),
                f"{name}.conv3.weight": (4 * width, width, 1, 1),
                **_batch_norm_shapes(f"{name}.bn3", 4 * width),
            }
            if block == 0:
                shapes |= {
                    f"{name}.downsample.0.weight": (4 * width, inputs, 1, 1),
                    **_batch_norm_shapes(f"{name}.downsample.1", 4 * width),
                }
            inputs = 4 * width
    return shapes


# SPIN's ``model``, name -> shape: the ResNet-50 backbone and the regressor head.
SPIN_SHAPES = {**_resnet50_shapes(), **SPIN_HEAD_SHAPES}


def check_generator_keys(gen_state: dict, source: str | Path) -> None:
    """Raise a VibeError unless ``gen_state`` has exactly the official keys and shapes, and its SMPL
    copy's indices are in range (:func:`check_smpl_indices`)."""
    problem = state_dict_mismatch(GENERATOR_SHAPES, gen_state)
    if problem:
        raise VibeError(f"'{source}' is not an official VIBE generator: {problem}.")
    check_smpl_indices(gen_state, source)


SMPL_INDEX_KEYS = ("regressor.smpl.faces_tensor", "regressor.smpl.vertex_joint_selector.extra_joints_idxs")


def check_smpl_indices(gen_state: dict, source: str | Path) -> None:
    """VibeError unless the generator's own SMPL copy (it stands in for SMPL_NEUTRAL.pkl) indexes within
    itself: SMPL's joint parents, and faces and extra-joint vertices below its vertex count. Out of
    range, they would fail only deep in a run, and on a GPU with a device assert that ends every later
    job there. Keys that are missing are left to the key check."""
    template, parents = gen_state.get("regressor.smpl.v_template"), gen_state.get("regressor.smpl.parents")
    damaged = f"'{source}' is damaged: the model's SMPL copy"
    if parents is not None and not (
        not parents.is_floating_point() and torch.equal(parents.cpu().long(), torch.as_tensor(PARENTS).long())
    ):
        raise VibeError(f"{damaged} has joint parents that are not SMPL's. Download it again.")
    vertices = int(template.shape[0]) if template is not None and template.ndim == 2 else 0
    for key in SMPL_INDEX_KEYS:
        index = gen_state.get(key)
        if index is None:
            continue
        if index.is_floating_point() or index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= vertices:
            raise VibeError(
                f"{damaged}'s {key.rsplit('.', 1)[-1]} are not vertex indices below {vertices}. Download it again."
            )
