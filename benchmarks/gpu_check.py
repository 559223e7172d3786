"""One prepared GPU check: every CUDA path of samraug in one run of at most ~10 minutes, with a JSON report.

Run it whenever a GPU is available (``python benchmarks/gpu_check.py --out gpu_check.json``); ``--dry-run`` runs
the same script on the CPU with tiny sizes and skips the CUDA-only checks (so it is tested without a GPU).

Checks (each independent: a failure is recorded, the next check still runs):

- ``environment``: torch / CUDA / cuDNN versions, the GPU, bf16 support, the machine's load.
- ``autocast_bf16``, ``autocast_fp16``: the bundled whole-image generator (:data:`samraug.hub.BUNDLED_WHOLE_WEIGHTS`;
  every check below uses it too: its batched path is the one that synthesizes on the GPU in the main process)
  through :class:`samraug.synthesis.Synthesizer` in bf16 and fp16 autocast against float32 on the same masks
  (finite, max / mean absolute difference).
- ``channels_last``: the same synthesis with and without ``channels_last`` (max absolute difference).
- ``batched_main_process``: :class:`samraug.dataset.SAMRAugmentedDataset` ``(batched=True)`` over phantom subjects
  through :class:`samraug.dataset.SynthesizingLoader` with 2 DataLoader workers (workers edit masks, the main
  process synthesizes on the GPU); seconds per batch.
- ``cuda_in_worker_guard``: an unbatched data set synthesizing on CUDA inside a DataLoader worker must raise the
  library's error that points to ``batched=True``.
- ``ddp_one_gpu``: a child process starts a one-rank ``nccl`` process group, wraps a generator in
  ``DistributedDataParallel`` and takes optimiser steps (gloo on the CPU in a dry run).
- ``training_speed_lite``: GAN steps per second of the lite preset (``benchmarks/training_speed.py``'s
  ``run_one``: 128x128, batch 8, autocast, channels_last); tiny on the CPU in a dry run.
- ``throughput``: batched vs per-slice eager synthesis (``benchmarks/throughput.py``'s ``bench_slices``, presets tiny
  and lite, 128 and 256) and the whole-subject path (``bench_subject``, lite), with the batch size
  :func:`samraug.batching.default_batch_size` picks for the device.
- ``local_precision``: the bundled local weights (:data:`samraug.hub.BUNDLED_LOCAL_WEIGHTS`) paint one phantom edit
  (:func:`samraug.local_synthesis.paint_local`) on the CPU in float32 and on the device in float32 and in the
  default dtype (CUDA: bf16/fp16 autocast); largest difference in units of the subject's brain intensity range.
- ``local_batched_main_process``: the default (local) weights through ``SAMRAugmentedDataset(batched=True)`` and
  :class:`samraug.dataset.SynthesizingLoader` with 2 workers (workers edit, the main process paints on the device),
  against the same data set unbatched on the CPU: same labels, images within 5 % of their range.
- ``throughput_local``: ``benchmarks/throughput_local.py``'s per-subject timing on the device (2 mm phantom and
  1 mm 240x240x155; RandomLabelsToImage + RandomBlur beside it on the CPU).
- ``training_local``: ``recipes/train_samr.py --task local`` end to end on the device (workers, a checkpoint, fp16
  export), then the exported weights paint a phantom edit.

Example:
    python benchmarks/gpu_check.py --out /tmp/gpu_check.json
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check_dry.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from samraug.outputs import write_atomic

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["CHECKS", "CheckContext", "main", "run_checks"]


@dataclass
class CheckContext:
    """Settings shared by the checks: the device, whether this is a CPU dry run, and the problem sizes."""

    device: torch.device
    dry_run: bool
    work: Path
    size: int
    n_slices: int
    repeats: int


def _synth_pair(ctx: CheckContext, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Float32 synthesis and synthesis with ``kwargs`` of the same masks by the bundled whole-image generator."""
    from samraug.hub import BUNDLED_WHOLE_WEIGHTS
    from samraug.synthesis import Synthesizer

    masks = torch.ones(ctx.n_slices, ctx.size, ctx.size, dtype=torch.long)
    masks[:, ctx.size // 4 : ctx.size // 2, ctx.size // 4 : ctx.size // 2] = 4
    masks[:, : ctx.size // 8] = 0
    z = torch.arange(ctx.n_slices) + 40
    ref = Synthesizer(BUNDLED_WHOLE_WEIGHTS, device=str(ctx.device), dtype="float32", channels_last=False)
    out = Synthesizer(BUNDLED_WHOLE_WEIGHTS, device=str(ctx.device), **kwargs)
    a = ref.synthesize_slices(masks, z=z)
    t0 = time.perf_counter()
    b = out.synthesize_slices(masks, z=z)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    return a, b, time.perf_counter() - t0


def _compare(a: torch.Tensor, b: torch.Tensor, seconds: float, tolerance: float) -> dict[str, Any]:
    diff = (a - b).abs()
    finite = bool(torch.isfinite(b).all())
    ok = finite and float(diff.mean()) <= tolerance
    return {
        "ok": ok,
        "finite": finite,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "mean_tolerance": tolerance,
        "seconds": round(seconds, 4),
    }


def check_environment(ctx: CheckContext) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    out: dict[str, Any] = {
        "ok": True,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda_available": cuda,
        "device": str(ctx.device),
        "dry_run": ctx.dry_run,
    }
    try:
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    if cuda:
        props = torch.cuda.get_device_properties(0)
        out |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda_version": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    return out


def check_autocast_bf16(ctx: CheckContext) -> dict[str, Any]:
    return _compare(*_synth_pair(ctx, dtype="bfloat16"), tolerance=0.05)


def check_autocast_fp16(ctx: CheckContext) -> dict[str, Any]:
    return _compare(*_synth_pair(ctx, dtype="float16"), tolerance=0.02)


def check_channels_last(ctx: CheckContext) -> dict[str, Any]:
    return _compare(*_synth_pair(ctx, dtype="float32", channels_last=True), tolerance=1e-3)


def _phantom_subjects(ctx: CheckContext, n: int) -> list[Any]:
    from samraug.data.brats import load_brats
    from samraug.data.phantom import ensure_phantom_dataset

    root = ensure_phantom_dataset(n, seed=4242, resolution=2.0, cache_dir=ctx.work / "phantom")
    return load_brats(root, scheme="brats2024", extra_sequences=("aptw",))


def _as_list(items: list[Any]) -> list[Any]:
    return list(items)


def check_batched_main_process(ctx: CheckContext) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from samraug.dataset import SAMRAugmentedDataset, SynthesizingLoader
    from samraug.hub import BUNDLED_WHOLE_WEIGHTS

    subjects = _phantom_subjects(ctx, 2)  # 2 mm: on the whole-image weights' atlas grid
    ds = SAMRAugmentedDataset(
        subjects, 0.5, weights=BUNDLED_WHOLE_WEIGHTS, scheme="brats2024", batched=True, device=str(ctx.device), seed=0
    )
    loader = SynthesizingLoader(DataLoader(ds, batch_size=2, num_workers=2, collate_fn=_as_list))
    t0 = time.perf_counter()
    n_batches, n_items = 0, 0
    for batch in loader:
        n_batches += 1
        n_items += len(batch)
        for item in batch:
            for name, image in item.get_images_dict(intensity_only=True).items():
                if not torch.isfinite(image.data).all():
                    raise FloatingPointError(f"synthesized sequence {name!r} holds NaN/inf")
    seconds = time.perf_counter() - t0
    return {"ok": n_items == len(ds), "items": n_items, "batches": n_batches, "seconds_per_batch": seconds / n_batches}


def check_cuda_in_worker_guard(ctx: CheckContext) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from samraug.dataset import SAMRAugmentedDataset
    from samraug.hub import BUNDLED_WHOLE_WEIGHTS

    subjects = _phantom_subjects(ctx, 2)
    ds = SAMRAugmentedDataset(subjects, 0.5, weights=BUNDLED_WHOLE_WEIGHTS, scheme="brats2024", device="cuda", seed=0)
    # items 2..3 are synthetic: ask for one of them inside a worker
    loader = DataLoader(torch.utils.data.Subset(ds, [len(ds) - 1]), batch_size=None, num_workers=1)
    try:
        next(iter(loader))
    except RuntimeError as e:
        msg = str(e)
        return {"ok": "batched=True" in msg, "raised": True, "message": msg[-300:]}
    return {"ok": False, "raised": False, "message": "no error: a CUDA model ran inside a DataLoader worker"}


_DDP_CHILD = textwrap.dedent(
    """
    import os, sys, time, torch, torch.distributed as dist
    from samraug.models.generator import build_generator
    backend, device = sys.argv[1], torch.device(sys.argv[2])
    dist.init_process_group(backend, init_method="tcp://127.0.0.1:" + sys.argv[3], rank=0, world_size=1)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    g = build_generator("tiny").to(device)
    model = torch.nn.parallel.DistributedDataParallel(g, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    n = len(g.sequences)
    size = int(sys.argv[4])
    t0 = time.perf_counter()
    for _ in range(3):
        mask = torch.zeros(2, 5, size, size, device=device); mask[:, 1] = 1
        atlas = torch.zeros(2, 3 * n, size, size, device=device)
        loss = model(mask, atlas).float().pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    t = torch.ones(1, device=device); dist.all_reduce(t)
    if device.type == "cuda":
        torch.cuda.synchronize()
    print("DDP_OK", float(loss), float(t), time.perf_counter() - t0)
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_ddp_one_gpu(ctx: CheckContext) -> dict[str, Any]:
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    device = "cuda:0" if ctx.device.type == "cuda" else "cpu"
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _DDP_CHILD, backend, device, str(_free_port()), str(ctx.size)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("DDP_OK")), None)
    if proc.returncode != 0 or line is None:
        return {"ok": False, "backend": backend, "returncode": proc.returncode, "stderr": proc.stderr[-1500:]}
    _, loss, reduced, seconds = line.split()
    return {"ok": float(reduced) == 1.0, "backend": backend, "loss": float(loss), "seconds_3_steps": float(seconds)}


def check_training_speed(ctx: CheckContext) -> dict[str, Any]:
    from benchmarks.training_speed import run_one

    if ctx.dry_run:
        row = run_one("tiny", "cpu", 64, 2, steps=1, warmup=1, threads=1)
    else:
        row = run_one("lite", "cuda", 128, 8, steps=30, warmup=5, threads=4)
    return {"ok": True, **row}


def check_throughput(ctx: CheckContext) -> dict[str, Any]:
    from benchmarks.throughput import bench_slices, bench_subject
    from samraug.batching import default_batch_size

    if ctx.dry_run:
        presets, sizes, batches, n = ["tiny"], [64], [1, 2], 2
    else:
        presets, sizes, batches, n = ["tiny", "lite"], [128, 256], [1, 8, 32, 64], 64
    chosen = {f"{p}_{s}": default_batch_size(ctx.device, p, (s, s)) for p in presets for s in sizes}
    rows = bench_slices(presets, sizes, batches, n, ctx.device, ctx.repeats)
    out: dict[str, Any] = {"ok": True, "slices": rows, "default_batch_size": chosen}
    if not ctx.dry_run:
        out["subject"] = bench_subject("lite", ctx.device, ctx.repeats)
    return out


def _local_case(ctx: CheckContext) -> dict[str, Any]:
    """A 2 mm phantom subject with a seeded random lesion edit (the local checks' input)."""
    from samraug.data.phantom import generate_subject
    from samraug.editing import LesionEditor
    from samraug.labels import get_scheme

    s = generate_subject(777, n_lesions=1, cavity_probability=0.0)
    scheme = get_scheme("brats2024")
    edited = LesionEditor(scheme).random_edit(s.seg, s.brain, generator=torch.Generator().manual_seed(3)).label
    images = {k: torch.from_numpy(v) for k, v in s.images.items()}
    return {"images": images, "seg": s.seg, "edited": edited, "brain": s.brain, "affine": s.affine, "scheme": scheme}


def _paint_case(case: dict[str, Any], synth: Any, **kwargs: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """:func:`samraug.local_synthesis.paint_local` of the local checks' case with ``synth``."""
    from samraug.local_synthesis import paint_local

    args = (case["images"], case["seg"], case["edited"], case["brain"], case["affine"], case["scheme"], synth)
    return paint_local(*args, **kwargs)


def _paint_local_with(case: dict[str, Any], device: str, dtype: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The case painted by the bundled local weights on ``device`` in ``dtype``, without noise."""
    from samraug.hub import BUNDLED_LOCAL_WEIGHTS
    from samraug.synthesis import Synthesizer

    return _paint_case(case, Synthesizer(BUNDLED_LOCAL_WEIGHTS, device=device, dtype=dtype), noise="none")


def check_local_precision(ctx: CheckContext) -> dict[str, Any]:
    """The bundled local weights paint the same edit on the CPU (float32) and on the device in float32 and in the
    default dtype (CUDA: bf16/fp16 autocast); differences in units of the subject's brain intensity range."""
    case = _local_case(ctx)
    ref, record = _paint_local_with(case, "cpu", "float32")
    if record["skipped"] is not None:
        return {"ok": False, "skipped": record["skipped"]}
    out: dict[str, Any] = {"painted_slices": record["painted_slices"], "region_voxels": record["region_voxels"]}
    brain = torch.from_numpy(case["brain"])
    scales = {}
    for k, image in case["images"].items():
        values = image[brain]
        scales[k] = float(values.quantile(0.995) - values.quantile(0.005))
    ok = True
    for dtype, tolerance in (("float32", 1e-3), ("auto", 0.05)):
        got, _ = _paint_local_with(case, str(ctx.device), dtype)
        rows = {}
        for k, v in ref.items():
            changed = v != case["images"][k]
            diff = (got[k] - v).abs() / scales[k]
            finite = bool(torch.isfinite(got[k]).all())
            rows[k] = {
                "max_rel": float(diff.max()),
                "mean_rel_in_region": float(diff[changed].mean()),
                "finite": finite,
            }
            ok &= finite and rows[k]["max_rel"] <= tolerance
        out[f"{ctx.device.type}_{dtype}_vs_cpu_float32"] = rows
    out["tolerances"] = {"float32": 1e-3, "auto": 0.05}
    return {"ok": ok, **out}


def check_local_batched_main_process(ctx: CheckContext) -> dict[str, Any]:
    """The default (local) weights through ``SAMRAugmentedDataset(batched=True)`` + :class:`SynthesizingLoader`
    with 2 workers (workers edit, the main process paints on the device), against the same data set unbatched on
    the CPU in this process: the same labels, images within tolerance."""
    import warnings

    from torch.utils.data import DataLoader

    from samraug.dataset import SAMRAugmentedDataset, SynthesizingLoader

    subjects = _phantom_subjects(ctx, 2 if ctx.dry_run else 4)
    kw = {"n_synthetic": len(subjects), "scheme": "brats2024", "seed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the bundled weights say they are simulated
        batched = SAMRAugmentedDataset(subjects, batched=True, device=str(ctx.device), **kw)
        plain = SAMRAugmentedDataset(subjects, device="cpu", dtype="float32", **kw)
    loader = SynthesizingLoader(DataLoader(batched, batch_size=2, num_workers=2, collate_fn=_as_list))
    t0 = time.perf_counter()
    made = [item for batch in loader for item in batch]
    seconds = time.perf_counter() - t0
    worst, same_labels, finite = 0.0, True, True
    for i in range(len(subjects), len(made)):
        ref = plain[i]
        same_labels &= torch.equal(made[i]["seg"].data, ref["seg"].data)
        for name, image in ref.get_images_dict(intensity_only=True).items():
            got = made[i][name].data
            finite &= bool(torch.isfinite(got).all())
            scale = float(image.data.abs().max()) or 1.0
            worst = max(worst, float((got - image.data).abs().max()) / scale)
    ok = len(made) == len(batched) and same_labels and finite and worst <= 0.05
    return {
        "ok": ok,
        "items": len(made),
        "same_labels_as_unbatched_cpu": same_labels,
        "max_rel_diff_vs_unbatched_cpu": worst,
        "seconds_per_item": seconds / len(made),
    }


def check_throughput_local(ctx: CheckContext) -> dict[str, Any]:
    """``benchmarks/throughput_local.py``'s per-subject timing (local painting vs RandomLabelsToImage + RandomBlur,
    the latter on the CPU) on this device: 2 mm phantom, and the 1 mm 240x240x155 subject unless a dry run."""
    from benchmarks.throughput_local import bench_subject, brats_like_1mm, phantom_subject_2mm

    subjects = [phantom_subject_2mm()] + ([] if ctx.dry_run else [brats_like_1mm()])
    rows = [bench_subject(s, ctx.device, ctx.repeats, "zero") for s in subjects]
    return {"ok": all(r["painted_runs"] > 0 for r in rows), "rows": rows, "cpu_threads": torch.get_num_threads()}


def check_local_shape_reuse(ctx: CheckContext) -> dict[str, Any]:
    """Diagnostic: what a new input shape costs the local model call on this device. Every painted region gives the
    model grid its own in-plane size, so per-shape setup (CUDA kernels, cuDNN plans) is paid on most calls; this times
    the stand-in local model on 32 slices at one repeated shape and at shapes it has not seen (each a multiple of the
    model's size multiple), ms per call. A large ratio says bucketing the crop sizes would pay."""
    from benchmarks.throughput_local import standin_synthesizer

    synth = standin_synthesizer(str(ctx.device))
    model = synth.model
    n = 2 * int(model.context_slices) + 1
    k, s = int(model.n_labels), len(model.sequences)
    mult = int(model.size_multiple)
    g = torch.Generator().manual_seed(0)
    batch = 4 if ctx.dry_run else 32

    def call(h: int, w: int) -> float:
        mask = torch.zeros(batch, k * n, h, w)
        mask[:, 1] = 1.0
        context = torch.rand(batch, (s + 1) * n, h, w, generator=g)
        t0 = time.perf_counter()
        out = synth.paint_local_slices(mask, context)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        if not bool(torch.isfinite(out).all()):
            raise RuntimeError("non-finite local painting")
        return 1000.0 * (time.perf_counter() - t0)

    base = 4 * mult
    call(base, base)  # warm-up at the repeated shape
    same = [call(base, base) for _ in range(ctx.repeats + 2)]
    new = [call(base + mult * (i + 1), base + mult * (i + 2)) for i in range(ctx.repeats + 2)]
    again = [call(base + mult * (i + 1), base + mult * (i + 2)) for i in range(ctx.repeats + 2)]
    med = statistics.median
    return {
        "ok": True,
        "batch": batch,
        "repeated_shape_ms": med(same),
        "new_shape_ms": med(new),
        "same_new_shapes_again_ms": med(again),
        "new_over_repeated": med(new) / med(same),
    }


def check_training_local(ctx: CheckContext) -> dict[str, Any]:
    """``recipes/train_samr.py --task local`` end to end on this device (phantom data, DataLoader workers,
    checkpoint, fp16 export), then the exported weights paint; seconds per step after the first checkpoint."""
    root = Path(__file__).resolve().parents[1]
    out = ctx.work / "local-weights"
    steps, batch = (4, 2) if ctx.dry_run else (60, 32)
    cmd = [
        sys.executable, str(root / "recipes" / "train_samr.py"), "--task", "local", "--preset", "tiny",
        "--n-subjects", "4" if ctx.dry_run else "8", "--crops-per-subject", "8" if ctx.dry_run else "32",
        "--batch-size", str(batch), "--steps", str(steps), "--checkpoint-every", str(steps // 2),
        "--device", str(ctx.device), "--workers", "2", "--fp16-weights", "--no-progress", "--log-every", "1",
        "--cache-dir", str(ctx.work / "phantom-train"), "--out", str(out), "--log-dir", str(ctx.work / "local-run"),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"ok": False, "returncode": proc.returncode, "stderr": proc.stderr[-2000:], "stdout": proc.stdout[-800:]}
    from samraug.hub import read_config
    from samraug.synthesis import Synthesizer

    painted, record = _paint_case(_local_case(ctx), Synthesizer(str(out), device=str(ctx.device)))
    finite = all(bool(torch.isfinite(v).all()) for v in painted.values())
    return {
        "ok": finite and record["skipped"] is None and read_config(out)["mode"] == "local",
        "steps": steps,
        "batch_size": batch,
        "wall_seconds_incl_data": round(seconds, 1),
        "stdout_tail": proc.stdout[-600:],
    }


#: (name, needs CUDA, check). CUDA-only checks are skipped in a dry run.
CHECKS: tuple[tuple[str, bool, Callable[[CheckContext], dict[str, Any]]], ...] = (
    ("environment", False, check_environment),
    ("autocast_bf16", True, check_autocast_bf16),
    ("autocast_fp16", True, check_autocast_fp16),
    ("channels_last", True, check_channels_last),
    ("batched_main_process", False, check_batched_main_process),
    ("cuda_in_worker_guard", True, check_cuda_in_worker_guard),
    ("ddp_one_gpu", False, check_ddp_one_gpu),
    ("training_speed_lite", False, check_training_speed),
    ("throughput", False, check_throughput),
    ("local_precision", False, check_local_precision),
    ("local_batched_main_process", False, check_local_batched_main_process),
    ("throughput_local", False, check_throughput_local),
    ("training_local", False, check_training_local),
    ("local_shape_reuse", False, check_local_shape_reuse),
)


def run_checks(
    ctx: CheckContext, only: Sequence[str] | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the checks (all, or those named in ``only``); each result carries ``status`` (``ok``, ``failed``,
    ``error`` or ``skipped``) and ``seconds``."""
    names = [c[0] for c in CHECKS]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {names}")
    results: dict[str, Any] = {}
    for name, needs_cuda, fn in CHECKS:
        if only and name not in only:
            continue
        if needs_cuda and ctx.device.type != "cuda":
            results[name] = {"status": "skipped", "reason": "needs CUDA (dry run)" if ctx.dry_run else "no CUDA"}
            log(f"{name:>22}: skipped")
            continue
        t0 = time.perf_counter()
        try:
            res = fn(ctx)
            res["status"] = "ok" if res.get("ok") else "failed"
        except Exception as e:  # a failing check is a result, not the end of the run
            res = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        res["seconds"] = round(time.perf_counter() - t0, 2)
        results[name] = res
        log(f"{name:>22}: {res['status']} ({res['seconds']:.1f} s)")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON report path")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, CUDA-only checks skipped")
    p.add_argument("--only", nargs="+", default=None, help=f"run only these checks: {[c[0] for c in CHECKS]}")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"{out} exists; pass --overwrite to replace it or choose another --out")
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run to exercise the script on the CPU")
    log = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="samraug-gpu-check-") as tmp:
        ctx = CheckContext(
            device=torch.device("cpu" if args.dry_run else "cuda"),
            dry_run=args.dry_run,
            work=Path(tmp),
            size=64 if args.dry_run else 128,
            n_slices=2 if args.dry_run else 32,
            repeats=1 if args.dry_run else 3,
        )
        results = run_checks(ctx, args.only, log)
    report = {
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "dry_run": args.dry_run,
        "checks": results,
        "all_ok": all(r["status"] in ("ok", "skipped") for r in results.values()),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_atomic(out, json.dumps(report, indent=1, default=str) + "\n")
    log(f"{'all checks passed' if report['all_ok'] else 'SOME CHECKS FAILED'}; wrote {out}")
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
