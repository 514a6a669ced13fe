"""Read PyTorch checkpoints (zip and legacy serialization) into numpy arrays without PyTorch."""

from __future__ import annotations

import collections
import logging
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgekit.errors import ModelError

logger = logging.getLogger(__name__)

# torch.serialization writes these two pickles first in the pre-1.6 ("legacy") format.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Keys under which training scripts commonly nest the model's state dict.
_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class named in the pickle."""

    name: str
    dtype: np.dtype[Any]
    bfloat16: bool = False


def _storage_types() -> dict[str, _StorageType]:
    plain = {
        "FloatStorage": np.float32,
        "DoubleStorage": np.float64,
        "HalfStorage": np.float16,
        "LongStorage": np.int64,
        "IntStorage": np.int32,
        "ShortStorage": np.int16,
        "CharStorage": np.int8,
        "ByteStorage": np.uint8,
        "BoolStorage": np.bool_,
    }
    types = {name: _StorageType(name, np.dtype(dt)) for name, dt in plain.items()}
    # numpy has no bfloat16: keep the raw 16 bits and widen to float32 when the tensor is built.
    types["BFloat16Storage"] = _StorageType("BFloat16Storage", np.dtype(np.uint16), bfloat16=True)
    return types


_STORAGE_TYPES = _storage_types()


class _Storage:
    """One storage of a checkpoint; ``data`` is filled once its bytes have been read."""

    def __init__(self, stype: _StorageType, numel: int) -> None:
        self.stype = stype
        self.numel = numel
        self.data: np.ndarray | None = None


@dataclass(frozen=True)
class _StorageView:
    """A legacy-format storage that is a slice of another storage."""

    root: _Storage
    offset: int
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as pickled (storage + offset + size + stride), materialised after the storages are read."""

    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _Namespace:
    """Inert stand-in for ``argparse.Namespace`` (torchvision's reference training script saves its args)."""

    def __setstate__(self, state: object) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _TensorRef:
    if not isinstance(storage, (_Storage, _StorageView)):
        raise pickle.UnpicklingError("tensor without a storage")
    if not (
        isinstance(storage_offset, int)
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and len(size) == len(stride)
        and all(isinstance(v, int) and v >= 0 for v in (*size, *stride))
    ):
        raise pickle.UnpicklingError("malformed tensor geometry")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage: object, storage_offset: object, size: object, stride: object) -> _TensorRef:
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data: object, requires_grad: object = False, backward_hooks: object = None) -> object:
    return data


def _rebuild_parameter_with_state(data: object, requires_grad: object, backward_hooks: object, state: object) -> object:
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("argparse", "Namespace"): _Namespace,
    **{("torch", name): stype for name, stype in _STORAGE_TYPES.items()},
}


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a tensor checkpoint needs and never imports anything."""

    def __init__(self, file: IO[bytes], persistent_load: Callable[[object], object] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(module, name) from None

    def persistent_load(self, pid: object) -> object:
        if self._persistent is None:
            raise pickle.UnpicklingError("unexpected persistent id")
        return self._persistent(pid)


def _refusal(path: Path, exc: _RefusedGlobal) -> ModelError:
    return ModelError(
        f"{path}: refusing to unpickle '{exc.qualname}': edgekit only reads tensors, dicts and numbers "
        "from a checkpoint and never runs code stored in it; save a plain state dict with "
        "torch.save(model.state_dict(), PATH)"
    )


def _check_storage_pid(pid: object) -> tuple[_StorageType, str, int]:
    """Validates the common head of a ('storage', type, key, location, numel, ...) persistent id."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        kind = pid[0] if isinstance(pid, tuple) and pid else pid
        if kind == "module":
            raise pickle.UnpicklingError("the checkpoint holds a pickled nn.Module source, not a state dict")
        raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
    stype, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(stype, _StorageType) or not isinstance(numel, int) or numel < 0:
        raise pickle.UnpicklingError("malformed storage record")
    return stype, str(key), numel


