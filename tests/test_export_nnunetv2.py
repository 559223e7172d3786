"""Against the real nnU-Net v2: its integrity check, its split loading, its training loop with nnUNetTrainerSAMR.

nnU-Net reads its folders from environment variables when first imported, so the checks that need them run in a
fresh Python process (``subprocess``) with ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` set to
temporary folders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from export_data import SWAP_ALWAYS, tiny_subjects

pytest.importorskip("nnunetv2")

from samraug.export import export_nnunet

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, sys
import numpy as np, torch, nibabel as nib
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from samraug.export.trainer import case_to_grid, grid_to_case, nnUNetTrainerSAMR

torch.set_num_threads(1)
name, folds = sys.argv[1], int(sys.argv[2])
base = join(nnUNet_preprocessed, name)
plans, dj = load_json(join(base, "nnUNetPlans.json")), load_json(join(base, "dataset.json"))
out = {"splits": []}
for f in range(folds):  # nnU-Net's own split loading (nnUNetTrainer.do_split reads splits_final.json)
    t = nnUNetTrainer(dict(plans, continue_training=False), "3d_fullres", f, dj, device=torch.device("cpu"))
    tr, val = t.do_split()
    out["splits"].append({"train": sorted(tr), "val": sorted(val)})
# the preprocessed case, put back on its grid, is the raw label file (geometry round trip)
t.dataset_class = None
dataset_tr, _ = t.get_tr_and_val_datasets()
key = sorted(dataset_tr.identifiers)[0]
data, seg, _, props = dataset_tr.load_case(key)
data, seg = np.asarray(data[...]), np.asarray(seg[...])
tp = [int(i) for i in t.plans_manager.transpose_forward]
full, full_seg, affine = case_to_grid(data, seg, props, tp)
raw = nib.load(join(nnUNet_raw, name, "labelsTr", key + ".nii.gz"))
back_data, back_seg = grid_to_case(full, full_seg, props, tp)
out["geometry"] = {
    "labels_equal": bool(np.array_equal(np.where(full_seg < 0, 0, full_seg), np.asarray(raw.dataobj))),
    "affine_equal": bool(np.allclose(affine, raw.affine)),
    "round_trip": bool(np.array_equal(back_data, data) and np.array_equal(back_seg, seg)),
}
# a few iterations of nnU-Net's own training loop with the SAMR trainer
trainer = nnUNetTrainerSAMR(dict(plans, continue_training=False), "3d_fullres", 0, dj, device=torch.device("cpu"))
trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 3, 1
trainer.run_training()
ds = trainer.samr_dataset
out["train"] = {
    "n_synthetic": ds.n_synthetic, "n_real": ds.n_real, "n_fallback": ds.n_fallback,
    "loss": [float(x) for x in trainer.logger.local_logger.my_fantastic_logging["train_losses"]],
    "final": os.path.isfile(join(trainer.output_folder, "checkpoint_final.pth")),
}
print("RESULT " + json.dumps(out))
"""


def _env(tmp: Path, weights: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(tmp / "raw"),
        nnUNet_preprocessed=str(tmp / "pre"),
        nnUNet_results=str(tmp / "results"),
        nnUNet_compile="f",
        OMP_NUM_THREADS="1",
        SAMRAUG_NNUNET_WEIGHTS=weights,
        SAMRAUG_NNUNET_RATIO="0.75",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: int = 600) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_integrity_check_split_loading_and_samr_training(tmp_path: Path, tiny_weights: str) -> None:
    res = export_nnunet(tiny_subjects(6), tmp_path / "raw", dataset_id=7, name="Tiny", per_case=1, folds=3,
                        weights=tiny_weights, policy=SWAP_ALWAYS, device="cpu", preprocessed_dir=tmp_path / "pre",
                        progress=False)  # fmt: skip
    env = _env(tmp_path, tiny_weights)
    plan = shutil.which("nnUNetv2_plan_and_preprocess") or "nnUNetv2_plan_and_preprocess"
    out = _run([plan, "-d", "7", "--verify_dataset_integrity", "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
               dict(env, nnUNet_n_proc_DA="1"))  # fmt: skip
    assert "verify_dataset_integrity Done" in out
    script = tmp_path / "nnunet_check.py"
    script.write_text(SCRIPT)
    out = _run([sys.executable, str(script), res.dataset_dir.name, "3"], dict(env, nnUNet_n_proc_DA="0"))
    result = json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT ")))
    ours = json.loads(res.splits_paths[0].read_text())
    assert result["splits"] == [{"train": sorted(f["train"]), "val": sorted(f["val"])} for f in ours]
    assert result["geometry"] == {"labels_equal": True, "affine_equal": True, "round_trip": True}
    train = result["train"]
    assert train["final"] and train["n_fallback"] == 0 and np.isfinite(train["loss"]).all()
    assert train["n_synthetic"] >= 1 and train["n_synthetic"] + train["n_real"] >= 8  # 4 batches of 2 drawn


def test_phantom_export_passes_nnunet_integrity_check(tmp_path: Path) -> None:
    """BraTS 2024-style phantom folder, bundled weights, RC as its own label and region: nnU-Net accepts it."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from samraug.data.phantom import write_phantom_dataset

    src = write_phantom_dataset(tmp_path / "phantom", 3, seed=5, resolution=2.0)
    res = export_nnunet(src, tmp_path / "raw", dataset_id=11, name="Phantom", per_case=1, folds=3, device="cpu",
                        preprocessed_dir=tmp_path / "pre", progress=False)  # fmt: skip
    ds = json.loads(res.dataset_json.read_text())
    assert ds["labels"]["RC"] == [4] and ds["regions_class_order"] == [2, 1, 3, 4]
    assert list(ds["channel_names"].values()) == ["t1n", "t1c", "t2w", "t2f", "aptw"]
    verify_dataset_integrity(str(res.dataset_dir), num_processes=1)
    # the check can fail: a label value outside dataset.json's labels is refused
    bad = tmp_path / "raw" / "Dataset012_Bad"
    shutil.copytree(res.dataset_dir, bad)
    label = next((bad / "labelsTr").iterdir())
    img = nib.load(str(label))
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(arr, img.affine), str(label))
    with pytest.raises(RuntimeError, match="unexpected labels"):
        verify_dataset_integrity(str(bad), num_processes=1)


def test_install_trainer_is_found_by_nnunet(tmp_path: Path, monkeypatch) -> None:
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from samraug.export.trainer import install_trainer, nnUNetTrainerSAMR

    pkg = tmp_path / "fake_trainers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = install_trainer(pkg)
    assert path == pkg / "nnUNetTrainerSAMR.py"
    assert recursive_find_python_class(str(pkg), "nnUNetTrainerSAMR", "fake_trainers") is nnUNetTrainerSAMR
    assert install_trainer(pkg) == path  # same content: fine
    path.write_text("# someone else's file\n")
    with pytest.raises(FileExistsError, match="overwrite"):
        install_trainer(pkg)
    install_trainer(pkg, overwrite=True)
    assert "samraug" in path.read_text()
    with pytest.raises(FileNotFoundError, match="not a folder"):
        install_trainer(tmp_path / "missing")
