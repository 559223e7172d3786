"""GAN trainer: presets, ablations and baselines, the per-step update rules, overfitting, schedule, logs, export."""

from __future__ import annotations

import csv
import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from samraug.intensity import Normalization
from samraug.training import GANTrainer, TrainConfig, preset_config
from samraug.training.checkpoint import load_checkpoint
from samraug.training.config import PRESETS, model_defaults
from samraug.training.gan import SyntheticSliceDataset, image_metrics, ssim_map
from samraug.training.logging import SAMR_COLORS, TrainLogger, sample_grid, write_png
from samraug.training.schedule import LinearDecaySchedule, linear_decay_factor

SEQ = ("t1n", "t2f")


@pytest.fixture(autouse=True)
def _one_thread():
    """These small convolutions gain nothing from a second thread, and on a loaded machine two spinning OpenMP
    threads make them orders of magnitude slower; restore the configured count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _trainer(preset="tiny", size=32, n=4, **overrides):
    ds = SyntheticSliceDataset(n, size=size, sequences=SEQ)
    overrides = {"batch_size": 2, "num_workers": 0, "log_every": 1, **overrides}
    model_type = overrides.pop("model_type", "samr")
    cfg = preset_config(preset, model_type=model_type, **overrides)
    return GANTrainer(cfg, sequences=SEQ, device="cpu"), ds


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------ presets / switches
def test_tiny_preset_few_steps_logs_grids_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    trainer, ds = _trainer(max_steps=3, checkpoint_every=2)
    result = trainer.fit(ds, val_dataset=ds, out_dir=tmp_path, progress=False)
    assert result.steps == 3 and trainer.step == 3
    assert all(math.isfinite(v) for v in result.losses.values())
    # 4 instances / batch 2 = 2 steps per epoch: epoch 0 ended at step 2, the run stopped in epoch 1
    assert trainer.epoch == 1 and trainer.batch_in_epoch == 1
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["step"] for r in rows[:3]] == ["1", "2", "3"]
    assert {"d_total", "u_gdl", "g_gan", "g_fm", "g_lc", "l1", "lr"} <= set(rows[0])
    assert (tmp_path / "grids" / "epoch-0000.png").is_file() and (tmp_path / "grids" / "final.png").is_file()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest",
        "step-000000002",
        "step-000000003",
    ]
    v = result.validation
    assert set(v) >= {"l1/t1n", "psnr/t2f", "ssim/mean", "dice_synth/lesion", "dice_real/tumor"}
    assert 0 <= v["l1/mean"] <= 2 and -1 <= v["ssim/mean"] <= 1


def test_lite_preset_one_step():
    trainer, ds = _trainer("lite", size=64, n=2, max_steps=1)
    assert trainer.generator.n_down == 5
    result = trainer.fit(ds, progress=False, validate=False)
    assert result.steps == 1 and all(math.isfinite(v) for v in result.losses.values())


def test_paper_preset_config_matches_the_paper():
    cfg = preset_config("paper")
    assert (cfg.lr, cfg.betas, cfg.batch_size, cfg.epochs, cfg.decay_start) == (2e-4, (0.5, 0.999), 8, 500, 0.5)
    assert (cfg.lambda_fm, cfg.lambda_lc, cfg.label_wise_d, cfg.n_scales, cfg.shape_consistency) == (
        5,
        1,
        True,
        2,
        True,
    )
    assert cfg.generator_preset == "paper" and set(PRESETS) == {"paper", "lite", "tiny"}


@pytest.mark.slow  # the paper generator has 320M parameters: one CPU step takes about a minute
def test_paper_preset_one_step():
    trainer, ds = _trainer("paper", size=64, n=2, max_steps=1)
    result = trainer.fit(ds, progress=False, validate=False)
    assert all(math.isfinite(v) for v in result.losses.values())


@pytest.mark.parametrize(
    ("overrides", "n_disc", "has_unet", "uses_atlas", "branches"),
    [
        ({}, 6, True, True, 2),
        ({"stretch_out": False}, 6, True, True, 1),
        ({"label_wise_d": False}, 2, True, True, 2),
        ({"use_atlas": False}, 6, True, False, 2),
        ({"shape_consistency": False}, 6, False, True, 2),
        ({"model_type": "pix2pixhd"}, 2, False, False, 1),
        ({"model_type": "pix2pix"}, 1, False, False, None),
    ],
)
def test_ablations_and_baselines_train_with_finite_losses(overrides, n_disc, has_unet, uses_atlas, branches):
    trainer, ds = _trainer(max_steps=2, **overrides)
    assert len(trainer.discriminator.discriminators) == n_disc
    assert (trainer.unet is not None) is has_unet
    assert trainer.use_atlas is uses_atlas
    if branches is not None:
        assert len(trainer.generator.decoders) == branches
    batch = default_collate([ds[0], ds[1]])
    if not uses_atlas:
        del batch["atlas"]  # a model without atlas must not need one
    trainer.setup_schedule(2)
    losses = [trainer.train_step(batch) for _ in range(2)]
    for out in losses:
        assert all(torch.isfinite(v) for v in out.values()), out
    if not has_unet:
        assert "u_gdl" not in losses[0] and float(losses[0]["g_lc"]) == 0.0


def test_baseline_objectives_are_what_the_docs_say():
    p2p, hd, samr = preset_config("tiny", model_type="pix2pix"), preset_config("tiny", model_type="pix2pixhd"), None
    assert (p2p.gan_mode, p2p.lambda_l1, p2p.lambda_fm, p2p.n_scales, p2p.uses_unet) == ("bce", 100.0, 0.0, 1, False)
    assert (hd.gan_mode, hd.lambda_fm, hd.fm_norm, hd.n_scales, hd.uses_unet) == ("lsgan", 10.0, "l1", 2, False)
    samr = preset_config("tiny")
    assert (samr.gan_mode, samr.lambda_fm, samr.fm_norm, samr.lambda_lc, samr.lambda_l1) == ("lsgan", 5, "l2", 1, 0)
    assert model_defaults("samr") == {}


def test_config_round_trip_and_errors():
    cfg = preset_config("tiny", seed=3, generator={"n_res_blocks": 1})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model_type"):
        preset_config("tiny", model_type="cyclegan")
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        preset_config("tiny", batch_size=0)
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"epochz": 3})


# ------------------------------------------------------------------------------------------ update rules
def test_step_updates_each_network_only_from_its_own_loss():
    """D and U get exactly one gradient per step (their own update); the G step leaves them untouched."""
    trainer, ds = _trainer()
    trainer.setup_schedule(10)
    batch = default_collate([ds[0], ds[1]])
    calls = {"D": 0, "U": 0}
    for name, module in (("D", trainer.discriminator), ("U", trainer.unet)):
        for p in module.parameters():
            p.register_hook(lambda g, name=name: calls.__setitem__(name, calls[name] + 1))
    n_d = sum(1 for _ in trainer.discriminator.parameters())
    n_u = sum(1 for _ in trainer.unet.parameters())
    g_before = _params(trainer.generator)
    trainer.train_step(batch)
    assert calls == {"D": n_d, "U": n_u}
    assert all(p.requires_grad for p in trainer.discriminator.parameters())  # unfrozen again
    assert any(not torch.equal(g_before[k], v) for k, v in trainer.generator.state_dict().items())


def test_unet_is_trained_on_real_images_with_gdl():
    """The U-Net's gradient is exactly that of GDL(x, softmax(U(real)))."""
    from samraug.losses import generalized_dice_loss

    trainer, ds = _trainer()
    trainer.setup_schedule(10)
    batch = default_collate([ds[0], ds[1]])
    unet_copy = type(trainer.unet)(len(SEQ), 5, **trainer.config.unet)
    unet_copy.load_state_dict(trainer.unet.state_dict())
    loss = generalized_dice_loss(torch.softmax(unet_copy(batch["image"]), 1), batch["mask"])
    loss.backward()
    trainer.train_step(batch)
    for (name, p), q in zip(trainer.unet.named_parameters(), unet_copy.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_overfits_one_fixed_batch():
    """On one fixed batch the generator's L1 to the real images falls by at least half."""
    torch.manual_seed(0)
    trainer, ds = _trainer(decay_start=1.0)
    trainer.setup_schedule(1000)
    batch = default_collate([ds[0], ds[1]])
    l1 = [float(trainer.train_step(batch)["l1"]) for _ in range(30)]
    assert l1[-1] <= 0.5 * l1[0], l1


def test_same_seed_same_parameters():
    results = []
    for _ in range(2):
        trainer, ds = _trainer(max_steps=2, seed=7)
        trainer.fit(ds, progress=False, validate=False)
        results.append(_params(trainer.generator))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_non_finite_inputs_raise_clear_error():
    trainer, ds = _trainer()
    trainer.setup_schedule(2)
    batch = default_collate([ds[0], ds[1]])
    batch["image"][0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        trainer.train_step(batch)


def test_too_small_dataset_raises():
    trainer, _ = _trainer(batch_size=8)
    with pytest.raises(ValueError, match="fewer than one batch"):
        trainer.plan(SyntheticSliceDataset(3, size=32, sequences=SEQ))


# ------------------------------------------------------------------------------------------ schedule
def test_linear_decay_schedule_golden_values():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=2e-4)
    sched = LinearDecaySchedule(opt, total_steps=8)  # decay from step 4: 4/4, 3/4, 2/4, 1/4, then 0
    lrs = []
    for _ in range(9):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs == pytest.approx([2e-4] * 5 + [1.5e-4, 1e-4, 0.5e-4, 0.0])
    assert linear_decay_factor(10, 10, 10) == 0.0 and linear_decay_factor(9, 10, 10) == 1.0
    state = sched.state_dict()
    sched2 = LinearDecaySchedule(torch.optim.Adam([p], lr=2e-4), total_steps=1)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == pytest.approx([0.0])
    with pytest.raises(ValueError, match="total_steps"):
        LinearDecaySchedule(opt, total_steps=0)


def test_trainer_lr_is_constant_then_decays_to_zero():
    trainer, ds = _trainer(max_steps=4, decay_start=0.5)
    trainer.fit(ds, progress=False, validate=False)
    for opt in trainer.optimizers.values():
        assert opt.param_groups[0]["lr"] == 0.0
    assert [trainer.schedulers["G"].factor(t) for t in range(5)] == [1.0, 1.0, 1.0, 0.5, 0.0]


# ------------------------------------------------------------------------------------------ metrics / logs
def test_image_metrics_golden_values():
    real = torch.zeros(1, 1, 16, 16)
    fake = real + 0.5
    brain = torch.zeros(1, 16, 16, dtype=torch.bool)
    brain[:, 4:12, 4:12] = True
    m = image_metrics(fake, real, brain)
    assert m["l1"].item() == pytest.approx(0.5)
    assert m["psnr"].item() == pytest.approx(10 * math.log10(4 / 0.25))
    # constant images: SSIM = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1) with c1 = (0.01 * 2)^2
    c1 = 0.02**2
    assert m["ssim"].item() == pytest.approx(c1 / (0.25 + c1), rel=1e-4)
    assert torch.isnan(image_metrics(fake, real, torch.zeros_like(brain))["l1"]).all()
    with pytest.raises(ValueError):
        ssim_map(real, real[0])


def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h = header[0], header[1]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()  # filter type "none"
    return raw[:, 1:].reshape(h, w, 3)


def test_png_and_sample_grid(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(_decode_png(write_png(tmp_path / "a.png", rgb).read_bytes()), rgb)
    label = torch.zeros(2, 8, 6, dtype=torch.long)
    label[:, 2:4, 1:3] = 4
    real = torch.full((2, 3, 8, 6), -1.0)
    fake = torch.ones(2, 3, 8, 6)
    grid = sample_grid(label, real, fake, pad=1)
    # 2 rows per sample of 6-pixel-high tiles (tiles are transposed for display), 1 + 3 columns of 8 pixels
    assert grid.shape == (4 * 6 + 3, 4 * 8 + 3, 3)
    assert (grid[0:6, 8 + 1 : 16 + 1] == 0).all()  # real sequence 1 of sample 1: -1 -> black
    assert (grid[6 + 1 : 12 + 1, 8 + 1 : 16 + 1] == 255).all()  # synthetic: +1 -> white
    mask_tile = grid[0:6, 0:8].reshape(-1, 3)
    assert {tuple(c) for c in mask_tile} == {tuple(SAMR_COLORS[0]), tuple(SAMR_COLORS[4])}
    assert (mask_tile == SAMR_COLORS[4]).all(1).sum() == 4


def test_logger_resume_drops_rows_after_checkpoint(tmp_path):
    log = TrainLogger(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        log.log(step, {"a": step}, epoch=0)
    log.log(4, {"a": 4, "b": 1.0}, epoch=0)  # a new column extends the header
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["b"] for r in rows] == ["", "", "", "1"]
    TrainLogger(tmp_path, resume_step=2, tensorboard=False).close()
    assert [r["step"] for r in csv.DictReader(open(tmp_path / "log.csv"))] == ["1", "2"]
    TrainLogger(tmp_path, tensorboard=False).close()  # a fresh run starts a fresh log
    assert (tmp_path / "log.csv").read_text() == ""
    disabled = TrainLogger(tmp_path / "rank1", enabled=False)
    disabled.log(1, {"a": 1})
    assert not (tmp_path / "rank1").exists()


# ------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("fp16", [False, True])
def test_export_loads_back_through_the_hub(tmp_path, fp16):
    from samraug.atlas import Atlas
    from samraug.hub import load_weights

    trainer, ds = _trainer(max_steps=1)
    trainer.fit(ds, progress=False, validate=False)
    z = 4
    atlas = Atlas(
        ds[0]["atlas"].reshape(len(SEQ), 3, 32, 32).permute(0, 2, 3, 1).repeat(1, 1, 1, 3),
        np.eye(4),
        SEQ,
        torch.ones(32, 32, 9, dtype=torch.bool),
    )
    folder = trainer.export(tmp_path / "w", atlas, card={"data": "toy", "steps": 1}, fp16=fp16, atlas_space="mni152")
    assert json.loads((folder / "config.json").read_text())["atlas_space"] == "MNI152"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "atlas.safetensors",
        "config.json",
        "model.safetensors",
    ]
    w = load_weights(folder)
    mask = ds[0]["mask"][None]
    with torch.inference_mode():
        ours = trainer.generator.eval()(mask, atlas.stack([z]))
        theirs = w.generator(mask, w.atlas.stack([z]))
    atol = 5e-2 if fp16 else 0.0
    assert torch.allclose(ours, theirs, atol=atol), (ours - theirs).abs().max()
    assert w.atlas.data.dtype == torch.float32 and torch.allclose(w.atlas.data, atlas.data, atol=1e-3)
    assert "steps: 1" in (folder / "README.md").read_text()


# ------------------------------------------------------------------------------------------ recipe
def _recipe():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "train_samr.py"
    spec = importlib.util.spec_from_file_location("train_samr", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_arguments_map_onto_the_config():
    recipe = _recipe()
    args = recipe.parse_args(
        ["--out", "/tmp/x", "--preset", "lite", "--steps", "7", "--batch-size", "4", "--lr", "1e-3"]
    )
    cfg = recipe.build_config(args)
    assert (cfg.preset, cfg.max_steps, cfg.batch_size, cfg.lr, cfg.model_type) == ("lite", 7, 4, 1e-3, "samr")
    flags = ["--no-stretch-out", "--no-label-wise-d", "--no-atlas", "--no-shape-consistency"]
    cfg = recipe.build_config(recipe.parse_args(["--out", "/tmp/x", *flags]))
    assert not (cfg.stretch_out or cfg.label_wise_d or cfg.use_atlas or cfg.shape_consistency)
    cfg = recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--model", "pix2pix"]))
    assert (cfg.model_type, cfg.lambda_l1, cfg.n_scales) == ("pix2pix", 100.0, 1)
    with pytest.raises(SystemExit, match="ablation of --model samr"):
        recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--model", "pix2pixhd", "--no-atlas"]))
    cfg = recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--skips", "--upsample", "resize_conv"]))
    assert cfg.generator == {"upsample": "resize_conv", "skips": True}
    with pytest.raises(SystemExit, match="--skips"):
        recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--skips", "--task", "local"]))


def test_recipe_declares_the_atlas_space():
    """Phantom-trained whole-image weights declare MNI152 (the phantom's template); BraTS weights declare what
    --atlas-space says, else nothing (unknown: off-grid subjects refused); local generators have no atlas."""
    recipe = _recipe()
    atlas = object()
    assert recipe.atlas_space_of(recipe.parse_args(["--out", "/tmp/x"]), atlas) == "MNI152"
    assert recipe.atlas_space_of(recipe.parse_args(["--out", "/tmp/x"]), None) is None
    assert recipe.atlas_space_of(recipe.parse_args(["--out", "/tmp/x", "--data", "/brats"]), atlas) is None
    args = recipe.parse_args(["--out", "/tmp/x", "--data", "/brats", "--atlas-space", "SRI24"])
    assert recipe.atlas_space_of(args, atlas) == "SRI24"
    with pytest.raises(SystemExit, match="no atlas"):
        recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--task", "local", "--atlas-space", "MNI152"]))


@pytest.mark.slow  # simulates 3 phantom subjects (~30 s) before two training steps at 128x128
def test_recipe_end_to_end_on_the_phantom(tmp_path):
    from samraug.hub import load_weights

    recipe = _recipe()
    out = tmp_path / "weights"
    argv = ["--n-subjects", "3", "--cache-dir", str(tmp_path / "cache"), "--steps", "2", "--batch-size", "2"]
    argv += ["--workers", "0", "--out", str(out), "--log-dir", str(tmp_path / "run"), "--no-progress", "--fp16-weights"]
    argv += ["--val-fraction", "0.34", "--min-brain-voxels", "2000"]
    assert recipe.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "atlas.safetensors",
        "config.json",
        "model.safetensors",
    ]
    card = (out / "README.md").read_text()
    assert "recipes/train_samr.py --n-subjects 3" in card and "psnr/t1n" in card and "SIMULATED" in card
    w = load_weights(out)
    assert w.sequences == ("t1n", "t1c", "t2w", "t2f", "aptw") and w.atlas.shape == (99, 117, 95)
    assert json.loads((out / "config.json").read_text())["atlas_space"] == "MNI152"
    assert w.config["normalization"] == Normalization().to_config()  # what the data and atlas were built with
    assert w.atlas.info["normalization"] == Normalization().to_config()
    declared = w.atlas.info["training_data"]  # the weights say which (simulated) subjects they saw
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert declared["subjects"] == split["train"] and len(declared["phantom_subject_seeds"]) == len(split["train"])
    run = tmp_path / "run"
    assert (run / "split.json").is_file() and (run / "log.csv").is_file() and (run / "grids" / "final.png").is_file()


# ------------------------------------------------------------------------------------------ native conditioning
def _native_dataset(n_subjects: int = 2):
    """brats2024 subjects (labels 1..4) as 2D instances with native masks (6 classes), no atlas."""
    from samraug.data.slices import SliceDataset

    subjects = []
    for s in range(n_subjects):
        rng = np.random.default_rng(s)
        brain = np.zeros((32, 32, 3), dtype=bool)
        brain[4:28, 5:27] = True
        seg = np.zeros((32, 32, 3), dtype=np.int64)
        seg[8:16, 8:16] = 2
        seg[10:14, 10:14] = 1
        seg[11:13, 11:13] = 3
        seg[18:22, 18:24] = 4
        subject = {"seg": seg, "brain": brain, "subject_id": f"n{s}"}
        for k, name in enumerate(SEQ):
            img = 100.0 * (k + 1) + 30.0 * seg + 5.0 * rng.standard_normal(seg.shape)
            subject[name] = np.where(brain, img, 0.0).astype(np.float32)
        subjects.append(subject)
    return SliceDataset(subjects, None, sequences=SEQ, scheme="brats2024", conditioning="native", multiple=16)


def _native_trainer(**overrides):
    cfg = preset_config("tiny", batch_size=2, num_workers=0, log_every=1, use_atlas=False, **overrides)
    return GANTrainer(cfg, sequences=SEQ, label_scheme="brats2024", device="cpu")


def test_native_conditioning_trains_with_the_scheme_classes(tmp_path):
    ds = _native_dataset()
    assert ds[0]["mask"].shape[0] == 6
    trainer = _native_trainer(max_steps=2)
    assert trainer.classes == ("background", "normal_brain", "NETC", "SNFH", "ET", "RC")
    assert trainer.generator.n_labels == trainer.discriminator.n_labels == trainer.unet.out_channels == 6
    result = trainer.fit(ds, val_dataset=ds, progress=False)
    assert all(math.isfinite(v) for v in result.losses.values())
    assert {"dice_synth/NETC", "dice_synth/RC", "dice_real/lesion"} <= set(result.validation)
    folder = trainer.export(tmp_path / "w", None, card={"data": "toy"})
    config = json.loads((folder / "config.json").read_text())
    assert (config["conditioning"], config["label_scheme"], config["n_labels"]) == ("native", "brats2024", 6)
    assert "atlas" not in config and not (folder / "atlas.safetensors").exists()
    # SAMR-class data in a native trainer: a clear error naming the fix
    samr_ds = SyntheticSliceDataset(2, size=32, sequences=SEQ)
    with pytest.raises(ValueError, match=r"expects \(B, 6, H, W\).*label_scheme="):
        trainer.train_step(default_collate([samr_ds[0], samr_ds[1]]))
    with pytest.raises(ValueError, match="differs from the trainer's scheme"):
        trainer.export(tmp_path / "v", None, label_scheme="brats2021")


# ------------------------------------------------------------------------------------------ --init-from
def test_init_from_weights_folder_copies_the_generator_and_chains_lineage(tmp_path):
    ds = _native_dataset()
    a = _native_trainer(max_steps=1)
    a.fit(ds, progress=False, validate=False)
    first = a.export(tmp_path / "a", None)
    b = _native_trainer(max_steps=1, seed=1)
    assert not torch.equal(b.generator.mask_encoder[0][0].weight, a.generator.mask_encoder[0][0].weight)
    assert b.init_from(first) == [str(first)]
    for k, v in a.generator.state_dict().items():
        assert torch.equal(b.generator.state_dict()[k], v), k
    b.fit(ds, progress=False, validate=False)
    second = b.export(tmp_path / "b", None)
    c = _native_trainer(max_steps=1)
    assert c.init_from(str(second)) == [str(second), str(first)]  # its source, then the source's own lineage
    assert json.loads((second / "config.json").read_text())["lineage"] == [str(first)]
    assert f"`{first}`" in (second / "README.md").read_text()
    # architecture mismatches are refused with the differing keys named
    wider = _native_trainer(generator={"base_channels": 8})
    with pytest.raises(ValueError, match=r"architecture does not match.*base_channels: weights 16 vs this run 8"):
        wider.init_from(first)
    samr = _native_trainer(conditioning="samr")
    with pytest.raises(ValueError, match=r"n_labels: weights 6 vs this run 5"):
        samr.init_from(first)


def test_init_from_checkpoint_restores_all_networks_and_optimisers(tmp_path):
    ds = _native_dataset()
    a = _native_trainer(max_steps=2)
    a.fit(ds, out_dir=tmp_path / "run", progress=False, validate=False, grids=False)
    b = _native_trainer(max_steps=1, seed=3, lr=1e-4)
    lineage = b.init_from(tmp_path / "run" / "checkpoints")  # the root: its latest checkpoint
    assert lineage == [str(tmp_path / "run" / "checkpoints")] and b.step == 0
    for name in ("G", "D", "U"):
        mine, theirs = b._models[name].state_dict(), a._models[name].state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name
        sa, sb = a.optimizers[name].state_dict(), b.optimizers[name].state_dict()
        assert all(torch.equal(sa["state"][i]["exp_avg"], sb["state"][i]["exp_avg"]) for i in sa["state"])
        assert all(g["lr"] == 1e-4 for g in b.optimizers[name].param_groups)  # this run's lr
    b.fit(ds, progress=False, validate=False)
    no_unet = _native_trainer(shape_consistency=False)
    with pytest.raises(ValueError, match=r"architecture does not match.*shape_consistency"):
        no_unet.init_from(tmp_path / "run" / "checkpoints" / "step-000000002")


def test_init_from_source_is_checked_before_the_run_folder_is_written(tmp_path):
    """--init-from: the checkpoints root's ``latest`` pointer file names that root; a path that is neither a
    checkpoint nor a weights folder is refused by the recipe before its log dir or output exist."""
    from samraug.training.gan import locate_init_source

    ds = _native_dataset()
    a = _native_trainer(max_steps=1)
    a.fit(ds, out_dir=tmp_path / "run", progress=False, validate=False, grids=False)
    root = tmp_path / "run" / "checkpoints"
    assert locate_init_source(root / "latest") == root
    assert locate_init_source(root / "step-000000001") == root / "step-000000001"
    b = _native_trainer(max_steps=1)
    assert b.init_from(root / "latest")[0] == str(root / "latest")
    assert torch.equal(
        b.generator.state_dict()["mask_encoder.0.0.weight"], a.generator.state_dict()["mask_encoder.0.0.weight"]
    )
    (tmp_path / "notes.txt").write_text("x")
    for bad, err in (
        (tmp_path / "missing", "no such file or folder"),
        (tmp_path / "notes.txt", "is a file"),
        (tmp_path / "run", "config.json"),  # a run's log dir is no weights folder
    ):
        with pytest.raises((FileNotFoundError, ValueError), match=err):
            locate_init_source(bad)
    recipe = _recipe()
    argv = [
        "--out",
        str(tmp_path / "w"),
        "--log-dir",
        str(tmp_path / "new-run"),
        "--init-from",
        str(tmp_path / "missing"),
    ]
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        recipe.main([*argv, "--cache-dir", str(tmp_path / "cache"), "--n-subjects", "3"])
    assert not (tmp_path / "new-run").exists() and not (tmp_path / "w").exists() and not (tmp_path / "cache").exists()


def test_recipe_new_flags_map_onto_the_config():
    recipe = _recipe()
    args = recipe.parse_args(
        ["--out", "/tmp/x", "--init-from", "org/w@v1", "--lambda-l1", "10", "--lambda-l2", "500", "--threads", "1"]
    )
    cfg = recipe.build_config(args)
    assert (cfg.conditioning, cfg.lambda_l1, args.init_from, args.threads) == ("native", 10.0, "org/w@v1", 1)
    assert cfg.lambda_l2 == 500.0 and TrainConfig().lambda_l2 == 0.0
    cfg = recipe.build_config(
        recipe.parse_args(["--out", "/tmp/x", "--task", "local", "--residual", "--context-fill", "harmonic"])
    )
    assert cfg.generator == {"residual": True} and cfg.context_fill == "harmonic"
    with pytest.raises(SystemExit, match="local generator"):
        recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--residual"]))
    args = recipe.parse_args(["--out", "/tmp/x", "--conditioning", "samr", "--upsample", "transposed"])
    cfg = recipe.build_config(args)
    assert cfg.conditioning == "samr" and cfg.generator == {"upsample": "transposed"}
    # the recipe trains on the normal-brain normalisation; TrainConfig's own default is what old checkpoints used
    assert cfg.normalization == "normal-brain" and TrainConfig().normalization == "brain"
    cfg = recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--normalization", "brain"]))
    assert cfg.normalization == "brain"
    with pytest.raises(ValueError, match="unknown normalization"):
        TrainConfig(normalization="zscore")
    args = recipe.parse_args(["--out", "/tmp/x", "--keep-every", "500", "--resume"])
    assert recipe.build_config(args).keep_every == 500 and args.resume is True
    with pytest.raises(ValueError, match="keep_every must be >= 0"):
        TrainConfig(keep_every=-1)


def test_recipe_resume_from_a_given_checkpoint_only_exports_it(tmp_path):
    recipe = _recipe()
    ckpt = tmp_path / "run" / "checkpoints" / "step-000000500"
    ckpt.mkdir(parents=True)
    assert recipe.resume_checkpoint(str(ckpt), tmp_path / "run", 500) == ckpt
    with pytest.raises(ValueError, match="needs --stop-at 500"):
        recipe.resume_checkpoint(str(ckpt), tmp_path / "run", None)
    with pytest.raises(ValueError, match="copy it into a new --log-dir"):
        recipe.resume_checkpoint(str(ckpt), tmp_path / "run", 700)
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder of the run"):
        recipe.resume_checkpoint(str(ckpt), tmp_path / "other-run", 500)
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        recipe.resume_checkpoint(str(tmp_path / "missing"), tmp_path / "run", 500)


def test_checkpoints_written_before_a_config_field_existed_still_resume(tmp_path):
    """A field added to TrainConfig later (e.g. l1_class_balance) is absent from older checkpoints: its default
    (the behaviour before it existed) is assumed, so they resume and initialise; a real difference is still refused."""
    from samraug.training.checkpoint import CheckpointManager, load_checkpoint
    from samraug.training.gan import saved_config

    ds = _native_dataset()
    a = _native_trainer(max_steps=1)
    a.fit(ds, out_dir=tmp_path / "run", progress=False, validate=False, grids=False)
    state = load_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").latest())
    del state["config"]["l1_class_balance"]  # as written before the field existed
    assert saved_config(state)["l1_class_balance"] is False
    del state["config"]["normalization"]  # likewise: checkpoints before the field were trained on the legacy one
    assert saved_config(state)["normalization"] == "brain"
    _native_trainer(max_steps=1).load_state_dict(state)
    state["config"]["lambda_l1"] = 55.0
    with pytest.raises(ValueError, match=r"lambda_l1: checkpoint 55.0"):
        _native_trainer(max_steps=1).load_state_dict(state)


def test_an_older_kept_checkpoint_exports_as_it_is_and_the_log_stays_whole(tmp_path):
    """keep_every keeps the checkpoints at its multiples beyond keep_last; resuming from one of them with a stop at
    its step trains nothing, gives that checkpoint's weights, and leaves the later rows of the run's log in place."""
    import csv

    torch.manual_seed(0)
    a, ds = _trainer(max_steps=6, checkpoint_every=1, keep_last=1, keep_every=2)
    a.fit(ds, out_dir=tmp_path, progress=False, validate=False)
    names = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("step-")]
    assert sorted(names) == ["step-000000002", "step-000000004", "step-000000006"]
    older = tmp_path / "checkpoints" / "step-000000002"
    b, _ = _trainer(max_steps=6, checkpoint_every=1, keep_last=1, keep_every=2)
    result = b.fit(ds, val_dataset=ds, out_dir=tmp_path, resume=older, progress=False, stop_at_step=2)
    assert result.steps == 2 and b.step == 2
    c, _ = _trainer(max_steps=6, checkpoint_every=1, keep_last=1, keep_every=2)
    c.load_state_dict(load_checkpoint(older))
    assert all(torch.equal(v, _params(c.generator)[k]) for k, v in _params(b.generator).items())
    with open(tmp_path / "log.csv", newline="") as f:
        steps = [int(float(r["step"])) for r in csv.DictReader(f)]
    assert max(steps) == 6 and steps[-1] == 2  # the run's rows kept, the export's validation appended


