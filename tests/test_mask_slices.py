"""Whole-image generators that see adjacent mask slices (``mask_slices = 2c + 1``): the input stack, widening a
single-slice generator, the training instances and trainer, and every painting path (slices, volumes, pending
samples)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tiny_model import AFFINE, SEQS, SHAPE, save_tiny_weights, tiny_brain

from samraug.augment import augment_view, plain_view
from samraug.augment.batched import synthesize_pending
from samraug.augment.views import output_item
from samraug.editing import EditPolicy, LesionEditor
from samraug.hub import load_weights, save_weights
from samraug.labels import get_scheme, mask_stack, neighbour_slices, one_hot
from samraug.models.generator import SAMRGenerator, generator_from_config
from samraug.synthesis import Synthesizer

KW = dict(sequences=("t1n", "t2f"), n_labels=4, base_channels=4, max_channels=8, n_down=2, n_res_blocks=1)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- the input stack
@given(
    z=st.lists(st.integers(0, 9), min_size=1, max_size=6),
    c=st.integers(0, 3),
    depth=st.integers(1, 10),
)
def test_neighbour_slices_are_the_clipped_window(z, c, depth):
    z = [min(v, depth - 1) for v in z]
    got = neighbour_slices(torch.tensor(z), 2 * c + 1, depth)
    for row, centre in zip(got.tolist(), z, strict=True):
        assert row == [min(max(centre + d, 0), depth - 1) for d in range(-c, c + 1)]
        assert row[c] == centre


def test_mask_stack_is_slice_major_one_hot():
    rng = np.random.default_rng(0)
    classes = torch.from_numpy(rng.integers(0, 4, (2, 3, 5, 6)))
    x = mask_stack(classes, 4)
    assert x.shape == (2, 12, 5, 6)
    for s in range(3):  # channels 4s .. 4s+3 are slice s's one-hot
        assert torch.equal(x[:, 4 * s : 4 * s + 4], one_hot(classes[:, s], 4, channel_dim=1))
    with pytest.raises(ValueError, match=r"\(B, m, H, W\)"):
        mask_stack(classes[0], 4)
    with pytest.raises(ValueError, match="odd"):
        neighbour_slices(torch.tensor([1]), 2, 5)


# ---------------------------------------------------------------------------------------------- the generator
def test_generator_config_input_checks_and_hub_round_trip(tmp_path):
    one = SAMRGenerator(**KW)
    assert one.mask_slices == 1 and "mask_slices" not in one.config  # configs without the key: one slice
    five = SAMRGenerator(**KW, mask_slices=5)
    assert five.config["mask_slices"] == 5 and five.mask_input_conv().in_channels == 20
    with pytest.raises(ValueError, match="odd"):
        SAMRGenerator(**KW, mask_slices=2)
    with pytest.raises(ValueError, match="mask_slices must be an integer >= 1"):
        SAMRGenerator(**KW, mask_slices=0)
    atlas = torch.zeros(1, 6, 16, 16)
    with pytest.raises(ValueError, match=r"\(B, 20, H, W\) one-hot stack \(5 adjacent slices x 4 classes.*mask_stack"):
        five(one_hot(torch.zeros(1, 16, 16, dtype=torch.long), 4), atlas)
    assert five.eval()(torch.zeros(1, 20, 16, 16), atlas).shape == (1, 2, 16, 16)
    rebuilt = generator_from_config({"model_type": "samr", **five.config})
    assert rebuilt.mask_slices == 5


@pytest.mark.parametrize("skips", [False, True])
def test_widened_generator_paints_what_the_narrow_one_painted_whatever_the_neighbours(skips):
    torch.manual_seed(0)
    narrow = SAMRGenerator(**KW, skips=skips).eval()
    wide = SAMRGenerator(**KW, skips=skips, mask_slices=5).eval()
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    wide.widen_from(narrow)
    conv = wide.mask_input_conv().weight
    assert torch.equal(conv[:, 8:12], narrow.mask_input_conv().weight)  # the centre slice's channels
    assert not conv[:, :8].any() and not conv[:, 12:].any()
    assert any(not torch.equal(before[k], v) for k, v in wide.state_dict().items())
    g = torch.Generator().manual_seed(1)
    classes = torch.randint(0, 4, (3, 5, 16, 16), generator=g)  # five different slices per painted slice
    atlas = torch.rand(3, 6, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        got = wide(mask_stack(classes, 4), atlas)
        want = narrow(one_hot(classes[:, 2], 4, channel_dim=1), atlas)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"differ in more than mask_slices.*base_channels"):
        SAMRGenerator(**{**KW, "base_channels": 8}, mask_slices=5).widen_from(narrow)
    with pytest.raises(ValueError, match="at most as many mask slices"):
        narrow.widen_from(wide)


# ---------------------------------------------------------------------------------------------- training
def _subjects(n=2):
    subjects = []
    for s in range(n):
        rng = np.random.default_rng(s)
        brain = np.zeros((32, 32, 5), dtype=bool)
        brain[4:28, 5:27, 1:] = True
        seg = np.zeros((32, 32, 5), dtype=np.int64)
        seg[8:16, 8:16, 1:3] = 2  # a lesion in slices 1-2 only: neighbours differ from the centre
        seg[10:14, 10:14, 2:4] = 1
        seg[18:22, 18:24, 3] = 4
        subject = {"seg": seg, "brain": brain, "subject_id": f"n{s}"}
        for k, name in enumerate(("t1n", "t2f")):
            img = 100.0 * (k + 1) + 30.0 * seg + 5.0 * rng.standard_normal(seg.shape)
            subject[name] = np.where(brain, img, 0.0).astype(np.float32)
        subjects.append(subject)
    return subjects


def _dataset(mask_slices):
    from samraug.data.slices import SliceDataset

    return SliceDataset(
        _subjects(),
        None,
        sequences=("t1n", "t2f"),
        scheme="brats2024",
        conditioning="native",
        multiple=16,
        mask_slices=mask_slices,
    )


def test_instances_carry_the_neighbour_stack():
    ds, plain = _dataset(3), _dataset(1)
    assert "mask_stack" not in plain[0]
    scheme = get_scheme("brats2024")
    subject = _subjects()[0]
    classes = scheme.encode(subject["seg"], subject["brain"], "native")
    for i in range(4):  # subject 0's slices 1..4 (slice 0 has no brain)
        inst = ds[i]
        z = inst["z"]
        assert inst["mask_stack"].shape == (18, 32, 32)
        assert torch.equal(inst["mask_stack"][6:12], inst["mask"])
        assert torch.equal(inst["mask"], plain[i]["mask"])
        for s, zz in enumerate((max(z - 1, 0), z, min(z + 1, 4))):  # edge slices repeat
            ref = one_hot(torch.from_numpy(classes[..., zz]), 6, channel_dim=0)
            assert torch.equal(inst["mask_stack"][6 * s : 6 * s + 6], ref), (z, zz)
    with pytest.raises(ValueError, match="mask_slices must be a positive odd integer"):
        _dataset(2)


def test_trainer_feeds_the_stack_and_init_from_widens_single_slice_weights(tmp_path):
    from torch.utils.data import default_collate

    from samraug.training import GANTrainer, preset_config

    def trainer(**gen):
        cfg = preset_config(
            "tiny", batch_size=2, num_workers=0, log_every=1, use_atlas=False, max_steps=1, generator=gen
        )
        return GANTrainer(cfg, sequences=("t1n", "t2f"), label_scheme="brats2024", device="cpu")

    narrow = trainer()
    narrow.fit(_dataset(1), progress=False, validate=False)
    folder = narrow.export(tmp_path / "one", None)
    wide = trainer(mask_slices=3)
    assert wide.init_from(folder) == [str(folder)]
    batch = default_collate([_dataset(3)[i] for i in (1, 2)])
    fake_wide, _ = wide.synthesize(batch)
    fake_narrow, _ = narrow.synthesize(batch)
    torch.testing.assert_close(fake_wide, fake_narrow, atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match=r"no 'mask_stack'.*mask_slices=3"):
        wide.synthesize(default_collate([_dataset(1)[i] for i in (1, 2)]))
    result = wide.fit(_dataset(3), progress=False, validate=False)
    assert np.isfinite(list(result.losses.values())).all()
    exported = wide.export(tmp_path / "three", None)
    assert json.loads((exported / "config.json").read_text())["mask_slices"] == 3
    assert load_weights(exported).generator.mask_slices == 3
    assert "3 adjacent slices (z-1..z+1)" in (exported / "README.md").read_text()  # the card's usage says so
    with pytest.raises(ValueError, match=r"architecture does not match.*mask_slices"):
        trainer().init_from(exported)  # narrowing is refused


def test_recipe_flag():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "train_samr.py"
    spec = importlib.util.spec_from_file_location("train_samr_ms", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    cfg = recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--mask-slices", "5"]))
    assert cfg.generator_kwargs()["mask_slices"] == 5
    with pytest.raises(SystemExit, match="--context-slices"):
        recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--mask-slices", "3", "--task", "local"]))
    with pytest.raises(SystemExit, match="positive odd"):
        recipe.build_config(recipe.parse_args(["--out", "/tmp/x", "--mask-slices", "4"]))


# ---------------------------------------------------------------------------------------------- painting
@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Synthesizer:
    return Synthesizer(save_tiny_weights(tmp_path_factory.mktemp("wide"), mask_slices=3), device="cpu")


def _labels() -> torch.Tensor:
    lab = tiny_brain().long()
    lab[10:18, 10:18, 2:6] = 2
    lab[12:16, 12:16, 3:5] = 4
    return lab


def test_volume_paints_each_slice_from_its_neighbours(wide):
    """synthesize_volume equals the generator called by hand on each brain slice's z-1, z, z+1 stack."""
    lab = _labels()
    vols = wide.synthesize_volume(lab, affine=AFFINE, output="model")
    model, atlas = wide.model, wide.atlas
    zs = torch.arange(1, 7)  # the brain slices
    idx = torch.stack([zs - 1, zs, (zs + 1).clamp(max=SHAPE[2] - 1)], dim=1)
    stacks = mask_stack(lab[..., idx].permute(2, 3, 0, 1), wide.n_labels)
    with torch.inference_mode():
        ref = model(stacks, atlas.stack(zs))
    got = torch.stack([vols[s] for s in SEQS])[..., zs].permute(3, 0, 1, 2)
    brain = (lab > 0)[..., zs].permute(2, 0, 1)[:, None]
    torch.testing.assert_close(got, torch.where(brain, ref, -1.0), atol=1e-5, rtol=0)
    # the neighbours matter: the lone-slice form (neighbours equal to the slice) paints something else
    lone = wide.synthesize_slices(lab[..., zs].permute(2, 0, 1), z=zs)
    assert float((torch.where(brain, lone, -1.0) - got).abs().max()) > 1e-5
    same = mask_stack(lab[..., zs].permute(2, 0, 1)[:, None].repeat(1, 3, 1, 1), wide.n_labels)
    with torch.inference_mode():
        torch.testing.assert_close(lone, model(same, atlas.stack(zs)), atol=1e-5, rtol=0)


