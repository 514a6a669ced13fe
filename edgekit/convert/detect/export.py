"""Export an SSDLite detector as a SavedModel in the layout of the TF OD API's `export_tflite_graph_tf2`."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.convert.detect._tf import import_tf
from edgekit.convert.detect.anchors import BOX_CODER_SCALES, FloatArray
from edgekit.convert.detect.ssdlite import SSDLite

logger = logging.getLogger(__name__)

POSTPROCESS_OP = "TFLite_Detection_PostProcess"


@dataclass(frozen=True)
class PostprocessParams:
    """Attributes of the fused ``TFLite_Detection_PostProcess`` op.

    Attributes:
        max_detections: boxes the op returns at most.
        max_classes_per_detection: classes reported per box (fast NMS).
        detections_per_class: boxes kept per class (regular NMS only).
        use_regular_nms: per-class NMS (slower) instead of the class-agnostic fast NMS.
        nms_score_threshold: scores below are dropped before NMS.
        nms_iou_threshold: overlap above which NMS suppresses a box.
        num_classes: object classes, background excluded.
        scales: y, x, h, w scales of the box coder.
    """

    num_classes: int
    max_detections: int = 20
    max_classes_per_detection: int = 1
    detections_per_class: int = 100
    use_regular_nms: bool = False
    nms_score_threshold: float = 1e-8
    nms_iou_threshold: float = 0.6
    scales: tuple[float, float, float, float] = BOX_CODER_SCALES

    def implements_signature(self) -> str:
        """The ``experimental_implements`` text (a NameAttrList) the TFLite converter fuses into the op."""
        y, x, h, w = self.scales
        attrs = [
            ("max_detections", f"i: {self.max_detections}"),
            ("max_classes_per_detection", f"i: {self.max_classes_per_detection}"),
            ("detections_per_class", f"i: {self.detections_per_class}"),
            ("use_regular_nms", f"b: {str(self.use_regular_nms).lower()}"),
            ("nms_score_threshold", f"f: {self.nms_score_threshold!r}"),
            ("nms_iou_threshold", f"f: {self.nms_iou_threshold!r}"),
            ("num_classes", f"i: {self.num_classes}"),
            ("y_scale", f"f: {y!r}"),
            ("x_scale", f"f: {x!r}"),
            ("h_scale", f"f: {h!r}"),
            ("w_scale", f"f: {w!r}"),
        ]
        return " ".join([f'name: "{POSTPROCESS_OP}"'] + [f'attr {{ key: "{k}" value {{ {v} }} }}' for k, v in attrs])


def export_detector(det: SSDLite, out_dir: str | Path, params: PostprocessParams | None = None) -> Path:
    """Write ``det`` as a SavedModel that TFLite converts into a model ending in the fused postprocess op.

    The ``serving_default`` signature takes ``input``: float32 ``[1, S, S, 3]`` RGB in [-1, 1] (pixels / 127.5
    - 1, the MobileNet convention of the OD API) and returns the op's four outputs. In TensorFlow the op is a
    placeholder function that returns zeros; only the TFLite model computes detections.

    Args:
        det: the detector.
        out_dir: SavedModel directory to create (replaced atomically if it exists).
        params: postprocess attributes; defaults use ``det.num_classes``.

    Returns:
        The SavedModel directory.
    """
    tf, _ = import_tf()
    params = params or PostprocessParams(num_classes=det.num_classes)
    if params.num_classes != det.num_classes:
        raise ValueError(f"postprocess num_classes {params.num_classes} != detector's {det.num_classes}")
    module = _make_module(tf, det.model, det.anchors, params, det.input_size)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve_fn})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %s (%d anchors, %d classes)", out, det.anchors.shape[0], det.num_classes)
    return out


def _make_module(tf: Any, model: Any, anchors: FloatArray, params: PostprocessParams, size: int) -> Any:
    anchor_values = np.asarray(anchors, dtype=np.float32)

    @tf.function(experimental_implements=params.implements_signature())
    def postprocess(box_encodings: Any, class_predictions: Any, anchors_t: Any) -> Any:
        del box_encodings, class_predictions, anchors_t  # replaced by the TFLite op
        boxes = tf.constant(0.0, dtype=tf.float32, name="boxes")
        classes = tf.constant(0.0, dtype=tf.float32, name="classes")
        scores = tf.constant(0.0, dtype=tf.float32, name="scores")
        count = tf.constant(0.0, dtype=tf.float32, name="num_detections")
        return boxes, classes, scores, count

    module = tf.Module()
    module.model = model

    def serve(image: Any) -> Any:
        box_encodings, logits = module.model(image, training=False)
        class_predictions = tf.nn.softmax(logits, axis=-1)
        anchors_t = tf.constant(anchor_values, name="anchors")
        return postprocess(box_encodings, class_predictions, anchors_t)

    module.serve_fn = tf.function(
        serve, input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="input")]
    ).get_concrete_function()
    return module
