"""Synthesizer: loading through the real resolver, batching, padding, the 3D slice-wise path, scales, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_model import AFFINE, SEQS, SHAPE, tiny_brain

from samraug.atlas import Atlas
from samraug.intensity import IntensityStats
from samraug.labels import one_hot
from samraug.models.generator import build_generator
from samraug.synthesis import Synthesizer, get_synthesizer, resolve_device, resolve_dtype


def _brain() -> torch.Tensor:
    return tiny_brain()


@pytest.fixture(scope="module")
def weights(tiny_weights: str) -> str:
    return tiny_weights


@pytest.fixture(scope="module")
def synth(weights: str) -> Synthesizer:
    return Synthesizer(weights, device="cpu")


def _labels() -> torch.Tensor:
    """SAMR classes: brain box, edema block with a tumour core; slices 0 and 7 have no brain."""
    lab = _brain().long()
    lab[10:18, 10:18, 2:6] = 2
    lab[12:16, 12:16, 3:5] = 4
    return lab


def test_lazy_loading_and_config(weights: str) -> None:
    s = Synthesizer(weights, device="cpu")
    assert s._model is None
    assert s.sequences == SEQS  # read from config.json without building the model
    assert s.atlas.shape == SHAPE
    assert s._model is None
    model = s.model
    assert s.model is model  # loaded once per process
    assert not model.training
    a, b = get_synthesizer(weights, device="cpu"), get_synthesizer(weights, device="cpu")
    assert a is not b  # each user owns its synthesizer...
    assert a.model is b.model  # ...around one shared, read-only model
    b.batch_size = 3
    assert a.batch_size != 3


def test_slices_shape_range_and_input_forms(synth: Synthesizer) -> None:
    torch.manual_seed(1)
    classes = torch.randint(0, 5, (3, 32, 32))
    z = [2, 3, 4]
    a = synth.synthesize_slices(classes, z=z)
    assert a.shape == (3, len(SEQS), 32, 32) and a.dtype == torch.float32
    assert float(a.min()) >= -1.0 and float(a.max()) <= 1.0
    b = synth.synthesize_slices(one_hot(classes, channel_dim=1), synth.atlas.stack(torch.tensor(z)))
    torch.testing.assert_close(a, b)
    c = synth.synthesize_slices(classes.to(torch.uint8), z=z, batch_size=1)  # chunking does not change results
    torch.testing.assert_close(a, c, atol=1e-5, rtol=0)


def test_slices_pad_and_crop_back(synth: Synthesizer) -> None:
    """A 30x26 slice (not a multiple of 8) equals the centre of the same slice padded by hand to 32x32."""
    torch.manual_seed(2)
    small = torch.randint(0, 5, (2, 30, 26))
    out = synth.synthesize_slices(small, z=3)
    assert out.shape == (2, len(SEQS), 30, 26)
    padded = torch.zeros(2, 32, 32, dtype=torch.long)  # background padding, centred: 1 row / 3 columns before
    padded[:, 1:31, 3:29] = small
    ref = synth.synthesize_slices(padded, z=3)
    torch.testing.assert_close(out, ref[:, :, 1:31, 3:29])


def test_volume_model_range_and_skipped_slices(synth: Synthesizer) -> None:
    lab = _labels()
    vols = synth.synthesize_volume(lab, affine=AFFINE)
    assert set(vols) == set(SEQS)
    brain = lab > 0
    for v in vols.values():
        assert v.shape == SHAPE and v.dtype == torch.float32
        assert torch.all(v[~brain] == -1.0)  # background, including the brain-free slices 0 and 7
        assert float(v.min()) >= -1.0 and float(v.max()) <= 1.0
    # the brain slices equal the 2D path on the same masks and atlas slices
    zs = torch.arange(1, 7)
    ref = synth.synthesize_slices(lab[..., zs].permute(2, 0, 1), z=zs)
    got = torch.stack([vols[s] for s in SEQS])[..., zs].permute(3, 0, 1, 2)
    torch.testing.assert_close(torch.where(brain[..., zs].permute(2, 0, 1)[:, None], ref, -1.0), got)


def test_volume_subject_scale(synth: Synthesizer) -> None:
    lab = _labels()
    stats = {"t1n": IntensityStats(10.0, 110.0), "t2f": IntensityStats(-5.0, 5.0)}
    model = synth.synthesize_volume(lab, affine=AFFINE, output="model")
    real = synth.synthesize_volume(lab, affine=AFFINE, stats=stats)
    assert set(real) == {"t1n", "t2f"}  # only the sequences with stats
    brain = lab > 0
    for name, st in stats.items():
        expected = (model[name] + 1) / 2 * (st.high - st.low) + st.low  # computed by hand
        torch.testing.assert_close(real[name][brain], expected[brain])
        assert torch.all(real[name][~brain] == 0)
    # z_axis: the same subject with z first
    moved = synth.synthesize_volume(lab.permute(2, 0, 1), affine=AFFINE[:, [2, 0, 1, 3]], z_axis=0, output="model")
    torch.testing.assert_close(moved["t1c"], model["t1c"].permute(2, 0, 1))


def test_volume_errors(synth: Synthesizer) -> None:
    lab = _labels()
    with pytest.raises(ValueError, match=r"expects a 3D label map.*for 2D slices use synthesize_slices"):
        synth.synthesize_volume(lab[..., 3])
    bad = lab.float()
    bad[5, 5, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        synth.synthesize_volume(bad)
    unknown = lab.clone()
    unknown[5, 5, 3] = 7
    with pytest.raises(ValueError, match=r"labels \{7\}.*synth\.encode"):
        synth.synthesize_volume(unknown)
    with pytest.raises(ValueError, match="not on the atlas grid: shape"):
        synth.synthesize_volume(lab[:30])
    shifted = AFFINE.copy()
    shifted[0, 3] = 10.0
    with pytest.raises(ValueError, match="not on the atlas grid: affine"):
        synth.synthesize_volume(lab, affine=shifted)
    with pytest.raises(ValueError, match="needs the subject's stats"):
        synth.synthesize_volume(lab, output="subject")
    with pytest.raises(ValueError, match=r"one-hot mask must be \(B, 5, H, W\)"):
        synth.synthesize_slices(torch.zeros(1, 4, 32, 32), z=0)
    with pytest.raises(ValueError, match="needs the atlas"):
        synth.synthesize_slices(torch.zeros(1, 32, 32, dtype=torch.long))


def test_cuda_in_worker_guard(weights: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated DataLoader worker + a CUDA device string (no GPU needed: the guard runs before any CUDA call)."""
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    gpu = Synthesizer(weights, device="cuda")
    with pytest.raises(RuntimeError, match=r"DataLoader worker.*batched=True.*SynthesizingLoader"):
        gpu.synthesize_slices(torch.zeros(1, 32, 32, dtype=torch.long), z=0)
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        gpu.synthesize_volume(_labels())
    assert gpu._model is None
    cpu = Synthesizer(weights, device="cpu")  # CPU synthesis in a worker is allowed
    assert cpu.synthesize_slices(torch.zeros(1, 32, 32, dtype=torch.long), z=0).shape == (1, 4, 32, 32)


