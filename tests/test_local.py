"""Local generator: the input contract (build_local_inputs), compositing, crops, trainer, export/load, metrics."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import default_collate

from samraug.hub import load_weights
from samraug.labels import get_scheme
from samraug.models.generator import generator_from_config
from samraug.models.local import LocalGenerator, build_local_generator, build_local_inputs
from samraug.training import preset_config
from samraug.training.local import LocalGANTrainer, class_balanced_weight, region_metrics
from samraug.training.local_data import BLOB_KIND, LESION_KIND, LocalCropDataset

SEQ = ("t1n", "t2f")
SCHEME = get_scheme("brats2024")
K = len(SCHEME.classes("native"))  # 6


def _naive_inputs(classes, images, region, n_labels, c, z, fill=None):
    """The contract written as loops: slice-major channels, clamped neighbours, region zeroed (or showing
    ``fill``), region last."""
    b, d = classes.shape[:2]
    masks, contexts = [], []
    for bi in range(b):
        for zi in z:
            m, ctx = [], []
            for j in range(-c, c + 1):
                zz = min(max(zi + j, 0), d - 1)
                for k in range(n_labels):
                    m.append((classes[bi, zz] == k).float())
                for s in range(images.shape[1]):
                    shown = 0.0 if fill is None else fill[bi, s, zz]
                    ctx.append(torch.where(region[bi, zz], shown, images[bi, s, zz]))
                ctx.append(region[bi, zz].float())
            masks.append(torch.stack(m))
            contexts.append(torch.stack(ctx))
    return torch.stack(masks), torch.stack(contexts)


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(1, 2),
    d=st.integers(1, 4),
    s=st.integers(1, 3),
    c=st.integers(0, 2),
    seed=st.integers(0, 1000),
)
def test_build_local_inputs_matches_the_contract(b: int, d: int, s: int, c: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, 4, (b, d, 5, 6), generator=g)
    images = torch.rand(b, s, d, 5, 6, generator=g) * 2 - 1
    region = torch.rand(b, d, 5, 6, generator=g) > 0.5
    z = list(range(d))[::-1]
    mask, context = build_local_inputs(classes, images, region, n_labels=4, c=c, z=z)
    want_mask, want_context = _naive_inputs(classes, images, region, 4, c, z)
    assert mask.shape == (b * d, 4 * (2 * c + 1), 5, 6) and context.shape == (b * d, (s + 1) * (2 * c + 1), 5, 6)
    assert torch.equal(mask, want_mask) and torch.equal(context, want_context)
    fill = torch.rand(images.shape, generator=g)
    _, filled = build_local_inputs(classes, images, region, n_labels=4, c=c, z=z, fill=fill)
    assert torch.equal(filled, _naive_inputs(classes, images, region, 4, c, z, fill)[1])
    with pytest.raises(ValueError, match="fill must be shaped like images"):
        build_local_inputs(classes, images, region, n_labels=4, c=c, z=z, fill=fill[..., :-1])


def test_build_local_inputs_errors() -> None:
    classes = torch.zeros(1, 3, 8, 8, dtype=torch.long)
    images = torch.zeros(1, 2, 3, 8, 8)
    region = torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"outside 0..2"):
        build_local_inputs(classes + 3, images, region, n_labels=3, c=1)
    with pytest.raises(ValueError, match=r"images must be \(B, S, D, H, W\)"):
        build_local_inputs(classes, images[:, :, :2], region, n_labels=3, c=1)
    with pytest.raises(ValueError, match=r"region must be"):
        build_local_inputs(classes, images, region[:, :2], n_labels=3, c=1)
    with pytest.raises(ValueError, match=r"integer class map"):
        build_local_inputs(classes.float(), images, region, n_labels=3, c=1)
    with pytest.raises(ValueError, match=r"c \(context slices"):
        build_local_inputs(classes, images, region, n_labels=3, c=-1)
    with pytest.raises(IndexError, match=r"out of range"):
        build_local_inputs(classes, images, region, n_labels=3, c=1, z=[3])


# ---------------------------------------------------------------------------------------------- generator
def _small_generator(seed: int = 0, **kwargs) -> LocalGenerator:
    torch.manual_seed(seed)
    kw = {"base_channels": 4, "max_channels": 8, "n_down": 2, "n_res_blocks": 1, **kwargs}
    return LocalGenerator(sequences=SEQ, n_labels=K, context_slices=1, **kw)


def _volume(seed: int = 0, d: int = 3, size: int = 16):
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, K, (2, d, size, size), generator=g)
    images = torch.rand(2, len(SEQ), d, size, size, generator=g) * 2 - 1
    region = torch.zeros(2, d, size, size, dtype=torch.bool)
    region[:, :, 4:10, 5:12] = True
    return classes, images, region


@pytest.mark.parametrize("skips", [True, False])
def test_output_keeps_everything_outside_the_region(skips: bool) -> None:
    g = _small_generator(skips=skips).eval()
    classes, images, region = _volume()
    mask, context = build_local_inputs(classes, images, region, K, 1, z=[1])
    with torch.no_grad():
        out = g(mask, context)
    assert out.shape == (2, len(SEQ), 16, 16) and out.min() >= -1 and out.max() <= 1
    outside = ~region[:, 1, None].expand_as(out)
    assert torch.equal(out[outside], images[:, :, 1][outside])  # exactly the known image
    assert not torch.allclose(out[~outside], images[:, :, 1][~outside])  # the region is painted


def test_the_painted_region_depends_on_mask_and_context_only_inside_it() -> None:
    g = _small_generator().eval()
    classes, images, region = _volume()
    mask, context = build_local_inputs(classes, images, region, K, 1, z=[1])
    # the images inside the region are hidden from the model: changing them changes nothing
    images2 = torch.where(region[:, None], torch.rand_like(images), images)
    _, context2 = build_local_inputs(classes, images2, region, K, 1, z=[1])
    classes2 = classes.clone()
    classes2[:, 1, 5:8, 6:9] = (classes2[:, 1, 5:8, 6:9] + 1) % K
    mask2, _ = build_local_inputs(classes2, images, region, K, 1, z=[1])
    with torch.no_grad():
        a, b, c = g(mask, context), g(mask, context2), g(mask2, context)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_gradients_reach_every_parameter() -> None:
    g = _small_generator().train()
    mask, context = build_local_inputs(*_volume(), K, 1, z=[0, 2])
    g(mask, context).square().sum().backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_generator_errors_and_presets() -> None:
    g = _small_generator()
    mask, context = build_local_inputs(*_volume(), K, 1, z=[1])
    with pytest.raises(ValueError, match=r"mask must be \(B, 18, H, W\)"):
        g(mask[:, :6], context)
    with pytest.raises(ValueError, match=r"context must be \(B, 9, H, W\)"):
        g(mask, context[:, :3])
    with pytest.raises(ValueError, match=r"multiple of 2\*\*2"):
        g(mask[..., :14, :14], context[..., :14, :14])
    with pytest.raises(ValueError, match="uses no atlas"):
        LocalGenerator(use_atlas=True)
    with pytest.raises(ValueError, match="unknown local preset"):
        build_local_generator("paper")
    tiny = build_local_generator("tiny", sequences=SEQ, n_labels=K)
    assert tiny.size_multiple == 8 and tiny.mode == "local" and tiny.model_type == "samr"
    rebuilt = generator_from_config({"model_type": "samr", "mode": "local", **tiny.config})
    assert isinstance(rebuilt, LocalGenerator) and rebuilt.config == tiny.config


# ---------------------------------------------------------------------------------------------- crops
def _subjects(n: int = 2, lesion: bool = True) -> list[dict]:
    out = []
    for s in range(n):
        rng = np.random.default_rng(s)
        shape = (40, 44, 9)
        brain = np.zeros(shape, dtype=bool)
        brain[4:36, 4:40, 1:8] = True
        seg = np.zeros(shape, dtype=np.int64)
        if lesion:
            seg[10:20, 10:18, 3:6] = 2
            seg[12:16, 12:16, 4] = 1
            seg[13:15, 13:15, 3:5] = 3
        subject = {"seg": seg, "brain": brain, "subject_id": f"s{s}", "affine": np.diag([2.0, 2.0, 2.0, 1.0])}
        for k, name in enumerate(SEQ):
            img = 100.0 * (k + 1) + 40.0 * seg + 3.0 * rng.standard_normal(shape)
            subject[name] = np.where(brain, img, 0.0).astype(np.float32)
        out.append(subject)
    return out


def _crops(**kwargs) -> LocalCropDataset:
    kw = {"sequences": SEQ, "scheme": "brats2024", "crop_size": (32, 32), "crops_per_subject": 8, **kwargs}
    return LocalCropDataset(_subjects(), **kw)


def test_crops_shapes_kinds_and_determinism() -> None:
    ds = _crops(margin_mm=2.0, blob_mm=(6.0, 10.0))
    assert len(ds) == 16 and ds.voxel_size == (2.0, 2.0, 2.0)
    kinds = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["classes"].shape == (3, 32, 32) and item["images"].shape == (2, 3, 32, 32)
        assert item["region"].shape == (3, 32, 32) and item["region"][1].any()
        assert not (item["region"] & (item["classes"] == 0)).any()  # regions stay inside the brain
        assert torch.equal(item["label"], item["classes"][1]) and torch.equal(item["image"], item["images"][:, 1])
        lesion = item["classes"] >= 2
        if item["kind"] == LESION_KIND:
            assert lesion[1].any() and not (lesion & ~item["region"]).any()  # the whole lesion is repainted
        else:
            assert item["kind"] == BLOB_KIND and not (lesion & item["region"]).any()  # healthy tissue only
        kinds.add(item["kind"])
        again = ds[i]
        assert all(torch.equal(item[k], again[k]) for k in ("classes", "images", "region"))
    assert kinds == {LESION_KIND, BLOB_KIND}
    only_blobs = LocalCropDataset(_subjects(lesion=False), sequences=SEQ, scheme="brats2024", crop_size=(32, 32))
    assert all(only_blobs[i]["kind"] == BLOB_KIND for i in range(4))
    with pytest.raises(ValueError, match="RAS grid"):
        bad = _subjects(1)
        bad[0]["affine"] = np.diag([-2.0, 2.0, 2.0, 1.0])
        LocalCropDataset(bad, sequences=SEQ, scheme="brats2024")


# ---------------------------------------------------------------------------------------------- metrics
def test_region_metrics_golden_values() -> None:
    real = torch.full((1, 1, 8, 8), -1.0)
    real[:, :, 2:6, 2:6] = 0.0  # brain at 0.5 in [0, 1]
    region = torch.zeros(1, 8, 8, dtype=torch.bool)
    region[:, 3:5, 3:5] = True
    fake = real.clone()
    fake[:, :, 3:5, 3:5] += 0.2  # +0.1 in [0, 1] inside the region
    m = region_metrics(fake, real, region, brain=real[:, 0] > -1)
    assert m["l1"].item() == pytest.approx(0.1, abs=1e-6)
    assert m["psnr"].item() == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
    assert math.isinf(m["psnr_meanfill"].item()) or m["psnr_meanfill"].item() >= 99  # known brain mean is exact
    assert math.isnan(region_metrics(fake, real, torch.zeros_like(region))["psnr"].item())


# ---------------------------------------------------------------------------------------------- trainer
def _trainer(**overrides) -> LocalGANTrainer:
    values = {
        "task": "local",
        "crop_size": (32, 32),
        "batch_size": 4,
        "num_workers": 0,
        "log_every": 1,
        "lambda_l1": 10.0,
        "generator": {"base_channels": 8, "max_channels": 16},
        **overrides,
    }
    cfg = preset_config("tiny", **values)
    return LocalGANTrainer(cfg, SEQ, label_scheme="brats2024", voxel_size=(2.0, 2.0, 2.0), device="cpu")


def test_trainer_step_export_and_load(tmp_path) -> None:
    ds = _crops()
    trainer = _trainer(max_steps=2)
    assert trainer.generator.n_labels == trainer.discriminator.n_labels == K
    result = trainer.fit(ds, val_dataset=ds, progress=False)
    assert all(math.isfinite(v) for v in result.losses.values())
    v = result.validation
    assert {"psnr/mean", "ssim/t1n", "psnr_meanfill/mean", "psnr_lesion/mean", "psnr_blob/mean"} <= set(v)
    folder = trainer.export(tmp_path / "w", None, card={"data": "toy"})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["mode"] == "local" and config["conditioning"] == "native" and config["use_atlas"] is False
    assert config["voxel_size"] == [2.0, 2.0, 2.0] and config["crop_size"] == [32, 32]
    assert config["context_slices"] == 1 and config["label_scheme"] == "brats2024" and config["n_labels"] == K
    assert "normalization" in config and "atlas" not in config
    w = load_weights(folder)
    assert isinstance(w.generator, LocalGenerator) and w.atlas is None and w.mode == "local"
    batch = default_collate([ds[0], ds[1]])
    inputs = trainer._inputs(batch)
    with torch.no_grad():
        assert torch.equal(w.generator(*inputs.generator_args), trainer.generator.eval()(*inputs.generator_args))
    assert "local mode" in (folder / "README.md").read_text()
    # init-from the exported local weights, and a whole-slice trainer cannot
    other = _trainer(max_steps=1, seed=5)
    assert other.init_from(folder) == [str(folder)]
    pairs = zip(other.generator.parameters(), trainer.generator.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_l1_counts_only_inside_the_region() -> None:
    trainer = _trainer(max_steps=1)
    batch = default_collate([_crops()[i] for i in range(4)])
    inputs = trainer._inputs(batch)
    assert torch.equal(inputs.l1_weight[:, 0], batch["region"][:, 1])
    assert torch.equal(inputs.real, batch["images"][:, :, 1])
    assert torch.equal(inputs.mask.argmax(1), batch["classes"][:, 1])


def test_l1_class_balance_gives_every_class_in_the_region_the_same_weight() -> None:
    trainer = _trainer(max_steps=1, l1_class_balance=True)
    batch = default_collate([_crops()[i] for i in range(4)])
    w = trainer._inputs(batch).l1_weight[:, 0]
    region, centre = batch["region"][:, 1], batch["classes"][:, 1]
    assert (w[~region] == 0).all() and w.sum() == pytest.approx(float(region.sum()), rel=1e-5)
    present = [int(k) for k in centre[region].unique()]
    assert len(present) >= 2  # the toy crops hold lesion and normal brain in their regions
    totals = [float(w[region & (centre == k)].sum()) for k in present]
    assert totals == pytest.approx([totals[0]] * len(totals), rel=1e-5)
    # a hand-made case: 3 pixels of class 1, 1 of class 4, one outside the region
    cls = torch.tensor([[[1, 1, 1, 4, 4]]])
    reg = torch.tensor([[[True, True, True, True, False]]])
    assert class_balanced_weight(cls, reg, 6).flatten().tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0, 0.0])
    assert torch.equal(class_balanced_weight(cls, torch.zeros_like(reg), 6), torch.zeros(1, 1, 5))
    with pytest.raises(ValueError, match="differ"):
        class_balanced_weight(cls, reg[..., :4], 6)
    with pytest.raises(ValueError, match="task='local'"):
        preset_config("tiny", l1_class_balance=True)


def test_in_region_loss_falls_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    trainer = _trainer(max_steps=40, lr=1e-3, shape_consistency=False, lambda_fm=0.0)
    trainer.setup_schedule(40)
    batch = default_collate([_crops()[i] for i in range(4)])
    losses = [float(trainer.train_step(batch)["l1"]) for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses


def test_local_trainer_errors() -> None:
    with pytest.raises(ValueError, match="task='local'"):
        LocalGANTrainer(preset_config("tiny"), SEQ, label_scheme="brats2024")
    with pytest.raises(ValueError, match=r"crop_size \(36, 36\) must be a multiple of 8"):
        _trainer(crop_size=(36, 36))
    trainer = _trainer()
    batch = default_collate([_crops(context_slices=0)[i] for i in range(2)])
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\).*context_slices=1"):
        trainer._inputs(batch)


@pytest.mark.slow  # simulates 3 phantom subjects (~30 s) before two local training steps
def test_recipe_local_task_end_to_end_on_the_phantom(tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "train_samr.py"
    spec = importlib.util.spec_from_file_location("train_samr", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    out = tmp_path / "local"
    argv = ["--task", "local", "--n-subjects", "3", "--cache-dir", str(tmp_path / "cache"), "--steps", "2"]
    argv += ["--batch-size", "2", "--workers", "0", "--out", str(out), "--log-dir", str(tmp_path / "run")]
    argv += ["--no-progress", "--val-fraction", "0.34", "--crops-per-subject", "4", "--val-crops-per-subject", "2"]
    argv += ["--validate-every", "1"]
    assert recipe.main(argv) == 0
    w = load_weights(out)
    assert w.mode == "local" and w.conditioning == "native" and w.atlas is None
    assert w.config["voxel_size"] == [2.0, 2.0, 2.0] and w.config["crop_size"] == [64, 64]
    assert w.generator.n_labels == 6 and w.config["context_slices"] == 1
    assert w.config["normalization"]["region"] == "normal-brain"
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert "val/psnr/mean" in rows[0] and "val/psnr_meanfill/mean" in rows[0]
    card = (out / "README.md").read_text()
    assert "--task local" in card and "psnr_meanfill" in card


def test_l2_term_is_the_region_mean_squared_error() -> None:
    """lambda_l2 adds lambda_l2 * mean((fake - real)^2) over the region's pixels (all sequences) to G's loss: the
    logged l2 equals that mean computed from G's output before the step, and the total grows by lambda_l2 * l2."""
    batch = default_collate([_crops()[i] for i in range(4)])
    base = _trainer(max_steps=1, seed=3)
    with_l2 = _trainer(max_steps=1, seed=3, lambda_l2=7.0)
    base.setup_schedule(1)
    with_l2.setup_schedule(1)
    inputs = with_l2._inputs(batch)
    with torch.no_grad():
        fake = copy.deepcopy(with_l2.generator).train()(*inputs.generator_args)
    region = batch["region"][:, 1][:, None].expand_as(fake)
    expected = float(((fake - inputs.real) ** 2)[region].mean())
    a, b = base.train_step(batch), with_l2.train_step(batch)
    assert float(b["l2"]) == pytest.approx(expected, rel=1e-4)
    assert float(a["l2"]) == pytest.approx(expected, rel=1e-4)  # logged even when it is not in the loss
    assert float(b["g_total"]) - float(a["g_total"]) == pytest.approx(7.0 * expected, rel=1e-3)
    with pytest.raises(ValueError, match="lambda_l2 must be >= 0"):
        preset_config("tiny", task="local", lambda_l2=-1.0)


