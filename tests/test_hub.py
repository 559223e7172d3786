"""Weights folders and the Hub: round trips, the offline Hub cache, and every bad-weights input."""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.hf_api import HfApi
from safetensors.torch import load_file, save_file

from samraug import hub
from samraug.atlas import Atlas
from samraug.hub import (
    WEIGHT_FILES,
    WeightsError,
    load_weights,
    model_card,
    push_to_hub,
    resolve_weights,
    save_weights,
)
from samraug.labels import get_scheme, one_hot
from samraug.models.generator import Pix2PixGenerator, SAMRGenerator, build_generator

SEQ = ("t1n", "t1c", "t2w", "t2f")
SMALL = {"sequences": SEQ, "base_channels": 4, "max_channels": 16, "n_down": 3, "n_res_blocks": 1}
SIZE = 32


def _generator(seed: int = 0, model_type: str = "samr") -> torch.nn.Module:
    torch.manual_seed(seed)
    kwargs = dict(SMALL)
    if model_type == "pix2pix":
        kwargs["depth"] = kwargs.pop("n_down")
        kwargs.pop("n_res_blocks")
    g = build_generator(kwargs, model_type=model_type)
    # train BN statistics a little so that eval outputs depend on the buffers too
    g.train()
    with torch.no_grad():
        g(*_inputs(seed + 100))
    return g.eval()


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = one_hot(torch.randint(0, 5, (2, SIZE, SIZE), generator=gen))
    return mask, torch.rand(2, 3 * len(SEQ), SIZE, SIZE, generator=gen) * 2 - 1


def _atlas() -> Atlas:
    gen = torch.Generator().manual_seed(0)
    data = torch.rand(len(SEQ), SIZE, SIZE, 6, generator=gen) * 2 - 1
    brain = torch.ones(SIZE, SIZE, 6, dtype=torch.bool)
    return Atlas(data=data, affine=np.diag([2.0, 2.0, 2.0, 1.0]), sequences=SEQ, brain=brain)


def _out(g: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return g(*_inputs())


@pytest.fixture
def weights(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    g = _generator()
    folder = save_weights(
        tmp_path / "w", g, _atlas(), label_scheme="brats2024", conditioning="samr", card={"data": "phantom"}
    )
    return folder, g


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("model_type", ["samr", "pix2pixhd", "pix2pix"])
def test_save_pretrained_round_trip(tmp_path: Path, model_type: str) -> None:
    g = _generator(model_type=model_type)
    g.save_pretrained(tmp_path / "g")
    assert sorted(os.listdir(tmp_path / "g")) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "g" / "config.json").read_text())
    assert config["model_type"] == model_type
    cls = Pix2PixGenerator if model_type == "pix2pix" else SAMRGenerator
    g2 = cls.from_pretrained(tmp_path / "g")
    assert type(g2) is cls and not g2.training
    assert torch.equal(_out(g2), _out(g))


def test_save_pretrained_channels_last(tmp_path: Path) -> None:
    g = _generator().to(memory_format=torch.channels_last)
    g.save_pretrained(tmp_path / "g")
    torch.testing.assert_close(_out(SAMRGenerator.from_pretrained(tmp_path / "g")), _out(g), atol=1e-5, rtol=1e-5)


def test_from_pretrained_wrong_class(tmp_path: Path) -> None:
    _generator(model_type="pix2pix").save_pretrained(tmp_path / "g")
    with pytest.raises(WeightsError, match=r"holds a 'pix2pix' generator, not a SAMRGenerator.*Pix2PixGenerator"):
        SAMRGenerator.from_pretrained(tmp_path / "g")


