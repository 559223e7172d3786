"""No silent wrong output, no lost data (issue 12): the recipe's run and weights folders, atomic weights, truncated
files in load_brats, resuming from corrupt checkpoints, bounds on untrusted configs and edit records.

The ``samraug synthesize`` items are in ``test_cli_reliability.py``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from tiny_model import AFFINE, SEQS, SHAPE, save_tiny_weights, tiny_brain

from samraug import hub
from samraug.atlas import Atlas
from samraug.data.brats import load_brats, subject_arrays
from samraug.editing import EditPolicy, LesionEditor
from samraug.hub import WeightsError, load_weights, read_config, save_weights
from samraug.models.generator import build_generator
from samraug.training.checkpoint import CheckpointError, CheckpointManager

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "train_samr.py"


def _recipe():
    spec = importlib.util.spec_from_file_location("train_samr_reliability", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- recipe (2, 3)
def _earlier_run(log_dir: Path) -> None:
    manager = CheckpointManager(log_dir / "checkpoints")
    for step in (100, 200):
        manager.save({"step": step, "w": torch.full((3,), float(step))}, step=step)
    (log_dir / "log.csv").write_text("step,epoch,loss\n100,1,0.5\n200,2,0.4\n")


def test_recipe_refuses_an_earlier_run_folder_without_resume(tmp_path: Path) -> None:
    """Item 2: a new run into an existing run folder would delete its checkpoints and truncate its log."""
    recipe = _recipe()
    run = tmp_path / "w-run"
    _earlier_run(run)
    before = _snapshot(run)
    with pytest.raises(FileExistsError, match=r"--log-dir .*w-run holds an earlier run .*--resume.*--overwrite"):
        recipe.main(["--out", str(tmp_path / "w"), "--steps", "1"])
    assert _snapshot(run) == before  # nothing deleted, the run stays resumable
    assert CheckpointManager(run / "checkpoints").load()["step"] == 200
    # --overwrite names exactly the earlier run's entries (removed by rank 0 before training)
    args = recipe.parse_args(["--out", str(tmp_path / "w"), "--overwrite"])
    assert sorted(p.name for p in recipe.check_outputs(args, tmp_path / "w", run)) == ["checkpoints", "log.csv"]
    args = recipe.parse_args(["--out", str(tmp_path / "w"), "--resume"])
    assert recipe.check_outputs(args, tmp_path / "w", run) == []
    with pytest.raises(ValueError, match="pass one of them"):
        recipe.main(["--out", str(tmp_path / "w"), "--resume", "--overwrite"])


def test_recipe_refuses_an_existing_weights_folder(tmp_path: Path, tiny_weights: str) -> None:
    """Item 3: --out at an existing weights folder is never replaced without --overwrite."""
    recipe = _recipe()
    out = tmp_path / "weights"
    shutil.copytree(tiny_weights, out)
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match=r"--out .*weights holds weights .*model.safetensors"):
        recipe.main(["--out", str(out), "--log-dir", str(tmp_path / "fresh-run"), "--steps", "1"])
    assert _snapshot(out) == before and not (tmp_path / "fresh-run").exists()
    args = recipe.parse_args(["--out", str(out), "--overwrite"])
    assert recipe.check_outputs(args, out, tmp_path / "fresh-run") == []  # weights are replaced at export
    # --resume may replace only the weights its own run exported (recorded in the run's exports.json)
    run = tmp_path / "run"
    _earlier_run(run)
    args = recipe.parse_args(["--out", str(out), "--log-dir", str(run), "--resume"])
    with pytest.raises(FileExistsError, match=r"--out .*weights holds weights .*did not write"):
        recipe.check_outputs(args, out, run)
    with pytest.raises(FileExistsError, match="did not write"):
        recipe.main(["--out", str(out), "--log-dir", str(run), "--resume", "--steps", "1"])
    assert _snapshot(out) == before
    recipe.record_export(run, out)
    recipe.record_export(run, out)  # recorded once
    assert recipe.exported_by(run) == [str(out.resolve())]
    assert recipe.check_outputs(args, out, run) == []
    assert recipe.check_outputs(args, tmp_path / "empty", run) == []  # nothing there to replace
    (run / "exports.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"exports\.json is corrupt"):
        recipe.check_outputs(args, out, run)


def test_recipe_prints_a_clean_error(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    proc = subprocess.run(
        [sys.executable, str(RECIPE), "--out", str(a_file)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    assert f"train_samr.py: error: --out {a_file} is a file" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------- weights (7)
def _tiny(seed: int) -> tuple[torch.nn.Module, Atlas]:
    torch.manual_seed(seed)
    gen = build_generator("tiny", sequences=SEQS, base_channels=8, max_channels=16, n_res_blocks=1, n_down=3)
    brain = tiny_brain()
    data = torch.where(brain, torch.rand(len(SEQS), *SHAPE) * 2 - 1, torch.full((len(SEQS), *SHAPE), -1.0))
    return gen, Atlas(data, AFFINE, SEQS, brain)


def test_failed_save_weights_keeps_the_previous_weights(tmp_path: Path, monkeypatch) -> None:
    """Item 7: a failure between files (disk full while writing the atlas) leaves the old folder as it was."""
    folder = tmp_path / "w"
    save_weights(folder, *_tiny(0))
    before = _snapshot(folder)

    def disk_full(self, target):
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(Atlas, "save", disk_full)
    with pytest.raises(OSError, match="simulated"):
        save_weights(folder, *_tiny(1))
    monkeypatch.undo()
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no temporary folder left
    load_weights(folder)
    save_weights(folder, *_tiny(1))  # a successful save replaces all four files
    assert _snapshot(folder)["model.safetensors"] != before["model.safetensors"]
    assert _snapshot(folder)["atlas.safetensors"] != before["atlas.safetensors"]


def test_load_weights_rejects_a_mixed_folder(tmp_path: Path) -> None:
    """Item 7: a new model with the old atlas (same architecture, so every shape matches) is refused."""
    save_weights(tmp_path / "a", *_tiny(0))
    save_weights(tmp_path / "b", *_tiny(1))
    for name in ("model.safetensors", "atlas.safetensors"):
        mixed = tmp_path / f"mixed-{name.split('.')[0]}"
        shutil.copytree(tmp_path / "a", mixed)
        shutil.copy(tmp_path / "b" / name, mixed / name)
        with pytest.raises(WeightsError, match=rf"{name} does not match the SHA-256 .*mixes files"):
            load_weights(mixed)
    digests = json.loads((tmp_path / "a" / "config.json").read_text())["checksums"]
    assert set(digests) == {"model.safetensors", "atlas.safetensors"}


def test_save_weights_keeps_foreign_files_and_fp16_atlas_verifies(tmp_path: Path) -> None:
    folder = tmp_path / "clone"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    save_weights(folder, *_tiny(0), atlas_dtype=torch.float16)
    assert (folder / ".git" / "HEAD").is_file()
    w = load_weights(folder)
    assert w.atlas.data.dtype == torch.float32  # stored as float16, cast back on load
    save_weights(folder, *_tiny(1))
    assert (folder / ".git" / "HEAD").is_file()
    load_weights(folder)


# ---------------------------------------------------------------------------------------------- load_brats (10)
def _tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    brain = tiny_brain().numpy()
    for case in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"):
        seg = np.zeros(SHAPE, np.uint8)
        seg[10:16, 10:16, 2:5] = 2
        (root / case).mkdir(parents=True)
        nib.save(nib.Nifti1Image(seg, AFFINE), str(root / case / f"{case}-seg.nii.gz"))
        for seq in SEQS:
            vol = np.where(brain, 1 + rng.random(SHAPE), 0).astype(np.float32)
            nib.save(nib.Nifti1Image(vol, AFFINE), str(root / case / f"{case}-{seq}.nii.gz"))
    return root


@pytest.mark.parametrize("which", ["seg", "t2f"])
def test_load_brats_names_a_truncated_file(tmp_path: Path, which: str) -> None:
    """Item 10: a truncated .nii.gz in a training tree is named, not a raw EOFError."""
    root = _tree(tmp_path / "tree")
    bad = root / "BraTS-GLI-00002-000" / f"BraTS-GLI-00002-000-{which}.nii.gz"
    data = bad.read_bytes()
    bad.write_bytes(data[:-20])  # an interrupted copy: header fine, data cut short
    match = rf"case 'BraTS-GLI-00002-000': .*{bad.name} cannot be read .*truncated or corrupt"
    if which == "seg":
        with pytest.raises(ValueError, match=match):
            load_brats(root)
    else:
        subjects = load_brats(root)
        subject_arrays(subjects[0], SEQS)
        with pytest.raises(ValueError, match=match):
            subject_arrays(subjects[1], SEQS)


# ---------------------------------------------------------------------------------------------- resume (12)
def _corrupt(checkpoint: Path) -> None:
    tensors = checkpoint / "tensors.safetensors"
    data = tensors.read_bytes()
    tensors.write_bytes(data[:-4] + b"oops")


def test_resume_from_a_corrupt_latest_checkpoint_says_so(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    for step in (1, 2, 3):
        manager.save({"w": torch.full((2,), float(step))}, step=step)
    _corrupt(tmp_path / "step-000000003")
    with pytest.warns(UserWarning, match=r"step-000000003 .*checksum.*using the older checkpoint step-000000002"):
        assert manager.latest() == tmp_path / "step-000000002"
    _corrupt(tmp_path / "step-000000002")
    _corrupt(tmp_path / "step-000000001")
    with pytest.raises(CheckpointError, match=r"no loadable checkpoint under .*every one is corrupt.*Nothing was"):
        manager.latest()
    with pytest.raises(CheckpointError, match="new run"):
        manager.load()
    assert len(manager.checkpoints()) == 3  # nothing deleted


# ---------------------------------------------------------------------------------------------- bounds (19)
def _config_variant(tmp_path: Path, tiny_weights: str, name: str, **changes) -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_weights, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("sequences", "match"),
    [
        (["t1n", "t1c", "t2w", "seg"], "collides with the label map"),
        (["t1n", "t1c", "t2w", "../t2f"], "is not allowed"),
        (["t1n", "t1c", "t2w", "T1N"], "not unique"),
        (["t1n", "t1c", "t2w", ""], "is not allowed"),
        ("t1n", "must be a list"),
    ],
)
def test_config_sequence_names_are_validated(tmp_path: Path, tiny_weights: str, sequences, match: str) -> None:
    folder = _config_variant(tmp_path, tiny_weights, "w", sequences=sequences)
    with pytest.raises(WeightsError, match=match):
        read_config(folder)


def test_config_architecture_sizes_are_capped(tmp_path: Path, tiny_weights: str) -> None:
    folder = _config_variant(tmp_path, tiny_weights, "huge", n_res_blocks=10**6)
    with pytest.raises(WeightsError, match="n_res_blocks=1000000 is too large"):
        load_weights(folder)
    # every key within its cap, but together far beyond the parameter budget: counted without allocating
    folder = _config_variant(tmp_path, tiny_weights, "wide", base_channels=4096, max_channels=8192, n_res_blocks=64)
    with pytest.raises(WeightsError, match=r"describes a generator of [\d,]+ parameters, more than the 2,000,000,000"):
        read_config(folder)
    read_config(tiny_weights)
    read_config(hub.BUNDLED_WEIGHTS)
    read_config(hub.BUNDLED_WHOLE_WEIGHTS)


def _lesion() -> tuple[np.ndarray, np.ndarray]:
    brain = np.zeros((40, 40), bool)
    brain[4:36, 4:36] = True
    r = np.hypot(*np.indices((40, 40)) - 20.0)
    return np.where(r < 4, 1, np.where(r < 7, 2, 0)).astype(np.uint8), brain


def test_edit_parameters_are_bounded(tmp_path: Path) -> None:
    label, brain = _lesion()
    editor = LesionEditor("brats2023")
    with pytest.raises(ValueError, match=r"scale factor=1000000000.0 is out of range.*\[1/64, 64\]"):
        editor.scale(label, brain, factor=1e9)
    with pytest.raises(ValueError, match=r"perturb strength=1000000.0.*out of range"):
        editor.perturb(label, brain, strength=1e6)
    with pytest.raises(ValueError, match="smoothness"):
        editor.perturb(label, brain, strength=2.0, smoothness=1e-6)
    with pytest.raises(ValueError, match="at most 4096 voxels"):
        editor.move(label, brain, shift=[1e7, 0])
    with pytest.raises(ValueError, match="mirror plane"):
        editor.mirror(label, brain, axis=0, plane=1e12)
    with pytest.raises(ValueError, match="scale_range"):
        EditPolicy(scale_range=(0.5, 1e9))
    with pytest.raises(ValueError, match="perturb_range"):
        EditPolicy(perturb_range=(1.0, 1e6))
    # the same bounds hold for replayed records
    record = editor.scale(label, brain, factor=2.0).record
    with pytest.raises(ValueError, match="out of range"):
        editor.replay(label, brain, {**record, "factor": 1e9})
    result = editor.random_edit(label, brain, generator=torch.Generator().manual_seed(3))
    while not result.record["applied"] or result.record.get("perturb") is None:
        result = editor.random_edit(label, brain, generator=torch.Generator().manual_seed(int(torch.randint(99, ()))))
    bad = {**result.record, "perturb": {**result.record["perturb"], "strength": 1e6}}
    with pytest.raises(ValueError, match="out of range"):
        editor.replay(label, brain, bad)
    np.testing.assert_array_equal(editor.replay(label, brain, result.record).label, result.label)


def test_replay_rejects_a_record_without_its_parameters() -> None:
    label, brain = _lesion()
    editor = LesionEditor("brats2023")
    with pytest.raises(ValueError, match="holds no parameters"):
        editor.replay(label, brain, {"op": "random", "applied": True, "reason": None})
    nothing_drawn = dict.fromkeys(("swap", "mirror", "factor", "angles", "perturb", "shift"))
    with pytest.raises(ValueError, match="holds no parameters"):
        editor.replay(label, brain, {"op": "random", **nothing_drawn, "applied": True, "reason": None})
    with pytest.raises(ValueError, match="malformed 'scale' record"):
        editor.replay(label, brain, {"op": "scale", "applied": True, "reason": None})
    # an unapplied record needs no parameters: it replays to the input
    np.testing.assert_array_equal(editor.replay(label, brain, {"op": "random", "applied": False}).label, label)


def test_tiny_weights_fixture_still_loads(tmp_path: Path) -> None:
    folder = Path(save_tiny_weights(tmp_path / "t"))
    assert load_weights(folder).config["checksums"]["model.safetensors"]