def test_harmonic_context_fill_dataset_trainer_and_export(tmp_path) -> None:
    """context_fill='harmonic': items carry each slice's harmonic fill of the region (the brain around it anchors
    it; a linear ramp is filled with the ramp), the trainer feeds it to the generator, and the weights record it."""
    from samraug.seam import harmonic_fill

    x, y, z = np.indices((12, 11, 10), dtype=np.float64)
    ramp = (0.1 * x - 0.05 * y + 0.2 * z)[None].repeat(2, 0)
    reg = np.zeros((12, 11, 10), bool)
    reg[3:8, 4:9, 2:7] = True
    fill = harmonic_fill(ramp, reg, np.ones_like(reg))  # a linear function is harmonic: filled exactly
    np.testing.assert_allclose(fill[:, reg], ramp[:, reg], atol=5e-3)  # anchors weigh 100: near-exact
    assert (fill[:, ~reg] == 0).all()
    assert not harmonic_fill(ramp, reg, np.zeros_like(reg)).any()  # nothing known: nothing filled
    with pytest.raises(ValueError, match="images must be"):
        harmonic_fill(ramp[0], reg, reg)

    ds = _crops(context_fill="harmonic")
    for kind in (0, 1):  # a lesion crop (the subject's lesion region filled in 3D) and a blob crop
        item = next(ds[i] for i in range(len(ds)) if ds[i]["kind"] == kind)
        assert item["fill"].shape == item["images"].shape
        region = item["region"]
        assert (item["fill"][:, ~region] == 0).all() and bool(item["fill"][:, region].abs().sum() > 0)
        # a harmonic fill stays within the range of the brain it is anchored on (maximum principle), per sequence
        subject = ds._subjects[item["subject_index"]]
        brain = subject.classes > 0
        for k in range(len(SEQ)):
            values = subject.images[k][brain]
            inside = item["fill"][k][region]
            assert (
                float(inside.max()) <= float(values.max()) + 1e-2 and float(inside.min()) >= float(values.min()) - 1e-2
            )
    assert "fill" not in _crops()[3]
    with pytest.raises(ValueError, match="context_fill must be one of"):
        _crops(context_fill="mean")
    with pytest.raises(ValueError, match="unknown context_fill"):
        preset_config("tiny", task="local", context_fill="mean")

    trainer = _trainer(max_steps=1, context_fill="harmonic")
    batch = default_collate([ds[i] for i in range(4)])
    _, context = trainer._inputs(batch).generator_args
    n_seq = len(SEQ)
    centre = context[:, (n_seq + 1) : 2 * (n_seq + 1)]  # slice z (c = 1): its sequences, then its region
    shown = centre[:, :n_seq].permute(1, 0, 2, 3)[:, batch["region"][:, 1]]
    want = batch["fill"][:, :, 1].permute(1, 0, 2, 3)[:, batch["region"][:, 1]]
    assert torch.equal(shown, want)
    with pytest.raises(KeyError, match="context_fill='harmonic'"):
        trainer._inputs(default_collate([_crops()[i] for i in range(2)]))
    trainer.fit(ds, progress=False)
    folder = trainer.export(tmp_path / "w", None, card={"data": "toy"})
    config = json.loads((folder / "config.json").read_text())
    assert config["context_fill"] == "harmonic" and "context fill" in (folder / "README.md").read_text()
    zero = _trainer(max_steps=1)
    zero.fit(_crops(), progress=False)
    assert "context_fill" not in json.loads((zero.export(tmp_path / "z", None).joinpath("config.json")).read_text())