def test_stop_at_step_validates_and_resume_at_that_step_trains_nothing(tmp_path):
    """--stop-at: a run stopped early (schedule unchanged) is validated; resuming with the same stop exports the
    checkpoint as it is (nothing trained, same weights), and resuming without it continues the planned schedule."""
    torch.manual_seed(0)
    a, ds = _trainer(max_steps=6, checkpoint_every=2)
    first = a.fit(ds, val_dataset=ds, out_dir=tmp_path, progress=False, stop_at_step=2)
    assert first.steps == 2 and a.step == 2 and a.total_steps == 6
    assert "ssim/mean" in first.validation  # validated although the schedule is not finished
    b, _ = _trainer(max_steps=6, checkpoint_every=2)
    again = b.fit(ds, val_dataset=ds, out_dir=tmp_path, resume=True, progress=False, stop_at_step=2)
    assert again.steps == 2
    assert all(torch.equal(v, _params(a.generator)[k]) for k, v in _params(b.generator).items())
    assert again.validation == pytest.approx(first.validation)
    c, _ = _trainer(max_steps=6, checkpoint_every=2)
    assert c.fit(ds, out_dir=tmp_path, resume=True, progress=False, validate=False).steps == 6


def test_d_smooth_sequences_are_what_the_discriminators_see():
    """With d_smooth_sequences the discriminators get real and generated images with those sequences blurred
    (smooth_channels) and the others untouched; the reconstruction term still sees the raw images."""
    from samraug.losses import smooth_channels

    trainer, ds = _trainer(d_smooth_sequences=("t2f",), d_smooth_sigma=1.5, lambda_l1=1.0)
    trainer.setup_schedule(10)
    batch = default_collate([ds[0], ds[1]])
    seen, made = [], []
    d = trainer.discriminator
    hooks = [
        d.register_forward_pre_hook(lambda module, args: seen.append(args[1].detach().clone())),
        trainer.generator.register_forward_hook(lambda module, args, out: made.append(out.detach().clone())),
    ]
    try:
        losses = trainer.train_step(batch)
    finally:
        for h in hooks:
            h.remove()
    real = batch["image"].float()
    assert len(made) == 1 and len(seen) == 4  # D(real), D(fake) for D's step; D(fake), D(real) for G's
    fake = made[0]
    for x, ref in zip(seen, (real, fake, fake, real), strict=True):
        torch.testing.assert_close(x[:, 1], smooth_channels(ref, [1], 1.5)[:, 1])
        assert torch.equal(x[:, 0], ref[:, 0])
    assert not torch.allclose(seen[0][:, 1], real[:, 1])
    assert math.isfinite(float(losses["l1"]))


def test_d_smooth_config_errors_and_recipe_flags():
    with pytest.raises(ValueError, match="go together"):
        preset_config("tiny", d_smooth_sequences=("aptw",))
    with pytest.raises(ValueError, match="go together"):
        preset_config("tiny", d_smooth_sigma=1.0)
    cfg = preset_config("tiny", d_smooth_sequences=("aptw",), d_smooth_sigma=2.0)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["d_smooth_sequences"] == ["aptw"]
    with pytest.raises(ValueError, match=r"d_smooth_sequences \['aptw'\] are not among the data's sequences"):
        GANTrainer(cfg, sequences=SEQ, device="cpu")
    recipe = _recipe()
    cfg = recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--d-smooth", "aptw"]))
    assert cfg.d_smooth_sequences == ("aptw",) and cfg.d_smooth_sigma == 1.5
    with pytest.raises(SystemExit, match="name the sequences too"):
        recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--d-smooth-sigma", "2"]))
