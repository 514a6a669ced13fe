"""The host's fidelity kernels are the device's: TensorFlow's default interpreter gives ai_edge_litert's bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.mark.parametrize(
    "name", ["coral/mobilenet_v2_1.0_224_quant.tflite", "coral/edgetpu-pairs/mobilenet_v1_0.25_128_quant.tflite"]
)
def test_host_interpreter_gives_the_device_runtimes_int8_outputs(data_dir: Path, photos: list[Path], name: str) -> None:
    import cv2

    litert = pytest.importorskip("ai_edge_litert.interpreter")
    from edgekit.convert.tfl import interpreter

    model = (data_dir / name).read_bytes()
    host, builtin = interpreter(model), interpreter(model, preserve=True)
    device = litert.Interpreter(model_content=model, num_threads=2)
    device.allocate_tensors()
    _, h, w, _ = host.get_input_details()[0]["shape"]
    differs_from_builtin = 0
    for photo in photos:
        x = cv2.resize(cv2.imread(str(photo))[:, :, ::-1], (int(w), int(h)), interpolation=cv2.INTER_AREA)[None]
        outs = []
        for interp in (host, device, builtin):
            interp.set_tensor(interp.get_input_details()[0]["index"], np.ascontiguousarray(x))
            interp.invoke()
            outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
        np.testing.assert_array_equal(outs[0], outs[1])
        differs_from_builtin += not np.array_equal(outs[0], outs[2])
    # the reference kernels are not what the device runs: most photos come out different there
    assert differs_from_builtin > len(photos) // 2
