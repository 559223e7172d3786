"""Throughput of on-the-fly SAMR augmentation.

Three measurements, on the CPU (``torch.set_num_threads(--threads)``, default 2) and on CUDA when present:

1. **Slices per second**, batched :class:`~samraug.synthesis.Synthesizer` (``synthesize_slices`` with batch sizes
   1 / 8 / 32: inference mode, autocast and ``channels_last`` on CUDA, padding and the copy back to the CPU included)
   vs a per-slice eager call of the same model (``model(mask[None], atlas[None])`` under ``torch.no_grad()`` in
   float32, one slice at a time), for presets tiny / lite / paper at 128x128 and 256x256. Masks are brain-like
   ellipses with lesions; atlas stacks are random. Random-initialised weights (speed does not depend on them).
2. **Whole subject**: one 240x240x155 subject (ellipsoid brain, BraTS 2021 lesion labels, 5 sequences) through
   ``SAMRSynthesize(ratio=1)`` (edit + per-sequence stats + slice-wise synthesis of the ~130 brain slices) vs
   ``tio.RandomLabelsToImage`` (one per sequence) + ``tio.RandomBlur`` on the same subject.
3. **Training-step overhead** at ratio 0.5: a 2D U-Net step (batch 16, 128x128, Adam) fed by a real-only loader vs
   by ``SAMRAugmentedDataset(ratio=0.5, batched=True)`` through ``SynthesizingLoader`` (about 8 synthetic slices
   per batch, one generator call per batch in the main process).
4. **Local painting** per subject (``--only local``; ``benchmarks/throughput_local.py``'s measurement, which also
   times the healthy-fill options): a seeded random edit painted with ``mode="local"`` (edit, crop, resample, paint,
   seam correction, matched noise, blend) vs ``tio.RandomLabelsToImage`` + ``tio.RandomBlur`` for all sequences on
   the same subject, at 2 mm (a digital-phantom subject) and 1 mm 240x240x155, in one run.

Prints markdown tables and writes JSON to ``--out``. Every timing is the median over ``--repeats`` timed runs
(after a warm-up), and the report states the machine state: the load average before and after and whether the
machine was idle (1-minute load average below :data:`IDLE_LOAD` per CPU before the run). Numbers from a loaded
machine are not comparable with idle ones; they are informative only, never asserted. The slice table also gives,
per device and preset, the fastest batch size measured and the one :func:`samraug.batching.default_batch_size`
picks.

Example:
    python benchmarks/throughput.py --quick --out outputs/throughput_quick.json
    python benchmarks/throughput.py --out outputs/throughput.json   # all presets and sizes (long on CPU)
    python benchmarks/throughput.py --only local --repeats 3 --out outputs/throughput_local_only.json
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchio as tio
from torch.utils.data import DataLoader

if __package__ in (None, ""):  # run as a script: make `benchmarks.throughput_local` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samraug.atlas import Atlas
from samraug.batching import default_batch_size
from samraug.dataset import SAMRAugmentedDataset, SynthesizingLoader
from samraug.labels import one_hot
from samraug.models.generator import build_generator
from samraug.models.unet import UNet
from samraug.outputs import write_atomic
from samraug.synthesis import Synthesizer
from samraug.transforms import SAMRSynthesize

BRATS_SHAPE = (240, 240, 155)
#: A machine is called idle when its 1-minute load average per CPU is below this before the run.
IDLE_LOAD = 0.25


def machine_state() -> dict[str, Any]:
    """Load average and CPU count now, and whether the machine is idle (:data:`IDLE_LOAD`)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Unix
        return {"load_average": None, "idle": None, "cpu_count": os.cpu_count()}
    cpus = os.cpu_count() or 1
    return {"load_average": load, "cpu_count": cpus, "idle": load[0] / cpus < IDLE_LOAD}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ellipse_masks(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``(n, size, size)`` SAMR class maps: an elliptic brain with an edema blob around a tumour."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        brain = ((xx - 0.5) / 0.38) ** 2 + ((yy - 0.5) / 0.45) ** 2 < 1
        cx, cy, r = g.uniform(0.35, 0.65), g.uniform(0.35, 0.65), g.uniform(0.05, 0.12)
        d = np.hypot(xx - cx, yy - cy)
        out[i] = np.where(brain, np.where(d < r, 4, np.where(d < 1.8 * r, 2, 1)), 0)
    return torch.from_numpy(out)


def _random_atlas(sequences: tuple[str, ...], shape: tuple[int, int, int], seed: int = 0) -> Atlas:
    g = torch.Generator().manual_seed(seed)
    x, y, z = (torch.linspace(-1, 1, s) for s in shape)
    brain = (x[:, None, None] / 0.8) ** 2 + (y[None, :, None] / 0.9) ** 2 + (z[None, None, :] / 0.85) ** 2 < 1
    data = torch.rand(len(sequences), *shape, generator=g) * 2 - 1
    data = torch.where(brain, data, torch.tensor(-1.0))
    return Atlas(data, np.diag([1.0, 1.0, 1.0, 1.0]), sequences, brain)


def _time(fn: Any, device: torch.device, repeats: int, warmup: Any = None) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up call (``warmup()``, default ``fn()``)."""
    (warmup or fn)()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------- 1. slices/s
def _eager(model: torch.nn.Module, onehot: torch.Tensor, stacks: torch.Tensor, device: torch.device) -> None:
    """The per-slice eager baseline: one float32 forward per slice, no inference mode, no autocast."""
    with torch.no_grad():
        for i in range(onehot.shape[0]):
            model(onehot[i : i + 1].to(device), stacks[i : i + 1].to(device)).float().cpu()


def bench_slices(
    presets: list[str], sizes: list[int], batches: list[int], n_slices: int, device: torch.device, repeats: int
) -> list[dict[str, Any]]:
    rows = []
    for preset in presets:
        torch.manual_seed(0)
        model = build_generator(preset).eval()
        seqs = tuple(model.sequences)
        for size in sizes:
            atlas = _random_atlas(seqs, (size, size, 8))
            synth = Synthesizer.from_model(model, atlas, device=str(device))
            masks = _ellipse_masks(n_slices, size)
            stacks = torch.rand(n_slices, 3 * len(seqs), size, size) * 2 - 1
            eager_model = copy.deepcopy(model).to(device)  # plain NCHW float32 copy
            onehot = one_hot(masks, channel_dim=1)
            t_eager = _time(
                functools.partial(_eager, eager_model, onehot, stacks, device),
                device,
                repeats,
                functools.partial(_eager, eager_model, onehot[:2], stacks[:2], device),
            )
            row: dict[str, Any] = {
                "device": device.type,
                "preset": preset,
                "size": size,
                "n_slices": n_slices,
                "eager_slices_per_s": n_slices / t_eager,
            }
            for b in batches:
                t = _time(
                    functools.partial(synth.synthesize_slices, masks, stacks, batch_size=b),
                    device,
                    repeats,
                    functools.partial(synth.synthesize_slices, masks[:b], stacks[:b], batch_size=b),
                )
                row[f"batched_{b}_slices_per_s"] = n_slices / t
                row[f"speedup_{b}"] = t_eager / t
            row["batches"] = list(batches)
            row["repeats"] = repeats
            row["fastest_batch"] = max(batches, key=lambda b: row[f"batched_{b}_slices_per_s"])
            row["default_batch_size"] = default_batch_size(device, preset, (size, size))
            rows.append(row)
            print(
                f"  {device.type} {preset:5s} {size}: eager {row['eager_slices_per_s']:.2f} slices/s, "
                + ", ".join(
                    f"b{b} {row[f'batched_{b}_slices_per_s']:.2f} ({row[f'speedup_{b}']:.2f}x)" for b in batches
                ),
                flush=True,
            )
    return rows


# ---------------------------------------------------------------------------------------------- 2. whole subject
def _brats_subject(sequences: tuple[str, ...], seed: int = 0) -> tio.Subject:
    g = torch.Generator().manual_seed(seed)
    shape = BRATS_SHAPE
    x, y, z = (torch.linspace(-1, 1, s) for s in shape)
    brain = (x[:, None, None] / 0.8) ** 2 + (y[None, :, None] / 0.9) ** 2 + (z[None, None, :] / 0.85) ** 2 < 1
    d = torch.sqrt((x[:, None, None] - 0.3) ** 2 + (y[None, :, None] - 0.1) ** 2 + (z[None, None, :] - 0.1) ** 2)
    seg = torch.zeros(shape, dtype=torch.uint8)
    seg[d < 0.35] = 2
    seg[d < 0.2] = 4
    seg[d < 0.1] = 1
    seg[~brain] = 0
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    images = {
        s: tio.ScalarImage(
            tensor=torch.where(brain, 500 + 1000 * torch.rand(shape, generator=g), 0.0)[None], affine=affine
        )
        for s in sequences
    }
    return tio.Subject(**images, seg=tio.LabelMap(tensor=seg[None], affine=affine), scheme="brats2021")


def bench_subject(preset: str, device: torch.device, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_generator(preset).eval()
    seqs = tuple(model.sequences)
    atlas = _random_atlas(seqs, BRATS_SHAPE)
    synth = Synthesizer.from_model(model, atlas, device=str(device))
    subject = _brats_subject(seqs)
    n_brain_slices = int(subject[seqs[0]].data[0].ne(0).flatten(0, 1).any(0).sum())
    samr = SAMRSynthesize(ratio=1.0, weights=synth)
    baseline = tio.Compose([*(tio.RandomLabelsToImage(label_key="seg", image_key=s) for s in seqs), tio.RandomBlur()])
    first = torch.ones(1, *BRATS_SHAPE[:2], dtype=torch.long)
    t_samr = _time(lambda: samr(subject), device, repeats, lambda: synth.synthesize_slices(first, z=77))
    t_base = _time(lambda: baseline(subject), torch.device("cpu"), repeats)
    row = {
        "device": device.type,
        "preset": preset,
        "shape": list(BRATS_SHAPE),
        "n_sequences": len(seqs),
        "n_brain_slices": n_brain_slices,
        "samr_s_per_subject": t_samr,
        "labels_to_image_blur_s_per_subject": t_base,
        "ratio": t_samr / t_base,
    }
    print(
        f"  {device.type} {preset}: SAMRSynthesize {t_samr:.2f} s/subject, RandomLabelsToImage+RandomBlur "
        f"{t_base:.2f} s/subject ({row['ratio']:.1f}x)",
        flush=True,
    )
    return row


# ---------------------------------------------------------------------------------------------- 3. training step
class _Slices2D:
    """Real 2D items (128x128, SAMR labels) with the axial atlas slice they come from."""

    def __init__(self, n: int, n_seq: int, size: int) -> None:
        self.masks = _ellipse_masks(n, size, seed=1)
        g = torch.Generator().manual_seed(1)
        self.images = torch.where(self.masks[:, None] > 0, torch.rand(n, n_seq, size, size, generator=g), 0.0)

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": self.masks[i], "brain": self.masks[i] > 0, "z": 4}


def _cycle(loader: Any) -> Any:
    while True:
        yield from loader


def bench_training_step(preset: str, device: torch.device, steps: int, batch: int = 16, size: int = 128) -> dict:
    torch.manual_seed(0)
    model = build_generator(preset).eval()
    seqs = tuple(model.sequences)
    synth = Synthesizer.from_model(model, _random_atlas(seqs, (size, size, 8)), device=str(device))
    real = _Slices2D(64, len(seqs), size)
    mixed = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="samr", batched=True, donors=None)
    unet = UNet(len(seqs), 5, depth=4, base_channels=16).to(device)
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)

    def run(loader: Any) -> float:
        it = _cycle(loader)
        times = []
        for k in range(steps + 1):
            start = time.perf_counter()
            b = next(it)
            x, y = b["image"].to(device), b["label"].to(device)
            loss = torch.nn.functional.cross_entropy(unet(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            _sync(device)
            if k:  # the first step is a warm-up
                times.append(time.perf_counter() - start)
        return statistics.mean(times)

    g = torch.Generator().manual_seed(0)
    t_real = run(DataLoader(real, batch_size=batch, shuffle=True, generator=g, drop_last=True))
    g = torch.Generator().manual_seed(0)
    t_mixed = run(SynthesizingLoader(DataLoader(mixed, batch_size=batch, shuffle=True, generator=g, drop_last=True)))
    row = {
        "device": device.type,
        "preset": preset,
        "batch": batch,
        "size": size,
        "ratio": 0.5,
        "real_s_per_step": t_real,
        "mixed_s_per_step": t_mixed,
        "added_s_per_step": t_mixed - t_real,
    }
    print(
        f"  {device.type} {preset}: U-Net step {t_real * 1e3:.0f} ms real-only, {t_mixed * 1e3:.0f} ms at ratio 0.5 "
        f"(+{(t_mixed - t_real) * 1e3:.0f} ms)",
        flush=True,
    )
    return row


# ---------------------------------------------------------------------------------------------- report
def _tables(result: dict[str, Any], batches: list[int]) -> str:
    m = result["machine"]
    state = "idle" if m.get("idle_before") else "NOT idle (shared)"
    lines = [
        f"Machine: {m['platform']}, {m['cpu_count']} CPUs, {m['cpu_threads']} torch threads, torch {m['torch']}; "
        f"{state}: load average {m.get('load_average_before')} before, {m.get('load_average_after')} after. "
        f"Medians over {result['repeats']} repeats.",
        "",
        "### Slices per second (batched Synthesizer vs per-slice eager call)",
        "",
    ]
    head = "| device | preset | size | eager | " + " | ".join(f"batch {b}" for b in batches) + " | fastest | default |"
    lines += [head, "|" + " --- |" * (6 + len(batches))]
    for r in result["slices"]:
        cells = [f"{r[f'batched_{b}_slices_per_s']:.2f} ({r[f'speedup_{b}']:.1f}x)" for b in batches]
        lines.append(
            f"| {r['device']} | {r['preset']} | {r['size']} | {r['eager_slices_per_s']:.2f} | "
            + " | ".join(cells)
            + f" | {r['fastest_batch']} | {r['default_batch_size']} |"
        )
    lines += [
        "",
        "### Whole 240x240x155 subject",
        "",
        "| device | preset | brain slices | SAMRSynthesize (s) | RandomLabelsToImage + RandomBlur (s) | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["subject"]:
        lines.append(
            f"| {r['device']} | {r['preset']} | {r['n_brain_slices']} | {r['samr_s_per_subject']:.2f} | "
            f"{r['labels_to_image_blur_s_per_subject']:.2f} | {r['ratio']:.1f}x |"
        )
    if result.get("local"):
        lines += [
            "",
            "### Local painting per subject (mode='local', default painting)",
            "",
            "| device | subject | local painting (s) | RandomLabelsToImage + RandomBlur (s) | ratio |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in result["local"]:
            lines.append(
                f"| {r['device']} | {r['subject']} | {r['local_s_per_subject']:.3f} | "
                f"{r['labels_to_image_blur_s_per_subject']:.3f} | {r['ratio']:.2f}x |"
            )
    lines += ["", "### Segmentation training step (2D U-Net, batch 16, 128x128) at ratio 0.5", ""]
    lines += ["| device | preset | real only (ms) | ratio 0.5 (ms) | added (ms) |", "| --- | --- | --- | --- | --- |"]
    for r in result["training_step"]:
        lines.append(
            f"| {r['device']} | {r['preset']} | {r['real_s_per_step'] * 1e3:.0f} | {r['mixed_s_per_step'] * 1e3:.0f} | "
            f"{r['added_s_per_step'] * 1e3:+.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer configs: a few minutes on 2 shared CPU cores")
    parser.add_argument("--out", type=Path, default=Path("outputs/throughput.json"), help="JSON output path")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement")
    parser.add_argument("--no-cuda", action="store_true", help="CPU only even when CUDA is present")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("slices", "subject", "step", "local"),
        default=("slices", "subject", "step", "local"),
        help="run only these parts (default: all)",
    )
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="batch sizes of the slice table"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        raise SystemExit(f"{args.out} exists; pass --overwrite to replace it or choose another --out")
    if any(b < 1 for b in args.batches):
        raise SystemExit(f"--batches must be >= 1, got {args.batches}")
    state = machine_state()
    torch.set_num_threads(args.threads)
    batches = list(args.batches)
    if args.quick:
        presets, sizes, n_slices, subject_presets, steps = ["tiny", "lite"], [128], 32, ["tiny"], 4
        repeats = args.repeats or 3
    else:
        presets, sizes, n_slices, subject_presets, steps = ["tiny", "lite", "paper"], [128, 256], 32, ["lite"], 8
        repeats = args.repeats or 5
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "cpu_threads": args.threads,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_count": state["cpu_count"],
            "load_average_before": state["load_average"],
            "idle_before": state["idle"],
        },
        "quick": args.quick,
        "repeats": repeats,
        "slices": [],
        "subject": [],
        "training_step": [],
        "local": [],
        "note": "random-initialised weights; timings on a shared machine, informative only",
    }
    local_subjects, local_fill = [], "zero"
    if "local" in args.only:
        from benchmarks.throughput_local import bench_subject as bench_local
        from benchmarks.throughput_local import brats_like_1mm, bundled_context_fill, phantom_subject_2mm

        local_subjects = [phantom_subject_2mm(), brats_like_1mm()]
        local_fill = bundled_context_fill()
    for device in devices:
        if "slices" in args.only:
            print(f"[{device.type}] slices per second", flush=True)
            result["slices"] += bench_slices(presets, sizes, batches, n_slices, device, repeats)
        if "subject" in args.only:
            print(f"[{device.type}] whole subject", flush=True)
            for preset in subject_presets if device.type == "cpu" else ["lite", "paper"]:
                result["subject"].append(bench_subject(preset, device, 1 if device.type == "cpu" else 3))
        if "step" in args.only:
            print(f"[{device.type}] training step", flush=True)
            result["training_step"].append(bench_training_step("tiny" if args.quick else "lite", device, steps))
        if local_subjects:
            print(f"[{device.type}] local painting", flush=True)
            result["local"] += [bench_local(subject, device, repeats, local_fill) for subject in local_subjects]
    after = machine_state()
    result["machine"]["load_average_after"] = after["load_average"]
    table = _tables(result, batches)
    print("\n" + table)
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