def test_residual_generator_paints_over_the_fill_and_init_from_starts_at_it(tmp_path) -> None:
    """residual=True: the region gets clamp(shown + decoder output); --init-from non-residual weights loads their
    parameters and zeroes the output convolutions, so the generator starts by painting the context's fill."""
    ds = _crops(context_fill="harmonic")
    plain = _trainer(max_steps=1)
    plain.fit(_crops(), progress=False)
    folder = plain.export(tmp_path / "plain", None)
    res = _trainer(
        max_steps=1, context_fill="harmonic", generator={"base_channels": 8, "max_channels": 16, "residual": True}
    )
    assert res.generator.residual and res.generator.config["residual"] is True
    assert res.init_from(folder) == [str(folder)]
    loaded = dict(plain.generator.named_parameters())
    for name, p in res.generator.named_parameters():
        if ".out.0." in name:
            assert not p.any(), name  # zeroed
        else:
            assert torch.equal(p, loaded[name]), name
    batch = default_collate([ds[i] for i in range(4)])
    inputs = res._inputs(batch)
    with torch.no_grad():
        out = res.generator.eval()(*inputs.generator_args)
    region = batch["region"][:, 1][:, None].expand_as(out)
    shown = batch["fill"][:, :, 1]
    assert torch.allclose(out[region], shown.clamp(-1, 1)[region], atol=1e-6)
    assert torch.equal(out[~region], inputs.real[~region])
    # a residual generator's own weights load as they are (no zeroing)
    res.fit(ds, progress=False)
    w = res.export(tmp_path / "res", None)
    again = _trainer(
        max_steps=1, context_fill="harmonic", generator={"base_channels": 8, "max_channels": 16, "residual": True}
    )
    again.init_from(w)
    assert all(torch.equal(a, b) for a, b in zip(again.generator.parameters(), res.generator.parameters(), strict=True))
    assert json.loads((w / "config.json").read_text())["residual"] is True


def test_blob_crops_paint_any_slice_of_the_blob() -> None:
    """Blob crops are taken at any height of the blob, not only its middle slice: painting paints every slice of
    a region, the caps too. For an ellipsoid centred on the painted slice that slice would always have the largest
    area of the three; here some crops have a neighbour slice with more region than the painted one."""
    ds = _crops(lesion_fraction=0.0, crops_per_subject=40, blob_mm=(10.0, 16.0))
    areas = [ds[i]["region"].flatten(1).sum(1) for i in range(len(ds))]
    off_centre = sum(bool(a[1] < a.max()) for a in areas if a.sum() > 0)
    assert off_centre >= 5
