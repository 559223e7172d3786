"""benchmarks/throughput.py's local-painting part: one run times local painting and RandomLabelsToImage + RandomBlur
on the same 2 mm and 1 mm 240x240x155 subjects."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of scripts, not installed

from benchmarks import throughput


@pytest.mark.slow
def test_local_part_times_both_subjects_against_the_baseline(tmp_path):
    out = tmp_path / "throughput.json"
    result = throughput.main(["--only", "local", "--repeats", "1", "--no-cuda", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = result["local"]
    assert [r["shape"] for r in rows] == [[99, 117, 95], [240, 240, 155]]
    for r in rows:
        assert r["device"] == "cpu" and r["n_sequences"] == 5
        assert r["local_s_per_subject"] > 0 and r["labels_to_image_blur_s_per_subject"] > 0
        assert r["ratio"] == pytest.approx(r["local_s_per_subject"] / r["labels_to_image_blur_s_per_subject"])
    assert not result["slices"] and not result["subject"] and not result["training_step"]
    with pytest.raises(SystemExit, match="exists"):
        throughput.main(["--only", "local", "--out", str(out)])
