"""benchmarks/gpu_check.py: the prepared GPU check runs on the CPU as a dry run and writes its JSON report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of scripts, not installed

from benchmarks import gpu_check

CUDA_ONLY = [name for name, needs_cuda, _ in gpu_check.CHECKS if needs_cuda]


def test_dry_run_skips_cuda_checks_and_reports_the_others(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    only = ["environment", *CUDA_ONLY, "throughput"]
    assert gpu_check.main(["--dry-run", "--out", str(out), "--quiet", "--only", *only]) == 0
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert report["dry_run"] is True and report["all_ok"] is True and list(checks) == only
    for name in CUDA_ONLY:
        assert checks[name]["status"] == "skipped"
    assert checks["environment"]["torch"] == torch.__version__
    rows = checks["throughput"]["slices"]
    assert rows and all(r["eager_slices_per_s"] > 0 and r["fastest_batch"] in r["batches"] for r in rows)
    with pytest.raises(SystemExit, match="--overwrite"):  # never overwrites without the flag
        gpu_check.main(["--dry-run", "--out", str(out), "--quiet", "--only", "environment"])


@pytest.mark.slow
def test_full_dry_run_passes_every_cpu_check(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--quiet"]) == 0
    checks = json.loads(out.read_text())["checks"]
    assert [c[0] for c in gpu_check.CHECKS] == list(checks)
    assert checks["batched_main_process"]["status"] == "ok" and checks["batched_main_process"]["items"] > 0
    assert checks["ddp_one_gpu"]["status"] == "ok" and checks["ddp_one_gpu"]["backend"] == "gloo"
    assert checks["training_speed_lite"]["status"] == "ok" and checks["training_speed_lite"]["preset"] == "tiny"
    local = checks["local_batched_main_process"]
    assert local["status"] == "ok" and local["same_labels_as_unbatched_cpu"] and local["items"] > 0
    assert checks["local_precision"]["status"] == "ok" and checks["local_precision"]["painted_slices"] > 0
    assert checks["throughput_local"]["status"] == "ok" and checks["training_local"]["status"] == "ok"
    assert checks["local_shape_reuse"]["status"] == "ok"


def test_local_shape_reuse_times_repeated_and_new_shapes(tmp_path: Path) -> None:
    ctx = gpu_check.CheckContext(torch.device("cpu"), True, tmp_path, 64, 2, 1)
    res = gpu_check.run_checks(ctx, ["local_shape_reuse"], log=lambda m: None)["local_shape_reuse"]
    assert res["status"] == "ok" and res["batch"] == 4
    for key in ("repeated_shape_ms", "new_shape_ms", "same_new_shapes_again_ms"):
        assert res[key] > 0
    assert res["new_over_repeated"] == pytest.approx(res["new_shape_ms"] / res["repeated_shape_ms"])


def test_a_failing_check_is_recorded_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(ctx: gpu_check.CheckContext) -> dict:
        raise RuntimeError("kaputt")

    checks = tuple((n, c, boom if n == "environment" else f) for n, c, f in gpu_check.CHECKS)
    monkeypatch.setattr(gpu_check, "CHECKS", checks)
    ctx = gpu_check.CheckContext(torch.device("cpu"), True, tmp_path, 64, 2, 1)
    res = gpu_check.run_checks(ctx, ["environment", "autocast_bf16"], log=lambda m: None)
    assert res["environment"]["status"] == "error" and "kaputt" in res["environment"]["error"]
    assert res["autocast_bf16"]["status"] == "skipped"
    with pytest.raises(ValueError, match="unknown checks"):
        gpu_check.run_checks(ctx, ["nope"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_without_cuda_the_real_run_says_how_to_dry_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--dry-run"):
        gpu_check.main(["--out", str(tmp_path / "r.json")])
