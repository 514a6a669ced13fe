"""What the device runs: a converted model folder (manifest) or a plain .tflite understood from its tensors."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekit.device import runtime
from edgekit.errors import InputError, ModelError
from edgekit.model.labels import LabelFile, align_labels, read_label_file
from edgekit.model.manifest import Downscale, Manifest, Preprocess, find_model
from edgekit.model.preprocess import ColorOrder, Geometry, Preparer
from edgekit.model.task import guess_task
from edgekit.plan import DeviceSpec, parse_device

logger = logging.getLogger(__name__)

TaskName = Literal["classify", "detect"]
DETECT_ROLES = ("boxes", "classes", "scores", "count")
# A plain .tflite says nothing about resizing. It was trained and calibrated elsewhere, with a bilinear resize
# in the models that users of these devices start from: TF-slim's eval preprocessing of the ImageNet MobileNets
# (Coral's classifiers) is `tf.image.resize_bilinear`, the TF Object Detection API's `fixed_shape_resizer` of its
# 300 px SSDs is bilinear; and the loops those users copy stretch the whole frame the same way:
# `cv2.resize(frame_rgb, (width, height))`, OpenCV's default INTER_LINEAR, in EdjeElectronics'
# TFLite_detection_*.py and TF Lite's OpenCV-fed examples (pycoral's classify_image.py uses Pillow's antialiased
# resize instead). An exact area average (INTER_AREA: 2.7-4 ms for a 720x528 frame here, as much as a small
# model's whole invoke) is what edgekit's converter calibrates with, a conversion-time choice its manifest records,
# not something a model made elsewhere needs. So a plain .tflite gets the ``bilinear`` stretch (0.4-0.5 ms);
# ``run.downscale`` picks another. It matters: on Megamind.avi, Coral's MobileNetV2 gives the same top-1 for 160 of
# the 270 frames with the two (a cartoon, mostly low scores).
PLAIN_PREPROCESS = Preprocess(policy="stretch", downscale="bilinear")


@dataclass(frozen=True)
class OutputTensor:
    """One output the task reads: its interpreter index and quantization."""

    role: str
    index: int
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    dtype: str  # numpy name: uint8, int8, float32...


class DeviceModel:
    """An interpreter ready to take frames: input feeding, output roles, labels. Built once per run.

    Args:
        interpreter: an allocated interpreter (`edgekit.device.runtime.make_interpreter`).
        path: the .tflite it runs.
        task: ``classify``, ``detect`` or ``auto`` (from the manifest or the output tensors).
        manifest: the manifest, when the model came from `edgekit convert`.
        labels: id -> label, already in the model's numbering; or a parsed label file, aligned here once the
            task is known (`edgekit.model.labels.align_labels`).
        labels_file: where the labels came from, for error messages.
        downscale: how frames are shrunk, instead of the manifest's (or `PLAIN_PREPROCESS`'s); None keeps it.
    """

    def __init__(
        self,
        interpreter: Any,
        path: Path,
        task: str = "auto",
        manifest: Manifest | None = None,
        labels: Mapping[int, str] | LabelFile | None = None,
        labels_file: str = "labels",
        downscale: Downscale | None = None,
    ) -> None:
        self.interpreter = interpreter
        self.path = path
        self.manifest = manifest
        self.name = _model_name(path, manifest)
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{path}: has {len(inputs)} inputs; edgekit runs models with one image input")
        detail = inputs[0]
        shape = tuple(int(d) for d in detail["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or min(shape[1:3]) < 8:
            raise ModelError(
                f"{path}: input shape {list(shape)} is not an image; edgekit needs a [1, height, width, 3] input"
            )
        self.input_index = int(detail["index"])
        self.input_size = (shape[1], shape[2])
        self.input_dtype = np.dtype(detail["dtype"]).name
        scale, zero_point = (float(detail["quantization"][0]), int(detail["quantization"][1]))
        self.preprocess = manifest.preprocess if manifest else PLAIN_PREPROCESS
        if downscale is not None and downscale != self.preprocess.downscale:
            if manifest is not None:
                logger.warning(
                    "%s: shrinking frames with %s, not the %s it was calibrated with",
                    path,
                    downscale,
                    self.preprocess.downscale,
                )
            self.preprocess = dataclasses.replace(self.preprocess, downscale=downscale)
        self._prepare = Preparer(self.input_size, self.preprocess)
        self._mode, self._lut = _input_mapping(self.input_dtype, scale, zero_point, manifest, path)
        self._scratch = np.empty((*self.input_size, 3), np.uint8) if self._mode == "lut" else None
        self._input = interpreter.tensor(self.input_index)  # a callable: holding it keeps no buffer reference
        self.outputs = _output_roles(interpreter.get_output_details(), path)
        # For an Edge TPU device: {"device", "active": "edgetpu"|"cpu", "fallback_reason"}; goes into stats.
        self.device_state: dict[str, Any] = {}
        self.task: TaskName = _choose_task(task, manifest, self.outputs, path)
        self._labels_file = labels_file
        self._aligned = isinstance(labels, LabelFile)  # align_labels has checked it against the model
        if isinstance(labels, LabelFile):
            self._labels_file = labels.path
            self.labels = align_labels(labels, self.task, self.num_classes, self.path.name)
        else:
            self.labels = dict(labels or {})
        self._check_labels()

    # --- per frame -----------------------------------------------------------------------------------------

    def set_input(self, image: np.ndarray, color: ColorOrder) -> Geometry:
        """Preprocess a frame straight into the input tensor's buffer.

        Args:
            image: (H, W, 3) uint8 frame.
            color: its channel order.

        Returns:
            The geometry, for mapping boxes back to the frame.
        """
        # The view must not outlive this call: the interpreter refuses to invoke while numpy holds its memory.
        view = self._input()[0]
        if self._mode == "direct":
            geometry = self._prepare(image, color, view)
        elif self._mode == "xor":
            raw = view.view(np.uint8)
            geometry = self._prepare(image, color, raw)
            np.bitwise_xor(raw, 0x80, out=raw)  # uint8 p -> int8 p - 128, in place
        else:
            import cv2

            assert self._scratch is not None and self._lut is not None
            geometry = self._prepare(image, color, self._scratch)
            cv2.LUT(self._scratch, self._lut, dst=view)
        del view
        return geometry

    @property
    def preparer(self) -> Preparer:
        """The crop/resize/reorder this model's frames go through (`edgekit bench --profile` times its steps)."""
        return self._prepare

    def prepare(self, image: np.ndarray, color: ColorOrder, out: np.ndarray) -> Geometry:
        """Crop/resize/reorder a frame into ``out`` ((h, w, 3) uint8), on any thread; see `load_prepared`."""
        return self._prepare(image, color, out)

    def load_prepared(self, image: np.ndarray) -> None:
        """Put an image made by `prepare` into the input tensor (a 150 KB copy, or the int8/LUT mapping)."""
        view = self._input()[0]
        if self._mode == "direct":
            np.copyto(view, image)
        elif self._mode == "xor":
            np.bitwise_xor(image, 0x80, out=view.view(np.uint8))
        else:
            import cv2

            assert self._lut is not None
            cv2.LUT(image, self._lut, dst=view)
        del view

    def invoke(self) -> None:
        """Run the model on the current input."""
        self.interpreter.invoke()

    def output(self, role: str) -> np.ndarray:
        """A copy of one output tensor, raw (quantized) values."""
        return self.interpreter.get_tensor(self.outputs[role].index)

    def label(self, class_id: int) -> str:
        """The label of a class id, or the id as text when there is none."""
        return self.labels.get(class_id, str(class_id))

    # --- checks --------------------------------------------------------------------------------------------

    @functools.cached_property
    def num_classes(self) -> int:
        """Output size of a classifier; the manifest's class count (or 0) for a detector."""
        if self.task == "classify":
            return int(np.prod(self.outputs["scores"].shape))
        if self.manifest is not None and self.manifest.num_classes:
            return self.manifest.num_classes
        return _postprocess_classes(self.path)

    def _check_labels(self) -> None:
        if not self.labels or self._aligned:
            return
        n = self.num_classes
        if self.task == "classify" and len(self.labels) != n:
            raise InputError(
                f"{self._labels_file}: {len(self.labels)} labels but {self.path.name} has {n} outputs; give the "
                "labels file that belongs to this model"
            )
        if n and max(self.labels) >= n:
            raise InputError(f"{self._labels_file}: id {max(self.labels)} but {self.path.name} knows {n} classes")