def test_slices_take_explicit_neighbours_and_check_them(wide):
    lab = _labels()
    zs = torch.tensor([2, 5])
    nb = torch.stack([lab[..., zs - 1], lab[..., zs + 1]]).permute(3, 0, 1, 2)  # (B, 2, H, W)
    got = wide.synthesize_slices(lab[..., zs].permute(2, 0, 1), z=zs, neighbours=nb)
    vols = wide.synthesize_volume(lab, affine=AFFINE, output="model")
    brain = (lab > 0)[..., zs].permute(2, 0, 1)[:, None]
    want = torch.stack([vols[s] for s in SEQS])[..., zs].permute(3, 0, 1, 2)
    torch.testing.assert_close(torch.where(brain, got, -1.0), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"neighbours must be class maps \(B=2, 2c=2"):
        wide.synthesize_slices(lab[..., zs].permute(2, 0, 1), z=zs, neighbours=nb[:, :1])
    with pytest.raises(ValueError, match="neighbours has labels"):
        wide.synthesize_slices(lab[..., zs].permute(2, 0, 1), z=zs, neighbours=nb + 7)


def test_widened_weights_paint_volumes_exactly_like_their_source(tiny_weights, tmp_path):
    narrow = load_weights(tiny_weights)
    gen = SAMRGenerator(**{**narrow.generator.config, "mask_slices": 5})
    gen.widen_from(narrow.generator)
    folder = tmp_path / "widened"
    save_weights(folder, gen, narrow.atlas, label_scheme="brats2021", conditioning="samr")
    a = Synthesizer(tiny_weights, device="cpu").synthesize_volume(_labels(), affine=AFFINE, output="model")
    b = Synthesizer(str(folder), device="cpu").synthesize_volume(_labels(), affine=AFFINE, output="model")
    for s in SEQS:
        torch.testing.assert_close(a[s], b[s], atol=1e-5, rtol=0)


