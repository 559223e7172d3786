"""Train a SAMR generator (or a baseline) and export it as a weights folder.

Single process (CPU or one GPU):

    python recipes/train_samr.py --preset tiny --data phantom --steps 2000 --out /tmp/samr-tiny

Several GPUs (DistributedDataParallel; also runs on CPU with the gloo backend):

    torchrun --nproc_per_node 4 recipes/train_samr.py --preset paper --data /data/BraTS2024-GLI \\
        --scheme brats2024 --out /data/samr-paper

Outputs: ``--out`` is the weights folder, exactly what ``--push-to-hub`` uploads (``config.json``,
``model.safetensors``, ``atlas.safetensors``, ``README.md``: the model card with the data, preset, steps, this
command line and the validation numbers). Everything else -- ``log.csv`` (and TensorBoard when installed),
``grids/epoch-XXXX.png``, ``checkpoints/``, ``split.json``, ``validation.json`` -- goes to ``--log-dir``
(default: ``<out>-run`` next to ``--out``). ``--resume`` continues exactly from the latest checkpoint there.

The logic lives in :mod:`samraug.training`; this script only maps arguments onto it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from samraug.data.phantom import PHANTOM_SPACE
from samraug.intensity import NORMALIZATIONS, Normalization
from samraug.labels import CONDITIONINGS
from samraug.seam import CONTEXT_FILLS
from samraug.training import GANTrainer, init_distributed, preset_config
from samraug.training.checkpoint import CheckpointError, step_of
from samraug.training.config import LOCAL_DEFAULTS, MODEL_TYPES, TASKS, TRAINING_PRESETS
from samraug.training.data import prepare_gan_data
from samraug.training.distributed import barrier, cleanup_distributed
from samraug.training.gan import locate_init_source
from samraug.training.local import LocalGANTrainer
from samraug.training.local_data import prepare_local_data
from samraug.training.logging import validation_curve

WHOLE_NOTES = (
    "Validation on the held-out patients of the split: L1 / PSNR / SSIM between synthetic and real slices inside "
    "the brain, in the model's normalised range [-1, 1] (config normalization; with normal-brain the normal tissue "
    "spans 0.6 of it, so these numbers are not comparable with those of whole-brain-normalised weights); "
    "dice_synth: Dice of the shape-consistency U-Net's "
    "segmentation of the SYNTHETIC images against the input mask, dice_real: the same U-Net on the real images "
    "(reference)."
)
LOCAL_NOTES = (
    "Validation on fixed crops of the held-out patients of the split: L1 / PSNR / SSIM inside the painted region, "
    "the model's normalised intensities scaled linearly to [0, 1] (config normalization: with normal-brain the "
    "normal tissue spans 0.3 of that scale, so these numbers are not comparable with those of whole-brain-normalised "
    "weights); psnr_meanfill: the same PSNR when the region is filled "
    "with the mean of the known brain voxels of the crop (baseline); psnr_lesion / psnr_blob: lesion painting / "
    "pseudo-healthy inpainting crops."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--preset", choices=sorted(TRAINING_PRESETS), default="tiny", help="architecture/schedule preset")
    g.add_argument(
        "--task",
        choices=TASKS,
        default="whole",
        help="whole: whole slices from mask + atlas; local: repaint a region from the edited mask and the images "
        "around it (self-supervised 2.5D crops)",
    )
    g.add_argument(
        "--conditioning",
        choices=CONDITIONINGS,
        default="native",
        help="mask classes: the data scheme's own lesion labels (native) or the paper's 5 SAMR classes",
    )
    g.add_argument(
        "--normalization",
        choices=NORMALIZATIONS,
        default="normal-brain",
        help="intensity normalisation, recorded in the weights: percentiles of the normal-appearing brain to "
        "-0.8/-0.2 (normal-brain: the brain's level does not depend on the lesion, bright lesions are not clipped) or "
        "whole-brain percentiles to -1/+1 (brain: weights and checkpoints from before the option)",
    )
    g.add_argument(
        "--upsample",
        choices=("resize_conv", "transposed"),
        help="decoder up-sampling (default resize_conv: no checkerboard; transposed: pix2pixHD)",
    )
    g.add_argument(
        "--init-from",
        metavar="WEIGHTS",
        help="start from earlier training: a weights folder, org/name[@rev], or a checkpoint folder (G, D, U and "
        "optimiser states); the architecture must match. The bundled demo weights are named explicitly: "
        "samraug/weights/samr-tiny-phantom (--task whole) or samraug/weights/samr-tiny-local (--task local, the "
        "library's default weights); without --init-from training starts from random initialisation",
    )
    g.add_argument(
        "--skips",
        action="store_true",
        help="whole task: U-Net skips from both encoders to the decoders (not in the paper; the atlas's anatomy "
        "reaches the output at full resolution). The local generator always has them",
    )
    g.add_argument(
        "--mask-slices",
        type=int,
        help="whole task, SAMR generator: adjacent mask slices it sees (odd; default 1, the paper's single slice; "
        "5: slices z-2..z+2, so what changes through the plane is painted consistently). --init-from weights of a "
        "single-slice generator are widened: it starts from exactly what they paint",
    )
    g.add_argument("--model", choices=MODEL_TYPES, default="samr", help="SAMR or a baseline (pix2pix, pix2pixhd)")
    g.add_argument("--no-stretch-out", action="store_true", help="ablation: one shared decoder")
    g.add_argument("--no-label-wise-d", action="store_true", help="ablation: 2 global discriminators")
    g.add_argument("--no-atlas", action="store_true", help="ablation: generator without the atlas")
    g.add_argument("--no-shape-consistency", action="store_true", help="ablation: no U-Net / LC term")
    g.add_argument("--gan-mode", choices=("lsgan", "bce", "hinge"), help="adversarial loss (default: per model)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="phantom", help="'phantom' (default, simulated) or a BraTS folder")
    g.add_argument("--scheme", choices=("brats2021", "brats2023", "brats2024"), help="label scheme of a BraTS folder")
    g.add_argument("--n-subjects", type=int, help="phantom: subjects to simulate (default 30); BraTS: first N cases")
    g.add_argument("--resolution", type=float, default=2.0, help="phantom voxel size in mm (2 -> 128x128 slices)")
    g.add_argument("--phantom-seed", type=int, default=0, help="seed of the simulated data set")
    g.add_argument("--cache-dir", help="phantom cache (default $SAMRAUG_CACHE/phantom or ~/.cache/samraug/phantom)")
    g.add_argument("--sequences", nargs="+", help="sequences to use, in order (default: all in the data)")
    g.add_argument("--val-fraction", type=float, default=0.2, help="share of patients held out for validation")
    g.add_argument("--split-file", help="reuse a saved split.json instead of drawing one")
    g.add_argument(
        "--atlas-space",
        help="template space of the data and atlas (whole task), written to the weights' config: e.g. SRI24 for "
        "BraTS (subjects declared in it on another grid are then resampled, not refused); phantom: MNI152",
    )
    g.add_argument("--min-brain-voxels", type=int, default=1, help="skip axial slices with fewer brain voxels")
    g = p.add_argument_group("local task (--task local)")
    g.add_argument("--context-slices", type=int, default=1, help="slices on each side of the painted one (2.5D)")
    g.add_argument(
        "--residual",
        action="store_true",
        help="local task: the generator paints a residual over what the context shows in the region (with "
        "--context-fill harmonic: over the harmonic fill); no parameters of its own, so --init-from weights without it",
    )
    g.add_argument(
        "--context-fill",
        choices=CONTEXT_FILLS,
        default="zero",
        help="what the context shows inside the hidden region: zero (blanked) or harmonic (each slice's region "
        "filled by harmonic interpolation from the tissue around it; the model paints a residual over it)",
    )
    g.add_argument("--crop-size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"), help="crop in voxels")
    g.add_argument("--crops-per-subject", type=int, default=64, help="training crops per subject and epoch")
    g.add_argument("--val-crops-per-subject", type=int, default=16, help="fixed validation crops per subject")
    g.add_argument("--lesion-fraction", type=float, default=0.5, help="share of lesion-painting crops (else blobs)")
    g.add_argument("--margin-mm", type=float, default=4.0, help="lesion dilation of the lesion-painting region")
    g.add_argument("--blob-mm", type=float, nargs=2, default=(10.0, 40.0), help="healthy blob diameter range (mm)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="training epochs (default: per preset)")
    g.add_argument("--steps", type=int, help="training steps (overrides --epochs)")
    g.add_argument("--batch-size", type=int, help="per-process batch size (default 8)")
    g.add_argument("--lr", type=float, help="Adam learning rate for G, D and U (default 2e-4)")
    g.add_argument("--lambda-l1", type=float, help="weight of the L1 reconstruction term (default: per model)")
    g.add_argument(
        "--lambda-l2",
        type=float,
        help="weight of a squared-error reconstruction term (default 0): the mean, not the median, of what the "
        "context allows (what in-region PSNR/SSIM reward)",
    )
    g.add_argument("--lambda-fm", type=float, help="weight of the feature-matching term (default: per model)")
    g.add_argument(
        "--d-smooth",
        nargs="+",
        metavar="SEQ",
        help="sequences the discriminators see smoothed in-plane (with --d-smooth-sigma), real and generated alike: "
        "for a sequence acquired far coarser than its voxels (e.g. aptw), whose voxel-scale texture is noise",
    )
    g.add_argument("--d-smooth-sigma", type=float, help="Gaussian sigma of --d-smooth, voxels (default 1.5)")
    g.add_argument(
        "--l1-class-balance",
        action="store_true",
        help="local task: every class in the regions gets the same total weight in the L1 term (rare, thin "
        "classes such as enhancing tumour count as much as the normal brain around them)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and split")
    g = p.add_argument_group("runtime and outputs")
    g.add_argument("--out", required=True, help="weights folder to write (config, safetensors, atlas, card)")
    g.add_argument("--log-dir", help="logs, grids, checkpoints, split (default: <out>-run)")
    g.add_argument("--checkpoint-every", type=int, default=1000, help="checkpoint every N steps (and at the end)")
    g.add_argument("--keep-last", type=int, default=3, help="checkpoints to keep")
    g.add_argument(
        "--keep-every",
        type=int,
        default=0,
        metavar="N",
        help="also keep every checkpoint at a multiple of N steps (e.g. --validate-every), so the one the validation "
        "curve favours can be exported later (--resume CHECKPOINT --stop-at ITS_STEP)",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from the latest checkpoint in --log-dir; with a checkpoint of that run (its step-XXXXXXXXX "
        "folder) and --stop-at at or below its step: export that checkpoint without training (the run's log is "
        "kept whole)",
    )
    g.add_argument(
        "--stop-at",
        type=int,
        default=None,
        metavar="STEP",
        help="stop at this step (checkpoint, validate, export) without changing the learning-rate schedule; with "
        "--resume and STEP <= the latest checkpoint's step, export that checkpoint without training",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in --log-dir and the weights in --out (refused without it)",
    )
    g.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda (torchrun: each rank uses its GPU)")
    g.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto", help="mixed precision on CUDA")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP (CUDA)")
    g.add_argument("--log-every", type=int, default=10, help="log scalars every N steps")
    g.add_argument(
        "--validate-every", type=int, default=0, help="also validate every N steps, logged to log.csv (0: at the end)"
    )
    g.add_argument("--val-batches", type=int, default=0, help="batches of the periodic validation (0: all)")
    g.add_argument("--fp16-weights", action="store_true", help="store the exported generator and atlas in float16")
    g.add_argument("--push-to-hub", metavar="REPO", help="upload the weights folder to this Hub repo (org/name)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace):
    overrides = {
        "seed": args.seed,
        "num_workers": args.workers,
        "checkpoint_every": args.checkpoint_every,
        "keep_last": args.keep_last,
        "keep_every": args.keep_every,
        "amp": args.amp,
        "sync_bn": args.sync_bn,
        "log_every": args.log_every,
        "conditioning": args.conditioning,
        "normalization": args.normalization,
        "task": args.task,
        "context_slices": args.context_slices,
        "crop_size": tuple(args.crop_size),
        "context_fill": args.context_fill,
        "validate_every": args.validate_every,
        "val_max_batches": args.val_batches,
    }
    if args.task == "local":
        if args.model != "samr":
            raise SystemExit(f"--task local trains the SAMR local generator, not --model {args.model}")
        if args.atlas_space:
            raise SystemExit("--atlas-space names the whole-image task's atlas space; a local generator has no atlas")
        overrides.update(LOCAL_DEFAULTS)
    for flag, field in (
        ("no_stretch_out", "stretch_out"),
        ("no_label_wise_d", "label_wise_d"),
        ("no_atlas", "use_atlas"),
        ("no_shape_consistency", "shape_consistency"),
    ):
        if getattr(args, flag):
            if args.model != "samr":
                raise SystemExit(f"--{flag.replace('_', '-')} is an ablation of --model samr, not of {args.model}")
            overrides[field] = False
    for arg, field in (
        ("epochs", "epochs"),
        ("steps", "max_steps"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("lambda_l1", "lambda_l1"),
        ("lambda_l2", "lambda_l2"),
        ("lambda_fm", "lambda_fm"),
    ):
        if getattr(args, arg) is not None:
            overrides[field] = getattr(args, arg)
    if args.gan_mode:
        overrides["gan_mode"] = args.gan_mode
    if args.d_smooth_sigma is not None and not args.d_smooth:
        raise SystemExit("--d-smooth-sigma sets the blur of --d-smooth SEQ ...: name the sequences too")
    if args.d_smooth:
        overrides["d_smooth_sequences"] = tuple(args.d_smooth)
        overrides["d_smooth_sigma"] = 1.5 if args.d_smooth_sigma is None else args.d_smooth_sigma
    if args.l1_class_balance:
        if args.task != "local":
            raise SystemExit("--l1-class-balance weights the local task's region by class (--task local)")
        overrides["l1_class_balance"] = True
    generator: dict[str, Any] = {}
    if args.upsample:
        generator["upsample"] = args.upsample
    if args.skips:
        if args.task == "local" or args.model != "samr":
            raise SystemExit("--skips is an option of the whole-image SAMR generator (--task whole --model samr)")
        generator["skips"] = True
    if args.mask_slices is not None:
        if args.task == "local" or args.model != "samr":
            raise SystemExit(
                "--mask-slices is an option of the whole-image SAMR generator (--task whole --model samr); the local "
                "task's context is --context-slices"
            )
        if args.mask_slices < 1 or args.mask_slices % 2 != 1:
            raise SystemExit(f"--mask-slices must be a positive odd number (slices z-c..z+c), got {args.mask_slices}")
        generator["mask_slices"] = args.mask_slices
    if args.residual:
        if args.task != "local":
            raise SystemExit("--residual is an option of the local generator (--task local)")
        generator["residual"] = True
    if generator:
        overrides["generator"] = generator
    return preset_config(args.preset, model_type=args.model, **overrides)


def atlas_space_of(args: argparse.Namespace, atlas: Any) -> str | None:
    """The atlas space the exported weights declare: ``--atlas-space``, else MNI152 for the phantom (built on the
    MNI152 template), else None (unknown: off-grid subjects are refused, naming the way out)."""
    if atlas is None:
        return None
    if args.atlas_space:
        return str(args.atlas_space)
    return PHANTOM_SPACE if args.data == "phantom" else None


#: What a run writes into --log-dir (an earlier run is recognised by any of them).
RUN_ENTRIES = ("checkpoints", "log.csv", "grids", "split.json", "validation.json", "tensorboard", "exports.json")
#: The weights folders a run has exported (resolved paths): a resumed run may replace only those.
EXPORTS_FILE = "exports.json"


def exported_by(log_dir: Path) -> list[str]:
    """The weights folders the run in ``log_dir`` has written (none recorded: an empty list)."""
    path = log_dir / EXPORTS_FILE
    if not path.is_file():
        return []
    try:
        return [str(p) for p in json.loads(path.read_text(encoding="utf-8"))]
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(
            f"{path} is corrupt ({err}); it lists the weights this run exported: fix or delete it"
        ) from err


def record_export(log_dir: Path, out: Path) -> None:
    """Add ``out`` to the run's export record (written atomically)."""
    done = exported_by(log_dir)
    if str(out.resolve()) not in done:
        tmp = log_dir / f".{EXPORTS_FILE}.tmp"
        tmp.write_text(json.dumps([*done, str(out.resolve())], indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, log_dir / EXPORTS_FILE)


def resume_checkpoint(checkpoint: str, log_dir: Path, stop_at: int | None) -> Path:
    """Check ``--resume CHECKPOINT``: a checkpoint of the run in ``--log-dir``, exported as it is (``--stop-at`` at
    or below its step). Continuing training from an older checkpoint is refused: its new checkpoints would rotate
    among the run's later ones."""
    path = Path(checkpoint).expanduser()
    root = log_dir / "checkpoints"
    if not path.is_dir() or path.resolve().parent != root.resolve():
        raise FileNotFoundError(
            f"--resume {checkpoint}: not a checkpoint folder of the run in --log-dir {log_dir} (expected "
            f"{root}/step-XXXXXXXXX); pass --resume alone for its latest checkpoint"
        )
    step = step_of(path)
    if stop_at is None or stop_at > step:
        raise ValueError(
            f"--resume {checkpoint} exports that checkpoint (step {step}) and needs --stop-at {step}; to continue "
            "training from it, copy it into a new --log-dir's checkpoints folder and resume there"
        )
    return path


def check_outputs(args: argparse.Namespace, out: Path, log_dir: Path) -> list[Path]:
    """Refuse to write into an earlier run or weights folder unless --resume or --overwrite says so.

    Checks only (nothing is deleted here); returns the entries of the earlier run that --overwrite replaces.
    """
    from samraug.hub import WEIGHT_FILES

    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --log-dir and --overwrite replaces it: pass one of them")
    for path, arg in ((out, "--out"), (log_dir, "--log-dir")):
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{arg} {path} is a file, not a folder; pass a folder path")
    weights = [out / f for f in WEIGHT_FILES if (out / f).exists()]
    if args.resume:
        if weights and str(out.resolve()) not in exported_by(log_dir):
            raise FileExistsError(
                f"--out {out} holds weights ({', '.join(p.name for p in weights)}) that the run in --log-dir {log_dir} "
                f"did not write (its exports: {exported_by(log_dir) or 'none'}); the resumed run would replace them. "
                "Choose another --out, or move those weights away first. Nothing was deleted"
            )
        return []
    run = [log_dir / e for e in RUN_ENTRIES if (log_dir / e).exists()]
    if (run or weights) and not args.overwrite:
        found = []
        if run:
            found.append(f"--log-dir {log_dir} holds an earlier run ({', '.join(p.name for p in run)})")
        if weights:
            found.append(f"--out {out} holds weights ({', '.join(p.name for p in weights)})")
        raise FileExistsError(
            f"{' and '.join(found)}. Pass --resume to continue that run, --overwrite to replace it, or choose a new "
            "--out (and --log-dir). Nothing was deleted"
        )
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    script = sys.argv[0] if argv is None else f"recipes/{Path(__file__).name}"
    command = "python " + shlex.join([script, *(sys.argv[1:] if argv is None else argv)])
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stop_at is not None and args.stop_at < 1:
        raise ValueError(f"--stop-at must be a step >= 1, got {args.stop_at}")
    config = build_config(args)
    out = Path(args.out)
    log_dir = Path(args.log_dir) if args.log_dir else out.parent / f"{out.name}-run"
    replaced = check_outputs(args, out, log_dir)  # before anything is read or written
    if args.resume is not True and args.resume:
        args.resume = str(resume_checkpoint(args.resume, log_dir, args.stop_at))
    if args.init_from and not args.resume:  # a bad source is refused before the run folder is touched
        args.init_from = locate_init_source(args.init_from)
    env = init_distributed(args.device)
    if replaced and env.is_main:  # --overwrite: the earlier run's checkpoints and logs go; weights at export
        for path in replaced:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    barrier(env)
    if env.is_distributed:
        command = f"torchrun --nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE', env.world_size)} " + command[7:]
    try:
        data_kwargs = {
            "scheme": args.scheme,
            "n_subjects": args.n_subjects,
            "resolution": args.resolution,
            "phantom_seed": args.phantom_seed,
            "cache_dir": args.cache_dir,
            "sequences": args.sequences,
            "split_seed": args.seed,
            "val_fraction": args.val_fraction,
            "split_file": args.split_file,
            "workers": max(1, args.workers),
            "conditioning": args.conditioning,
            "normalization": Normalization.named(args.normalization),
        }
        if not env.is_main:  # rank 0 generates the phantom cache first
            barrier(env)
        out_dir = log_dir if env.is_main else None
        if args.task == "local":
            data = prepare_local_data(
                args.data,
                out_dir=out_dir,
                context_slices=args.context_slices,
                crop_size=tuple(args.crop_size),
                crops_per_subject=args.crops_per_subject,
                val_crops_per_subject=args.val_crops_per_subject,
                lesion_fraction=args.lesion_fraction,
                margin_mm=args.margin_mm,
                blob_mm=tuple(args.blob_mm),
                context_fill=args.context_fill,
                seed=args.seed,
                **data_kwargs,
            )
        else:
            data = prepare_gan_data(
                args.data,
                out_dir=out_dir,
                min_brain_voxels=args.min_brain_voxels,
                mask_slices=int(config.generator_kwargs().get("mask_slices", 1)),
                **data_kwargs,
            )
        if env.is_main:
            barrier(env)
        if args.task == "local":
            trainer = LocalGANTrainer(
                config, data.sequences, label_scheme=data.scheme, voxel_size=data.voxel_size, env=env
            )
        else:
            trainer = GANTrainer(config, data.sequences, label_scheme=data.scheme, env=env)
        if args.init_from and not args.resume:
            lineage = trainer.init_from(args.init_from)
            if env.is_main:
                print(f"initialised from: {' <- '.join(lineage)}", file=sys.stderr)
        if env.is_main:
            unit = "crops" if args.task == "local" else "slices"
            print(f"data: {data.description}; {len(data.train)} training {unit}", file=sys.stderr)
        result = trainer.fit(
            data.train,
            val_dataset=data.val,
            out_dir=log_dir,
            resume=args.resume,
            stop_at_step=args.stop_at,
            progress=not args.no_progress,
        )
        validation = {k: round(v, 4) for k, v in result.validation.items() if math.isfinite(v)}
        if env.is_main:
            (log_dir / "validation.json").write_text(json.dumps(result.validation, indent=2) + "\n")
        unit = "crops" if args.task == "local" else "slices"
        card = {
            "title": f"samraug {config.model_type} {args.task} generator ({args.preset} preset)",
            "data": data.description,
            "preset": args.preset,
            "steps": f"{result.steps} ({result.epochs:.1f} epochs of {len(data.train)} {unit}, batch "
            f"{config.batch_size} x {env.world_size} process(es))",
            "command": command,
            "validation": validation or None,
            "training curve": validation_curve(log_dir / "log.csv"),
            "simulated": data.simulated,
            "notes": LOCAL_NOTES if args.task == "local" else WHOLE_NOTES,
            "training config": json.dumps(config.to_dict(), sort_keys=True),
        }
        atlas = getattr(data, "atlas", None)
        trainer.export(out, atlas, card=card, fp16=args.fp16_weights, atlas_space=atlas_space_of(args, atlas))
        if env.is_main:
            record_export(log_dir, out)
            print(f"weights: {out}\nlogs: {log_dir}\nvalidation: {json.dumps(validation)}", file=sys.stderr)
            if args.push_to_hub:
                from samraug.hub import push_to_hub

                print(f"uploaded: {push_to_hub(out, args.push_to_hub)}", file=sys.stderr)
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except (ValueError, OSError, CheckpointError) as err:  # bad arguments, data or checkpoints: named in the message
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        code = 1
    raise SystemExit(code)
