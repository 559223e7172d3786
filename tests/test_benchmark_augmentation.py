"""The augmentation-efficacy benchmark: protocol check, arms, outputs, and a tiny end-to-end run on the phantom."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of scripts, not installed

from benchmarks import augmentation as bench
from benchmarks.arms import ARMS, MixedDataset, SliceSet, conventional_pool, conventional_transform, n_synthetic
from benchmarks.stats import paired_bootstrap

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
    pool = conventional_pool(real, n_synthetic(len(real), 0.25), seed=0)
    mixed = MixedDataset(real, pool)
    assert len(mixed) == len(real) + len(pool) and mixed.synthetic_fraction == pytest.approx(0.25, abs=0.05)
    assert torch.equal(mixed[len(real)]["image"], pool[0]["image"])


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
                "--local-weights",
                "/lw",
            ]
        )
    )
    assert cfg.local_weights == "/lw" and bench.local_weights(cfg) == ("/lw", None)
    assert cfg.local_healthy == "model"  # the painter's default unless asked
    args = ["--preset", "quick", "--local-healthy", "harmonic"]
    assert bench.config_from_args(bench.build_parser().parse_args(args)).local_healthy == "harmonic"
    with pytest.raises(ValueError, match="local_healthy must be one of"):
        bench.BenchmarkConfig.from_preset("quick", local_healthy="mean")
    assert cfg.arms == ("real", "samr_25") and cfg.seeds == (4, 5, 6) and cfg.steps == 7 and cfg.crop_size is None
    assert cfg.variant_weights == {"no_atlas": "/w"} and cfg.train_samr is False and cfg.resample_pools is True
    assert set(bench.PRESETS["full"]["arms"]) == set(ARMS)
    # SAMR local sits beside the whole-image arm in the quick and standard presets
    for preset in ("quick", "standard"):
        arms = bench.PRESETS[preset]["arms"]
        assert arms.index("samr_local_50") == arms.index("samr_50") + 1
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


# ---------------------------------------------------------------------------------------------------- public path
def _local_painter(folder: Path) -> bench.Painter:
    """A random-init tiny LOCAL generator (mode "local", 2 mm) making the phantom's sequences (trained on nothing)."""
    from samraug.data.phantom import PHANTOM_SEQUENCES
    from samraug.hub import save_weights
    from samraug.labels import get_scheme
    from samraug.models.local import LocalGenerator
    from samraug.synthesis import Synthesizer

    torch.manual_seed(0)
    gen = LocalGenerator(
        sequences=PHANTOM_SEQUENCES,
        n_labels=len(get_scheme("brats2024").classes()),
        context_slices=1,
        base_channels=4,
        max_channels=8,
        n_down=2,
        n_res_blocks=1,
    )
    save_weights(folder, gen, None, label_scheme="brats2024", voxel_size=(2.0, 2.0, 2.0), crop_size=(32, 32))
    return bench.Painter("samr_local", Synthesizer(str(folder), device="cpu"), "random init local (test)", set())


def _tiny_config(phantom_cache: Path, arms: tuple[str, ...]) -> bench.BenchmarkConfig:
    return bench.BenchmarkConfig.from_preset(
        "quick",
        n_subjects=4,
        n_test=1,
        phantom_seed=77,
        cache_dir=str(phantom_cache),
        arms=arms,
        seeds=(0,),
        steps=2,
        batch_size=4,
        depth=2,
        base_channels=4,
        crop_size=32,
        selection="lesion",
        device="cpu",
    )


