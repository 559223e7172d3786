"""nnU-Net v2 export: layout, dataset.json, provenance, leak-free splits, resume/refuse, errors, torchrun shares."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch.multiprocessing as mp
from export_data import SWAP_ALWAYS, tiny_subject, tiny_subjects
from hypothesis import given
from hypothesis import strategies as st

from samraug.editing import donor_of
from samraug.export import check_splits_leak_free, export_nnunet, make_splits
from samraug.export import nnunet as nnunet_module


def _export(tmp_path: Path, weights: str, subjects=None, **kwargs):
    args = dict(
        dataset_id=7,
        name="Tiny",
        per_case=2,
        folds=3,
        weights=weights,
        policy=SWAP_ALWAYS,
        device="cpu",
        preprocessed_dir=tmp_path / "pre",
        progress=False,
    )
    args.update(kwargs)
    return export_nnunet(subjects if subjects is not None else tiny_subjects(6), tmp_path / "raw", **args)


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_layout_dataset_json_and_labels(tmp_path: Path, tiny_weights: str) -> None:
    subjects = tiny_subjects(6)
    res = _export(tmp_path, tiny_weights, subjects)
    root = tmp_path / "raw" / "Dataset007_Tiny"
    assert res.dataset_dir == root and (res.n_real, res.n_synthetic, res.written) == (6, 12, 18)
    ds = json.loads((root / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"}
    assert ds["labels"] == {"background": 0, "WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    assert ds["regions_class_order"] == [2, 1, 3] and ds["numTraining"] == 18 and ds["file_ending"] == ".nii.gz"
    labels = sorted(p.name for p in (root / "labelsTr").iterdir())
    assert len(labels) == 18 and len(list((root / "imagesTr").iterdir())) == 18 * 4
    # real cases: images unchanged, labels 4 -> 3
    s = subjects[1]
    case = s["subject_id"]
    np.testing.assert_array_equal(_load(root / "imagesTr" / f"{case}_0001.nii.gz"), s["t1c"].data[0].numpy())
    seg = s["seg"].data[0].numpy()
    got = _load(root / "labelsTr" / f"{case}.nii.gz")
    np.testing.assert_array_equal(got, np.where(seg == 4, 3, seg))
    np.testing.assert_allclose(nib.load(str(root / "labelsTr" / f"{case}.nii.gz")).affine, s["seg"].affine)
    # synthetic cases: edited label (consecutive), painted images differ from the source's
    syn = f"{case}-synth000"
    lab = _load(root / "labelsTr" / f"{syn}.nii.gz")
    assert set(np.unique(lab)) <= {0, 1, 2, 3} and not np.array_equal(lab, got)
    assert not np.array_equal(_load(root / "imagesTr" / f"{syn}_0000.nii.gz"), s["t1n"].data[0].numpy())
    # the splits are where nnU-Net reads them, and beside the raw data
    assert res.splits_paths == [root / "splits_final.json", tmp_path / "pre" / "Dataset007_Tiny" / "splits_final.json"]
    assert json.loads(res.splits_paths[0].read_text()) == json.loads(res.splits_paths[1].read_text())
    assert "splits_final.json: " + str(res.splits_paths[1]) in res.summary()


def test_provenance_proves_the_splits_leak_free(tmp_path: Path, tiny_weights: str) -> None:
    res = _export(tmp_path, tiny_weights)
    prov = json.loads(res.provenance.read_text())
    splits = json.loads(res.splits_paths[0].read_text())
    assert len(splits) == 3 and len(prov["synthetic"]) == 12
    check_splits_leak_free(splits, prov)
    real = prov["real"]
    # every real patient is validated exactly once; every synthetic case trains in some fold
    assert sorted(c for f in splits for c in f["val"]) == sorted(real)
    trained = {c for f in splits for c in f["train"]}
    assert set(prov["synthetic"]) <= trained
    swapped = 0
    for name, rec in prov["synthetic"].items():
        assert rec["source"] in real and rec["weights"]["sha256"] and isinstance(rec["seed"], int)
        # the donor named in the provenance is the one the edit record used (none when the swap was not applied)
        k = donor_of(rec["edit"])
        assert rec["donors"] == ([] if k is None else [rec["donor_pool"][k]])
        swapped += k is not None
        assert rec["donor_patients"] == sorted({real[d]["patient"] for d in rec["donors"]})
        # no fold validating the source's or the donor's patient trains on it
        for f in splits:
            val_patients = {real[c]["patient"] for c in f["val"]}
            if val_patients & {rec["source_patient"], *rec["donor_patients"]}:
                assert name not in f["train"]
    assert swapped >= 6  # the policy always tries a swap


def test_resume_refuse_and_overwrite(tmp_path: Path, tiny_weights: str, monkeypatch) -> None:
    res = _export(tmp_path, tiny_weights, per_case=1)
    root = res.dataset_dir
    victim = "BraTS-GLI-00001-000-synth000"
    before = _load(root / "labelsTr" / f"{victim}.nii.gz")
    # an interrupted case: its record is gone and a partial file is left behind
    (root / ".samraug" / "cases" / f"{victim}.json").unlink()
    (root / "imagesTr" / f".{victim}_0000.nii.gz.partial1.nii.gz").write_bytes(b"junk")
    again = _export(tmp_path, tiny_weights, per_case=1)
    assert (again.written, again.skipped) == (1, 11)
    np.testing.assert_array_equal(_load(root / "labelsTr" / f"{victim}.nii.gz"), before)  # same seed, same case
    assert not list((root / "imagesTr").glob(".*"))
    # other arguments: refused unless overwrite
    with pytest.raises(ValueError, match=r"other arguments.*--overwrite"):
        _export(tmp_path, tiny_weights, per_case=2)
    # splits of another run where nnU-Net reads them: refused unless overwrite
    (tmp_path / "pre" / "Dataset009_Nine").mkdir(parents=True)
    (tmp_path / "pre" / "Dataset009_Nine" / "splits_final.json").write_text("[]")
    with pytest.raises(ValueError, match=r"pre/Dataset009_Nine/splits_final.json exists"):
        _export(tmp_path, tiny_weights, per_case=0, dataset_id=9, name="Nine")
    assert not (tmp_path / "raw" / "Dataset009_Nine").exists()
    other = _export(tmp_path, tiny_weights, per_case=0, overwrite=True)
    assert other.n_synthetic == 0 and len(list((root / "labelsTr").iterdir())) == 6
    # a folder not written by samraug, and a dataset id taken by another name
    (tmp_path / "raw" / "Dataset008_Other").mkdir()
    with pytest.raises(ValueError, match="not written by samraug"):
        _export(tmp_path, tiny_weights, dataset_id=8, name="Other", per_case=0)
    with pytest.raises(ValueError, match="already used by"):
        _export(tmp_path, tiny_weights, dataset_id=8, name="Tiny2", per_case=0)


def test_a_failing_case_is_never_under_its_final_name(tmp_path: Path, tiny_weights: str, monkeypatch) -> None:
    calls = {"n": 0}
    save = nnunet_module._save_nifti

    def failing(array, affine, path):
        calls["n"] += 1
        if calls["n"] == 8:  # inside the second case (5 files per case)
            raise OSError("disk full")
        save(array, affine, path)

    monkeypatch.setattr(nnunet_module, "_save_nifti", failing)
    with pytest.raises(OSError, match="disk full"):
        _export(tmp_path, tiny_weights, per_case=1)
    root = tmp_path / "raw" / "Dataset007_Tiny"
    second = "BraTS-GLI-00000-000-synth000"
    assert not list(root.glob(f"*/{second}*")) and not list(root.glob("*/.*partial*"))
    assert (root / "labelsTr" / "BraTS-GLI-00000-000.nii.gz").is_file()
    monkeypatch.setattr(nnunet_module, "_save_nifti", save)
    res = _export(tmp_path, tiny_weights, per_case=1)
    assert (res.written, res.skipped) == (11, 1)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"folds": 4}, "4 folds need at least 4 patients"),
        ({"per_case": 1, "n_synthetic": 3}, "not both"),
        ({"dataset_id": 1000}, "1..999"),
        ({"name": "bad name"}, "letters, digits"),
        ({"sequences": ["t1n", "flair"]}, "lacks"),
    ],
)
def test_bad_arguments_raise_before_writing(tmp_path: Path, tiny_weights: str, change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _export(tmp_path, tiny_weights, **change)
    assert not (tmp_path / "raw").exists() and not (tmp_path / "pre").exists()


def test_bad_subjects_raise_before_writing(tmp_path: Path, tiny_weights: str) -> None:
    subjects = tiny_subjects(3)
    subjects[2]["subject_id"] = subjects[0]["subject_id"]
    with pytest.raises(ValueError, match="duplicate subject_id"):
        _export(tmp_path, tiny_weights, subjects)
    mixed = [tiny_subject(0), tiny_subject(1, scheme="brats2023")]
    with pytest.raises(ValueError, match="pass scheme="):
        _export(tmp_path, tiny_weights, mixed, folds=2)
    extra = tiny_subjects(6, keys=("t1n", "t1c", "t2w", "t2f", "adc"))
    with pytest.raises(ValueError, match=r"channels \['adc'\] would stay real"):
        _export(tmp_path, tiny_weights, extra)
    assert not (tmp_path / "raw").exists()


def test_brats2021_folder_and_n_synthetic(tmp_path: Path, tiny_weights: str) -> None:
    """A BraTS 2021-layout folder (t1, t1ce, t2, flair) read by load_brats; the model's sequences map onto it."""
    src = tmp_path / "brats21"
    names = ("t1", "t1ce", "t2", "flair")
    for i in range(3):
        s = tiny_subject(i, keys=names)
        case = f"BraTS2021_{i:05d}"
        (src / case).mkdir(parents=True)
        for k in (*names, "seg"):
            img = s[k]
            arr = img.data[0].numpy().astype(np.uint8 if k == "seg" else np.float32)
            nib.save(nib.Nifti1Image(arr, img.affine), str(src / case / f"{case}_{k}.nii.gz"))
    res = _export(tmp_path, tiny_weights, src, per_case=0, n_synthetic=4)
    assert (res.n_real, res.n_synthetic) == (3, 4)
    assert res.channel_names == {"0": "t1", "1": "t1ce", "2": "t2", "3": "flair"}
    prov = json.loads(res.provenance.read_text())
    assert sorted(prov["synthetic"]) == [
        "BraTS2021_00000-synth000",
        "BraTS2021_00000-synth001",
        "BraTS2021_00001-synth000",
        "BraTS2021_00002-synth000",
    ]
    rec = prov["synthetic"]["BraTS2021_00000-synth000"]
    assert rec["sequence_map"] == {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}


