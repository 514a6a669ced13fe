"""SSD detectors: SSDLite-MobileNetV2 definition and training, OD-API-layout export, int8 conversion, mAP.

Entry point: `convert_detector` (TensorFlow is imported only when it runs). Modules:
``anchors`` (anchor grid, box coder, matching; numpy), ``ssdlite`` (model, loss, training; tf_keras),
``export`` (SavedModel with the fused ``TFLite_Detection_PostProcess`` function), ``savedmodel`` (reading a
user's detector SavedModel), ``tflite`` (conversion, output order, checks, host-side inference),
``pipeline`` (calibration, conversion, evaluation, atomic output), ``metrics`` (mAP; numpy), ``evalset``
(the ``--eval`` format), ``scenes`` and ``demo`` (generated shape scenes and a cached trained detector).
"""

from edgekit.convert.detect.pipeline import DEFAULT_NUM_CALIB, DetectReport, convert_detector

__all__ = ["DEFAULT_NUM_CALIB", "DetectReport", "convert_detector"]