def test_device_and_dtype_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_device("cpu") == cpu
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8", cpu)
    with pytest.raises(ValueError, match="batch_size"):
        Synthesizer("x", batch_size=0)


def test_from_model_registry_and_bf16(weights: str) -> None:
    torch.manual_seed(3)
    gen = build_generator("tiny", sequences=SEQS, base_channels=8, max_channels=16, n_res_blocks=1, n_down=3)
    s = Synthesizer.from_model(gen, Atlas.load(weights), device="cpu")
    assert s.key.startswith("memory:")
    found = get_synthesizer(s.key, device="cpu")
    assert found is not s and found.key == s.key and found.model is s.model
    lab = _labels()
    fp32 = s.synthesize_volume(lab, output="model")
    half = Synthesizer.from_model(gen, Atlas.load(weights), device="cpu", dtype="bfloat16")
    bf16 = half.synthesize_volume(lab, output="model")
    assert torch.allclose(fp32["t1n"], bf16["t1n"], atol=0.1)  # autocast runs and stays close


def test_model_cache_is_weak(weights: str) -> None:
    """The process-wide model cache keeps a model only while a synthesizer uses it."""
    import gc
    import weakref

    from samraug.synthesis import _MODEL_CACHE

    s = Synthesizer(weights, device="cpu", dtype="float32", channels_last=False)
    ref = weakref.ref(s.model)
    assert any(v.model is ref() for v in _MODEL_CACHE.values())
    del s
    gc.collect()
    assert ref() is None


def test_memory_key_is_found_while_alive_only() -> None:
    import gc

    gen = build_generator("tiny", sequences=SEQS, base_channels=8, max_channels=16, n_res_blocks=1, n_down=3)
    atlas = Atlas(torch.zeros(len(SEQS), 8, 8, 4), np.eye(4), SEQS, torch.ones(8, 8, 4, dtype=torch.bool))
    s = Synthesizer.from_model(gen, atlas, device="cpu")
    key = s.key
    assert get_synthesizer(key, device="cpu").atlas is atlas
    del s
    gc.collect()
    with pytest.raises(ValueError, match="not alive in this process"):
        get_synthesizer(key, device="cpu")
