"""Two-process DistributedDataParallel training on CPU (gloo): parameters stay identical across ranks."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

SEQ = ("t1n", "t2f")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    # what torchrun sets for every process
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    from samraug.training import GANTrainer, preset_config
    from samraug.training.distributed import cleanup_distributed, init_distributed
    from samraug.training.gan import SyntheticSliceDataset

    env = init_distributed("cpu")
    assert env.is_distributed and env.rank == rank and env.backend == "gloo"
    ds = SyntheticSliceDataset(8, size=32, sequences=SEQ)
    cfg = preset_config("tiny", max_steps=3, batch_size=2, num_workers=0, log_every=1)
    trainer = GANTrainer(cfg, sequences=SEQ, env=env)
    # each rank sees its own half of every epoch
    loader = trainer.make_loader(ds, epoch=0)
    ids = [i for b in loader for i in b["z"].tolist()]
    save_file({"ids": torch.tensor(ids)}, os.path.join(out, f"ids{rank}.safetensors"))
    trainer.fit(ds, val_dataset=ds, out_dir=os.path.join(out, "run"), progress=False)
    tensors = {}
    for name, module in (("G", trainer.generator), ("D", trainer.discriminator), ("U", trainer.unet)):
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().clone().contiguous()
    save_file(tensors, os.path.join(out, f"rank{rank}.safetensors"))
    cleanup_distributed()


def test_two_process_gloo_ddp_keeps_ranks_identical(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a = load_file(str(tmp_path / "rank0.safetensors"))
    b = load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the ranks trained on disjoint shards
    ids0, ids1 = (load_file(str(tmp_path / f"ids{r}.safetensors"))["ids"].tolist() for r in (0, 1))
    assert len(ids0) == len(ids1) == 4 and not set(ids0) & set(ids1)
    # rank 0 alone logged and checkpointed
    run = tmp_path / "run"
    assert (run / "log.csv").is_file() and (run / "checkpoints" / "latest").is_file()
    assert (run / "grids" / "final.png").is_file()


def test_single_process_env_and_sync_bn_needs_cuda(monkeypatch):
    from samraug.training.distributed import DistEnv, init_distributed, wrap_model

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    env = init_distributed("cpu")
    assert (env.world_size, env.rank, env.is_main, env.is_distributed) == (1, 0, True, False)
    net = torch.nn.BatchNorm2d(2)
    assert wrap_model(net, env, sync_bn=True) is net  # one process: nothing to wrap
    with pytest.raises(ValueError, match="sync_bn needs CUDA"):
        wrap_model(net, DistEnv(world_size=2), sync_bn=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        init_distributed("cpu")
