"""Pipeline speed and footprint targets of `edgekit run` (issues 5, 17, 21), each against loops measured in this run.

    python benchmarks/pipeline.py [--rounds 3] [--chunk 90] [--video FILE] [--footprint-only]

Three models, none tuned for here: (a) an SSD-MobileNetV2 300 px in the TF Object Detection API's TFLite layout
(uint8 input, the fused TFLite_Detection_PostProcess; built with edgekit's SSDLite exporter, random weights, as
a plain .tflite: a model edgekit did not calibrate), (b) Coral's MobileNetV2 classifier from tests/data/coral,
(c) edgekit's own converted MobileNetV2 224 (manifest: centre crop 0.875, ``--downscale``, default ``pyramid``).
Each round runs, model by model and back to back, so that a busy machine slows baselines and edgekit alike (the
ratio of each round is taken, then the median over rounds):

- the bare decode loop (OpenCV read + BGR->RGB + bilinear resize) and the bare ``invoke()`` loop;
- the tutorial loop, as a whole process: EdjeElectronics' TFLite_detection_video.py made headless (read ->
  BGR2RGB -> cv2.resize -> set_tensor -> invoke -> boxes/classes/scores -> threshold loop; a classifier reads
  the scores and takes the top 3), same runtime and thread count as `edgekit run`;
- `edgekit run` as a whole process (default options, stdout), start-up included;
- `edgekit run`'s loop with the frames already decoded in memory (a picamera2 camera) against bare ``invoke()``;
and once, with the SSD: a live camera (the video's frames offered at 30 fps, newest frame only, as every live
source keeps them), where the measure is capture-to-publish latency and the frames dropped.

Targets (exit 1 when one is missed):
1. `edgekit run` whole process / tutorial loop whole process, frames/s, each model       >= 1.20
2. `edgekit run` loop (its own stats) / sequential bound 1 / (t_decode + t_invoke)       >= 1.00
3. in-memory pipeline / bare ``invoke()`` loop, median per-frame times, each model        >= 0.98
4. live camera at 30 fps, SSD: p95 capture-to-publish <= bare invoke p95 + 1/30 s; drops counted
5. peak RSS of `edgekit run` (the edgekit model) <= a bare ai_edge_litert + OpenCV process + 20 MB; first result
   <= 1.0 s after process start (``--footprint-only``: the RSS target alone)

The two built models are made once with TensorFlow in a subprocess and cached in ~/.cache/edgekit-bench.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.device.bench import PacedFrames, decoded_frames  # noqa: E402
from edgekit.device.daemon import plan_streams  # noqa: E402
from edgekit.device.model import DeviceModel, open_model  # noqa: E402
from edgekit.device.pipeline import Pipeline, Settings, Stats  # noqa: E402
from edgekit.device.sinks import jsonl  # noqa: E402
from edgekit.device.sinks.stdout import StdoutSink  # noqa: E402
from edgekit.device.sources.base import Frame, SourceBase  # noqa: E402
from edgekit.device.tasks.classify import get_classes  # noqa: E402
from edgekit.plan import load_plan  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekit-bench"
DATA_VIDEO = REPO / "tests" / "data" / "video" / "Megamind.avi"
DATA_PHOTOS = REPO / "tests" / "data" / "photos"
RSS_MARGIN_MB = 20.0  # edgekit run may hold this much above a bare LiteRT + OpenCV process (issue 17)

BUILD = """
import os, sys, warnings
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
warnings.simplefilter("ignore")
from collections.abc import Callable
from pathlib import Path
from typing import Any
import numpy as np, cv2, tensorflow as tf
from edgekit.model.manifest import InputSpec, Manifest, OutputSpec, Preprocess, Quantization
from edgekit.model.preprocess import prepare
out, downscale, photos = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
pre = Preprocess(policy="center_crop", crop_fraction=0.875, mean=(127.5,) * 3, std=(127.5,) * 3, downscale=downscale)
calib = [prepare(cv2.imread(p), (224, 224), pre, "BGR")[0] for p in photos] or [
    np.random.default_rng(i).integers(0, 256, (224, 224, 3), dtype=np.uint8) for i in range(8)]
base = tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
inputs = tf.keras.Input((224, 224, 3))
model = tf.keras.Model(inputs, base(inputs / 127.5 - 1.0))
conv = tf.lite.TFLiteConverter.from_keras_model(model)
conv.optimizations = [tf.lite.Optimize.DEFAULT]
conv.representative_dataset = lambda: ([c[None].astype(np.float32)] for c in calib)
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
conv.inference_input_type = tf.uint8
conv.inference_output_type = tf.uint8
blob = conv.convert()
out.mkdir(parents=True, exist_ok=True)
(out / "model.tflite").write_bytes(blob)
(out / "labels.txt").write_text("".join(f"class_{i}\\n" for i in range(1000)))
q = tf.lite.Interpreter(model_content=blob).get_output_details()[0]["quantization"]
Manifest(task="classify", input=InputSpec(224, 224), preprocess=pre,
         outputs=(OutputSpec("scores", (1, 1000), "uint8", Quantization(float(q[0]), int(q[1]))),),
         num_classes=1000, converter={"tool": "benchmarks/pipeline.py (random weights)"}).write(out)
"""


BUILD_SSD = """
import os, sys, warnings
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
warnings.simplefilter("ignore")
from pathlib import Path
import numpy as np, cv2
from edgekit.convert.detect.export import export_detector
from edgekit.convert.detect.ssdlite import build_ssdlite
from edgekit.convert.detect.tflite import convert_saved_model
out, photos = Path(sys.argv[1]), sys.argv[2:]
det = build_ssdlite(num_classes=90, input_size=300, alpha=1.0)  # COCO's 90, the OD API's 300 px
saved = export_detector(det, out / "saved_model")
calib = [cv2.cvtColor(cv2.resize(cv2.imread(p), (300, 300)), cv2.COLOR_BGR2RGB) for p in photos]
flat = convert_saved_model(str(saved), lambda: ([c[None].astype(np.float32) / 127.5 - 1.0] for c in calib))
(out / "ssd_mobilenet_v2_300_uint8.tflite").write_bytes(flat)
"""


def build_ssd() -> Path:
    """The TF OD API-style SSD-MobileNetV2 300 (uint8 in, fused postprocess) as a plain .tflite, built once."""
    target = CACHE / "ssd_mobilenet_v2_300" / "ssd_mobilenet_v2_300_uint8.tflite"
    if target.is_file():
        return target
    photos = sorted(str(p) for p in DATA_PHOTOS.glob("*.jpg"))[:8]
    print(f"building {target} with TensorFlow (once)...", flush=True)
    subprocess.run([sys.executable, "-c", BUILD_SSD, str(target.parent), *photos], cwd=REPO, check=True)
    return target


def build_model(downscale: str) -> Path:
    target = CACHE / f"mobilenet_v2_224_int8_{downscale}"
    if (target / "edgekit.json").is_file():
        return target
    photos = sorted(str(p) for p in DATA_PHOTOS.glob("*.jpg"))[:8] if DATA_PHOTOS.is_dir() else []
    print(f"building {target} with TensorFlow (once)...", flush=True)
    subprocess.run([sys.executable, "-c", BUILD, str(target), downscale, *photos], cwd=REPO, check=True)
    return target


def make_video(path: Path) -> Path:
    from edgekit.device.bench import make_video as generate

    return generate(path, frames=270, size=(576, 768), fps=25.0)


# --- the measured loops: each returns the time of every frame, in ms ---------------------------------------------
# Ratios are taken between median per-frame times: on a machine shared with other work, bursts of load land in
# a few frames and move a mean (throughput) far more than a median.


def _per_frame(ticks: list[float]) -> np.ndarray:
    return np.diff(np.asarray(ticks)) * 1000.0


def bare_decode(video: Path, size: tuple[int, int], limit: int) -> np.ndarray:
    """OpenCV decode + BGR->RGB + bilinear resize: what any video-fed loop pays per frame."""
    cap = cv2.VideoCapture(str(video))
    ticks = [time.perf_counter()]
    while len(ticks) <= limit:
        ok, frame = cap.read()
        if not ok:
            break
        cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), size)
        ticks.append(time.perf_counter())
    cap.release()
    return _per_frame(ticks)


def bare_invoke(model: DeviceModel, runs: int) -> np.ndarray:
    interpreter = model.interpreter
    interpreter.invoke()
    ticks = [time.perf_counter()]
    for _ in range(runs):
        interpreter.invoke()
        ticks.append(time.perf_counter())
    return _per_frame(ticks)


def essential_loop(model: DeviceModel, images: list[np.ndarray], sink: io.TextIOBase) -> np.ndarray:
    """The work any loop must do per frame here, hand-written with no framework around it: put the frame into the
    input tensor, invoke, top-3 of the scores, one JSON line written and flushed. The floor under the in-memory
    pipeline (no timings, stats, records, sinks or frame objects)."""
    scores = model.outputs["scores"]
    out = sink.buffer  # type: ignore[attr-defined]
    ticks = [time.perf_counter()]
    for n, image in enumerate(images):
        model.set_input(image, "RGB")
        model.invoke()
        classes = get_classes(model.output("scores"), 3, 0.0, scores.scale, scores.zero_point)
        out.write(jsonl.line({"frame": n, "classes": [{"id": c.id, "score": c.score} for c in classes]}))
        out.flush()
        ticks.append(time.perf_counter())
    return _per_frame(ticks)


TUTORIAL = """
import os, sys, time
import cv2, numpy as np
from ai_edge_litert.interpreter import Interpreter
model, video = sys.argv[1], sys.argv[2]
interpreter = Interpreter(model_path=model, num_threads=len(os.sched_getaffinity(0)))
interpreter.allocate_tensors()
input_details, output_details = interpreter.get_input_details(), interpreter.get_output_details()
height, width = input_details[0]["shape"][1], input_details[0]["shape"][2]
detector = len(output_details) == 4
cap = cv2.VideoCapture(video)
imW, imH = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
frames = 0
while cap.isOpened():
    ok, frame = cap.read()
    if not ok:
        break
    frame_rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    frame_resized = cv2.resize(frame_rgb, (width, height))
    interpreter.set_tensor(input_details[0]["index"], np.expand_dims(frame_resized, axis=0))
    interpreter.invoke()
    found = []
    if detector:
        boxes = interpreter.get_tensor(output_details[0]["index"])[0]
        classes = interpreter.get_tensor(output_details[1]["index"])[0]
        scores = interpreter.get_tensor(output_details[2]["index"])[0]
        for i in range(len(scores)):
            if scores[i] > 0.5 and scores[i] <= 1.0:
                ymin, xmin = int(max(1, boxes[i][0] * imH)), int(max(1, boxes[i][1] * imW))
                ymax, xmax = int(min(imH, boxes[i][2] * imH)), int(min(imW, boxes[i][3] * imW))
                found.append((int(classes[i]), float(scores[i]), (xmin, ymin, xmax, ymax)))
    else:
        scores = interpreter.get_tensor(output_details[0]["index"])[0]
        found = [(int(i), float(scores[i])) for i in np.argsort(scores)[::-1][:3]]
    frames += 1
