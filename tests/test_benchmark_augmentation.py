"""The augmentation-efficacy benchmark: protocol check, arms, outputs, and a tiny end-to-end run on the phantom."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of scripts, not installed

from benchmarks import augmentation as bench
from benchmarks.arms import (
    ARMS,
    MixedDataset,
    SliceSet,
    carve_mix,
    conventional_pool,
    conventional_transform,
    copy_paste_pool,
    edited_mask_pool,
    generator_pool,
    labels_to_image_pool,
    n_synthetic,
)

SPLIT = {"train": ["s1", "s2", "s3"], "test": ["t1", "t2"]}


# ---------------------------------------------------------------------------------------------------- protocol
def test_protocol_check_passes_a_clean_configuration() -> None:
    warnings = bench.check_protocol(
        SPLIT,
        segmenter_subjects=["s1", "s2", "s3"],
        donor_subjects=["s2", "s3"],
        samr_training={"samr": ["s1", "s2", "s3"], "no_atlas": []},
    )
    assert warnings == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"segmenter_subjects": ["s1", "t1"]}, r"test subjects \['t1'\] are among the segmenter training"),
        ({"donor_subjects": ["s2", "t2"]}, r"test subjects \['t2'\] are among the editing/copy-paste donors"),
        ({"samr_training": {"samr": ["s1", "t2"]}}, r"'samr' generator was trained on test subjects \['t2'\]"),
        ({"donor_subjects": ["other"]}, r"donors \['other'\] are not in the training split"),
    ],
)
def test_protocol_check_raises_on_every_leak(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"segmenter_subjects": ["s1"], "donor_subjects": ["s2"], "samr_training": {"samr": ["s1"]}}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        bench.check_protocol(SPLIT, **args)


def test_protocol_check_compares_data_identities_not_names() -> None:
    # Phantom case names repeat across data sets: the weights' training subject "t1" of ANOTHER data set is fine,
    # but a weights folder trained on the very data (same per-subject seed) as a test subject is a leak.
    identities = {"s1": "phantom-seed:11", "s2": "phantom-seed:12", "s3": "phantom-seed:13"}
    identities |= {"t1": "phantom-seed:21", "t2": "phantom-seed:22"}
    common = {"segmenter_subjects": ["s1"], "donor_subjects": ["s2"], "identities": identities}
    assert bench.check_protocol(SPLIT, samr_training={"samr": ["phantom-seed:99", "phantom-seed:11"]}, **common) == []
    with pytest.raises(ValueError, match=r"trained on test subjects \['t2'\]"):
        bench.check_protocol(SPLIT, samr_training={"samr": ["phantom-seed:22"]}, **common)


def test_protocol_check_rejects_overlapping_or_patient_leaking_splits() -> None:
    args: dict[str, Any] = {"segmenter_subjects": [], "donor_subjects": [], "samr_training": {}}
    with pytest.raises(ValueError, match="both"):
        bench.check_protocol({"train": ["a", "b"], "test": ["b"]}, **args)
    leaking = {"train": ["BraTS-GLI-00001-000", "BraTS-GLI-00002-000"], "test": ["BraTS-GLI-00001-001"]}
    with pytest.raises(ValueError, match="patient"):
        bench.check_protocol(leaking, **args)


def test_protocol_check_warns_when_training_data_is_undeclared() -> None:
    warnings = bench.check_protocol(SPLIT, segmenter_subjects=["s1"], donor_subjects=[], samr_training={"samr": None})
    assert len(warnings) == 1 and "not declared" in warnings[0]


def test_declared_training_identities() -> None:
    from samraug.data.phantom import subject_seed

    assert bench.declared_training_identities({}) is None
    assert bench.declared_training_identities({"training_data": {"phantom_subject_seeds": [3]}}) == {"phantom-seed:3"}
    got = bench.declared_training_identities({"training_data": {"phantom": {"seed": 5, "n": 2}}})
    assert got == {f"phantom-seed:{subject_seed(5, 0)}", f"phantom-seed:{subject_seed(5, 1)}"}
    got = bench.declared_training_identities({"training_data": {"subjects": ["BraTS-GLI-00003-001"]}})
    assert got == {"BraTS-GLI-00003"}
    # first source that declares wins (config.json, then the atlas info)
    assert bench.declared_training_identities({}, {"training_data": {"phantom_subject_seeds": [1]}}) == {
        "phantom-seed:1"
    }
    # fallback: the model card's data line as written by recipes/train_samr.py
    card = "- data: samraug digital phantom (SIMULATED MR, MNI152 anatomy): 3 subjects, 2 mm, seed 4\n"
    assert bench.card_training_identities(card) == {f"phantom-seed:{subject_seed(4, i)}" for i in range(3)}
    assert bench.card_training_identities("- data: BraTS folder x (3 cases)") is None


# ---------------------------------------------------------------------------------------------------- arms
def _slices(n_subjects: int = 3, per_subject: int = 4, size: int = 32, seed: int = 0) -> SliceSet:
    """Toy co-registered slices: a brain disc, a lesion (edema ring around tumor) at a subject-specific place."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    brain = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.42) ** 2
    images, labels, zs, ids = [], [], [], []
    for s in range(n_subjects):
        cy, cx = 10 + 4 * s, 12 + 3 * s
        d = ((yy - cy) ** 2 + (xx - cx) ** 2).float().sqrt()
        for z in range(per_subject):
            label = torch.where(brain, 1, 0)
            if z % 2 == 0:  # every other slice has a lesion
                label = torch.where(d < 5, 2, label)
                label = torch.where(d < 2.5, 4, label)
            image = torch.stack(
                [label.float() * (0.2 + 0.1 * c) + 0.05 * torch.randn(size, size, generator=g) for c in range(2)]
            )
            image = torch.where(brain, image.clamp(-1, 1), torch.full_like(image, -1.0))
            images.append(image)
            labels.append(label.long())
            zs.append(z)
            ids.append(f"s{s}")
    label = torch.stack(labels)
    return SliceSet(torch.stack(images), label, label > 0, torch.tensor(zs), ids, ("t1n", "t2f"))