def _postprocess_classes(path: Path) -> int:
    """``num_classes`` of the model's TFLite_Detection_PostProcess op (its custom options), or 0 when unreadable."""
    from edgekit.model.tflite import DETECTION_POSTPROCESS_OP, flexbuffer_map, read_model

    try:
        ops = [op for op in read_model(path).main.operators if op.name == DETECTION_POSTPROCESS_OP]
        value = flexbuffer_map(ops[0].custom_options).get("num_classes") if ops else None
    except Exception:
        return 0
    return value if isinstance(value, int) and value > 0 else 0


def _model_name(path: Path, manifest: Manifest | None) -> str:
    """What records call the model: the converted model's name, else its folder (for model.tflite) or file."""
    if manifest is not None and manifest.source is not None and manifest.source.name:
        return manifest.source.name
    if manifest is not None or path.stem in ("model", "model_edgetpu"):
        return path.parent.name or path.stem
    return path.stem


def _input_mapping(
    dtype: str, scale: float, zero_point: int, manifest: Manifest | None, path: Path
) -> tuple[str, np.ndarray | None]:
    """How a uint8 pixel p becomes the input value: directly, p - 128 (int8), or a per-channel lookup table."""
    pixels = np.arange(256, dtype=np.float64)
    if manifest is not None and manifest.preprocess.baked and dtype in ("uint8", "int8") and scale:
        # The detector converter bakes the normalisation into the input quantization itself (scale 2/255, zero
        # point 127 for (p - 127.5) / 127.5): the tensor's integers are the raw pixels, up to rounding.
        pre = manifest.preprocess
        normalised = np.stack([(pixels - m) / s for m, s in zip(pre.mean, pre.std, strict=True)], axis=-1)
        identity = pixels if dtype == "uint8" else pixels - 128
        if np.abs(normalised / scale + zero_point - identity[:, None]).max() <= 1.0:
            return ("direct" if dtype == "uint8" else "xor"), None
    if manifest is not None:
        pre = manifest.preprocess
        real = (
            np.stack([pixels] * 3, axis=-1)
            if pre.baked
            else np.stack([(pixels - m) / s for m, s in zip(pre.mean, pre.std, strict=True)], axis=-1)
        )
    elif dtype == "float32":
        logger.warning("%s: float input and no manifest; assuming MobileNet's (p - 127.5) / 127.5", path)
        real = np.stack([(pixels - 127.5) / 127.5] * 3, axis=-1)
    else:
        # A plain quantized model (e.g. Coral's zoo) takes pixels in its integer domain; int8 is uint8 shifted.
        return ("direct" if dtype == "uint8" else "xor"), None
    if dtype == "float32":
        return "lut", real.astype(np.float32).reshape(256, 1, 3)
    if dtype not in ("uint8", "int8"):
        raise ModelError(f"{path}: input type {dtype} is not supported; edgekit feeds uint8, int8 or float32")
    info = np.iinfo(np.dtype(dtype))
    q = np.clip(np.round(real / (scale or 1.0) + zero_point), info.min, info.max).astype(np.int64)
    if dtype == "uint8" and np.array_equal(q, np.stack([pixels] * 3, axis=-1)):
        return "direct", None
    if dtype == "int8" and np.array_equal(q, np.stack([pixels - 128] * 3, axis=-1)):
        return "xor", None
    return "lut", q.astype(np.dtype(dtype)).reshape(256, 1, 3)


