"""The ``samraug export-nnunet`` sub-command: :func:`add_parser` adds it, :func:`run` runs it.

Three modes:

- export (default): ``samraug export-nnunet --data BRATS_DIR --out $nnUNet_raw --dataset-id 501 --name BraTS21SAMR
  --per-case 2`` writes ``DatasetXXX_Name/`` (see :mod:`samraug.export.nnunet`); under ``torchrun`` every rank
  paints its share;
- ``--to-brats PRED_DIR --out DIR --scheme brats2021``: nnU-Net predictions back to the BraTS labels;
- ``--install-trainer``: make ``nnUNetv2_train ... -tr nnUNetTrainerSAMR`` find samraug's trainer.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="samraug")
    >>> _ = add_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["export-nnunet", "--to-brats", "preds", "--out", "sub", "--scheme", "brats2021"])
    >>> args.to_brats
    PosixPath('preds')
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from samraug.argtypes import non_negative_int

from ..training.distributed import cleanup_distributed, init_distributed
from .nnunet import export_nnunet
from .predictions import predictions_to_scheme

__all__ = ["add_parser", "run"]


def _pairs(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise argparse.ArgumentTypeError(f"expected model=key pairs like t1c=t1ce,t2f=flair; got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        out[k] = v
    return out


def _names(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names, e.g. t1n,t1c,t2w,t2f")
    return names


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export-nnunet`` to ``subparsers``; its ``func`` default is :func:`run`."""
    parser = subparsers.add_parser(
        "export-nnunet",
        help="write real + SAMR-synthesized cases as an nnU-Net v2 dataset with leak-free folds",
        description=(
            "Write OUT/DatasetXXX_NAME/ (imagesTr/{case}_{XXXX}.nii.gz, labelsTr/, dataset.json, provenance.json, "
            "splits_final.json) from a BraTS folder (2021, 2023, 2024 layouts): every real case plus --per-case N "
            "(or --n-synthetic N in total) cases made by SAMRSynthesize. The folds are split by patient, validate "
            "on real cases only and never train on a synthetic case made from a validation patient's mask; "
            "splits_final.json also goes to PREPROCESSED/DatasetXXX_NAME/, where nnU-Net reads it. Resumable; "
            "under torchrun every rank paints its share. Other modes: --to-brats, --install-trainer."
        ),
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--data", type=Path, metavar="DIR", help="BraTS-style folder to export")
    mode.add_argument(
        "--to-brats", type=Path, metavar="PRED_DIR", help="map nnU-Net predictions in PRED_DIR back to --scheme"
    )
    mode.add_argument(
        "--install-trainer",
        action="store_true",
        help="write nnunetv2/training/nnUNetTrainer/nnUNetTrainerSAMR.py so that -tr nnUNetTrainerSAMR works",
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="nnU-Net raw folder (export) or output folder")
    parser.add_argument("--dataset-id", type=int, metavar="ID", help="nnU-Net dataset id, 1-999")
    parser.add_argument("--name", metavar="NAME", help="dataset name (DatasetXXX_NAME)")
    parser.add_argument("--scheme", metavar="S", help="label scheme: brats2021, brats2023, brats2024 (4 = RC)")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--per-case", type=non_negative_int, default=None, metavar="N", help="synthetic per real case")
    count.add_argument("--n-synthetic", type=non_negative_int, default=None, metavar="N", help="synthetic in total")
    parser.add_argument("--folds", type=int, default=5, metavar="K", help="cross-validation folds (default 5)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="seed of folds and edits")
    parser.add_argument(
        "--weights", metavar="W", help="SAMR weights: folder or org/name[@rev] (default: bundled, local mode)"
    )
    parser.add_argument("--sequences", type=_names, metavar="A,B", help="channels in order (default: all images)")
    parser.add_argument("--sequence-map", type=_pairs, metavar="M=K,...", help="model sequence=subject key pairs")
    parser.add_argument("--donors", type=non_negative_int, default=4, metavar="N", help="donor pool per fold (4)")
    parser.add_argument("--label-based", action="store_true", help="plain labels in dataset.json, not BraTS regions")
    parser.add_argument(
        "--preprocessed-dir",
        type=Path,
        metavar="DIR",
        help="nnU-Net preprocessed folder (default $nnUNet_preprocessed)",
    )
    parser.add_argument("--device", default="auto", help="generator device: auto (default), cpu, cuda")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset / outputs / trainer")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run, _parser=parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``samraug export-nnunet`` with parsed ``args``; returns the exit status."""
    parser: argparse.ArgumentParser | None = getattr(args, "_parser", None)

    def usage(message: str) -> int:
        if parser is not None:
            parser.error(message)  # exits with status 2
        raise ValueError(message)

    if args.install_trainer:
        from .trainer import install_trainer  # needs the optional nnunetv2 (samraug[nnunet])

        path = install_trainer(args.out, overwrite=args.overwrite)
        print(f"wrote {path}; train with: nnUNetv2_train ID CONFIGURATION FOLD -tr nnUNetTrainerSAMR")
        return 0
    if args.to_brats is not None:
        if args.out is None or args.scheme is None:
            return usage("--to-brats needs --out DIR and --scheme (brats2021, brats2023 or brats2024)")
        written = predictions_to_scheme(args.to_brats, args.out, args.scheme, overwrite=args.overwrite)
        print(f"wrote {len(written)} label maps in scheme {args.scheme} to {args.out}")
        return 0
    missing = [f for f, v in (("--out", args.out), ("--dataset-id", args.dataset_id), ("--name", args.name)) if not v]
    if missing:
        return usage(f"export needs {', '.join(missing)}")
    env = init_distributed(args.device) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    try:
        result = export_nnunet(
            args.data,
            args.out,
            dataset_id=args.dataset_id,
            name=args.name,
            scheme=args.scheme,
            sequences=args.sequences,
            per_case=args.per_case or 0,
            n_synthetic=args.n_synthetic,
            folds=args.folds,
            seed=args.seed,
            weights=args.weights,
            donors_per_case=args.donors,
            sequence_map=args.sequence_map,
            region_based=False if args.label_based else None,
            preprocessed_dir=args.preprocessed_dir,
            overwrite=args.overwrite,
            device=str(env.device) if env is not None else args.device,
            progress=not args.no_progress,
        )
    finally:
        if env is not None:
            cleanup_distributed()
    if env is None or env.is_main:
        print(result.summary())
        if len(result.splits_paths) == 1:
            print(
                "note: no --preprocessed-dir and no $nnUNet_preprocessed: nnU-Net 2.8 copies splits_final.json from "
                "the raw dataset when it plans; with other versions copy it to "
                f"$nnUNet_preprocessed/{result.dataset_dir.name}/ yourself, or nnU-Net draws random (leaky) folds"
            )
    return 0