def _storage_array(raw: bytes, stype: _StorageType, numel: int, big_endian: bool) -> np.ndarray:
    dtype = stype.dtype.newbyteorder(">") if big_endian and stype.dtype.itemsize > 1 else stype.dtype
    if len(raw) < numel * dtype.itemsize:
        raise ModelError(f"storage holds {len(raw)} bytes, {numel * dtype.itemsize} expected")
    return np.frombuffer(raw, dtype=dtype, count=numel).astype(stype.dtype.newbyteorder("="), copy=False)


def _load_zip(path: Path, archive: zipfile.ZipFile) -> object:
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pkl:
        if any(n.endswith("/constants.pkl") for n in names):
            raise ModelError(
                f"{path}: is a TorchScript archive, not a checkpoint; save the weights with "
                "torch.save(model.state_dict(), PATH)"
            )
        raise ModelError(f"{path}: zip file without data.pkl: not a PyTorch checkpoint")
    prefix = pkl[0][: -len("data.pkl")]
    big_endian = False
    if f"{prefix}byteorder" in names:
        big_endian = archive.read(f"{prefix}byteorder").strip() == b"big"
    storages: dict[str, _Storage] = {}

    def persistent_load(pid: object) -> object:
        stype, key, numel = _check_storage_pid(pid)
        if key not in storages:
            entry = f"{prefix}data/{key}"
            try:
                raw = archive.read(entry)
            except KeyError:
                raise pickle.UnpicklingError(f"missing storage record {entry}") from None
            storage = _Storage(stype, numel)
            storage.data = _storage_array(raw, stype, numel, big_endian)
            storages[key] = storage
        return storages[key]

    with archive.open(pkl[0]) as fh:
        return _RestrictedUnpickler(fh, persistent_load).load()


def _load_legacy(path: Path, fh: IO[bytes]) -> object:
    if _RestrictedUnpickler(fh).load() != _LEGACY_MAGIC:
        raise ModelError(f"{path}: not a PyTorch checkpoint (no zip archive, no legacy magic number)")
    protocol = _RestrictedUnpickler(fh).load()
    if protocol != _LEGACY_PROTOCOL:
        raise ModelError(f"{path}: unsupported legacy checkpoint protocol {protocol!r}")
    sys_info = _RestrictedUnpickler(fh).load()
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    roots: dict[str, _Storage] = {}
    views: dict[str, _StorageView] = {}

    def persistent_load(pid: object) -> object:
        stype, key, numel = _check_storage_pid(pid)
        view = pid[5] if isinstance(pid, tuple) and len(pid) > 5 else None
        if key not in roots:
            roots[key] = _Storage(stype, numel)
        if view is None:
            return roots[key]
        if not (isinstance(view, tuple) and len(view) == 3):
            raise pickle.UnpicklingError("malformed storage view")
        view_key, offset, view_numel = view
        if view_key not in views:
            views[view_key] = _StorageView(roots[key], int(offset), int(view_numel))
        return views[view_key]

    obj = _RestrictedUnpickler(fh, persistent_load).load()
    keys = _RestrictedUnpickler(fh).load()
    if not isinstance(keys, list):
        raise ModelError(f"{path}: malformed legacy checkpoint (no storage key list)")
    for key in keys:
        storage = roots.get(str(key))
        if storage is None:
            raise ModelError(f"{path}: storage {key!r} listed but never referenced")
        header = fh.read(8)
        if len(header) != 8:
            raise ModelError(f"{path}: file is truncated (storage {key!r} missing)")
        (numel,) = struct.unpack(">q" if big_endian else "<q", header)
        if numel != storage.numel:
            raise ModelError(f"{path}: storage {key!r} has {numel} elements, {storage.numel} announced")
        nbytes = numel * storage.stype.dtype.itemsize
        raw = fh.read(nbytes)
        if len(raw) != nbytes:
            raise ModelError(f"{path}: file is truncated inside storage {key!r}")
        storage.data = _storage_array(raw, storage.stype, numel, big_endian)
    return obj