_cases = st.integers(0, 7)


@given(
    folds=st.integers(2, 4),
    donors=st.lists(st.tuples(_cases, st.lists(_cases, max_size=2)), max_size=12),
    seed=st.integers(0, 5),
)
def test_make_splits_is_leak_free_and_keeps_every_safe_case(folds: int, donors: list, seed: int) -> None:
    """For any provenance (donors from any patient), the splits pass the check and train on every safe case."""
    real = {f"c{i}": f"p{i // 2}" for i in range(8)}
    synthetic = {
        f"s{k}": {"source_patient": real[f"c{src}"], "donor_patients": [real[f"c{d}"] for d in ds]}
        for k, (src, ds) in enumerate(donors)
    }
    splits = make_splits(real, synthetic, folds=folds, seed=seed)
    prov = {"real": {c: {"patient": p} for c, p in real.items()}, "synthetic": synthetic}
    check_splits_leak_free(splits, prov)
    for f in splits:
        val_patients = {real[c] for c in f["val"]}
        for name, rec in synthetic.items():
            safe = not ({rec["source_patient"], *rec["donor_patients"]} & val_patients)
            assert (name in f["train"]) == safe
    # a leak is caught
    if synthetic:
        name, rec = next(iter(synthetic.items()))
        leaky = [{"train": [name], "val": [c for c, p in real.items() if p == rec["source_patient"]]}]
        with pytest.raises(ValueError, match="made from validation patients"):
            check_splits_leak_free(leaky, prov)