def test_pending_volumes_get_their_neighbours_and_batch_like_direct_painting(wide):
    g = torch.Generator().manual_seed(0)
    brain = tiny_brain(slice(2, 6))
    seg = torch.zeros(SHAPE, dtype=torch.uint8)
    seg[9:19, 10:19, 2:5] = 2
    seg[11:17, 12:17, 3:5] = 4
    images = torch.stack(
        [torch.where(brain, 40.0 * (i + 1) + 30 * torch.rand(SHAPE, generator=g), 0.0) for i in range(4)]
    )
    item = {"image": images, "label": seg[None].clone()}
    policy = EditPolicy(p_remove=0, p_swap=0, p_mirror=0, p_scale=0, p_rotate=0, p_perturb=0, p_move=1.0, max_shift=0.2)
    editor = LesionEditor("brats2021", policy=policy)
    mapping = {s: i for i, s in enumerate(SEQS)}

    def run(defer):
        view = plain_view(item, label_key="label", image_key="image", mapping=mapping, sequences=wide.sequences)
        return augment_view(
            view,
            item=output_item(item, view),
            scheme="brats2021",
            synthesizer=wide,
            editor=editor,
            generator=torch.Generator().manual_seed(5),
            defer=defer,
        )

    direct, deferred = run(False), run(True)
    pending = deferred.pending
    nb = pending.neighbours(3)
    # independent reference: the encoded edited labels' slices z-1 and z+1 (clipped) of each painted slice
    classes = np.asarray(wide.encode(pending.edited, pending.brain.numpy(), get_scheme("brats2021")))
    for row, z in enumerate(pending.positions.tolist()):
        for col, zz in enumerate((max(z - 1, 0), min(z + 1, SHAPE[2] - 1))):
            assert np.array_equal(nb[row, col].numpy(), classes[..., zz]), (z, zz)
    assert pending.neighbours(1) is None
    (batched,) = synthesize_pending([pending], wide)
    assert torch.equal(batched["label"], direct.item["label"])
    torch.testing.assert_close(batched["image"], direct.item["image"], atol=1e-4, rtol=1e-5)