def test_every_painting_arm_is_built_through_samr_augmented_dataset(
    phantom_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import samraug.dataset

    painting = ("labels_to_image", "copy_paste", "samr_50", "samr_25", "samr_local_50")
    config = _tiny_config(phantom_cache, ("real", *painting))
    painters = {"samr": _random_painter(phantom_cache / "2mm-seed77-n4"), "samr_local": _local_painter(tmp_path / "l")}
    ctx = bench.prepare_context(config, ["samr", "samr_local"], log=lambda m: None, painters=painters)
    keep = [[i for i, s in enumerate(ctx.real.subject_ids) if s == sid][:6] for sid in ctx.real.subjects[:2]]
    real = ctx.real.subset([i for part in keep for i in part])  # a small arm of 2 subjects: pools of a few volumes
    made: list[dict[str, Any]] = []
    original = samraug.dataset.SAMRAugmentedDataset.__init__

    def spy(self: Any, real_ds: Any, *args: Any, **kwargs: Any) -> None:
        made.append({"n_items": len(real_ds), **{k: kwargs.get(k) for k in ("painter", "mode", "scheme")}})
        original(self, real_ds, *args, **kwargs)

    monkeypatch.setattr(samraug.dataset.SAMRAugmentedDataset, "__init__", spy)
    cache: dict = {}
    n50 = n_synthetic(len(real), 0.5)
    built = {}
    for name in painting:
        ds, info = bench.build_arm_dataset(
            ARMS[name], real, 0, painters, cache, n50, lambda m: None, subjects=ctx.subjects, scheme=ctx.scheme
        )
        built[name] = (ds, info)
        n = n_synthetic(len(real), ARMS[name].ratio)
        assert len(ds) == len(real) + n and info["n_synthetic"] == n and len(ds.synthetic) == n
        assert info["public_path"] == "samraug.dataset.SAMRAugmentedDataset"
        # donors: the arm's training subjects only (never a test subject), and the protocol check passes
        assert set(info["donors"]) == set(real.subjects) and not set(info["donors"]) & set(ctx.split["test"])
        bench.check_protocol(
            ctx.split,
            segmenter_subjects=real.subjects,
            donor_subjects=info["donors"],
            samr_training={v: p.training_identities for v, p in painters.items()},
            identities=ctx.identities,
        )
        pool = ds.synthetic
        assert pool.image.shape[1:] == real.image.shape[1:] and torch.isfinite(pool.image).all()
        assert info["synthetic_volumes"] == len(info["edits"]) >= 1
        assert sum(e["slices"] for e in info["edits"]) >= n
        # every synthetic slice's label differs from its source subject's real label at the same z
        full = ctx.real
        for k in range(len(pool)):
            src, z = pool.subject_ids[k], int(pool.z[k])
            j = [i for i in range(len(full)) if full.subject_ids[i] == src and int(full.z[i]) == z]
            if j:
                assert not torch.equal(pool.label[k], full.label[j[0]])
    # what each arm asked the public path for (the pool of the 25 % arm is the head of the 50 % one: no new dataset)
    asked = {(m["painter"], m["mode"]) for m in made}
    assert asked == {("labels-to-image", None), ("copy-paste", None), ("samr", "whole"), ("samr", "local")}
    assert len(made) == 4 and all(m["n_items"] == len(real.subjects) and m["scheme"] == ctx.scheme for m in made)
    assert built["labels_to_image"][1]["painter"] == "labels-to-image"
    assert (built["samr_local_50"][1]["painter"], built["samr_local_50"][1]["mode"]) == ("samr", "local")
    # copy-paste records name a donor subject other than the source
    for e in built["copy_paste"][1]["edits"]:
        assert e["edit"]["op"] == "carve" and e["donor_subject"] != e["source_subject"]
    # same seed, same edits: SAMR whole, SAMR local and RandomLabelsToImage label the same slices the same way
    s50 = built["samr_50"][0].synthetic
    for other in ("labels_to_image", "samr_local_50"):
        assert torch.equal(built[other][0].synthetic.label, s50.label)
    s25 = built["samr_25"][0].synthetic
    assert torch.equal(s25.label, s50.label[: len(s25)]) and torch.equal(s25.image, s50.image[: len(s25)])
    # the painters differ: local keeps real intensities away from the edit, whole repaints every brain voxel
    assert not torch.equal(built["samr_local_50"][0].synthetic.image, s50.image)


def _local_arm_builder(
    phantom_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]], list[dict[str, Any]]]:
    """``(build, asked)``: ``build(painter_info[, arm])`` builds the samr_local_50 arm (or ``arm``, e.g. copy-paste,
    on the same data) on 12 real slices of two subjects with a local painter carrying ``painter_info`` (the config's
    local options); ``asked`` collects the keyword
    arguments every ``SAMRAugmentedDataset`` was made with."""
    import samraug.dataset

    config = _tiny_config(phantom_cache, ("real", "samr_local_50"))
    local = _local_painter(tmp_path / "l")
    ctx = bench.prepare_context(config, ["samr_local"], log=lambda m: None, painters={"samr_local": local})
    keep = [[i for i, s in enumerate(ctx.real.subject_ids) if s == sid][:6] for sid in ctx.real.subjects[:2]]
    real = ctx.real.subset([i for part in keep for i in part])
    asked: list[dict[str, Any]] = []
    original = samraug.dataset.SAMRAugmentedDataset.__init__

    def spy(self: Any, real_ds: Any, *args: Any, **kwargs: Any) -> None:
        asked.append(kwargs)
        original(self, real_ds, *args, **kwargs)

    monkeypatch.setattr(samraug.dataset.SAMRAugmentedDataset, "__init__", spy)

    def build(painter_info: dict[str, Any], arm: str = "samr_local_50") -> tuple[Any, dict[str, Any]]:
        painter = bench.Painter(local.variant, local.synthesizer, local.source, None, painter_info)
        return bench.build_arm_dataset(
            ARMS[arm],
            real,
            0,
            {"samr_local": painter},
            {},
            n_synthetic(len(real), 0.5),
            lambda m: None,
            subjects=ctx.subjects,
            scheme=ctx.scheme,
        )

    return build, asked