print(frames)
"""


def whole_process(command: list[str]) -> tuple[float, float, str]:
    """Run a process to its end: frames/s over its whole life (start-up included), seconds to its first stdout
    line, and its last line."""
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    first_at = time.monotonic() - start
    last, lines = first, 1
    for line in proc.stdout:
        last, lines = line, lines + 1
    assert proc.wait() == 0, f"{command[:4]} exited {proc.returncode}"
    elapsed = time.monotonic() - start
    frames = int(last) if lines == 1 else lines - 1  # the tutorial prints its count; edgekit a line per result
    return frames / elapsed, first_at, last


def tutorial_process(model: Path, video: Path) -> float:
    """The tutorial loop as a process: its frames/s, start-up included."""
    fps, _, _ = whole_process([sys.executable, "-c", TUTORIAL, str(model), str(video)])
    return fps


def run_process(model: Path, video: Path) -> tuple[float, float, float]:
    """`edgekit run` with default options (one stats record, at the end): whole-process frames/s, seconds to the
    first result, and the loop's own frames/s (its stats record)."""
    fps, first, last = whole_process(_edgekit_run(model, video, "--stats-interval", "3600"))
    return fps, first, float(json.loads(last)["fps"])


class MemoryFrames(SourceBase):
    """Frames already decoded, in RGB, at the size whose centre crop is the model input: a camera that costs
    nothing (picamera2 asked for that size), so preparing a frame is a plain copy of its crop.

    It notes when the loop asks for each frame (its capture time, which any camera source takes): in a steady
    loop the intervals are the per-frame times, measured without a sink added for the purpose.
    """

    name = "memory"

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images
        self.ticks: list[float] = []

    def __iter__(self):  # type: ignore[no-untyped-def]
        ticks = self.ticks
        for i, image in enumerate(self.images):
            now = time.monotonic()
            ticks.append(now)
            yield Frame(image, i, time.time(), now, "RGB")

    def close(self) -> None:
        pass