def _output_roles(details: list[dict[str, Any]], path: Path) -> dict[str, OutputTensor]:
    def tensor(role: str, d: dict[str, Any]) -> OutputTensor:
        q = d["quantization"]
        return OutputTensor(
            role, int(d["index"]), tuple(int(s) for s in d["shape"]), float(q[0]), int(q[1]), np.dtype(d["dtype"]).name
        )

    guess = guess_task([tuple(int(s) for s in d["shape"]) for d in details])
    guess.require(str(path))  # a segmentation map or keypoints are refused, not read as "classes"
    if guess.task == "classify":
        return {"scores": tensor("scores", details[0])}
    boxes = next(d for d in details if len(d["shape"]) == 3 and int(d["shape"][-1]) == 4)
    count = next(d for d in details if int(np.prod(d["shape"])) == 1)
    rest = [d for d in details if d is not boxes and d is not count]
    # TFLite_Detection_PostProcess names its outputs :0 boxes, :1 classes, :2 scores, :3 count, but the output
    # order varies with the exporter (TF2 exports list them shuffled), so sort by that suffix.
    rest.sort(key=lambda d: _suffix(str(d["name"])))
    return {
        "boxes": tensor("boxes", boxes),
        "classes": tensor("classes", rest[0]),
        "scores": tensor("scores", rest[1]),
        "count": tensor("count", count),
    }


