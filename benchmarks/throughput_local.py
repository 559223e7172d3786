"""Throughput of local SAMR painting per subject, next to TorchIO's RandomLabelsToImage + RandomBlur.

For one subject at 2 mm (a digital-phantom subject, 99x117x95) and one at 1 mm 240x240x155 (an ellipsoid brain
with a BraTS 2024 lesion, random intensities: timing does not depend on them), in the same run:

- **local painting**: a seeded random lesion edit (:class:`~samraug.editing.LesionEditor`), then
  :func:`samraug.local_synthesis.paint_local` (region, crop, resample to the model grid, normalise, paint the
  region's slices, resample back, feathered blend) for every sequence, its healthy voxels painted as
  ``--healthy`` says (the model, or the harmonic or spline fill);
- **baseline**: ``tio.RandomLabelsToImage`` for every sequence + ``tio.RandomBlur`` on the same subject.

Medians over ``--repeats`` after one warm-up, the machine state (load, threads, CPU) printed and saved. The local
model is a random-initialised contract-shaped stand-in of the tiny preset's size (a 2D U-Net: base 16 channels, cap
64, 4 down-samplings, 2.5D inputs with 1 context slice on each side), or ``samraug.models.local``'s own model where
that module provides ``build_local_generator``: speed does not depend on the weights. CPU always, CUDA too when
present (and not ``--no-cuda``).

Example:
    python benchmarks/throughput_local.py --repeats 3 --out outputs/throughput_local.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchio as tio
from torch import nn

from samraug.editing import LesionEditor
from samraug.hub import BUNDLED_LOCAL_WEIGHTS, read_config
from samraug.labels import get_scheme
from samraug.local_synthesis import paint_local
from samraug.models.unet import UNet
from samraug.outputs import write_atomic
from samraug.seam import CONTEXT_FILLS, HEALTHY_MODES
from samraug.synthesis import Synthesizer

__all__ = ["ContractUNet", "local_config", "main", "standin_synthesizer"]

SEQUENCES = ("t1n", "t1c", "t2w", "t2f", "aptw")
SCHEME = "brats2024"
BRATS_SHAPE = (240, 240, 155)


class ContractUNet(nn.Module):
    """A local model of the contract's shape: ``forward(mask, context) -> (B, S, H, W)`` in [-1, 1].

    A 2D U-Net over the concatenated 2.5D one-hot mask and context, ``tanh`` on top; ``size_multiple = 2**depth``.

    Example:
        >>> m = ContractUNet(n_labels=6, sequences=("t1n", "t1c"), context_slices=1)
        >>> m(torch.zeros(1, 18, 32, 32), torch.zeros(1, 9, 32, 32)).shape
        torch.Size([1, 2, 32, 32])
    """

    def __init__(
        self,
        *,
        n_labels: int,
        sequences: Sequence[str],
        context_slices: int = 1,
        base_channels: int = 16,
        max_channels: int = 64,
        depth: int = 4,
    ) -> None:
        super().__init__()
        self.n_labels, self.sequences, self.context_slices = int(n_labels), tuple(sequences), int(context_slices)
        self.size_multiple, self.use_atlas = 2**depth, False
        n = 2 * self.context_slices + 1
        self.net = UNet(
            n * (self.n_labels + len(self.sequences) + 1),
            len(self.sequences),
            depth=depth,
            base_channels=base_channels,
            max_channels=max_channels,
            norm="instance",
            up_mode="bilinear",
        )

    def forward(self, mask: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(torch.cat([mask, context], dim=1)))


def local_config(
    sequences: Sequence[str] = SEQUENCES, voxel_size: Sequence[float] = (2.0, 2.0, 2.0), context_fill: str = "zero"
) -> dict:
    """The config of a local weights folder for the stand-in (brats2024, native conditioning, 1 context slice;
    ``context_fill``: what its context shows in the region, which costs a 3D harmonic fill per painted part when
    ``"harmonic"``)."""
    return {
        **({"context_fill": context_fill} if context_fill != "zero" else {}),
        "mode": "local",
        "conditioning": "native",
        "label_scheme": SCHEME,
        "sequences": list(sequences),
        "voxel_size": [float(v) for v in voxel_size],
        "context_slices": 1,
        "crop_size": [64, 64],
        "use_atlas": False,
    }


def standin_synthesizer(
    device: str = "cpu", voxel_size: Sequence[float] = (2.0, 2.0, 2.0), seed: int = 0, context_fill: str = "zero"
):
    """A :class:`Synthesizer` around a random-initialised :class:`ContractUNet` (timing, smoke runs)."""
    torch.manual_seed(seed)
    k = len(get_scheme(SCHEME).classes("native"))
    model = ContractUNet(n_labels=k, sequences=SEQUENCES).eval()
    config = local_config(SEQUENCES, voxel_size, context_fill)
    return Synthesizer.from_model(model, None, config, device=device)


def phantom_subject_2mm() -> dict[str, Any]:
    """The 2 mm subject the local painting is timed on: a seeded digital-phantom subject with one lesion."""
    from samraug.data.phantom import generate_subject

    s = generate_subject(12345, n_lesions=1, cavity_probability=0.0)
    return {
        "images": {k: torch.from_numpy(s.images[k]) for k in SEQUENCES},
        "seg": s.seg,
        "brain": s.brain,
        "affine": s.affine,
        "what": "digital phantom 2 mm",
    }


def brats_like_1mm() -> dict[str, Any]:
    """The 1 mm subject the local painting is timed on: 240x240x155, BraTS-style LPS, an ellipsoid brain with one
    three-class lesion."""
    shape = BRATS_SHAPE
    g = torch.Generator().manual_seed(0)
    x, y, z = (torch.linspace(-1, 1, s) for s in shape)
    brain = (x[:, None, None] / 0.8) ** 2 + (y[None, :, None] / 0.9) ** 2 + (z[None, None, :] / 0.85) ** 2 < 1
    d = torch.sqrt((x[:, None, None] - 0.3) ** 2 + (y[None, :, None] - 0.1) ** 2 + (z[None, None, :] - 0.1) ** 2)
    seg = torch.zeros(shape, dtype=torch.uint8)
    seg[d < 0.25] = 2
    seg[d < 0.15] = 3
    seg[d < 0.08] = 1
    seg[~brain] = 0
    affine = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])  # BraTS-style LPS
    images = {s: torch.where(brain, 500 + 1000 * torch.rand(shape, generator=g), 0.0) for s in SEQUENCES}
    return {"images": images, "seg": seg.numpy(), "brain": brain.numpy(), "affine": affine, "what": "1 mm 240x240x155"}


def bundled_context_fill() -> str:
    """The context fill the bundled local weights were trained with (the stand-in model's default here)."""
    return str(read_config(BUNDLED_LOCAL_WEIGHTS).get("context_fill", "zero"))


def _median_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_subject(
    subject: dict[str, Any], device: torch.device, repeats: int, context_fill: str = "zero", healthy: str = "model"
) -> dict[str, Any]:
    scheme = get_scheme(SCHEME)
    synth = standin_synthesizer(str(device), context_fill=context_fill)
    editor = LesionEditor(scheme)
    records: list[dict] = []
    counter = iter(range(10**9))

    def local() -> None:
        gen = torch.Generator().manual_seed(next(counter))
        edited = editor.random_edit(subject["seg"], subject["brain"], generator=gen).label
        _, rec = paint_local(
            subject["images"],
            subject["seg"],
            np.asarray(edited),
            subject["brain"],
            subject["affine"],
            scheme,
            synth,
            healthy=healthy,
        )
        records.append(rec)

    affine = subject["affine"]
    tio_subject = tio.Subject(
        **{k: tio.ScalarImage(tensor=v[None].float(), affine=affine) for k, v in subject["images"].items()},
        seg=tio.LabelMap(tensor=torch.from_numpy(subject["seg"].astype(np.int64))[None], affine=affine),
    )
    baseline = tio.Compose(
        [*(tio.RandomLabelsToImage(label_key="seg", image_key=s) for s in SEQUENCES), tio.RandomBlur()]
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    local()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        local()
        sync()
        times.append(time.perf_counter() - start)
    timed = records[1:]
    painted_times = [t for t, r in zip(times, timed, strict=True) if r["skipped"] is None]
    # a skipped edit (region too large) costs almost nothing: report painted runs when there are any
    t_local = statistics.median(painted_times or times)
    t_base = _median_time(lambda: baseline(tio_subject), repeats, lambda: None)
    painted = [r for r in timed if r["skipped"] is None]
    row = {
        "subject": subject["what"],
        "shape": list(subject["seg"].shape),
        "device": device.type,
        "n_sequences": len(SEQUENCES),
        "local_s_per_subject": t_local,
        "labels_to_image_blur_s_per_subject": t_base,
        "ratio": t_local / t_base,
        "painted_runs": len(painted),
        "local_s_all_runs": times,
        "skipped_runs": [r["skipped"] for r in timed if r["skipped"] is not None],
        "median_painted_slices": statistics.median([r["painted_slices"] for r in painted]) if painted else None,
        "median_region_voxels": statistics.median([r["region_voxels"] for r in painted]) if painted else None,
    }
    print(
        f"  {device.type} {subject['what']}: local painting {t_local:.3f} s/subject, RandomLabelsToImage+RandomBlur "
        f"{t_base:.3f} s/subject (ratio {row['ratio']:.2f}x; {len(painted)}/{len(records)} runs painted)",
        flush=True,
    )
    return row


def machine_state(threads: int) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "loadavg_1_5_15": [round(x, 2) for x in load] if load else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--out", type=Path, default=Path("outputs/throughput_local.json"), help="JSON output path")
    p.add_argument("--no-cuda", action="store_true", help="CPU only even when CUDA is present")
    p.add_argument(
        "--context-fill",
        choices=CONTEXT_FILLS,
        default=None,
        help="the stand-in weights' context fill (default: the bundled local weights')",
    )
    p.add_argument(
        "--healthy",
        choices=HEALTHY_MODES,
        default="model",
        help="what paints the region's healthy voxels (paint_local(healthy=...); default model, the painters' default)",
    )
    p.add_argument("--only", nargs="+", choices=("2mm", "1mm"), default=("2mm", "1mm"), help="subjects to time")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    state = machine_state(args.threads)
    print("machine:", json.dumps(state), flush=True)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    subjects = []
    if "2mm" in args.only:
        subjects.append(phantom_subject_2mm())
    if "1mm" in args.only:
        subjects.append(brats_like_1mm())
    fill = bundled_context_fill() if args.context_fill is None else args.context_fill
    rows = [bench_subject(s, d, args.repeats, fill, args.healthy) for d in devices for s in subjects]
    result = {
        "context_fill": fill,
        "healthy": args.healthy,
        "machine": state,
        "machine_after": machine_state(args.threads),
        "repeats": args.repeats,
        "rows": rows,
        "note": (
            "random-initialised contract-shaped local model (2D U-Net, tiny preset's width); speed does not depend "
            "on the weights. Timings on a shared machine: informative only."
        ),
    }
    lines = [
        "| device | subject | local painting (s) | LabelsToImage+Blur (s) | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r['subject']} | {r['local_s_per_subject']:.3f} | "
            f"{r['labels_to_image_blur_s_per_subject']:.3f} | {r['ratio']:.2f}x |"
        )
    print("\n" + "\n".join(lines))
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