def test_from_pretrained_without_config(tmp_path: Path) -> None:
    _generator().save_pretrained(tmp_path / "g")
    (tmp_path / "g" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config.json"):
        SAMRGenerator.from_pretrained(tmp_path / "g")


def test_from_pretrained_reads_a_weights_folder(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, g = weights
    assert torch.equal(_out(SAMRGenerator.from_pretrained(folder)), _out(g))


def test_save_load_weights_round_trip(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, g = weights
    assert sorted(os.listdir(folder)) == sorted(WEIGHT_FILES)
    loaded = load_weights(folder)
    assert loaded.path == folder and not loaded.generator.training
    assert torch.equal(_out(loaded.generator), _out(g))
    atlas = _atlas()
    assert torch.equal(loaded.atlas.data, atlas.data) and loaded.atlas.sequences == SEQ
    config = loaded.config
    assert config["model_type"] == "samr" and config["sequences"] == list(SEQ)
    assert config["atlas"]["shape"] == [SIZE, SIZE, 6]
    assert np.allclose(config["atlas"]["affine"], atlas.affine)
    assert config["label_scheme"] == "brats2024" and loaded.label_scheme is get_scheme("brats2024")
    from samraug.intensity import DEFAULT_NORMALIZATION

    assert loaded.normalization == json.loads(json.dumps(DEFAULT_NORMALIZATION))
    assert loaded.sequences == SEQ


def test_fp16_storage(tmp_path: Path) -> None:
    g = _generator()
    save_weights(tmp_path / "a", g, _atlas())
    save_weights(tmp_path / "b", g, _atlas(), dtype=torch.float16)
    size32 = (tmp_path / "a" / "model.safetensors").stat().st_size
    size16 = (tmp_path / "b" / "model.safetensors").stat().st_size
    assert size16 < 0.6 * size32
    assert load_file(str(tmp_path / "b" / "model.safetensors"))["trunk.0.body.0.0.weight"].dtype == torch.float16
    loaded = load_weights(tmp_path / "b")
    assert all(p.dtype == torch.float32 for p in loaded.generator.parameters())
    torch.testing.assert_close(_out(loaded.generator), _out(g), atol=5e-3, rtol=0)
    assert "float16" in (tmp_path / "b" / "README.md").read_text()


def test_tiny_fp16_weights_are_small(tmp_path: Path) -> None:
    g = build_generator("tiny", sequences=SEQ)
    hub.save_state_dict(g, tmp_path / "m.safetensors", dtype=torch.float16)
    assert (tmp_path / "m.safetensors").stat().st_size < 8e6


def test_pix2pix_and_custom_scheme_round_trip(tmp_path: Path) -> None:
    from samraug.labels import LabelScheme

    scheme = LabelScheme.custom("mine", {0: "bg", 1: "lesion", 2: "oedema"}, {1: "tumor", 2: "edema"})
    g = _generator(model_type="pix2pix")
    save_weights(tmp_path / "w", g, _atlas(), label_scheme=scheme, conditioning="samr")
    loaded = load_weights(str(tmp_path / "w"))
    assert isinstance(loaded.generator, Pix2PixGenerator)
    assert torch.equal(_out(loaded.generator), _out(g))
    assert loaded.label_scheme == scheme


def test_model_card_content(tmp_path: Path) -> None:
    card = {
        "data": "samraug phantom, 40 subjects",
        "preset": "tiny",
        "steps": 1500,
        "command": "python recipes/train_samr.py --preset tiny",
        "validation": {"psnr_t1n": 24.5, "ssim_t1n": 0.81},
        "simulated": True,
        "seed": 7,
    }
    save_weights(tmp_path / "w", _generator(), _atlas(), card=card)
    text = (tmp_path / "w" / "README.md").read_text()
    assert text.startswith("---\nlibrary_name: samraug")
    for fragment in ("Trained on simulated data", "samraug phantom, 40 subjects", "1500", card["command"], "24.5"):
        assert fragment in text
    assert "seed: 7" in text and "`t1n`, `t1c`, `t2w`, `t2f`" in text
    real = model_card({"model_type": "samr", "sequences": ["t1n"]}, {"data": "BraTS 2024"})
    assert "simulated data" not in real.split("## Training")[0] and "No validation numbers" in real
    assert "## Training curve" not in text and "## Training curve" not in real


def test_model_card_training_curve_from_the_runs_log(tmp_path: Path) -> None:
    from samraug.training.logging import TrainLogger, validation_curve

    log = TrainLogger(tmp_path / "run", tensorboard=False)
    log.log(10, {"loss_g": 1.0})
    log.log(250, {"val/psnr/t1n": 15.0, "val/psnr/mean": 16.25, "val/ssim/mean": 0.4, "val/dice_synth/lesion": 0.6})
    log.log(500, {"val/psnr/mean": 17.5, "val/ssim/mean": 0.45})
    log.log(500, {"val/psnr/mean": 17.5, "val/ssim/mean": 0.45})  # the same export run again: shown once
    log.close()
    curve = validation_curve(log.path)
    assert curve["columns"] == ["val/psnr/mean", "val/ssim/mean", "val/dice_synth/lesion"]
    assert len(curve["rows"]) == 2 and curve["rows"][0] == [250, 16.25, 0.4, 0.6]
    assert curve["rows"][1][:3] == [500, 17.5, 0.45]
    assert math.isnan(curve["rows"][1][3])
    text = model_card({"model_type": "samr", "sequences": ["t1n"]}, {"training curve": curve})
    table = text.split("## Training curve")[1]
    assert "| step | psnr/mean | ssim/mean | dice_synth/lesion |" in table
    assert "| 250 | 16.25 | 0.4 | 0.6 |" in table and "| 500 | 17.5 | 0.45 |  |" in table
    assert "training curve:" not in text  # not repeated under further details
    assert validation_curve(tmp_path / "missing.csv") == {"columns": [], "rows": []}


def test_weights_files_get_the_users_umask_not_0600(tmp_path: Path) -> None:
    save_weights(tmp_path / "w", _generator(), _atlas())
    (tmp_path / "plain").write_text("x")
    expected = (tmp_path / "plain").stat().st_mode & 0o777
    for name in ("model.safetensors", "atlas.safetensors", "config.json"):
        assert (tmp_path / "w" / name).stat().st_mode & 0o777 == expected, name


def test_save_weights_unwraps_data_parallel(tmp_path: Path) -> None:
    g = _generator()
    save_weights(tmp_path / "w", torch.nn.DataParallel(g), _atlas())
    assert torch.equal(_out(load_weights(tmp_path / "w").generator), _out(g))


def test_save_weights_checks(tmp_path: Path) -> None:
    g = _generator()
    other = Atlas(torch.zeros(2, 8, 8, 4), np.eye(4), ("t1n", "t2f"), torch.ones(8, 8, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"atlas sequences .* do not match the generator"):
        save_weights(tmp_path / "w", g, other)
    with pytest.raises(TypeError, match=r"samraug generator"):
        save_weights(tmp_path / "w", torch.nn.Linear(2, 2), _atlas())
    with pytest.raises(ValueError, match=r"floating dtype"):
        save_weights(tmp_path / "w", g, _atlas(), dtype=torch.int8)


# ---------------------------------------------------------------------------------------------- resolver
def test_resolve_local(weights: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    folder, _ = weights
    assert resolve_weights(folder) == folder
    assert resolve_weights(str(folder)) == folder
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        resolve_weights(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        resolve_weights("./nope/folder")
    with pytest.raises(ValueError, match=r"is a file"):
        resolve_weights(folder / "config.json")
    with pytest.raises(ValueError, match=r"is a file"):
        resolve_weights(str(folder / "config.json"))
    with pytest.raises(ValueError, match=r"revisions are for Hub ids"):
        resolve_weights(folder, revision="main")
    with pytest.raises(ValueError, match=r"names no revision"):
        resolve_weights("org/name@")
    with pytest.raises(ValueError, match=r"pins revision 'v1' but revision='v2'"):
        resolve_weights("org/name@v1", revision="v2")


def test_bundled_weights(
    monkeypatch: pytest.MonkeyPatch, weights: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    folder, g = weights
    monkeypatch.setattr(hub, "BUNDLED_WEIGHTS", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no bundled weights are installed.*pass weights="):
        load_weights()
    monkeypatch.setattr(hub, "BUNDLED_WEIGHTS", folder)
    hub._warn_bundled.cache_clear()
    with pytest.warns(UserWarning, match=r"SIMULATED phantom"):
        loaded = load_weights()
    assert torch.equal(_out(loaded.generator), _out(g))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_weights() == folder  # the warning is shown once


# ---------------------------------------------------------------------------------------------- Hub cache
def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _populate_cache(cache: Path, repo_id: str, folder: Path, commit: str, refs: list[str]) -> None:
    """Lay out ``folder`` in a Hugging Face cache the way huggingface_hub does: ``models--org--name/`` with
    ``blobs/<etag>``, ``snapshots/<commit>/<file> -> ../../blobs/<etag>``, ``refs/<ref>`` and ``trees/<commit>.json``
    (etag: sha256 for LFS files such as safetensors, git blob sha1 otherwise)."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    tree = {}
    for name in sorted(os.listdir(folder)):
        data = (folder / name).read_bytes()
        lfs = name.endswith(".safetensors")
        etag = hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data)
        blob = storage / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = storage / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        entry = {"size": len(data), "blob_id": _git_blob_sha1(data)}
        if lfs:
            entry.update(lfs_sha256=etag, lfs_size=len(data))
        tree[name] = entry
    for ref in refs:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)  # huggingface_hub writes the bare hash, no newline
    (storage / "trees").mkdir(exist_ok=True)
    (storage / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": tree}, indent=1))


COMMIT_A = "a" * 8 + hashlib.sha1(b"A").hexdigest()[8:]
COMMIT_B = "b" * 8 + hashlib.sha1(b"B").hexdigest()[8:]


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """A cache with ``org/samr-test``: ``main`` at commit A (generator A), branch ``v1`` at commit B (generator B);
    offline mode on (env var) and any Hub API call fails the test."""
    ga, gb = _generator(seed=0), _generator(seed=1)
    save_weights(tmp_path / "A", ga, _atlas())
    save_weights(tmp_path / "B", gb, _atlas())
    cache = tmp_path / "cache"
    _populate_cache(cache, "org/samr-test", tmp_path / "A", COMMIT_A, ["main"])
    _populate_cache(cache, "org/samr-test", tmp_path / "B", COMMIT_B, ["v1"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub API was called although HF_HUB_OFFLINE=1")

    monkeypatch.setattr(HfApi, "repo_info", no_network)
    monkeypatch.setattr(HfApi, "list_repo_tree", no_network)
    return cache, ga, gb


def test_load_by_repo_id_offline(hub_cache: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    cache, ga, gb = hub_cache
    assert not torch.equal(_out(ga), _out(gb))
    loaded = load_weights("org/samr-test", cache_dir=cache)
    assert loaded.path == cache / "models--org--samr-test" / "snapshots" / COMMIT_A
    assert torch.equal(_out(loaded.generator), _out(ga))


def test_load_by_pinned_revision_offline(hub_cache: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    cache, ga, gb = hub_cache
    assert torch.equal(_out(load_weights("org/samr-test@v1", cache_dir=cache).generator), _out(gb))
    assert torch.equal(_out(load_weights("org/samr-test", revision="v1", cache_dir=cache).generator), _out(gb))
    assert torch.equal(_out(load_weights(f"org/samr-test@{COMMIT_A}", cache_dir=cache).generator), _out(ga))


def test_hub_cache_from_hf_hub_cache(
    hub_cache: tuple[Path, torch.nn.Module, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, _, _ = hub_cache
    # huggingface_hub reads HF_HUB_CACHE when it is imported, so set the constant it resolved from it
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    assert resolve_weights("org/samr-test@v1") == cache / "models--org--samr-test" / "snapshots" / COMMIT_B


def test_from_pretrained_repo_id_offline(
    hub_cache: tuple[Path, torch.nn.Module, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, ga, gb = hub_cache
    # HF_HUB_OFFLINE=1 is only in the environment (huggingface_hub.constants read it at import time, before the
    # test set it): from_pretrained must still stay offline, i.e. never ask the Hub for file metadata
    import huggingface_hub.file_download as fd

    def no_network(*args, **kwargs):
        raise AssertionError("file metadata was requested from the Hub although HF_HUB_OFFLINE=1")

    monkeypatch.setattr(fd, "get_hf_file_metadata", no_network)
    g = SAMRGenerator.from_pretrained("org/samr-test", revision="v1", cache_dir=cache)
    assert torch.equal(_out(g), _out(gb)) and not g.training
    assert torch.equal(_out(SAMRGenerator.from_pretrained("org/samr-test", cache_dir=cache)), _out(ga))
    with pytest.raises(FileNotFoundError):
        SAMRGenerator.from_pretrained("org/missing", cache_dir=cache)


def test_offline_cache_miss(hub_cache: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    cache, _, _ = hub_cache
    for spec in ("org/other-model", "org/samr-test@v9", "org/samr-test@" + "c" * 40):
        with pytest.raises(FileNotFoundError, match=r"not in the local cache.*go online once.*HF_HOME.*local"):
            load_weights(spec, cache_dir=cache)


def test_offline_incomplete_snapshot(hub_cache: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    cache, _, _ = hub_cache
    (cache / "models--org--samr-test" / "snapshots" / COMMIT_B / "atlas.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"not in the local cache.*incomplete.*atlas.safetensors"):
        load_weights("org/samr-test@v1", cache_dir=cache)


def test_offline_force_download(hub_cache: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    cache, _, _ = hub_cache
    with pytest.raises(ValueError, match=r"force_download=True needs the network"):
        resolve_weights("org/samr-test", cache_dir=cache, force_download=True)


def test_push_to_hub_uploads_the_folder(weights: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = weights
    calls: list[tuple[str, dict]] = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", {"token": token}))

        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs))
            return type("RepoUrl", (), {"repo_id": kwargs["repo_id"]})()

        def create_branch(self, **kwargs):
            calls.append(("create_branch", kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return type("CommitInfo", (), {"commit_url": "https://huggingface.co/org/x/commit/123"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = push_to_hub(folder, "org/x", branch="v1", private=True)
    assert url.endswith("/commit/123")
    names = [c[0] for c in calls]
    assert names == ["init", "create_repo", "create_branch", "upload_folder"]
    upload = calls[-1][1]
    assert upload["folder_path"] == str(folder) and upload["repo_id"] == "org/x" and upload["revision"] == "v1"
    assert sorted(upload["allow_patterns"]) == sorted(WEIGHT_FILES)
    (folder / "README.md").unlink()
    with pytest.raises(FileNotFoundError, match=r"README.md"):
        push_to_hub(folder, "org/x")


# ---------------------------------------------------------------------------------------------- bad weights
@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "atlas.safetensors"])
def test_missing_file(weights: tuple[Path, torch.nn.Module], name: str) -> None:
    folder, _ = weights
    (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        load_weights(folder)


def _edit_tensors(path: Path, edit) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_missing_tensor(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    _edit_tensors(folder / "model.safetensors", lambda t: t.pop("trunk.0.body.0.0.weight"))
    with pytest.raises(WeightsError, match=r"missing tensors \['trunk.0.body.0.0.weight'\]"):
        load_weights(folder)


def test_unexpected_tensor(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    _edit_tensors(folder / "model.safetensors", lambda t: t.update({"extra.weight": torch.zeros(3)}))
    with pytest.raises(WeightsError, match=r"unexpected tensors \['extra.weight'\].*re-export"):
        load_weights(folder)


def test_non_finite_tensor(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    _edit_tensors(
        folder / "model.safetensors", lambda t: t["trunk.0.body.0.0.weight"].view(-1).__setitem__(0, float("nan"))
    )
    with pytest.raises(WeightsError, match=r"'trunk.0.body.0.0.weight' contains NaN"):
        load_weights(folder)


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_config_does_not_match_tensors(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    _edit_config(folder, base_channels=8)
    with pytest.raises(
        WeightsError, match=r"tensor 'mask_encoder.0.0.weight' has shape \(4, 5, 7, 7\).*expects \(8, 5, 7, 7\)"
    ):
        load_weights(folder)


def test_config_with_more_blocks(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    _edit_config(folder, n_res_blocks=2)
    with pytest.raises(WeightsError, match=r"missing tensors \['trunk.1"):
        load_weights(folder)


@pytest.mark.parametrize("name", ["model.safetensors", "atlas.safetensors"])
def test_truncated_safetensors(weights: tuple[Path, torch.nn.Module], name: str) -> None:
    folder, _ = weights
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=rf"{name}.*corrupt or truncated.*force_download=True.*re-export"):
        load_weights(folder)


def test_garbage_safetensors(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    (folder / "model.safetensors").write_bytes(b"<html>not found</html>")
    with pytest.raises(WeightsError, match=r"corrupt or truncated"):
        load_weights(folder)


def test_unknown_model_type(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    _edit_config(folder, model_type="stylegan")
    with pytest.raises(
        ValueError, match=r"unknown model_type 'stylegan'; use one of \['samr', 'pix2pixhd', 'pix2pix'\]"
    ):
        load_weights(folder)


def test_unknown_config_key(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    _edit_config(folder, dropout=0.5)
    with pytest.raises(WeightsError, match=r"unknown keys \['dropout'\]"):
        load_weights(folder)
    with pytest.raises(WeightsError, match=r"unknown keys \['dropout'\]"):
        SAMRGenerator.from_pretrained(folder)


def test_bad_config_values(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    _edit_config(folder, n_down=-2)
    with pytest.raises(WeightsError, match=r"does not describe a valid generator: n_down must be"):
        load_weights(folder)


def test_config_not_json(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"not valid JSON"):
        load_weights(folder)


def test_newer_format(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    _edit_config(folder, format_version=99)
    with pytest.raises(WeightsError, match=r"format_version 99.*upgrade samraug"):
        load_weights(folder)


def test_atlas_does_not_match_config(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = weights
    _edit_config(folder, atlas={"shape": [SIZE, SIZE, 7], "affine": np.eye(4).tolist()})
    with pytest.raises(WeightsError, match=r"atlas has shape \(32, 32, 6\) but config.json records \(32, 32, 7\)"):
        load_weights(folder)
    _edit_config(folder, atlas={"shape": [SIZE, SIZE, 6], "affine": np.eye(4).tolist()})
    with pytest.raises(WeightsError, match=r"atlas affine does not match"):
        load_weights(folder)
    reordered = _atlas().select(["t1c", "t1n", "t2w", "t2f"])
    reordered.save(folder)
    _edit_config(folder, atlas={"shape": [SIZE, SIZE, 6], "affine": reordered.affine.tolist()})
    with pytest.raises(WeightsError, match=r"atlas sequences .* do not match the generator's"):
        load_weights(folder)


# ---------------------------------------------------------------------------------------------- conditioning
def test_native_conditioning_round_trip_and_class_count_checks(tmp_path: Path) -> None:
    scheme = get_scheme("brats2024")
    torch.manual_seed(0)
    g = build_generator(dict(SMALL), n_labels=len(scheme.classes("native"))).eval()  # 6 classes
    folder = save_weights(tmp_path / "w", g, _atlas(), label_scheme="brats2024", lineage=["org/base@v1", "/data/x"])
    config = json.loads((folder / "config.json").read_text())
    assert config["conditioning"] == "native" and config["n_labels"] == 6 and config["upsample"] == "resize_conv"
    assert config["lineage"] == ["org/base@v1", "/data/x"]
    loaded = load_weights(folder)
    assert loaded.conditioning == "native" and loaded.generator.n_labels == 6
    card = (folder / "README.md").read_text()
    assert "conditioning: `native`" in card and "NETC, SNFH, ET, RC" in card
    assert "`org/base@v1` <- `/data/x`" in card
    # 6 labels are not the 5 SAMR classes: refused on save, and on load if the config is edited
    with pytest.raises(ValueError, match=r"n_labels=6 .* conditioning='samr' has 5 classes"):
        save_weights(tmp_path / "v", g, _atlas(), label_scheme="brats2024", conditioning="samr")
    assert not (tmp_path / "v").exists()
    _edit_config(folder, conditioning="samr")
    with pytest.raises(WeightsError, match=r"n_labels 6 does not match the 5 'samr' classes"):
        load_weights(folder)
    _edit_config(folder, conditioning="onehot")
    with pytest.raises(WeightsError, match=r"unknown conditioning 'onehot'"):
        load_weights(folder)


def test_legacy_folder_without_conditioning_means_samr(weights: tuple[Path, torch.nn.Module]) -> None:
    folder, g = weights
    config = json.loads((folder / "config.json").read_text())
    del config["conditioning"]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_weights(folder)
    assert loaded.conditioning == "samr" and loaded.generator.n_labels == 5
    torch.testing.assert_close(_out(loaded.generator), _out(g))


# ---------------------------------------------------------------------------------------------- the default
def test_default_weights_are_the_bundled_local_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """weights=None is the bundled local-mode folder (no atlas); the whole-image folder stays loadable by name."""
    assert hub.BUNDLED_WEIGHTS == hub.BUNDLED_LOCAL_WEIGHTS != hub.BUNDLED_WHOLE_WEIGHTS
    assert {"BUNDLED_WEIGHTS", "BUNDLED_LOCAL_WEIGHTS", "BUNDLED_WHOLE_WEIGHTS"} <= set(hub.__all__)
    hub._warn_bundled.cache_clear()
    with pytest.warns(UserWarning, match=r"'samr-tiny-local' .*SIMULATED phantom") as record:
        assert resolve_weights(None) == hub.BUNDLED_LOCAL_WEIGHTS
    assert str(hub.BUNDLED_LOCAL_WEIGHTS) in str(record[0].message)  # names the folder actually used
    default = load_weights(None)
    assert default.mode == "local" and default.atlas is None and default.path == hub.BUNDLED_LOCAL_WEIGHTS
    assert default.conditioning == "native" and default.config["voxel_size"] == [2.0, 2.0, 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a folder named explicitly is no "bundled default" warning
        whole = load_weights(hub.BUNDLED_WHOLE_WEIGHTS)
    assert whole.mode == "whole" and whole.atlas is not None and tuple(whole.atlas.shape) == (99, 117, 95)
    assert whole.sequences == default.sequences