def test_n_synthetic_and_mixture_fraction() -> None:
    assert [n_synthetic(100, r) for r in (0.0, 0.25, 0.5)] == [0, 33, 100]
    real = _slices()
    pool, _ = copy_paste_pool(real, n_synthetic(len(real), 0.25), seed=0)
    mixed = MixedDataset(real, pool)
    assert len(mixed) == len(real) + len(pool) and mixed.synthetic_fraction == pytest.approx(0.25, abs=0.05)
    assert torch.equal(mixed[len(real)]["image"], pool[0]["image"])


def test_carve_mix_puts_donor_lesion_labels_and_intensities_in_the_recipient() -> None:
    size = 24
    brain = torch.zeros(size, size, dtype=torch.bool)
    brain[2:-2, 2:-2] = True
    recipient_label = torch.where(brain, 1, 0)
    recipient_image = torch.where(brain, torch.full((1, size, size), 0.1), torch.full((1, size, size), -1.0))
    donor_label = recipient_label.clone()
    donor_label[8:14, 8:14] = 2
    donor_label[10:12, 10:12] = 4
    donor_image = torch.where(brain, torch.full((1, size, size), 0.3), torch.full((1, size, size), -1.0))
    donor_image[0][donor_label == 2] = 0.7
    donor_image[0][donor_label == 4] = 0.9
    image, label, region = carve_mix(recipient_image, recipient_label, donor_image, donor_label, margin=2.0)
    lesion = donor_label >= 2
    assert torch.equal(label[lesion], donor_label[lesion])  # the donor's lesion labels...
    assert torch.equal(image[0][lesion], donor_image[0][lesion])  # ...and its intensities
    assert (region & ~lesion).any()  # plus a margin of the donor's surrounding tissue
    assert torch.equal(image[0][region], donor_image[0][region]) and torch.equal(label[region], donor_label[region])
    assert torch.equal(image[0][~region], recipient_image[0][~region]) and torch.equal(
        label[~region], recipient_label[~region]
    )
    # the margin never extends beyond 2 pixels of the lesion, nor outside the brain
    from scipy import ndimage

    dist = torch.from_numpy(ndimage.distance_transform_edt(~lesion.numpy()))
    assert float(dist[region].max()) <= 2.0 and bool(brain[region].all())


