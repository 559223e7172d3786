"""Checkpoints: pickle-free round trips, atomic writes that survive crashes, rotation, exact resume."""

from __future__ import annotations

import json
import random
import re
import shutil

import numpy as np
import pytest
import torch

from samraug.training import checkpoint as ckpt
from samraug.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    flatten_state,
    load_checkpoint,
    save_checkpoint,
    unflatten_state,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """These small convolutions gain nothing from a second thread, and on a loaded machine two spinning OpenMP
    threads make them orders of magnitude slower; restore the configured count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _assert_same(a, b, path="/"):
    if isinstance(a, dict):  # an OrderedDict (module state dict) comes back as a plain dict, in the same order
        assert isinstance(b, dict), path
    else:
        assert type(a) is type(b), f"{path}: {type(a)} vs {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}{k}/")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}{i}/")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, path


def _optimizer_state() -> dict:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    net(torch.randn(5, 3)).square().mean().backward()
    opt.step()
    return {"model": net.state_dict(), "opt": opt.state_dict()}


def test_round_trip_exact_types_and_values(tmp_path):
    state = {
        **_optimizer_state(),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.RandomState(3).get_state(),
            "python": random.Random(4).getstate(),
        },
        "dtypes": [torch.zeros(2, dtype=torch.bfloat16), torch.arange(3), torch.ones(2, dtype=torch.bool)],
        "scalar": torch.tensor(2.5),
        "numbers": {"nan": float("nan"), "inf": float("inf"), "int": 7, "none": None, "s": "x"},
        "__weird": {1.5: "float key", None: (1, (2, 3))},
        "nested": ((), []),
    }
    path = save_checkpoint(state, tmp_path / "c")
    back = load_checkpoint(path)
    _assert_same(state, back)
    # optimizer keys really are ints again (Adam needs them), and the loaded state drives a real optimizer
    assert set(back["opt"]["state"]) == {0, 1, 2, 3}
    np.random.RandomState().set_state(back["rng"]["numpy"])
    random.Random().setstate(back["rng"]["python"])
    # nothing pickled: the folder holds exactly a safetensors file and a JSON file
    assert sorted(p.name for p in path.iterdir()) == ["state.json", "tensors.safetensors"]
    json.loads((path / "state.json").read_text())


def test_flatten_names_tensors_by_path_and_rejects_objects():
    tensors, tree = flatten_state({"models": {"G": {"w": torch.zeros(1)}}, "t": (torch.ones(1),)})
    assert sorted(tensors) == ["models/G/w", "t/0"]
    assert tree["models"]["G"]["w"] == {"__tensor__": "models/G/w"}
    assert unflatten_state(tree, tensors)["t"][0].item() == 1.0
    with pytest.raises(TypeError, match="pickle"):
        flatten_state({"fn": object()})


def test_manager_rotates_and_points_to_latest(tmp_path):
    m = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        m.save({"step": step, "w": torch.full((2,), float(step))}, step=step)
    assert [p.name for p in m.checkpoints()] == ["step-000000002", "step-000000003"]
    assert (tmp_path / "latest").read_text().strip() == "step-000000003"
    assert m.load()["step"] == 3
    assert m.load(tmp_path / "step-000000002")["w"].tolist() == [2.0, 2.0]
    # re-saving the same step replaces it atomically
    m.save({"step": 33}, step=3)
    assert m.load()["step"] == 33
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("failing", ["_write_tensors", "_write_json", "_fsync_dir"])
def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch, failing):
    m = CheckpointManager(tmp_path, keep_last=3)
    m.save({"step": 1, "w": torch.ones(3)}, step=1)

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        m.save({"step": 2, "w": torch.zeros(3)}, step=2)
    monkeypatch.undo()
    assert [p.name for p in m.checkpoints()] == ["step-000000001"]
    assert m.latest() == tmp_path / "step-000000001"
    assert m.load()["w"].tolist() == [1.0, 1.0, 1.0]


def test_killed_mid_write_leaves_partial_temp_dir_that_is_ignored_then_cleaned(tmp_path):
    m = CheckpointManager(tmp_path)
    m.save({"step": 1, "w": torch.ones(2)}, step=1)
    # what a SIGKILL during the next save leaves behind: a temp folder with a truncated tensor file, no state.json
    partial = tmp_path / ".tmp-step-000000002-deadbeef"
    partial.mkdir()
    (partial / "tensors.safetensors").write_bytes(b"\x00" * 10)
    assert m.latest() == tmp_path / "step-000000001"
    assert m.load()["step"] == 1
    m.save({"step": 2}, step=2)
    assert not partial.exists()
    assert m.load()["step"] == 2


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path):
    m = CheckpointManager(tmp_path)
    m.save({"w": torch.ones(4)}, step=1)
    newest = m.save({"w": torch.zeros(4)}, step=2)
    data = (newest / "tensors.safetensors").read_bytes()
    (newest / "tensors.safetensors").write_bytes(data[:-3] + b"abc")  # same size, different bytes
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(newest)
    assert m.latest() == tmp_path / "step-000000001"
    assert m.load()["w"].tolist() == [1.0] * 4
    # a pointer to a vanished folder also falls back
    shutil.rmtree(newest)
    (tmp_path / "latest").write_text("step-000000002\n")
    assert m.latest() == tmp_path / "step-000000001"


def test_empty_root_has_no_checkpoint(tmp_path):
    m = CheckpointManager(tmp_path / "none")
    assert m.latest() is None
    with pytest.raises(FileNotFoundError, match="without --resume"):
        m.load()
    with pytest.raises(FileExistsError):
        save_checkpoint({}, tmp_path)


# ------------------------------------------------------------------------------------------ trainer resume
SEQ = ("t1n", "t2f")


def _run(tmp, *, resume=False, stop_at_step=None, checkpoint_every=2, max_steps=5):
    from samraug.training import GANTrainer, preset_config
    from samraug.training.gan import SyntheticSliceDataset

    ds = SyntheticSliceDataset(6, size=32, sequences=SEQ)  # 3 steps per epoch: the run crosses epoch boundaries
    cfg = preset_config(
        "tiny",
        max_steps=max_steps,
        batch_size=2,
        num_workers=0,
        checkpoint_every=checkpoint_every,
        seed=11,
        log_every=1,
    )
    trainer = GANTrainer(cfg, sequences=SEQ, device="cpu")
    trainer.fit(ds, out_dir=tmp, resume=resume, stop_at_step=stop_at_step, progress=False, validate=False, grids=False)
    return trainer


def _all_params(trainer):
    out = {}
    for name, module in (("G", trainer.generator), ("D", trainer.discriminator), ("U", trainer.unet)):
        out.update({f"{name}.{k}": v.detach().clone() for k, v in module.state_dict().items()})
    for name, opt in trainer.optimizers.items():
        for i, st in opt.state_dict()["state"].items():
            out.update({f"opt{name}.{i}.{k}": v.clone() for k, v in st.items()})
    return out


def _assert_bitwise(a, b):
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, bad[:5]


def test_resume_is_bitwise_identical_to_uninterrupted_run(tmp_path):
    reference = _all_params(_run(tmp_path / "ref"))
    # interrupted at step 2 (mid-epoch 0, checkpointed), then resumed in a fresh trainer
    first = _run(tmp_path / "run", stop_at_step=2)
    assert (first.step, first.epoch, first.batch_in_epoch) == (2, 0, 2)
    resumed = _run(tmp_path / "run", resume=True)
    assert resumed.step == 5
    _assert_bitwise(reference, _all_params(resumed))
    assert resumed.schedulers["G"].last_step == 5 and resumed.optimizers["G"].param_groups[0]["lr"] == 0.0
    # the CSV log continues where the checkpoint left it, without duplicates
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]


def test_crash_during_a_training_checkpoint_leaves_previous_one_and_resume_still_exact(tmp_path, monkeypatch):
    reference = _all_params(_run(tmp_path / "ref", max_steps=4, checkpoint_every=1))
    real_write = ckpt._write_tensors
    calls = {"n": 0}

    def crash_on_third(tensors, path):
        calls["n"] += 1
        if calls["n"] == 3:
            real_write(dict(list(tensors.items())[:3]), path)  # half-written file, then the "crash"
            raise KeyboardInterrupt("killed while writing the step-3 checkpoint")
        real_write(tensors, path)

    monkeypatch.setattr(ckpt, "_write_tensors", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "run", max_steps=4, checkpoint_every=1)
    monkeypatch.undo()
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    assert [p.name for p in manager.checkpoints()] == ["step-000000001", "step-000000002"]
    assert manager.latest().name == "step-000000002"
    resumed = _run(tmp_path / "run", resume=True, max_steps=4, checkpoint_every=1)
    _assert_bitwise(reference, _all_params(resumed))


def test_resume_with_other_settings_is_refused(tmp_path):
    from samraug.training import GANTrainer, preset_config
    from samraug.training.gan import SyntheticSliceDataset

    _run(tmp_path, stop_at_step=2)
    ds = SyntheticSliceDataset(6, size=32, sequences=SEQ)
    cfg = preset_config("tiny", max_steps=5, batch_size=2, num_workers=0, seed=11, lr=1e-3)
    with pytest.raises(ValueError, match=re.escape("lr: checkpoint 0.0002 vs now 0.001")):
        GANTrainer(cfg, sequences=SEQ, device="cpu").fit(ds, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="without --resume"):
        GANTrainer(cfg, sequences=SEQ, device="cpu").fit(ds, out_dir=tmp_path / "new", resume=True, progress=False)