def test_local_arm_paints_healthy_tissue_as_the_config_asks(
    phantom_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """local_healthy="harmonic": the local arm's pool is painted by SAMRPainter(mode="local", healthy="harmonic")
    through the public path -- the same edits and labels as the default painting, other intensities."""
    from samraug.augment.painters import SAMRPainter

    build, asked = _local_arm_builder(phantom_cache, tmp_path, monkeypatch)
    built = {}
    for healthy in ("model", "harmonic"):
        ds, info = build({"healthy": healthy})
        built[healthy] = ds.synthetic
        assert info["healthy"] == healthy  # in the results JSON
        chosen = asked[-1]["painter"]
        assert isinstance(chosen, SAMRPainter) and chosen.mode == "local" and chosen.healthy == healthy
    assert torch.equal(built["model"].label, built["harmonic"].label)
    assert not torch.equal(built["model"].image, built["harmonic"].image)


def test_local_arm_is_skipped_with_a_printed_reason_without_local_weights(
    phantom_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "BUNDLED_LOCAL_WEIGHTS", tmp_path / "absent")
    config = _tiny_config(phantom_cache, ("real", "samr_local_50"))
    weights, reason = bench.local_weights(config)
    assert weights is None and "--local-weights" in reason
    (tmp_path / "bundled").mkdir()
    monkeypatch.setattr(bench, "BUNDLED_LOCAL_WEIGHTS", tmp_path / "bundled")
    assert bench.local_weights(config) == (str(tmp_path / "bundled"), None)
    monkeypatch.setattr(bench, "BUNDLED_LOCAL_WEIGHTS", tmp_path / "absent")
    printed: list[str] = []
    painter = _random_painter(phantom_cache / "2mm-seed77-n4")
    results = bench.run_benchmark(config, log=printed.append, command="pytest", painters={"samr": painter})
    assert list(results["arms"]) == ["real"] and set(results["skipped_arms"]) == {"samr_local_50"}
    assert any("SKIPPED arm samr_local_50" in m and "--local-weights" in m for m in printed)
    paths = bench.write_outputs(results, tmp_path / "out")
    assert "Skipped arm `samr_local_50`" in paths["md"].read_text()
    with pytest.raises(ValueError, match="every selected arm was skipped"):
        bench.run_benchmark(dataclasses.replace(config, arms=("samr_local_50",)), log=printed.append)


# ------------------------------------------------------------------------------------------ merging runs
def _fake_run(arms: dict[str, float], fractions: dict[str, float], seed: int = 0) -> dict[str, Any]:
    """A finished run's JSON with per-(seed, subject) Dice drawn around each arm's level (fixed by the arm name)."""
    seeds, subjects = ["0", "1", "2"], [f"s{j}" for j in range(5)]
    out_arms = {}
    for name, level in arms.items():
        rng = np.random.default_rng(sum(map(ord, name)))
        spec = bench.ARMS[name]
        out_arms[name] = {
            "spec": dataclasses.asdict(spec),
            "fraction": fractions[name],
            "seeds": {
                s: {
                    "subjects": {
                        j: {
                            r: {"dice": float(np.clip(level + 0.1 * rng.standard_normal(), 0, 1))}
                            for r in bench.REGIONS
                        }
                        for j in subjects
                    }
                }
                for s in seeds
            },
            "summary": {},
        }
        for run in out_arms[name]["seeds"].values():  # the per-seed means a run stores (Dice only here)
            run["mean"] = {
                r: {m: float(np.mean([c[r]["dice"] for c in run["subjects"].values()])) if m == "dice" else math.nan
                    for m in bench.METRICS}
                for r in bench.REGIONS
            }  # fmt: skip
    return {
        "command": f"run {seed}",
        "machine": {"platform": "test", "cpu_count": 2, "torch": "x"},
        "config": {"preset": "standard", "seeds": [0, 1, 2], "steps": 9, "arms": list(arms)},
        "data": {"split": {"test": subjects}},
        "segmenter": {"steps": 9},
        "generators": {},
        "protocol": {"check": "passed", "warnings": []},
        "arms": out_arms,
        "skipped_arms": {},
        "wall_seconds": 60.0,
        "simulated_data": True,
    }


def test_merging_runs_equals_one_run_with_every_arm() -> None:
    levels = {"real": 0.5, "copy_paste": 0.6, "samr_local_50": 0.62, "real_full": 0.7, "samr_local_50_full": 0.75}
    fractions = {"real": 0.25, "copy_paste": 0.25, "samr_local_50": 0.25, "real_full": 1.0, "samr_local_50_full": 1.0}
    whole = _fake_run(levels, fractions)
    whole_paired = bench.paired_statistics(whole["arms"], ["0", "1", "2"], [f"s{j}" for j in range(5)], 2000)
    a = _fake_run({k: levels[k] for k in ("real", "copy_paste", "real_full")}, fractions, 0)
    b = _fake_run({k: levels[k] for k in ("real", "samr_local_50", "samr_local_50_full")}, fractions, 1)
    merged = bench.merge_results([a, b], n_resamples=2000)
    assert list(merged["arms"]) == ["real", "copy_paste", "samr_local_50", "real_full", "samr_local_50_full"]
    assert merged["paired"]["samr_local_50_full"]["reference"] == "real_full"  # paired across the two runs
    for name in levels:
        assert merged["paired"][name]["difference"] == whole_paired[name]["difference"]
    assert merged["command"] == ["run 0", "run 1"] and merged["wall_seconds"] == 120.0
    assert "sum of 2 merged runs" in "\n".join(bench.report_footer(merged))
    # not the same experiment, or the same arm scored differently: refused
    c = _fake_run({"real": 0.5}, fractions)
    c["config"]["steps"] = 10
    with pytest.raises(ValueError, match=r"config \(\['steps'\]\)"):
        bench.merge_results([a, c])
    d = _fake_run({"real": 0.5}, fractions)
    d["arms"]["real"]["seeds"]["0"]["subjects"]["s0"]["edema"]["dice"] += 0.01
    with pytest.raises(ValueError, match="other per-subject scores"):
        bench.merge_results([a, d])
    with pytest.raises(ValueError, match="at least two"):
        bench.merge_results([a])


def _seeds_of(run: dict[str, Any], seeds: list[str]) -> dict[str, Any]:
    """The run as if only ``seeds`` had been run."""
    arms = {n: a | {"seeds": {s: a["seeds"][s] for s in seeds}} for n, a in run["arms"].items()}
    return run | {"arms": arms, "config": run["config"] | {"seeds": [int(s) for s in seeds]}, "command": str(seeds)}


def test_merging_runs_of_other_seeds_equals_one_run_of_all_seeds() -> None:
    """Seeds 0-1 and 2 of the same arms (run side by side), or arms split across runs by seed, merge into the run of
    seeds 0-2: the same summaries and paired statistics; an arm missing a seed is refused, named."""
    levels = {"real": 0.5, "copy_paste": 0.6, "samr_local_50": 0.62}
    whole = _fake_run(levels, dict.fromkeys(levels, 0.25))
    whole_paired = bench.paired_statistics(whole["arms"], ["0", "1", "2"], [f"s{j}" for j in range(5)], 2000)
    for runs in (
        [_seeds_of(whole, ["0", "1"]), _seeds_of(whole, ["2"])],
        [_seeds_of(whole, ["2"]), _seeds_of(whole, ["0", "1"])],  # the order of first appearance
        [_seeds_of(whole, ["0", "1", "2"]), _seeds_of(whole, ["1"])],  # an overlap that agrees
    ):
        merged = bench.merge_results(runs, n_resamples=2000)
        seeds = [int(s) for s in dict.fromkeys(s for r in runs for s in r["config"]["seeds"])]
        assert merged["config"]["seeds"] == seeds
        for name in levels:
            assert list(merged["arms"][name]["seeds"]) == [str(s) for s in seeds]
            if seeds == [0, 1, 2]:
                assert merged["paired"][name]["difference"] == whole_paired[name]["difference"]
            dice = [merged["arms"][name]["seeds"][str(s)]["mean"]["edema"]["dice"] for s in seeds]
            summary = merged["arms"][name]["summary"]["edema"]["dice"]
            assert summary["mean"] == pytest.approx(np.mean(dice)) and summary["n"] == 3
            assert summary["std"] == pytest.approx(np.std(dice, ddof=1))
    cp_only = _seeds_of(whole, ["2"])
    cp_only["arms"] = {"copy_paste": cp_only["arms"]["copy_paste"]}
    cp_only["config"]["arms"] = ["copy_paste"]
    with pytest.raises(ValueError, match=r"arm 'real' has no run of seeds \['2'\]"):
        bench.merge_results([_seeds_of(whole, ["0", "1"]), cp_only])


def test_local_options_define_only_runs_with_a_local_arm() -> None:
    """A copy-paste / real-only run (its local_* options at their defaults, which act on no arm of it) merges with a
    local run of any local options, and the merged config keeps the local run's; two local runs must agree."""
    fractions = dict.fromkeys(("real", "copy_paste", "samr_local_50"), 0.25)
    cp = _fake_run({"real": 0.5, "copy_paste": 0.6}, fractions, 0)
    cp["config"] |= {"local_edits": "random", "local_n_insert": 1}
    local = _fake_run({"samr_local_50": 0.62}, fractions, 1)
    local["config"] |= {"local_edits": "carve+random", "local_n_insert": 5}
    for runs in ([cp, local], [local, cp]):
        merged = bench.merge_results(runs, n_resamples=200)
        assert (merged["config"]["local_edits"], merged["config"]["local_n_insert"]) == ("carve+random", 5)
        assert merged["paired"]["samr_local_50"]["reference"] == "real"
    # the local arm is also paired with copy-paste (independently: the per-(seed, subject) means differenced here)
    seeds, subjects = ["0", "1", "2"], [f"s{j}" for j in range(5)]

    def lesion_means(run: dict, arm: str) -> np.ndarray:
        cells = run["arms"][arm]["seeds"]
        return np.array([[np.mean([cells[s]["subjects"][j][r]["dice"] for r in bench.REGIONS]) for j in subjects]
                         for s in seeds])  # fmt: skip

    d = lesion_means(local, "samr_local_50") - lesion_means(cp, "copy_paste")
    vs = merged["paired"]["samr_local_50"]["vs_copy_paste"]
    assert vs["reference"] == "copy_paste" and vs["mean"] == pytest.approx(d.mean())
    assert vs["low"] == pytest.approx(paired_bootstrap(d, n_resamples=200).low)
    assert "vs_copy_paste" not in merged["paired"]["copy_paste"] and "vs_copy_paste" not in merged["paired"]["real"]
    table = bench.format_paired_table(merged)
    assert table.splitlines()[0].endswith("Δ vs copy-paste [95 % CI] |")
    local_row = next(line for line in table.splitlines() if line.startswith("| + SAMR local"))
    assert local_row.endswith(f"{vs['mean']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]" + (
        "" if vs["excludes_zero"] else " (CI includes 0)") + " |")  # fmt: skip
    assert "vs copy-paste" not in bench.format_paired_table(bench.merge_results([cp, cp | {"command": "x"}], 200))
    no_real = _fake_run({"copy_paste": 0.6, "samr_local_50": 0.62}, fractions)
    rows = bench.format_paired_table(bench.merge_results([no_real, no_real], 200)).splitlines()[2:]
    assert all("| – (no real-only arm) |" in row for row in rows) and "reference" not in "".join(rows)
    assert "| reference |" in bench.format_paired_table(merged).splitlines()[2]  # the real-only arm's own row
    other = _fake_run({"samr_local_50": 0.62}, fractions, 2)
    other["config"] |= {"local_edits": "carve+random", "local_n_insert": 3}
    with pytest.raises(ValueError, match=r"run 2 has other local options than run 1 \(\['local_n_insert'\]\)"):
        bench.merge_results([cp, local, other], n_resamples=200)
    newer = _fake_run({"samr_local_50": 0.62}, fractions, 3)  # made after an option with default None was added
    newer["config"] |= local["config"] | {"local_max_region_mm": None}
    newer["arms"]["samr_local_50"] = local["arms"]["samr_local_50"]
    assert bench.merge_results([cp, local, newer], n_resamples=200)["merged_from"] == 3
    newer["config"]["local_max_region_mm"] = 240.0
    with pytest.raises(ValueError, match=r"other local options than run 1 \(\['local_max_region_mm'\]\)"):
        bench.merge_results([cp, local, newer], n_resamples=200)
    cp["config"]["steps"] = 10  # the rest of the config still defines every run
    with pytest.raises(ValueError, match=r"config \(\['steps'\]\)"):
        bench.merge_results([cp, local], n_resamples=200)


def test_samr_variant_defaults_to_the_bundled_whole_weights_not_the_library_default() -> None:
    """weights=None is the library's local default; the paper's samr arm loads the whole-image folder by name, the
    samr_local arm the hub's local folder."""
    from samraug import hub

    assert bench.BUNDLED_LOCAL_WEIGHTS == hub.BUNDLED_LOCAL_WEIGHTS
    config = bench.BenchmarkConfig(device="cpu")
    assert config.weights is None and config.local_weights is None
    painters = bench.resolve_painters(config, ["samr", bench.LOCAL_VARIANT], log=lambda m: None)
    whole, local = painters["samr"], painters[bench.LOCAL_VARIANT]
    assert whole.synthesizer.config.get("mode", "whole") == "whole" and tuple(whole.synthesizer.atlas.shape)
    assert whole.synthesizer.weights == str(hub.BUNDLED_WHOLE_WEIGHTS)
    assert whole.source == "bundled demo weights samr-tiny-phantom (whole)"
    assert local.synthesizer.config["mode"] == "local" and local.source.endswith("samr-tiny-local (local)")
    assert whole.info["model_sha256"] != local.info["model_sha256"]


def test_local_arm_inserts_and_keeps_the_real_lesion_as_the_config_asks(
    phantom_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """local_insert=1, local_region="changed": the local arm's edits go through
    SAMRAugmentedDataset(policy=EditPolicy(p_insert=1), painter=SAMRPainter(region="changed")), every applied edit
    is recorded as an insertion, and the options reach the results JSON and the CLI."""
    from samraug.augment.painters import SAMRPainter

    args = ["--preset", "quick", "--local-insert", "1", "--local-region", "changed"]
    cfg = bench.config_from_args(bench.build_parser().parse_args(args))
    assert (cfg.local_insert, cfg.local_region) == (1.0, "changed")
    default = bench.BenchmarkConfig.from_preset("quick")
    assert (default.local_insert, default.local_region) == (0.0, "lesions")
    with pytest.raises(ValueError, match="local_region must be one of"):
        bench.BenchmarkConfig.from_preset("quick", local_region="near")
    with pytest.raises(ValueError, match="local_insert must be a probability"):
        bench.BenchmarkConfig.from_preset("quick", local_insert=1.5)

    build, asked = _local_arm_builder(phantom_cache, tmp_path, monkeypatch)
    _, info = build({"healthy": "model", "region": "changed", "insert": 1.0})
    assert (info["region"], info["insert"]) == ("changed", 1.0)
    chosen = asked[-1]
    assert isinstance(chosen["painter"], SAMRPainter) and chosen["painter"].region == "changed"
    assert chosen["policy"].p_insert == 1.0
    applied = [e["edit"] for e in info["edits"] if e["edit"].get("applied")]
    assert applied and all(e["insert"] is True for e in applied if not e.get("remove"))
    assert not any("more" in e for e in applied)  # one lesion per edit unless n_insert says more
    assert info["left_real_volumes"] == 0  # the phantom's lesions leave the painter room (counted: test_local_skip)

    # --local-n-insert 2: every applied insertion adds a second independently edited lesion (recorded in "more")
    cfg = bench.config_from_args(bench.build_parser().parse_args([*args, "--local-n-insert", "2"]))
    assert cfg.local_n_insert == 2 and default.local_n_insert == 1
    with pytest.raises(ValueError, match="local_n_insert=2 adds lesions only to inserting edits"):
        bench.BenchmarkConfig.from_preset("quick", local_n_insert=2)
    with pytest.raises(ValueError, match="local_n_insert must be an integer"):
        bench.BenchmarkConfig.from_preset("quick", local_insert=1.0, local_n_insert=0)
    _, info = build({"healthy": "model", "region": "changed", "insert": 1.0, "n_insert": 2})
    assert info["n_insert"] == 2 and asked[-1]["policy"].n_insert == 2
    applied = [e["edit"] for e in info["edits"] if e["edit"].get("applied") and not e["edit"].get("remove")]
    assert applied and all(len(e["more"]) == 1 and e["more"][0]["insert"] is True for e in applied)


def test_local_arm_with_carve_edits_paints_copy_paste_label_maps(
    phantom_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """local_edits="carve": the local arm's pool is drawn with copy-paste's pool seed through
    SAMRAugmentedDataset(edits="carve"), so it holds the very label maps of the copy-paste arm's pool (same
    sources, same donors), painted by the generator instead of filled with the donor's intensities."""
    cfg = bench.config_from_args(bench.build_parser().parse_args(["--preset", "quick", "--local-edits", "carve"]))
    assert cfg.local_edits == "carve" and bench.BenchmarkConfig.from_preset("quick").local_edits == "random"
    with pytest.raises(ValueError, match="local_edits must be one of"):
        bench.BenchmarkConfig.from_preset("quick", local_edits="swap")
    with pytest.raises(ValueError, match="leave local_insert at 0"):
        bench.BenchmarkConfig.from_preset("quick", local_edits="carve", local_insert=1.0)

    build, asked = _local_arm_builder(phantom_cache, tmp_path, monkeypatch)
    painted, info = build({"healthy": "model", "region": "changed", "edit_kind": "carve"})
    assert asked[-1]["edits"] == "carve" and info["edit_kind"] == "carve"
    pasted, cp_info = build({}, "copy_paste")
    assert asked[-1]["painter"] == "copy-paste"
    pairs = [(e["source_subject"], e.get("donor_subject")) for e in info["edits"]]
    assert pairs == [(e["source_subject"], e.get("donor_subject")) for e in cp_info["edits"]]
    assert all(d is not None for _, d in pairs) and info["left_real_volumes"] == 0
    a, b = pasted.synthetic, painted.synthetic
    assert len(a) == len(b) > 0
    assert torch.equal(a.label, b.label)  # the same label maps ...
    lesion = b.label > 0
    assert not torch.equal(a.image[:, :, lesion.any(0)], b.image[:, :, lesion.any(0)])  # ... painted otherwise

    # a mixture (--local-edits carve=1,random=1 with three insertions): its carving volumes are copy-paste's
    assert bench.local_edit_mixture("carve=1,random=1") == {"random": 0.5, "carve": 0.5}
    with pytest.raises(ValueError, match=r"local_edits must be one of .*unknown kinds \['swap'\]"):
        bench.local_edit_mixture("carve=1,swap=1")
    with pytest.raises(ValueError, match="local_edits must be one of"):
        bench.local_edit_mixture("carve=x")
    cfg = bench.BenchmarkConfig.from_preset("quick", local_edits="carve=1,random=1", local_insert=1.0)
    assert cfg.local_edits == "carve=1,random=1"
    _, mixed = build({"region": "changed", "insert": 1.0, "n_insert": 3, "edit_kind": "carve=1,random=1"})
    assert asked[-1]["edits"] == {"random": 0.5, "carve": 0.5} and asked[-1]["policy"].n_insert == 3
    by_volume = {e["volume"]: e for e in cp_info["edits"]}
    carved = [e for e in mixed["edits"] if e["edit"]["op"] == "carve"]
    assert carved  # (the pool here needs one volume; the mixing itself: test_carve_edits)
    for e in carved:
        if e["volume"] in by_volume:
            cp_e = by_volume[e["volume"]]
            assert (e["source_subject"], e["donor_subject"]) == (cp_e["source_subject"], cp_e["donor_subject"])

    # both on each volume (--local-edits carve+random with insertions): copy-paste's sources and donors, plus the
    # random edit; its label maps hold copy-paste's donor lesion (inside the brain) and more
    cfg = bench.BenchmarkConfig.from_preset("quick", local_edits="carve+random", local_insert=1.0, local_n_insert=3)
    assert bench.local_edit_mixture(cfg.local_edits) == {"carve+random": 1.0}
    _, both = build({"region": "changed", "insert": 1.0, "n_insert": 3, "edit_kind": "carve+random"})
    assert asked[-1]["edits"] == "carve+random" and asked[-1]["policy"].n_insert == 3
    assert [e["edit"]["op"] for e in both["edits"]] == ["carve+random"] * len(both["edits"])
    for e in both["edits"]:
        if e["volume"] in by_volume:
            cp_e = by_volume[e["volume"]]
            assert (e["source_subject"], e["donor_subject"]) == (cp_e["source_subject"], cp_e["donor_subject"])
            assert e["edit"]["random"]["insert"] is True or not e["edit"]["random"]["applied"]


def test_local_max_region_mm_reaches_the_painter_and_leaves_wide_regions_real(
    phantom_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--local-max-region-mm MM: the local arm's SAMRPainter(max_region_mm=MM); a limit below the edits' regions
    leaves their volumes real (counted in the JSON), the default keeps the painter's own limit."""
    from samraug.local_synthesis import DEFAULT_MAX_REGION_MM

    args = ["--preset", "quick", "--local-max-region-mm", "240"]
    assert bench.config_from_args(bench.build_parser().parse_args(args)).local_max_region_mm == 240.0
    assert bench.BenchmarkConfig.from_preset("quick").local_max_region_mm is None
    for bad in (0.0, -5.0, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="local_max_region_mm must be a finite length"):
            bench.BenchmarkConfig.from_preset("quick", local_max_region_mm=bad)

    build, asked = _local_arm_builder(phantom_cache, tmp_path, monkeypatch)
    _, default = build({"region": "changed", "insert": 1.0})
    assert asked[-1]["painter"].max_region_mm == DEFAULT_MAX_REGION_MM and "max_region_mm" not in default
    assert default["left_real_volumes"] == 0
    _, wide = build({"region": "changed", "insert": 1.0, "max_region_mm": 240.0})
    assert asked[-1]["painter"].max_region_mm == 240.0 and wide["max_region_mm"] == 240.0
    assert [e["edit"] for e in wide["edits"]] == [e["edit"] for e in default["edits"]]  # the same edits
    # every region is wider than 4 mm: all applied edits are left real, and the pool says so instead of filling up
    with pytest.raises(ValueError, match=r"changed the labels of only 0 slices .*\(\d+ of them left real"):
        build({"region": "changed", "insert": 1.0, "max_region_mm": 4.0})


def test_foreground_sampling_reaches_every_arms_segmenter() -> None:
    """--foreground-sampling class: every seed's segmenter (identical for every arm) draws its foreground patches
    class-uniformly; the default keeps the voxel draw (the published numbers' protocol); the report says so."""
    default = bench.config_from_args(bench.build_parser().parse_args(["--preset", "standard"]))
    cfg = bench.config_from_args(
        bench.build_parser().parse_args(["--preset", "standard", "--foreground-sampling", "class"])
    )
    assert default.segmenter(0).foreground_sampling == "voxel"
    assert cfg.segmenter(3).foreground_sampling == "class" and cfg.to_dict()["foreground_sampling"] == "class"
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--foreground-sampling", "balanced"])