def test_copy_paste_pool_uses_other_training_subjects_as_donors() -> None:
    real = _slices(n_subjects=3)
    pool, donors = copy_paste_pool(real, 10, seed=1, max_margin=2.0)
    assert len(pool) == 10 and donors <= set(real.subjects)
    for k, rec in enumerate(pool.origin):
        r, d = rec["recipient"], rec["donor"]
        assert real.subject_ids[r] != real.subject_ids[d]
        lesion = real.label[d] >= 2
        assert lesion.any()
        assert torch.equal(pool.label[k][lesion], real.label[d][lesion])
        assert torch.equal(pool.image[k][:, lesion], real.image[d][:, lesion])
    again, _ = copy_paste_pool(real, 10, seed=1, max_margin=2.0)
    assert torch.equal(again.image, pool.image)


def test_edited_mask_pool_is_valid_seeded_and_uses_only_given_donors() -> None:
    real = _slices(n_subjects=3, per_subject=6)
    masks = edited_mask_pool(real, 12, seed=3)
    assert len(masks) == 12 and masks.donor_ids <= set(real.subjects)
    assert int(masks.label.min()) >= 0 and int(masks.label.max()) <= 4
    assert not ((masks.label >= 2) & ~masks.brain).any()  # lesions stay inside the brain
    for rec, sid in zip(masks.records, masks.subject_ids, strict=True):
        assert sid not in rec["donor_subjects"]  # a swap donor is another subject
    again = edited_mask_pool(real, 12, seed=3)
    assert torch.equal(again.label, masks.label) and again.records == masks.records
    assert masks.head(5).label.shape[0] == 5


def test_labels_to_image_pool_paints_normalised_seeded_images() -> None:
    real = _slices()
    masks = edited_mask_pool(real, 4, seed=0)
    pool = labels_to_image_pool(masks, real.sequences, seed=7)
    assert pool.image.shape == (4, 2, 32, 32)
    assert float(pool.image.min()) >= -1 and float(pool.image.max()) <= 1
    for k in range(4):
        assert torch.all(pool.image[k][:, ~masks.brain[k]] == -1.0)
    assert torch.equal(pool.label, masks.label)
    assert torch.equal(labels_to_image_pool(masks, real.sequences, seed=7).image, pool.image)
    assert not torch.equal(labels_to_image_pool(masks, real.sequences, seed=8).image, pool.image)


def test_conventional_pool_transforms_images_and_labels_together() -> None:
    real = _slices()
    pool = conventional_pool(real, 6, seed=2, transform=conventional_transform(max_displacement=2.0))
    assert pool.image.shape == (6, 2, 32, 32) and pool.label.shape == (6, 32, 32)
    assert set(torch.unique(pool.label).tolist()) <= {0, 1, 2, 4}
    assert float(pool.image.min()) >= -1 and float(pool.image.max()) <= 1
    # intensities follow the labels they were made from (0.2/0.3 per class unit + small noise)
    for k in range(6):
        brain = pool.label[k] == 1
        if brain.sum() > 20:
            assert abs(float(pool.image[k, 0][brain].median()) - 0.2) < 0.1
    assert torch.equal(
        conventional_pool(real, 6, seed=2, transform=conventional_transform(max_displacement=2.0)).image, pool.image
    )


class _StubSynth:
    """A generator stand-in: constant 0.5 everywhere (also outside the brain), records its calls."""

    sequences = ("t1n", "t2f")

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def synthesize_slices(self, mask: torch.Tensor, *, z: torch.Tensor) -> torch.Tensor:
        self.calls.append((mask, z))
        return torch.full((mask.shape[0], 2, *mask.shape[-2:]), 0.5)


def test_generator_pool_paints_masks_at_their_atlas_slice_and_masks_the_background() -> None:
    real = _slices()
    masks = edited_mask_pool(real, 5, seed=0)
    synth = _StubSynth()
    pool = generator_pool(masks, synth, real.sequences)
    ((mask_arg, z_arg),) = synth.calls
    assert torch.equal(mask_arg, masks.label) and torch.equal(z_arg, masks.z)
    assert torch.equal(pool.label, masks.label)
    for k in range(5):
        assert torch.all(pool.image[k][:, masks.brain[k]] == 0.5) and torch.all(pool.image[k][:, ~masks.brain[k]] == -1)
    with pytest.raises(ValueError, match="must match"):
        generator_pool(masks, synth, ("t1n", "t1c"))


