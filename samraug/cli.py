"""The ``samraug`` command line.

One sub-command per task; each has a ``_register_<name>(subparsers)`` function that adds its parser and sets
``func`` to the function that runs it (heavy imports happen inside those functions, so ``samraug --help`` is fast).
Library errors (``ValueError``, ``FileNotFoundError``, ...) are printed as ``samraug <command>: error: ...`` with
exit status 1; usage errors exit with status 2.

Example:
    $ samraug phantom --out /tmp/phantom --n 8          # simulated BraTS-2024-style data set + montage.png
    $ python -m samraug phantom --out /tmp/phantom --n 8 --resolution 1 --no-montage
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


# ---------------------------------------------------------------------------------------------------- phantom
def _register_phantom(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="write a simulated (digital phantom) data set in the BraTS 2024 layout",
        description=(
            "Write N SIMULATED subjects (MNI152 anatomy, glioma-like lesions, T1w/Gd-T1w/T2w/FLAIR/APTw signal "
            "model) as DIR/BraTS-GLI-XXXXX-000/BraTS-GLI-XXXXX-000-{t1n,t1c,t2w,t2f,aptw,seg}.nii.gz with labels in "
            "scheme brats2024, plus DIR/montage.png of the first subject. Complete cases already in DIR are kept."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    parser.add_argument("--n", required=True, type=_positive_int, metavar="N", help="number of subjects")
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="data-set seed (default 0)")
    parser.add_argument(
        "--resolution", type=float, default=2.0, choices=(1.0, 2.0), metavar="MM", help="voxel size: 2 (default) or 1"
    )
    parser.add_argument("--workers", type=_positive_int, default=1, metavar="W", help="parallel processes (default 1)")
    parser.add_argument("--no-montage", action="store_true", help="do not write DIR/montage.png")
    parser.set_defaults(func=_run_phantom)


def _run_phantom(args: argparse.Namespace) -> int:
    from .data import phantom

    root = phantom.write_phantom_dataset(
        args.out, args.n, seed=args.seed, resolution=args.resolution, workers=args.workers, progress=True
    )
    message = f"wrote {args.n} simulated subjects (brats2024 labels) to {root}"
    if not args.no_montage:
        subject = phantom.dataset_subject(0, seed=args.seed, resolution=args.resolution)
        path = phantom.montage(subject, root / "montage.png")
        message += f"; montage of {subject.subject_id}: {path}"
    print(message)
    return 0


# ---------------------------------------------------------------------------------------------------- synthesize
def _register_synthesize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synthesize",
        help="edit lesion masks and synthesize MR sequences for them (NIfTI out)",
        description=(
            "For every NIfTI mask (a file, the .nii/.nii.gz files of a folder, or the *seg.nii* files of a BraTS-style "
            "tree), make K samples: the lesion edited at random (mirror, scale, move, rotate, perturb, swap with "
            "another input mask's lesion, remove) and every sequence of the model synthesized for it. Writes "
            "OUT/<case>-synth<j>/<case>-synth<j>-{<sequence>,seg}.nii.gz with the mask's affine, edit.json, and "
            "with --preview a PNG of the lesion slice. Masks must be on the weights' atlas grid. Brain mask: --brain, "
            "else the non-zero voxels of the case's own images next to the mask (BraTS layout), else the atlas brain "
            "(with a warning). Intensities: the scale of the case's own images when found, else the model's [-1, 1]."
        ),
    )
    parser.add_argument("--masks", required=True, type=Path, metavar="FILE|DIR", help="NIfTI mask file or folder")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    parser.add_argument("--n", type=_positive_int, default=1, metavar="K", help="samples per mask (default 1)")
    parser.add_argument(
        "--weights", default=None, metavar="W", help="weights folder or org/name[@revision] (default: bundled demo)"
    )
    parser.add_argument(
        "--scheme",
        required=True,
        metavar="S",
        help="label scheme of the masks: brats2021 (4 = ET), brats2023, brats2024 (4 = RC) or samr",
    )
    parser.add_argument("--brain", type=Path, default=None, metavar="FILE", help="brain mask (single mask input only)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="seed (default 0)")
    parser.add_argument("--no-edit", action="store_true", help="synthesize for the masks as they are")
    parser.add_argument("--preview", action="store_true", help="also write a PNG of the lesion slice per sample")
    parser.add_argument("--device", default="auto", metavar="D", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.set_defaults(func=_run_synthesize)


_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _find_masks(masks: Path) -> list[Path]:
    if masks.is_file():
        return [masks]
    if not masks.is_dir():
        raise FileNotFoundError(f"--masks {str(masks)!r} does not exist; pass a NIfTI file or a folder of them")
    found = sorted(p for p in masks.iterdir() if p.is_file() and p.name.endswith(_NIFTI_SUFFIXES))
    if not found:  # BraTS-style tree: DIR/<case>/<case>-seg.nii.gz
        found = sorted(p for p in masks.rglob("*seg.nii*") if p.name.endswith(_NIFTI_SUFFIXES))
    if not found:
        raise FileNotFoundError(f"no .nii/.nii.gz masks in {str(masks)!r} (nor *seg.nii.gz files below it)")
    return found


def _case_images(mask: Path, sequences: Sequence[str]) -> dict[str, Path]:
    """The case's own images next to a ``<case>-seg.nii.gz`` / ``<case>_seg.nii.gz`` mask, by model sequence."""
    stem = _nifti_stem(mask)
    for sep in ("-", "_"):
        if stem.endswith(f"{sep}seg"):
            case = stem[: -len(sep) - 3]
            found = {}
            for seq in sequences:
                for suffix in _NIFTI_SUFFIXES:
                    candidate = mask.parent / f"{case}{sep}{seq}{suffix}"
                    if candidate.is_file():
                        found[seq] = candidate
                        break
            return found
    return {}


