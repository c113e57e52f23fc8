"""Scale benchmark: ``unlearn register`` + one request on a generated N-image RGB ImageFolder.

``python -m flows.bench_scale --images 50000 --out bench_results`` builds a throw-away project
root in a temporary folder: a seeded synthetic 64x64 RGB ImageFolder (10 classes, 90% train /
10% test, JPEG), a briefly trained ``torchvision:mobilenet_v3_small`` saved as safetensors and a
model card. It then times ``unlearn register``, submits one request forgetting one class with
pinned ``hparams: {epochs: 1, lr: 0.001}`` and runs ``unlearn process``; every CLI call is a
subprocess (under ``/usr/bin/time -v`` when present) so its peak RSS is measured. The figures go
to ``<out>/scale_<N>.json``: register seconds, request total / unlearning / overhead seconds (the
record's ``timings``) and the peak RSS of each CLI process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

NAME = "scale-mobilenet"
CLASSES = tuple(f"class-{i}" for i in range(10))
SIZE = 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GATES = "classification:\n  max_acc_forget: 5.0\n  max_drop_acc_retain: 50.0\n  max_mia_gap: 0.25\n"
REQUEST_ID = "forget-class-3"
TIME = "/usr/bin/time"


def _image(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 64x64 RGB image: a class colour, a class-dependent stripe period, plus noise."""
    base = np.array([(label * 73) % 256, (label * 151 + 40) % 256, (label * 29 + 90) % 256])
    stripes = (np.arange(SIZE) // (2 + label) % 2 * 40)[None, :, None]
    noise = rng.integers(-40, 40, size=(SIZE, SIZE, 3))
    return (base[None, None, :] + stripes + noise).clip(0, 255).astype(np.uint8)


def make_dataset(directory: Path, images: int, seed: int = 0) -> None:
    """``train/<class>/*.jpg`` and ``test/<class>/*.jpg``: ``images`` in all, 90/10 split."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    per_class = images // len(CLASSES)
    n_test = per_class // 10
    for label, name in enumerate(CLASSES):
        for split in ("train", "test"):
            (directory / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            split = "test" if i < n_test else "train"
            Image.fromarray(_image(label, rng)).save(
                directory / split / name / f"{i:06d}.jpg", quality=90
            )


def train_weights(target: Path, steps: int, seed: int = 0) -> float:
    """A MobileNetV3-small trained ``steps`` Adam steps on fresh in-memory images; its accuracy
    on a held-out in-memory batch (chance is 0.1)."""
    from safetensors.torch import save_file

    from delete.models import build_torchvision_classifier

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = rng.integers(0, len(CLASSES), size=n)
        pixels = np.stack([_image(int(y), rng) for y in labels]).transpose(0, 3, 1, 2)
        x = (torch.from_numpy(pixels).float() / 255.0 - mean) / std
        return x, torch.from_numpy(labels).long()

    model = build_torchvision_classifier("mobilenet_v3_small", len(CLASSES))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        x, y = batch(64)
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    # MobileNetV3's BatchNorm momentum is 0.01: re-estimate the running statistics as a plain
    # average over a few batches, or the eval-mode model is at chance after a short training
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        for _ in range(10):
            model(batch(64)[0])
    model.eval()
    x, y = batch(500)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(target))
    return accuracy


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def init_root(root: Path) -> None:
    """A git repository with the pipeline's ignores and lenient gates."""
    _git(root, "init", "-q")
    (root / ".gitignore").write_text("/mlflow/\n/dvc-remote/\n/requests/\n/audit/\n/artifacts/\n")
    (root / "gates.yaml").write_text(GATES)
    _git(root, "add", ".gitignore", "gates.yaml")
    _git(root, "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "init")


def run_cli(root: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    """One ``unlearn`` CLI call as a subprocess: exit code, seconds, peak RSS (MiB), output."""
    command = [sys.executable, "-m", "flows.cli", "--root", str(root), *args]
    report = root.parent / f"time-{args[0]}.txt"
    timed = Path(TIME).exists()
    if timed:
        command = [TIME, "-v", "-o", str(report), *command]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if timed:
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read_text())
        kib = int(match.group(1)) if match else 0
    else:  # the largest child so far: a lower bound per call, exact for the largest
        kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "returncode": done.returncode,
        "seconds": seconds,
        "peak_rss_mib": kib / 1024,
        "stdout": done.stdout[-2000:],
        "stderr": done.stderr[-2000:],
    }


def run_scale(images: int, base: Path, train_steps: int) -> dict[str, Any]:
    """Build the root under ``base``, register, submit, process; the figures."""
    root = base / "root"
    root.mkdir(parents=True)
    init_root(root)
    env = {
        **os.environ,
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # never the repository's own store
    env.setdefault("UNLEARN_AUDIT_KEY", "bench-scale-audit-key-0123456789")
    figures: dict[str, Any] = {"images": images, "classes": len(CLASSES), "image_size": SIZE}

    started = time.perf_counter()
    make_dataset(root / "datasets" / "scale", images)
    figures["generate_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    weights = root / "incoming" / "scale.safetensors"
    figures["train_accuracy_heldout"] = train_weights(weights, train_steps)
    figures["train_seconds"] = time.perf_counter() - started
    figures["train_steps"] = train_steps
    (root / "card.yaml").write_text(
        f"name: {NAME}\n"
        "architecture: torchvision:mobilenet_v3_small\n"
        f"architecture_kwargs: {{num_classes: {len(CLASSES)}}}\n"
        "weights: incoming/scale.safetensors\n"
        "dataset: datasets/scale\n"
        f"preprocess: {{channels: 3, size: {SIZE}, mean: {list(MEAN)}, std: {list(STD)}}}\n"
        "task: classification\n"
    )
    (root / "request.yaml").write_text(
        f"request_id: {REQUEST_ID}\n"
        f"model: {NAME}@champion\n"
        f'forget_classes: ["{CLASSES[3]}"]\n'
        "requested_by: dpo@example.com\n"
        "reason: scale benchmark\n"
        "received_at: 2026-12-01T09:00:00Z\n"
        "hparams: {epochs: 1, lr: 0.001}\n"
    )
    calls = {}
    for step, args in (
        ("register", ("register", str(root / "card.yaml"))),
        ("submit", ("submit", str(root / "request.yaml"))),
        ("process", ("process", "--json")),
    ):
        calls[step] = run_cli(root, env, *args)
        if calls[step]["returncode"] != 0:
            figures["calls"] = calls
            raise RuntimeError(f"unlearn {step} failed: {calls[step]['stderr'][-800:]}")
    record = json.loads((root / "audit" / "records" / f"{REQUEST_ID}.json").read_text())
    timings = record.get("timings", {})
    total, unlearning = float(timings.get("total", 0.0)), float(timings.get("unlearn", 0.0))
    figures.update(
        register_seconds=calls["register"]["seconds"],
        request_total_seconds=total,
        unlearn_seconds=unlearning,
        engine_seconds=record.get("engine", {}).get("seconds"),
        overhead_seconds=total - unlearning,
        process_seconds=calls["process"]["seconds"],
        peak_rss_mib={k: v["peak_rss_mib"] for k, v in calls.items()},
        timings=timings,
        status=record.get("status"),
        verdict=(record.get("verdict") or {}).get("verdict"),
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.bench_scale", description=__doc__)
    parser.add_argument("--images", type=int, default=5000, help="images in all (10 classes)")
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    parser.add_argument("--train-steps", type=int, default=200, help="Adam steps of batch 64")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project root")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = Path(tempfile.mkdtemp(prefix=f"unlearn-scale-{args.images}-"))
    try:
        figures = run_scale(args.images, base, args.train_steps)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"scale_{args.images}.json").write_text(json.dumps(figures, indent=2) + "\n")
    rss = figures["peak_rss_mib"]
    print(
        f"scale {args.images}: register {figures['register_seconds']:.1f} s, request "
        f"{figures['request_total_seconds']:.1f} s = {figures['unlearn_seconds']:.1f} s "
        f"unlearning + {figures['overhead_seconds']:.1f} s overhead; peak RSS register "
        f"{rss['register']:.0f} MiB, process {rss['process']:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