# ---------------------------------------------------------------------------------------------------- outputs
def _fake_results(arms: list[str]) -> dict[str, Any]:
    stat = {"mean": 0.5, "std": 0.1, "n": 3}
    summary = {r: {m: dict(stat) for m in bench.METRICS} for r in bench.REGIONS}
    return {
        "arms": {a: {"spec": {"title": ARMS[a].title}, "summary": summary} for a in arms},
        "simulated_data": True,
    }


def test_table_has_the_paper_layout(tmp_path: Path) -> None:
    results = _fake_results(["real", "samr_50"])
    lines = bench.format_table(results).splitlines()
    assert len(lines) == 4
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "Arm" and len(header) == 13
    assert header[1:4] == ["Dice: Edema", "Dice: Cavity", "Dice: Tumor"]
    assert header[4].startswith("HD95") and header[7].startswith("Sensitivity") and header[10].startswith("Specificity")
    assert lines[2].startswith("| Real only | 0.500 ± 0.100") and "0.50 ± 0.10" in lines[2]  # HD95 with 2 decimals
    png = bench.plot_results(results, tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_builds_configs_from_presets_and_overrides() -> None:
    cfg = bench.config_from_args(bench.build_parser().parse_args(["--preset", "quick"]))
    assert cfg.arms == bench.PRESETS["quick"]["arms"] and cfg.seeds == (0, 1, 2) and not cfg.train_samr
    cfg = bench.config_from_args(
        bench.build_parser().parse_args(
            [
                "--preset",
                "full",
                "--arms",
                "real,samr_25",
                "--seeds",
                "4,5,6",
                "--steps",
                "7",
                "--crop-size",
                "0",
                "--variant-weights",
                "no_atlas=/w",
                "--no-train-samr",
                "--resample-pools",
            ]
        )
    )
    assert cfg.arms == ("real", "samr_25") and cfg.seeds == (4, 5, 6) and cfg.steps == 7 and cfg.crop_size is None
    assert cfg.variant_weights == {"no_atlas": "/w"} and cfg.train_samr is False and cfg.resample_pools is True
    assert set(bench.PRESETS["full"]["arms"]) == set(ARMS)
    with pytest.raises(ValueError, match="unknown arms"):
        bench.BenchmarkConfig(arms=("nope",))


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def phantom_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from samraug.data.phantom import ensure_phantom_dataset

    cache = tmp_path_factory.mktemp("phantom")
    ensure_phantom_dataset(4, seed=77, resolution=2.0, cache_dir=cache)
    return cache


def _random_painter(root: Path) -> bench.Painter:
    """A random-init small SAMR generator with a neutral atlas on the phantom grid (trained on nothing)."""
    import nibabel as nib

    from samraug.atlas import Atlas
    from samraug.data.phantom import PHANTOM_SEQUENCES
    from samraug.models.generator import build_generator
    from samraug.synthesis import Synthesizer

    case = next(p for p in sorted(root.iterdir()) if p.is_dir())
    img = nib.load(next(case.glob("*-t1n.nii.gz")))
    shape = tuple(int(s) for s in img.shape)
    atlas = Atlas(
        torch.zeros(len(PHANTOM_SEQUENCES), *shape), img.affine, PHANTOM_SEQUENCES, torch.ones(shape, dtype=torch.bool)
    )
    torch.manual_seed(0)
    gen = build_generator(
        "tiny", sequences=PHANTOM_SEQUENCES, base_channels=4, max_channels=8, n_down=2, n_res_blocks=1
    ).eval()
    synth = Synthesizer.from_model(gen, atlas, {"sequences": list(PHANTOM_SEQUENCES)}, device="cpu")
    return bench.Painter("samr", synth, "random init (test)", set())


def _check_outputs(results: dict[str, Any], paths: dict[str, Path], arms: list[str], seeds: list[int]) -> None:
    md = paths["md"].read_text()
    for arm in arms:
        assert f"| {ARMS[arm].title} |" in md
    data = json.loads(paths["json"].read_text())
    assert list(data["arms"]) == arms
    assert data["simulated_data"] is True and data["protocol"]["check"] == "passed"
    assert {"platform", "cpu_count", "torch"} <= set(data["machine"]) and data["command"]
    test_ids = data["data"]["split"]["test"]
    for arm in arms:
        assert sorted(data["arms"][arm]["seeds"]) == sorted(str(s) for s in seeds)
        for run in data["arms"][arm]["seeds"].values():
            assert sorted(run["subjects"]) == sorted(test_ids)
            assert not set(run["donors"]) & set(test_ids)
            for region in bench.REGIONS:
                for metric in bench.METRICS:
                    assert math.isfinite(run["mean"][region][metric])
        for region in bench.REGIONS:
            for metric in bench.METRICS:
                assert math.isfinite(data["arms"][arm]["summary"][region][metric]["mean"])
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (paths["md"].parent / "augmentation_ci.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Δ vs real-only" in md and "mean lesion Dice" in md
    assert set(data["paired"]) == set(arms)
    for arm in arms:
        p = data["paired"][arm]
        if p["reference"] is not None:
            assert np.asarray(p["differences"], dtype=float).shape == (len(seeds), len(test_ids))
            assert p["difference"]["low"] <= p["difference"]["mean"] <= p["difference"]["high"]


def test_tiny_end_to_end_run_on_the_phantom(phantom_cache: Path, tmp_path: Path) -> None:
    arms = ["real", "copy_paste", "samr_50", "real_full"]
    config = bench.BenchmarkConfig.from_preset(
        "quick",
        fraction=0.5,
        n_subjects=4,
        n_test=1,
        phantom_seed=77,
        cache_dir=str(phantom_cache),
        arms=tuple(arms),
        seeds=(0,),
        steps=3,
        batch_size=4,
        depth=2,
        base_channels=4,
        crop_size=32,
        selection="lesion",
        device="cpu",
    )
    painter = _random_painter(phantom_cache / "2mm-seed77-n4")
    results = bench.run_benchmark(config, log=lambda m: None, command="pytest", painters={"samr": painter})
    paths = bench.write_outputs(results, tmp_path / "out")
    _check_outputs(results, paths, arms, [0])
    runs = results["arms"]
    assert runs["real"]["seeds"]["0"]["n_synthetic"] == 0
    n_real = runs["real"]["seeds"]["0"]["n_real"]
    assert runs["samr_50"]["seeds"]["0"]["n_synthetic"] == n_real == runs["copy_paste"]["seeds"]["0"]["n_synthetic"]
    # 3 training subjects: every arm but the sweep point trains on ceil(half) of them
    assert runs["real"]["seeds"]["0"]["n_real_subjects"] == 2 == runs["samr_50"]["seeds"]["0"]["n_real_subjects"]
    assert runs["real_full"]["seeds"]["0"]["n_real_subjects"] == 3 and runs["real_full"]["fraction"] == 1.0
    assert results["paired"]["samr_50"]["reference"] == "real" and results["paired"]["real_full"]["reference"] is None


def test_run_refuses_a_generator_trained_on_a_test_subject(phantom_cache: Path) -> None:
    config = bench.BenchmarkConfig.from_preset(
        "quick", n_subjects=4, n_test=1, phantom_seed=77, cache_dir=str(phantom_cache), arms=("samr_50",), seeds=(0,)
    )
    meta = json.loads((phantom_cache / "2mm-seed77-n4" / "phantom.json").read_text())
    painter = _random_painter(phantom_cache / "2mm-seed77-n4")
    painter.training_identities = {f"phantom-seed:{s}" for s in meta["subjects"].values()}  # trained on ALL of them
    with pytest.raises(ValueError, match="trained on test subjects"):
        bench.run_benchmark(config, log=lambda m: None, painters={"samr": painter})


@pytest.mark.slow
def test_cli_end_to_end_with_samr_trained_on_the_training_split(phantom_cache: Path, tmp_path: Path) -> None:
    arms = ["real", "conventional", "labels_to_image", "copy_paste", "samr_25", "samr_50"]
    out = tmp_path / "cli"
    argv = [
        "--preset",
        "quick",
        "--subjects",
        "4",
        "--test-subjects",
        "1",
        "--phantom-seed",
        "77",
        "--cache-dir",
        str(phantom_cache),
        "--arms",
        ",".join(arms),
        "--seeds",
        "0,1",
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--depth",
        "2",
        "--base-channels",
        "4",
        "--crop-size",
        "32",
        "--selection",
        "lesion",
        "--train-samr",
        "--samr-steps",
        "2",
        "--resample-pools",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--quiet",
    ]
    assert bench.main(argv) == 0
    paths = {k: out / f"augmentation.{k}" for k in ("md", "json", "png")}
    results = json.loads(paths["json"].read_text())
    _check_outputs(results, paths, arms, [0, 1])
    train = set(results["data"]["split"]["train"])
    assert results["generators"]["samr"]["training_data_declared"]
    card = json.loads((out / "generators" / "samr" / "weights" / "config.json").read_text())
    assert card["sequences"] == results["data"]["sequences"]
    # the 25 % arm paints the head of the 50 % pool, and each seed drew its own pools
    assert results["arms"]["samr_25"]["seeds"]["1"]["pool_seed"] == 1
    assert set(results["arms"]["samr_50"]["seeds"]["0"]["donors"]) <= train


def test_pools_are_cached_per_pool_seed_and_painters_share_the_edited_masks() -> None:
    real = _slices(n_subjects=3, per_subject=6)
    cache: dict = {}
    first, info = bench.build_arm_dataset(ARMS["copy_paste"], real, 0, {}, cache, n_masks=0)
    again, _ = bench.build_arm_dataset(ARMS["copy_paste"], real, 0, {}, cache, n_masks=0)
    assert again.synthetic is first.synthetic and info["pool_seed"] == 0  # drawn once, reused by every seed
    other, _ = bench.build_arm_dataset(ARMS["copy_paste"], real, 1, {}, cache, n_masks=0)
    assert not torch.equal(other.synthetic.image, first.synthetic.image)
    synth = _StubSynth()
    painters = {"samr": bench.Painter("samr", synth, "stub", set())}
    n50 = n_synthetic(len(real), 0.5)
    d50, _ = bench.build_arm_dataset(ARMS["samr_50"], real, 0, painters, cache, n_masks=n50)
    d25, _ = bench.build_arm_dataset(ARMS["samr_25"], real, 0, painters, cache, n_masks=n50)
    rl, _ = bench.build_arm_dataset(ARMS["labels_to_image"], real, 0, painters, cache, n_masks=n50)
    assert len(synth.calls) == 1 and len(d50.synthetic) == n50 and len(d25.synthetic) == n_synthetic(len(real), 0.25)
    assert torch.equal(d25.synthetic.label, d50.synthetic.label[: len(d25.synthetic)])  # head of the 50 % pool
    assert torch.equal(rl.synthetic.label, d50.synthetic.label)  # the same edited masks, another painter


@pytest.mark.slow
def test_control_arm_adds_the_bundled_generators_training_phantom(phantom_cache: Path) -> None:
    config = bench.BenchmarkConfig.from_preset(
        "quick", n_subjects=4, n_test=1, phantom_seed=77, cache_dir=str(phantom_cache), arms=("real", "control")
    )
    ctx = bench.prepare_context(config, ["samr"], log=lambda m: None)
    extra = bench.generator_training_slices(config, ctx)
    # the bundled weights' card: "30 subjects, 2 mm, seed 0"
    assert len(extra.subjects) == 30 and all(s.startswith("generator-data:") for s in extra.subjects)
    assert extra.image.shape[1:] == ctx.real.image.shape[1:]
    ds, info = bench.build_arm_dataset(ARMS["control"], ctx.real, 0, {}, {}, 0, generator_data=extra)
    assert len(ds) == len(ctx.real) + len(extra) and info["n_generator_data"] == len(extra)
    with pytest.raises(ValueError, match="same resolution"):
        bench.generator_training_slices(dataclasses.replace(config, resolution=1.0), ctx)