class Ticks:
    """A sink that notes when each result was published (next to the stdout sink, which encodes the JSON)."""

    name = "ticks"

    def __init__(self, start: float) -> None:
        self.ticks = [start]

    def publish_result(self, record: Any) -> None:
        self.ticks.append(time.perf_counter())

    def publish_stats(self, record: Any) -> None:
        pass

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def pipeline_frames(
    models: list[DeviceModel], open_source: Callable[[], Any], sink: io.TextIOBase, limit: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The loop of `edgekit run`: per-frame times and latencies.

    The per-frame times are the intervals between the source's own ticks when it keeps them (`MemoryFrames`),
    else from the first frame asked for to each record (a `Ticks` sink beside the stdout sink).
    ``models``: one per stream, as `edgekit run` opens them. Setup (opening the file, building the pipeline) is
    outside the timing here and in the bare loops alike: a deployment pays it once.
    """
    source = open_source()
    settings = Settings(camera="bench", stats_interval=0, frames=limit)
    ticks = None if hasattr(source, "ticks") else Ticks(0.0)
    sinks = [StdoutSink(sink)] if ticks is None else [StdoutSink(sink), ticks]
    pipeline = Pipeline(models[0], source, sinks, settings, replicas=models[1:])
    pipeline.stats = Stats(window=1 << 20)
    if ticks is not None:
        ticks.ticks[0] = time.perf_counter()
    pipeline.run()
    source.close()
    per_frame = np.diff(source.ticks) * 1000.0 if ticks is None else _per_frame(ticks.ticks)
    return per_frame, pipeline.stats.window()[1]


BARE_RSS = """
import os, sys
import cv2, numpy as np
from ai_edge_litert.interpreter import Interpreter
model, video = sys.argv[1], sys.argv[2]
interpreter = Interpreter(model_path=model, num_threads=len(os.sched_getaffinity(0)))
interpreter.allocate_tensors()
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
h, w = inp["shape"][1:3]
cap = cv2.VideoCapture(video)
frames = 0
while True:
    ok, frame = cap.read()
    if not ok:
        break
    interpreter.set_tensor(inp["index"], cv2.resize(frame, (w, h))[None])
    interpreter.invoke()
    interpreter.get_tensor(out["index"]).argmax()
    frames += 1
print(frames)
"""
IMPORTS_BARE = "import cv2, numpy; from ai_edge_litert.interpreter import Interpreter"
IMPORTS_EDGEKIT = (
    "import edgekit.cli; from edgekit.device import daemon, runtime; from edgekit.device.sources import opencv; "
    "from edgekit.device.sinks import stdout; runtime.runtime_module(); import cv2"
)


def _peak_rss(command: list[str]) -> tuple[float, list[str]]:
    """Run a process to its end: its peak RSS in MB and its stdout lines.

    Peak RSS from /proc (VmHWM of the exec'd image). wait4's ru_maxrss would not do: it keeps the high-water
    mark of the forked copy of *this* process from before exec.
    """
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    peak_kb = [0]

    def watch() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb[0] = max(peak_kb[0], int(line.split()[1]))
            except (OSError, ValueError):
                break
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert proc.stdout is not None
    lines = proc.stdout.read().splitlines()
    assert proc.wait() == 0, f"{command[:4]} exited {proc.returncode}"
    watcher.join()
    return peak_kb[0] / 1024, lines


def _edgekit_run(model: Path, video: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgekit", "run", "--model", str(model), "--source", str(video), *extra]


def footprint(model: Path, video: Path) -> dict[str, float]:
    """Peak RSS (MB) of `edgekit run` (default options, the video, stdout) and of a bare LiteRT + OpenCV process
    running the same model over the same video, measured now; then where the difference goes."""
    bare, _ = _peak_rss([sys.executable, "-c", BARE_RSS, str(model / "model.tflite"), str(video)])
    run, _ = _peak_rss(_edgekit_run(model, video, "--stats-interval", "0"))
    one, _ = _peak_rss(_edgekit_run(model, video, "--stats-interval", "0", "--streams", "1"))
    imports_bare, _ = _peak_rss([sys.executable, "-c", IMPORTS_BARE])
    imports_edgekit, _ = _peak_rss([sys.executable, "-c", IMPORTS_EDGEKIT])
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    frame_mb = frame.nbytes / 2**20 if ok else 0.0
    return {
        "bare": bare,
        "run": run,
        "run_one_stream": one,
        "imports": imports_edgekit - imports_bare,
        "streams": run - one,
        # The read-ahead (2 frames) when one stream runs; parallel streams decode inline, each its own frame.
        "frame_queue": 2 * frame_mb,
        # The probe runs in a forked child: its pages are not the parent's, so its cost to the parent is 0.
        "probe": 0.0,
    }


def print_footprint(rss: dict[str, float]) -> None:
    print(f"{'peak RSS (MB)':44} {'value':>10}")
    print(f"{'bare ai_edge_litert + OpenCV, same model+video':44} {rss['bare']:10.1f}")
    print(f"{'edgekit run (default options, stdout)':44} {rss['run']:10.1f}")
    print(f"{'edgekit run --streams 1':44} {rss['run_one_stream']:10.1f}")
    rest = rss["run"] - rss["bare"]
    print(f"where the {rest:.1f} MB above bare go:")
    print(f"{'  imports (edgekit + its deps, beyond bare)':44} {rss['imports']:10.1f}")
    print(f"{'  per-stream interpreters (default - 1 stream)':44} {rss['streams']:10.1f}")
    print(f"{'  frame queue (read-ahead; --streams 1 only)':44} {rss['frame_queue']:10.1f}")
    print(f"{'  forked model check (a child process)':44} {rss['probe']:10.1f}")
    other = rest - rss["imports"] - rss["streams"]
    print(f"{'  the rest (buffers, threads, allocator)':44} {other:10.1f}")


def memory_images(model: DeviceModel, video: Path) -> list[np.ndarray]:
    """The video's frames, decoded, in RGB, at the size the model's crop takes whole (224 / 0.875 = 256 for a
    centre crop; the model's own size for a stretch): preparing one is a plain copy, as from a camera asked for
    the right size."""
    h, w = model.input_size
    crop = model.preprocess.crop_fraction if model.preprocess.policy == "center_crop" else 1.0
    size = (round(w / crop), round(h / crop))
    return [np.ascontiguousarray(cv2.cvtColor(cv2.resize(f, size), cv2.COLOR_BGR2RGB)) for f in decoded_frames(video)]


def live_camera(model_path: Path, video: Path, fps: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The video's frames offered at ``fps`` as a live camera (`edgekit.device.bench.PacedFrames`: the newest-frame
    capture of every live source), through the pipeline as `edgekit run` runs a live source (one interpreter, every
    thread). Returns capture-to-publish latencies (ms), the bare invoke times measured just before, frames
    published and frames dropped."""
    model = open_model(model_path)
    invoke = bare_invoke(model, 100)
    source = PacedFrames(decoded_frames(video), fps)
    pipeline = Pipeline(model, source, [StdoutSink(open(os.devnull, "w"))], Settings(camera="bench", stats_interval=0))  # noqa: SIM115
    pipeline.stats = Stats(window=1 << 20)
    pipeline.run()
    source.close()
    return pipeline.stats.window()[1], invoke, pipeline.seq, source.dropped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=90, help="frames per bare-loop measurement (short: less drift)")
    parser.add_argument("--downscale", choices=["area", "pyramid"], default="pyramid", help="of edgekit's model")
    parser.add_argument("--video", type=Path, help=f"default: {DATA_VIDEO.name} when present, else generated")
    parser.add_argument("--camera-fps", type=float, default=30.0, help="the live camera case's frame rate")
    parser.add_argument("--footprint-only", action="store_true", help="only the peak-RSS target")
    args = parser.parse_args()

    own = build_model(args.downscale)
    tmp = CACHE / "work"
    tmp.mkdir(parents=True, exist_ok=True)
    video = args.video or (DATA_VIDEO if DATA_VIDEO.is_file() else make_video(tmp / "bench.avi"))
    if args.footprint_only:
        rss = footprint(own, video)
        print_footprint(rss)
        ok = rss["run"] <= rss["bare"] + RSS_MARGIN_MB
        goal = rss["bare"] + RSS_MARGIN_MB
        verdict = "ok" if ok else "MISSED"
        print(f"edgekit run peak RSS <= bare + {RSS_MARGIN_MB:g} MB: {rss['run']:.1f} <= {goal:.1f}  {verdict}")
        return 0 if ok else 1
    paths = {
        "ssd300": build_ssd(),
        "coral": REPO / "tests" / "data" / "coral" / "mobilenet_v2_1.0_224_quant.tflite",
        "edgekit": own,
    }
    about = {
        "ssd300": "SSD-MobileNetV2 300, OD API layout, plain .tflite",
        "coral": "Coral's MobileNetV2 224, plain .tflite",
        "edgekit": f"edgekit's MobileNetV2 224 ({args.downscale})",
    }
    models = {name: open_model(path) for name, path in paths.items()}
    memory = {name: memory_images(model, video) for name, model in models.items()}
    frames = len(memory["ssd300"])
    streams, threads = plan_streams(load_plan(None, {"run.model": str(own), "run.source": str(video)}))
    print(f"video {video} ({frames} frames), {args.rounds} rounds; the models:")
    for name, model in models.items():
        print(f"  {name:8} {about[name]}: {paths[name]} ({model.preprocess.policy}, {model.preprocess.downscale})")
    print(f"edgekit run on the video: {streams} stream(s) of {threads} thread(s); bare loops: one interpreter")

    devnull = open(os.devnull, "w")  # noqa: SIM115
    keys = ("decode", "invoke", "memory", "tutorial", "run", "loop")
    values: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in models}
    ratios: dict[str, dict[str, list[float]]] = {n: {"tutorial": [], "bound": [], "memory": []} for n in models}
    firsts: list[float] = []
    essential: dict[str, list[float]] = {n: [] for n in models}
    med = np.median
    for r in range(args.rounds):
        for name, model in models.items():
            h, w = model.input_size
            n = min(args.chunk, frames)
            decode = bare_decode(video, (w, h), n)
            invoke = bare_invoke(model, n)
            tutorial = tutorial_process(paths[name] if name != "edgekit" else own / "model.tflite", video)
            run_fps, first, loop_fps = run_process(paths[name], video)
            firsts.append(first)
            # In memory: interleaved finely, 30 frames of bare loop then 30 through the pipeline.
            chunk_ratios, memory_times, floor_ratios = [], [], []
            images = memory[name]
            for start in range(0, len(images) - 29, 30):
                bare = bare_invoke(model, 30)
                mem, _ = pipeline_frames([model], lambda s=start, i=images: MemoryFrames(i[s : s + 30]), devnull)
                chunk_ratios.append(float(med(bare) / med(mem)))
                memory_times.append(mem)
                if model.task == "classify":  # the floor: the same work hand-written, nothing around it
                    bare = bare_invoke(model, 30)
                    floor = essential_loop(model, images[start : start + 30], devnull)
                    floor_ratios.append(float(med(bare) / med(floor)))
            if floor_ratios:
                essential[name].append(statistics.median(floor_ratios))
            row = values[name]
            row["decode"].append(float(decode.mean()))
            row["invoke"].append(float(invoke.mean()))
            row["memory"].append(float(med(np.concatenate(memory_times))))
            row["tutorial"].append(tutorial)
            row["run"].append(run_fps)
            row["loop"].append(loop_fps)
            ratios[name]["tutorial"].append(run_fps / tutorial)
            ratios[name]["bound"].append(float(loop_fps * (decode.mean() + invoke.mean()) / 1000.0))
            ratios[name]["memory"].append(statistics.median(chunk_ratios))
            print(
                f"  round {r + 1} {name:8} decode {decode.mean():.2f} ms, invoke {invoke.mean():.2f} ms, tutorial "
                f"{tutorial:.1f} fps, edgekit run {run_fps:.1f} fps (loop {loop_fps:.1f}), memory/bare "
                f"{chunk_ratios and statistics.median(chunk_ratios):.3f}",
                flush=True,
            )
    latency, live_invoke, published, dropped = live_camera(paths["ssd300"], video, args.camera_fps)
    rss = footprint(own, video)

    print()
    print(f"{'medians over rounds (spread min-max)':34} " + " ".join(f"{n:>22}" for n in models))

    def cell(vs: list[float], fmt: str) -> str:
        return f"{format(statistics.median(vs), fmt)} ({format(min(vs), fmt)}-{format(max(vs), fmt)})"

    rows = [
        ("bare decode+RGB+resize (ms)", "decode", ".2f"),
        ("bare invoke() (ms)", "invoke", ".2f"),
        ("pipeline in memory (ms/frame)", "memory", ".2f"),
        ("tutorial loop, process (fps)", "tutorial", ".1f"),
        ("edgekit run, process (fps)", "run", ".1f"),
        ("edgekit run, its loop (fps)", "loop", ".1f"),
    ]
    for label, key, fmt in rows:
        print(f"{label:34} " + " ".join(f"{cell(values[n][key], fmt):>22}" for n in models))
    lat50, lat95 = np.percentile(latency, [50, 95])
    inv95 = float(np.percentile(live_invoke, 95))
    print(
        f"live camera, {args.camera_fps:g} fps, ssd300: {published} published, {dropped} dropped, capture-to-publish "
        f"p50 {lat50:.1f} ms p95 {lat95:.1f} ms; bare invoke p95 {inv95:.1f} ms"
    )
    for name, floors in essential.items():
        if floors:
            print(
                f"essential work, hand-written / bare invoke, {name}: {statistics.median(floors):.3f} (no target: "
                "the floor under the in-memory pipeline)"
            )
    print()
    print_footprint(rss)
    print()
    checks = []
    for name in models:
        checks += [
            (f"{name}: edgekit run / tutorial (process)", statistics.median(ratios[name]["tutorial"]), ">=", 1.2),
            (f"{name}: run loop / sequential bound", statistics.median(ratios[name]["bound"]), ">=", 1.0),
            (f"{name}: memory pipeline / bare invoke", statistics.median(ratios[name]["memory"]), ">=", 0.98),
        ]
    checks += [
        ("live ssd300: latency p95 (ms)", float(lat95), "<=", inv95 + 1000.0 / args.camera_fps),
        ("edgekit run peak RSS (MB)", rss["run"], "<=", rss["bare"] + RSS_MARGIN_MB),
        ("edgekit run first result (s, median)", statistics.median(firsts), "<=", 1.0),
    ]
    failed = 0
    print(f"{'target':44} {'value':>10} {'goal':>10}  result")
    for label, value, op, goal in checks:
        ok = value >= goal if op == ">=" else value <= goal
        failed += not ok
        print(f"{label:44} {value:10.3f} {op} {goal:<8.3f}  {'ok' if ok else 'MISSED'}")
    for name in models:
        print(
            f"per-round ratios {name}: "
            + "; ".join(f"{k} {[round(v, 3) for v in vs]}" for k, vs in ratios[name].items())
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