def _case_name(mask: Path) -> str:
    stem = _nifti_stem(mask)
    for tail in ("-seg", "_seg"):
        if stem.endswith(tail):
            return stem[: -len(tail)]
    return stem


def _preview(path: Path, volumes: dict, seg: object, z: int, title: str) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(volumes)
    fig = Figure(figsize=(2.4 * (len(names) + 1), 2.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names) + 1)
    for ax, name in zip(axes[:-1], names, strict=True):
        img = np.asarray(volumes[name])[:, :, z].T
        lo, hi = np.percentile(img, [0.5, 99.5])
        ax.imshow(img, cmap="gray", origin="lower", vmin=lo, vmax=hi if hi > lo else lo + 1)
        ax.set_title(name)
        ax.axis("off")
    lab = np.asarray(seg)[:, :, z].T
    axes[-1].imshow(np.ma.masked_where(lab == 0, lab), cmap="tab10", origin="lower", vmin=0, vmax=9)
    axes[-1].set_facecolor("black")
    axes[-1].set_title("edited mask")
    axes[-1].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path)


def _run_synthesize(args: argparse.Namespace) -> int:
    import json
    import warnings

    import nibabel as nib
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from .intensity import denormalize, robust_normalize
    from .labels import get_scheme
    from .synthesis import Synthesizer
    from .transforms import _edit, _make_editor, register_donors

    scheme = get_scheme(args.scheme)
    masks = _find_masks(args.masks)
    if args.brain is not None and len(masks) > 1:
        raise ValueError(f"--brain gives one brain mask but --masks holds {len(masks)} masks; pass one mask file")
    if args.preview:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("--preview needs matplotlib: pip install 'samraug[demo]'") from None
    synth = Synthesizer(args.weights, device=args.device)
    atlas = synth.atlas
    labels, headers = [], []
    for path in masks:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        if data.ndim == 4 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise ValueError(f"{path}: mask must be a 3D volume, got shape {data.shape}")
        if np.issubdtype(data.dtype, np.floating):
            if not np.isfinite(data).all():
                raise ValueError(f"{path}: mask contains NaN/inf")
            data = np.rint(data).astype(np.int16)
        scheme.validate(data, f"mask {path.name}")
        atlas.check_grid(data.shape, img.affine, f"mask {path.name}")
        labels.append(data)
        headers.append(img)
    donors_key = register_donors(labels) if len(labels) > 1 else None
    editor = _make_editor(scheme)
    args.out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(masks) * args.n, desc="synthesize", unit="sample")
    warned = False
    written, matched = 0, 0
    for m, (path, label, img) in enumerate(zip(masks, labels, headers, strict=True)):
        own = _case_images(path, synth.sequences)
        sources = {seq: np.asanyarray(nib.load(str(p)).dataobj).astype(np.float32) for seq, p in own.items()}
        if args.brain is not None:
            brain = np.asanyarray(nib.load(str(args.brain)).dataobj) != 0
            if brain.shape != label.shape:
                raise ValueError(f"--brain has shape {brain.shape} but the mask {label.shape}")
        elif scheme.has_brain_label:
            brain = scheme.to_samr(label) > 0
        elif sources:
            brain = np.zeros(label.shape, dtype=bool)
            for vol in sources.values():
                brain |= vol != 0
        else:
            brain = atlas.brain.cpu().numpy().copy()
            if not warned:
                warnings.warn(
                    "no brain mask (--brain) and no case images next to the masks: using the atlas brain (plus the "
                    "lesion) as each case's brain; pass --brain for exact results",
                    UserWarning,
                    stacklevel=1,
                )
                warned = True
        brain = brain | (label != 0)
        stats = {}
        for seq, vol in sources.items():
            _, stats[seq] = robust_normalize(vol, brain)
        matched += bool(stats)
        donors = [d for i, d in enumerate(labels) if i != m] if donors_key else None
        for j in range(args.n):
            generator = torch.Generator().manual_seed(args.seed * 1_000_003 + m * 1009 + j)
            if args.no_edit:
                edited, record = label, {"op": "none", "applied": False, "reason": "--no-edit"}
            else:
                edited, record = _edit(editor, label, brain, generator, donors)
            samr = scheme.to_samr(edited, brain)
            volumes = synth.synthesize_volume(samr, affine=img.affine, brain=brain, output="model")
            out_vols = {}
            for seq, vol in volumes.items():
                arr = vol.numpy()
                if seq in stats:
                    arr = denormalize(arr, stats[seq], brain)
                out_vols[seq] = arr.astype(np.float32)
            case = f"{_case_name(path)}-synth{j}"
            folder = args.out / case
            folder.mkdir(parents=True, exist_ok=True)
            for seq, arr in out_vols.items():
                header = img.header.copy()
                header.set_data_dtype(np.float32)
                nib.save(nib.Nifti1Image(arr, img.affine, header), str(folder / f"{case}-{seq}.nii.gz"))
            seg_header = img.header.copy()
            nib.save(
                nib.Nifti1Image(np.asarray(edited).astype(label.dtype), img.affine, seg_header),
                str(folder / f"{case}-seg.nii.gz"),
            )
            meta = {
                "source_mask": str(path),
                "scheme": scheme.name,
                "weights": synth.key if synth.key is not None else "bundled",
                "seed": args.seed,
                "sample": j,
                "intensity": {s: ("subject" if s in stats else "model [-1, 1]") for s in out_vols},
                "edit": record,
            }
            (folder / "edit.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
            if args.preview:
                lesion = samr >= 2
                counts = (lesion if lesion.any() else brain).sum(axis=(0, 1))
                z = int(np.argmax(counts))
                _preview(folder / f"{case}-preview.png", out_vols, edited, z, f"{case} (z={z})")
            written += 1
            bar.update(1)
    bar.close()
    scale = f"{matched} of {len(masks)} cases in their own images' scale, the others in [-1, 1]"
    print(f"wrote {written} synthetic samples ({', '.join(synth.sequences)}; {scale}) to {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------------- info
def _register_info(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print a summary of a weights folder or Hub repo (model card)",
        description="Load WEIGHTS strictly and print its configuration and model-card summary.",
    )
    parser.add_argument(
        "weights", nargs="?", default=None, metavar="WEIGHTS", help="folder or org/name[@revision] (default: bundled)"
    )
    parser.set_defaults(func=_run_info)


def _card_sections(text: str, names: Sequence[str]) -> list[str]:
    lines, keep = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            keep = line[3:].strip() in names
        if keep and line.strip():
            lines.append(line)
    return lines


def _run_info(args: argparse.Namespace) -> int:
    import json

    from .hub import CARD_NAME, META_KEYS, load_weights
    from .models.generator import PRESETS

    w = load_weights(args.weights, device="cpu")
    cfg = w.config
    arch = {k: v for k, v in cfg.items() if k not in META_KEYS and k != "sequences"}
    preset = next(
        (name for name, values in PRESETS.items() if all(arch.get(k) == v for k, v in values.items())), "custom"
    )
    n_params = sum(p.numel() for p in w.generator.parameters())
    scheme = cfg.get("label_scheme", "samr")
    atlas = w.atlas
    spacing = [round(float(v), 4) for v in (atlas.affine[:3, :3] ** 2).sum(0) ** 0.5]
    rows = [
        ("weights", str(w.path)),
        ("model_type", str(cfg.get("model_type"))),
        ("preset", preset),
        ("architecture", ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(arch.items()))),
        ("sequences", ", ".join(w.sequences)),
        ("label scheme", scheme if isinstance(scheme, str) else scheme.get("name", "custom")),
        ("normalization", json.dumps(cfg.get("normalization", {}), sort_keys=True)),
        ("atlas", f"shape {list(atlas.shape)}, spacing {spacing} mm, {atlas.n_sequences} sequences"),
        ("parameters", f"{n_params:,}"),
        ("samraug version", str(cfg.get("samraug_version", "unknown"))),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    card = w.path / CARD_NAME
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        if "Trained on simulated data" in text:
            print("\nNOTE: trained on SIMULATED (phantom) data, not on real MRI.")
        section = _card_sections(text, ("Training", "Validation"))
        if section:
            print("\n" + "\n".join(section))
    else:
        print(f"\n(no {CARD_NAME} model card in {w.path})")
    return 0


# ---------------------------------------------------------------------------------------------------- main
#: Sub-command registration functions, in the order ``samraug --help`` lists them.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _register_phantom,
    _register_synthesize,
    _register_info,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``samraug`` argument parser with every sub-command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="samraug",
        description="SAMR: lesion-mask-based synthesis of anatomic and molecular MRI for data augmentation.",
    )
    parser.add_argument("--version", action="version", version=f"samraug {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``samraug`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Example:
        >>> main(["phantom", "--out", "/tmp/phantom", "--n", "2"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, ImportError) as err:
        print(f"samraug {args.command}: error: {err}", file=sys.stderr)
        return 1
