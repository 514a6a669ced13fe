"""Run a model's raw outputs on whichever architecture runs this, with XNNPACK and with LiteRT's reference kernels.

    python kernels_dump.py OUT.npz INPUTS.npz (save|load) MODEL VIDEO COUNT PICTURE...

``save`` (the x86 run) decodes the first COUNT frames of VIDEO and each PICTURE and has `edgekit run`'s model
(`edgekit.device.model.open_model`, default options) fill its input tensor from each: those input bytes go to
INPUTS.npz. ``load`` (the emulated run) reads them, so both architectures invoke on the very same bytes
(the arm64 check shows separately that the preprocessing gives the same bytes). Each run then writes to OUT.npz the
first output tensor per input for: ``xnnpack``, the interpreter `edgekit run` builds, and ``reference``, LiteRT's
reference kernels (``OpResolverType.BUILTIN_REF``: plain C++, the definition of each op's result).
"""

from __future__ import annotations

import platform
import sys
from typing import Any

import cv2
import numpy as np

from edgekit.device.model import open_model
from edgekit.device.runtime import runtime_module


def decoded(video: str, count: int, pictures: list[str]) -> list[np.ndarray]:
    capture = cv2.VideoCapture(video)
    frames = []
    for index in range(count):
        ok, frame = capture.read()
        if not ok:
            raise SystemExit(f"{video}: only {index} frames")
        frames.append(frame)
    capture.release()
    for picture in pictures:
        image = cv2.imread(picture, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{picture}: OpenCV cannot read it")
        frames.append(image)
    return frames


def outputs(interpreter: Any, inputs: np.ndarray) -> np.ndarray:
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    out = interpreter.get_output_details()[0]
    results = []
    for tensor in inputs:
        interpreter.set_tensor(inp["index"], tensor[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.stack(results)


def main() -> None:
    out_path, inputs_path, mode, model_path, video, count, *pictures = sys.argv[1:]
    model = open_model(model_path, probe=False)
    if mode == "save":
        prepared = []
        for frame in decoded(video, int(count), pictures):
            model.set_input(frame, "BGR")
            prepared.append(model.interpreter.get_tensor(model.input_index)[0].copy())
        np.save(inputs_path, np.stack(prepared))
    inputs = np.load(inputs_path)
    module = runtime_module()
    reference = module.Interpreter(
        model_path=str(model.path), num_threads=1, experimental_op_resolver_type=module.OpResolverType.BUILTIN_REF
    )
    np.savez(
        out_path,
        machine=np.array(platform.machine()),
        xnnpack=outputs(model.interpreter, inputs),
        reference=outputs(reference, inputs),
    )


if __name__ == "__main__":
    main()
