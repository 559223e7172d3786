"""Model size of every generator preset and baseline: parameters, fp16 weight size, GFLOPs per slice and CPU
forward time per slice, at 128x128 and 256x256.

- GFLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass at batch 1 (a multiply-add counts as
  2 FLOPs), on the ``meta`` device (shapes only, nothing is computed).
- CPU time: median (and minimum) wall-clock time over ``--repeats`` timed forward passes (after one warm-up) of
  a batch of ``--batch`` slices, in each ``--memory-formats`` (contiguous, ``channels_last``), under
  ``torch.inference_mode()`` with ``torch.set_num_threads(--threads)``, divided by the batch size; plus the
  process CPU time per slice (median), which with ``--threads 1`` measures the work independently of other
  processes (on an oversubscribed machine, multi-threaded wall times mostly measure how long the threads wait
  for each other).

Prints a markdown table and writes JSON to ``--out``. Timings are informative only (shared machines vary).

Example:
    python benchmarks/model_size.py --sizes 128 256 --presets tiny lite paper --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from samraug.labels import one_hot
from samraug.models.generator import MODEL_TYPES, PRESETS, build_generator


def _inputs(model: torch.nn.Module, batch: int, size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    n_seq = len(model.sequences)
    if device == "meta":
        return torch.empty(batch, 5, size, size, device="meta"), torch.empty(
            batch, 3 * n_seq, size, size, device="meta"
        )
    gen = torch.Generator().manual_seed(0)
    mask = one_hot(torch.randint(0, 5, (batch, size, size), generator=gen))
    atlas = torch.rand(batch, 3 * n_seq, size, size, generator=gen) * 2 - 1
    return mask, atlas


def gflops(preset: str, model_type: str, size: int) -> float:
    """Forward GFLOPs for one slice (batch 1), counted on the meta device."""
    with torch.device("meta"):
        model = build_generator(preset, model_type=model_type).eval()
    mask, atlas = _inputs(model, 1, size, "meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(mask, atlas)
    return counter.get_total_flops() / 1e9


def cpu_ms_per_slice(
    model: torch.nn.Module, size: int, batch: int, repeats: int, memory_format: torch.memory_format
) -> tuple[float, float, float]:
    """Median and minimum wall-clock CPU forward time per slice, and median process CPU time per slice (ms)."""
    mask, atlas = (t.to(memory_format=memory_format) for t in _inputs(model, batch, size, "cpu"))
    model = model.to(memory_format=memory_format)
    times, cpu = [], []
    with torch.inference_mode():
        model(mask, atlas)  # warm-up
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            model(mask, atlas)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    per_slice = 1e3 / batch
    return statistics.median(times) * per_slice, min(times) * per_slice, statistics.median(cpu) * per_slice


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    rows = []
    for preset in args.presets:
        for model_type in args.model_types:
            torch.manual_seed(0)
            model = build_generator(preset, model_type=model_type).eval()
            n_params = sum(p.numel() for p in model.parameters())
            n_buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
            for size in args.sizes:
                flops = gflops(preset, model_type, size)
                for fmt in args.memory_formats:
                    timing = cpu_ms_per_slice(model, size, args.batch, args.repeats, _FORMATS[fmt])
                    row = {
                        "preset": preset,
                        "model_type": model_type,
                        "size": size,
                        "params_M": n_params / 1e6,
                        "fp16_MB": (n_params + n_buffers) * 2 / 1e6,
                        "gflops_per_slice": flops,
                        "memory_format": fmt,
                        "cpu_ms_per_slice": timing[0],
                        "cpu_ms_per_slice_min": timing[1],
                        "process_cpu_ms_per_slice": timing[2],
                        "batch": args.batch,
                    }
                    rows.append(row)
                    print(_row(row), flush=True)
            del model
    return rows


_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
_HEADER = (
    "| preset | model_type | size | params (M) | fp16 MB | GFLOPs/slice | format | wall ms/slice (median) | (min) "
    "| process CPU ms/slice |"
)


def _row(r: dict[str, Any]) -> str:
    return (
        f"| {r['preset']} | {r['model_type']} | {r['size']} | {r['params_M']:.2f} | {r['fp16_MB']:.1f} | "
        f"{r['gflops_per_slice']:.2f} | {r['memory_format']} | {r['cpu_ms_per_slice']:.1f} | "
        f"{r['cpu_ms_per_slice_min']:.1f} | {r['process_cpu_ms_per_slice']:.1f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--model-types", nargs="+", default=list(MODEL_TYPES), choices=list(MODEL_TYPES))
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes per row (median)")
    parser.add_argument("--batch", type=int, default=8, help="slices per timed forward pass")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--memory-formats", nargs="+", default=["contiguous", "channels_last"], choices=list(_FORMATS))
    parser.add_argument("--out", type=Path, default=Path("outputs/model_size.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1:
        parser.error("--repeats and --batch must be >= 1")

    load_before = os.getloadavg()
    print(_HEADER)
    print("|" + " --- |" * 10)
    rows = run(args)
    load_after = os.getloadavg()
    result = {
        "benchmark": "model_size",
        "settings": {
            "sizes": args.sizes,
            "repeats": args.repeats,
            "batch": args.batch,
            "threads": args.threads,
            "flops": "FlopCounterMode, forward, batch 1, multiply-add = 2 FLOPs",
            "time": "median/min wall-clock and median process CPU time of a batch forward under inference_mode, "
            "divided by the batch size",
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "loadavg_1_5_15_before": load_before,
            "loadavg_1_5_15_after": load_after,
        },
        "presets": PRESETS,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nload average (1/5/15 min) before {load_before}, after {load_after}; wrote {args.out}")


if __name__ == "__main__":
    main()
