"""GAN training speed: optimisation steps per second and peak memory, per preset, on CPU and CUDA.

Each (preset, device) runs in a fresh subprocess on random SAMR-format instances
(:class:`samraug.training.gan.SyntheticSliceDataset`, 5 sequences, atlas on), so its peak memory is its own:

- CPU: peak resident set size (``resource.getrusage(...).ru_maxrss``) minus the RSS after imports;
- CUDA: ``torch.cuda.max_memory_allocated``.

A step is the full SAMR update (D, U and G; :meth:`samraug.training.GANTrainer.train_step`). After ``--warmup``
steps, ``--steps`` steps are timed. Defaults: 128x128, batch 8, CPU with 2 threads (presets tiny and lite; the
paper preset's 320M-parameter generator takes minutes per CPU step, ask for it with ``--presets paper``) and,
when CUDA is present, every preset with autocast (bf16 where supported) and channels-last.

    python benchmarks/training_speed.py --out outputs/training_speed.json
    python benchmarks/training_speed.py --size 256 --batch-size 4 --presets tiny lite paper --devices cuda

Prints a table and writes JSON (``--out``); never asserts anything about timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SEQUENCES = ("t1n", "t1c", "t2w", "t2f", "aptw")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_one(preset: str, device: str, size: int, batch_size: int, steps: int, warmup: int, threads: int) -> dict:
    """Time one (preset, device) in this process; returns a result row."""
    import torch

    torch.set_num_threads(threads)
    from torch.utils.data import default_collate

    from samraug.training import GANTrainer, preset_config
    from samraug.training.gan import SyntheticSliceDataset

    base_rss = _rss_mb()
    cfg = preset_config(preset, batch_size=batch_size, num_workers=0)
    trainer = GANTrainer(cfg, sequences=SEQUENCES, device=device)
    trainer.setup_schedule(warmup + steps + 1)
    ds = SyntheticSliceDataset(batch_size, size=size, sequences=SEQUENCES)
    batch = default_collate([ds[i] for i in range(batch_size)])
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        trainer.train_step(batch)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        losses = trainer.train_step(batch)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    params = {
        name: sum(p.numel() for p in m.parameters())
        for name, m in (("G", trainer.generator), ("D", trainer.discriminator), ("U", trainer.unet))
        if m is not None
    }
    return {
        "preset": preset,
        "device": str(trainer.device),
        "device_name": torch.cuda.get_device_name(trainer.device) if cuda else platform.processor() or "cpu",
        "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "fp32",
        "threads": threads if not cuda else None,
        "size": size,
        "batch_size": batch_size,
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "samples_per_s": steps * batch_size / seconds,
        "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else _maxrss_mb() - base_rss,
        "memory_kind": "cuda max_memory_allocated" if cuda else "max RSS - RSS after imports",
        "params_million": {k: round(v / 1e6, 3) for k, v in params.items()},
        "finite": all(bool(torch.isfinite(v)) for v in losses.values()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", choices=("tiny", "lite", "paper"), help="default: see the docstring")
    p.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), help="default: cpu, and cuda when present")
    p.add_argument("--size", type=int, default=128, help="slice size (H = W), a multiple of 32")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per (preset, device) before giving up")
    p.add_argument("--out", default="outputs/training_speed.json", help="JSON output")
    p.add_argument("--worker", nargs=2, metavar=("PRESET", "DEVICE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        row = run_one(args.worker[0], args.worker[1], args.size, args.batch_size, args.steps, args.warmup, args.threads)
        print("RESULT " + json.dumps(row))
        return 0

    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for device in devices:
        presets = args.presets or (["tiny", "lite", "paper"] if device == "cuda" else ["tiny", "lite"])
        for preset in presets:
            cmd = [sys.executable, __file__, "--worker", preset, device, "--size", str(args.size)]
            cmd += ["--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
            cmd += ["--threads", str(args.threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            except subprocess.TimeoutExpired:
                rows.append({"preset": preset, "device": device, "error": f"timed out after {args.timeout:g} s"})
                continue
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                rows.append({"preset": preset, "device": device, "error": tail[0]})
                continue
            rows.append(json.loads(lines[-1][len("RESULT ") :]))

    header = (
        f"{'preset':8} {'device':8} {'amp':6} {'thr':>3} {'size':>5} {'batch':>5} "
        f"{'steps/s':>8} {'samples/s':>9} {'peak MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['preset']:8} {r['device']:8} ERROR: {r['error']}")
            continue
        print(
            f"{r['preset']:8} {r['device']:8} {r['amp']:6} {r['threads'] or '-':>3} {r['size']:>5} "
            f"{r['batch_size']:>5} {r['steps_per_s']:8.3f} {r['samples_per_s']:9.2f} {r['peak_memory_mb']:9.0f}"
        )
    meta = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