def _suffix(name: str) -> tuple[int, str]:
    match = re.search(r":(\d+)$", name)
    return (int(match.group(1)) if match else 1 << 30, name)


def _choose_task(task: str, manifest: Manifest | None, outputs: Mapping[str, OutputTensor], path: Path) -> TaskName:
    found: TaskName = "detect" if "boxes" in outputs else "classify"
    wanted = task if task != "auto" else (manifest.task if manifest else found)
    if wanted != found:
        raise ModelError(
            f"{path}: task {wanted!r} was asked for, but the model's outputs are a {found} model's; "
            f"use --task {found} (or leave it to the model)"
        )
    return found


def resolve_model(model: str | Path, device: DeviceSpec | str = "cpu") -> tuple[Path, Manifest | None]:
    """Find the .tflite to run and its manifest, if any.

    Args:
        model: a folder written by `edgekit convert`, its ``edgekit.json``, or a .tflite (a manifest beside it,
            in the same folder, is used when it names that file).
        device: the device string; an Edge TPU runs the manifest's compiled model when there is one.

    Returns:
        The .tflite path and the manifest (None for a plain .tflite).
    """
    if not str(model):
        raise InputError("no model given; pass --model DIR_OR_TFLITE or set run.model in the config")
    return find_model(model, prefer_edgetpu=_device(device).is_edgetpu)


def _device(device: DeviceSpec | str) -> DeviceSpec:
    return device if isinstance(device, DeviceSpec) else parse_device(device)


def _import_opencv() -> None:
    """OpenCV, which the model's `Preparer` needs next: imported while the model check's child loads the model
    (20-25 ms of a start-up that would otherwise wait idle)."""
    import cv2  # noqa: F401


def open_model(
    model: str | Path,
    device: DeviceSpec | str = "cpu",
    threads: int = 0,
    task: str = "auto",
    labels: str = "",
    downscale: Downscale | None = None,
    **kwargs: Any,
) -> DeviceModel:
    """Everything from a model argument to a model ready for frames.

    Args:
        model: folder, manifest or .tflite (see `resolve_model`).
        device: device string (`edgekit.device.runtime`).
        threads: CPU threads (0: all cores).
        task: ``auto``, ``classify`` or ``detect``.
        labels: a labels file overriding the manifest's.
        downscale: how frames are shrunk, instead of the model's own (see `DeviceModel`).
        **kwargs: passed to `edgekit.device.runtime.make_interpreter` (``probe``, ``fallback_cpu``).

    Returns:
        The loaded model.
    """
    path, manifest = resolve_model(model, device)
    if manifest is not None and manifest.edgetpu_model and path.name == manifest.edgetpu_model:
        kwargs.setdefault("cpu_model", path.parent / manifest.model)  # the Edge TPU fallback runs the int8 model
    fallback_reasons: list[str] = []
    device = _device(device)
    on_tpu = device.is_edgetpu
    if on_tpu:
        kwargs.setdefault("on_fallback", fallback_reasons.append)
    kwargs.setdefault("meanwhile", _import_opencv)
    interpreter = runtime.make_interpreter(path, device, threads, **kwargs)
    label_file: LabelFile | None = None
    if labels:
        label_file = read_label_file(labels)
    elif manifest is not None and manifest.labels and (path.parent / manifest.labels).is_file():
        label_file = read_label_file(path.parent / manifest.labels)
    loaded = DeviceModel(interpreter, path, task, manifest, label_file, str(labels or "labels"), downscale)
    if on_tpu:
        loaded.device_state = {"device": str(device), "active": "cpu" if fallback_reasons else "edgetpu"}
        if fallback_reasons:
            loaded.device_state["fallback_reason"] = fallback_reasons[0]
    return loaded
