"""Motion gating: a cheap low-resolution frame difference that lets the pipeline skip inference on still scenes."""

from edgekit.device.motion.gate import Busy, MotionDetector, MotionGate, MotionSettings

__all__ = ["Busy", "MotionDetector", "MotionGate", "MotionSettings"]