# ---------------------------------------------------------------------------------------------- torchrun
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str, weights: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    import sys

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from export_data import SWAP_ALWAYS as policy
    from export_data import tiny_subjects as make

    from samraug.export import export_nnunet as run
    from samraug.training.distributed import cleanup_distributed, init_distributed

    env = init_distributed("cpu")
    assert env.is_distributed and env.world_size == 2
    res = run(make(6), Path(out) / "raw", dataset_id=7, name="Tiny", per_case=2, folds=3, weights=weights,
              policy=policy, device="cpu", preprocessed_dir=Path(out) / "pre", progress=False)  # fmt: skip
    Path(out, f"rank{rank}.json").write_text(json.dumps({"written": res.written}))
    cleanup_distributed()


def test_two_process_gloo_export_matches_one_process(tmp_path: Path, tiny_weights: str) -> None:
    ddp = tmp_path / "ddp"
    ddp.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(ddp), tiny_weights), nprocs=2, join=True)
    shares = [json.loads((ddp / f"rank{r}.json").read_text())["written"] for r in (0, 1)]
    assert shares == [9, 9]  # 18 cases, rank r took r::2
    single = _export(tmp_path / "one", tiny_weights)
    a, b = ddp / "raw" / "Dataset007_Tiny", single.dataset_dir
    for name in ("dataset.json", "provenance.json", "splits_final.json"):
        assert json.loads((a / name).read_text()) == json.loads((b / name).read_text()), name
    assert (ddp / "pre" / "Dataset007_Tiny" / "splits_final.json").is_file()
    for p in sorted((b / "labelsTr").iterdir()):
        np.testing.assert_array_equal(_load(a / "labelsTr" / p.name), _load(p))
    for p in sorted((b / "imagesTr").iterdir())[:8]:
        np.testing.assert_allclose(_load(a / "imagesTr" / p.name), _load(p), atol=1e-5)
