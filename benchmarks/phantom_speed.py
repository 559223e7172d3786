"""Speed of the digital phantom (a simulation): seconds per generated subject at 2 mm and 1 mm on one CPU core.

Targets (informative, never asserted): one 2 mm subject (99x117x95) in under 2 s, one 1 mm subject (197x233x189)
in under 20 s. The template load (nilearn's MNI152 maps, resampled and cached once per resolution and process) is
timed separately; the per-subject times are with the template cached, as when a data set is written. Optionally
(``--write``) the time to write one subject as gzip NIfTI is measured too.

Wall-clock and CPU (process) times are both reported: on a shared machine the wall clock includes waiting for
the core, the CPU time does not. Prints a markdown table and writes JSON (``--out``).

Usage:
    python benchmarks/phantom_speed.py --seeds 5 --out outputs/phantom_speed.json
    python benchmarks/phantom_speed.py --resolutions 2 --seeds 10 --write
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy / torch are imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from samraug.data import phantom  # noqa: E402

TARGET_S = {2.0: 2.0, 1.0: 20.0}


def bench_resolution(resolution: float, seeds: int, write: bool) -> dict:
    t0 = time.perf_counter()
    phantom._template(resolution)  # the cached template load, once per process
    template_s = time.perf_counter() - t0
    times, cpu_times, write_times, voxels, lesion_counts = [], [], [], 0, []
    for seed in range(seeds):
        t0, c0 = time.perf_counter(), time.process_time()
        subject = phantom.generate_subject(seed, resolution=resolution)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        voxels = int(np.prod(subject.shape))
        lesion_counts.append(len(subject.parameters["lesions"]))
        if write:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                phantom.write_subject(subject, tmp)
                write_times.append(time.perf_counter() - t0)
        del subject
    return {
        "resolution_mm": resolution,
        "shape": list(phantom._template(resolution).mask.shape),
        "voxels": voxels,
        "seeds": seeds,
        "template_load_s": template_s,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "cpu_median_s": statistics.median(cpu_times),
        "cpu_times_s": cpu_times,
        "target_s": TARGET_S[resolution],
        "write_median_s": statistics.median(write_times) if write_times else None,
        "lesions_per_subject": lesion_counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=float, nargs="+", default=[2.0, 1.0], choices=[1.0, 2.0])
    parser.add_argument("--seeds", type=int, default=5, help="subjects per resolution (seeds 0..N-1)")
    parser.add_argument("--write", action="store_true", help="also time writing each subject (gzip NIfTI)")
    parser.add_argument("--out", type=Path, default=Path("outputs/phantom_speed.json"), help="JSON output file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = [bench_resolution(r, args.seeds, args.write) for r in args.resolutions]
    result = {
        "benchmark": "phantom_speed",
        "note": "digital phantom = simulation; one CPU core; per-subject times with the template cached",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": 1,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "results": rows,
    }
    print(
        "| resolution | grid | subjects | template load (s) | median s/subject | min | max | median CPU s | target "
        "| write s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        write = f"{r['write_median_s']:.2f}" if r["write_median_s"] is not None else "-"
        print(
            f"| {r['resolution_mm']:g} mm | {'x'.join(map(str, r['shape']))} | {r['seeds']} | "
            f"{r['template_load_s']:.2f} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
            f"{r['cpu_median_s']:.2f} | "
            f"< {r['target_s']:g} | {write} |"
        )
    print(f"peak RSS {result['peak_rss_gb']:.2f} GB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