def _materialise(ref: _TensorRef) -> np.ndarray:
    if isinstance(ref.storage, _StorageView):
        root, base_offset, numel = ref.storage.root, ref.storage.offset, ref.storage.numel
    else:
        root, base_offset, numel = ref.storage, 0, ref.storage.numel
    if root.data is None:
        raise ModelError("a tensor refers to a storage whose bytes are missing from the file")
    data = root.data[base_offset : base_offset + numel]
    if 0 in ref.size:
        out = np.zeros(ref.size, dtype=data.dtype)
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        # as_strided does no bounds checking: a crafted file must not make us read foreign memory.
        if ref.offset < 0 or last >= len(data):
            raise ModelError("a tensor reaches past the end of its storage: the file is corrupt")
        # Stride-0 (expanded) tensors are legal, but not a crafted one that would allocate gigabytes.
        if int(np.prod(ref.size, dtype=np.int64)) > 64 * len(data) + 4096:
            raise ModelError(f"a tensor of shape {ref.size} claims far more elements than its storage holds")
        item = data.itemsize
        out = np.lib.stride_tricks.as_strided(
            data[ref.offset :], shape=ref.size, strides=tuple(s * item for s in ref.stride), writeable=False
        ).copy()
    if root.stype.bfloat16:
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def _resolve(obj: object) -> object:
    """Replaces tensor references by numpy arrays throughout a tree of dicts, lists and tuples."""
    if isinstance(obj, _TensorRef):
        return _materialise(obj)
    if isinstance(obj, dict):
        return {k: _resolve(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    return obj


def _load_tree(path: Path) -> object:
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise ModelError(f"{path}: no such checkpoint file") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read checkpoint ({exc.strerror})") from None
    try:
        with fh:
            if zipfile.is_zipfile(fh):
                fh.seek(0)
                with zipfile.ZipFile(fh) as archive:
                    return _load_zip(path, archive)
            fh.seek(0)
            return _load_legacy(path, fh)
    except _RefusedGlobal as exc:
        raise _refusal(path, exc) from None
    except ModelError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ModelError(f"{path}: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        OverflowError,
        zipfile.BadZipFile,
    ) as exc:
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read checkpoint ({exc})") from None


def load_checkpoint(path: str | Path) -> object:
    """Reads a whole PyTorch checkpoint without importing torch.

    Args:
        path: a file written by ``torch.save`` (zip format, torch >= 1.6, or the legacy format).

    Returns:
        The saved object with every tensor replaced by a numpy array (dicts become plain dicts).

    Raises:
        ModelError: the file is missing, not a checkpoint, corrupt, or pickles anything but data.
    """
    path = Path(path)
    try:
        return _resolve(_load_tree(path))
    except ModelError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ModelError(f"{path}: {exc}") from None


def _find_state_dict(path: Path, obj: object) -> dict[str, _TensorRef]:
    if isinstance(obj, dict) and obj and all(isinstance(v, _TensorRef) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    if isinstance(obj, dict):
        for key in _STATE_DICT_KEYS:
            if key in obj:
                return _find_state_dict(path, obj[key])
        raise ModelError(
            f"{path}: no state dict found (top-level keys: {', '.join(map(str, list(obj)[:8]))}); "
            f"expected tensors, or one of the keys {', '.join(_STATE_DICT_KEYS)}"
        )
    raise ModelError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads the model weights of a PyTorch checkpoint without importing torch.

    Accepts a bare state dict or a training checkpoint that nests it under ``state_dict``, ``model`` or
    ``model_state_dict``; strips the ``module.`` prefix that ``DataParallel`` adds.

    Args:
        path: the ``.pth`` / ``.pt`` file.

    Returns:
        Tensor name -> numpy array, in the checkpoint's order.

    Raises:
        ModelError: unreadable file, no state dict in it, or forbidden pickled objects.
    """
    path = Path(path)
    refs = _find_state_dict(path, _load_tree(path))
    try:
        tensors = {name: _materialise(ref) for name, ref in refs.items()}
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    if all(name.startswith("module.") for name in tensors):
        tensors = {name[len("module.") :]: value for name, value in tensors.items()}
    logger.debug("read %d tensors from %s", len(tensors), path)
    return tensors
