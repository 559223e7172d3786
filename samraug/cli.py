"""The ``samraug`` command line.

One sub-command per task; each has a ``_register_<name>(subparsers)`` function that adds its parser and sets
``func`` to the function that runs it.
Library errors (``ValueError``, ``OSError`` such as ``FileNotFoundError``, ...) are printed as
``samraug <command>: error: ...`` with exit status 1; usage errors exit with status 2; Ctrl-C exits with 130.

Example:
    $ samraug phantom --out /tmp/phantom --n 8          # simulated BraTS-2024-style data set + montage.png
    $ python -m samraug phantom --out /tmp/phantom --n 8 --resolution 1 --no-montage
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .argtypes import non_negative_int, positive_int
from .augment.donors import RecipientDonors
from .augment.edits import CARVE_KINDS, EDITOR_KINDS, draw_edit_kind, parse_edits, pool_edit
from .augment.painters import SAMRPainter
from .data import phantom
from .data.brats import (
    AFFINE_ATOL,
    SEQUENCE_ALIASES,
    affines_match,
    check_scheme_layout,
    format_affine,
    label_hint,
    layout_of_name,
    read_nifti,
)
from .editing import EditPolicy, LesionEditor
from .editing.policy import MAX_INSERT, check_insertion
from .export.command import add_parser
from .hub import BUNDLED_WEIGHTS, BUNDLED_WHOLE_WEIGHTS, CARD_NAME, META_KEYS, load_weights
from .intensity import denormalize
from .labels import get_scheme
from .local_synthesis import DEFAULT_MAX_REGION_MM, check_max_region_mm
from .models.generator import PRESETS
from .outputs import StagedOutput, check_output_dir
from .region import REGION_SEEDS
from .seam import HEALTHY_MODES, SEAM_MODES
from .synthesis import Synthesizer, resolve_device
from .texture import NOISE_MODES

__all__ = ["build_parser", "main"]


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
    parser.add_argument("--n", required=True, type=positive_int, metavar="N", help="number of subjects")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="data-set seed (default 0)")
    parser.add_argument(
        "--resolution", type=float, default=2.0, choices=(1.0, 2.0), metavar="MM", help="voxel size: 2 (default) or 1"
    )
    parser.add_argument("--workers", type=positive_int, default=1, metavar="W", help="parallel processes (default 1)")
    parser.add_argument("--no-montage", action="store_true", help="do not write DIR/montage.png")
    parser.set_defaults(func=_run_phantom)


def _run_phantom(args: argparse.Namespace) -> int:

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
            "For every NIfTI mask (a file, the .nii/.nii.gz files of a folder, the *seg file of a case folder, or "
            "the *seg.nii* files of a BraTS-style tree), make K samples: the lesion edited at random (mirror, scale, "
            "move, rotate, perturb, swap with another input mask's lesion, remove) and every sequence of the model "
            "synthesized for it. Writes OUT/<case>-synth<j>/<case>-synth<j>-{<sequence>,seg}.nii.gz with the mask's "
            "affine, edit.json, and with --preview a PNG of the lesion slice. Masks hold integer labels of --scheme; "
            "in whole-image mode they must be on the weights' atlas grid, in local mode (the default weights) the "
            "case's own images must lie next to them. Brain mask: --brain, else the non-zero voxels of the case's "
            "own images next to the mask (BraTS 2021 names t1, t1ce, t2, flair or 2023/2024 names t1n, t1c, t2w, "
            "t2f; --sequence-map for others), else the atlas brain (with a warning). Intensities: the scale of the "
            "case's own images when found, else the model's [-1, 1]. Every input is checked before anything is "
            "written; OUT is written completely or not at all, and an existing OUT is only replaced (as a whole) "
            "with --overwrite. Masks without any lesion are skipped and listed."
        ),
    )
    parser.add_argument("--masks", required=True, type=Path, metavar="FILE|DIR", help="NIfTI mask file or folder")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    parser.add_argument("--n", type=positive_int, default=1, metavar="K", help="samples per mask (default 1)")
    parser.add_argument(
        "--weights",
        default=None,
        metavar="W",
        help="weights folder or org/name[@revision] (default: the bundled local-mode demo weights "
        f"{BUNDLED_WEIGHTS.name}; the whole-image ones: samraug/weights/{BUNDLED_WHOLE_WEIGHTS.name})",
    )
    parser.add_argument(
        "--scheme",
        required=True,
        metavar="S",
        help="label scheme of the masks: brats2021 (4 = ET), brats2023, brats2024 (4 = RC) or samr",
    )
    parser.add_argument(
        "--force-scheme",
        action="store_true",
        help="use --scheme even where it contradicts the BraTS naming of the cases (BraTS2021_*, t1ce => brats2021)",
    )
    parser.add_argument(
        "--sequence-map",
        default=None,
        metavar="SEQ=SUFFIX,...",
        help="file suffix of each model sequence in the case folders, e.g. t1c=t1gd,t2f=flair (default: the "
        "model's names, then the BraTS 2021 names t1, t1ce, t2, flair); also names the output files",
    )
    parser.add_argument("--brain", type=Path, default=None, metavar="FILE", help="brain mask (single mask input only)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="seed (default 0)")
    parser.add_argument(
        "--mode",
        choices=("whole", "local"),
        default=None,
        help="whole: paint whole brains on the atlas grid; local: repaint only the edited lesion's neighbourhood "
        "inside the case's own images (any grid; needs the images next to each mask). Default: the weights' mode "
        "(local for the default bundled weights)",
    )
    parser.add_argument(
        "--margin-mm", type=float, default=8.0, metavar="MM", help="local mode: margin around the edit (default 8)"
    )
    parser.add_argument(
        "--noise",
        choices=NOISE_MODES,
        default="match",
        help="local mode: 'match' (default) tops the repainted region's noise up to the case's own noise around it; "
        "'none' keeps the model's painting as it is",
    )
    parser.add_argument(
        "--seam",
        choices=SEAM_MODES,
        default="poisson",
        help="local mode: 'poisson' (default) corrects the painting to continue the case's image across the "
        "region's border; 'none' keeps the model's painting as it is",
    )
    parser.add_argument(
        "--healthy",
        choices=HEALTHY_MODES,
        default="model",
        help="local mode: what paints the region's voxels that are healthy after the edit: 'model' (default, the "
        "generator), 'harmonic' (classical 3D harmonic inpainting from the brain around the region), 'spline' "
        "(a thin-plate spline under tension, which also continues the border's slopes into the region) or 'mirror' "
        "(the spline guided by the other hemisphere's tissue at the mirrored place)",
    )
    parser.add_argument(
        "--region",
        choices=REGION_SEEDS,
        default="lesions",
        help="local mode: what seeds the repainted region before --margin-mm: 'lesions' (default, the changed voxels "
        "plus the old and new lesion) or 'changed' (the changed voxels alone: a lesion the edit kept stays real)",
    )
    parser.add_argument(
        "--insert",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a random edit adds the edited lesion beside the case's own instead of replacing it "
        "(EditPolicy(p_insert=P); default 0, the paper's edits). With --region changed the real lesion keeps its "
        "real intensities",
    )
    parser.add_argument(
        "--n-insert",
        type=int,
        default=1,
        metavar="K",
        help="lesions an inserting edit adds, each an independent random edit of the case's own lesion "
        f"(EditPolicy(n_insert=K), 1 to {MAX_INSERT}; needs --insert above 0; default 1)",
    )
    parser.add_argument(
        "--max-region-mm",
        type=float,
        default=DEFAULT_MAX_REGION_MM,
        metavar="MM",
        help="local mode: a sample whose region has a connected part wider than this is not written (default "
        f"{DEFAULT_MAX_REGION_MM:g}; raise it when many inserted lesions chain across the brain)",
    )
    parser.add_argument(
        "--edits",
        default="random",
        metavar="KIND",
        help="how each mask is edited: random (default: the random edit, with --insert / --n-insert), carve "
        "(CarveMix's edit: another mask's lesion, drawn per sample from --masks, added where it lies, inside the "
        "brain; every mask on one grid), carve+random (both: the random edit, then another mask's lesion on top), "
        "or a mixture drawn per sample, e.g. carve=0.5,random=0.5",
    )
    parser.add_argument("--no-edit", action="store_true", help="synthesize for the masks as they are")
    parser.add_argument("--preview", action="store_true", help="also write a PNG of the lesion slice per sample")
    parser.add_argument("--device", default="auto", metavar="D", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder as a whole")
    parser.set_defaults(func=_run_synthesize)


_NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Name endings (after ``-`` or ``_``) of label-map files.
_MASK_TAILS = ("seg", "label", "labels", "mask")
_RESERVED_NAMES = ("seg", "label", "labels", "mask", "brain", "preview", "edit")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+]*$")


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _split_name(path: Path) -> tuple[str, str, str]:
    """``(case, separator, tail)`` of ``<case><-|_><tail>.nii.gz``; ``(stem, "", "")`` without a separator."""
    stem = _nifti_stem(path)
    cut = max(stem.rfind("-"), stem.rfind("_"))
    if cut <= 0:
        return stem, "", ""
    return stem[:cut], stem[cut], stem[cut + 1 :]


def _case_name(mask: Path) -> str:
    case, _, tail = _split_name(mask)
    return case if tail.lower() in _MASK_TAILS else _nifti_stem(mask)


def _image_names(sequences: Sequence[str], seq_map: dict[str, str]) -> set[str]:

    return {*sequences, *SEQUENCE_ALIASES, *SEQUENCE_ALIASES.values(), "aptw", *seq_map.values()}


def _find_masks(masks: Path, image_names: set[str]) -> list[Path]:
    def image_tail(p: Path) -> str | None:
        _, sep, tail = _split_name(p)
        return tail if sep and tail in image_names else None

    if masks.is_file():
        tail = image_tail(masks)
        if tail is not None:
            raise ValueError(
                f"--masks {str(masks)!r} is an image (sequence {tail!r} by its name), not a mask; pass the case's "
                "*seg.nii.gz file (or its folder)"
            )
        return [masks]
    if not masks.is_dir():
        raise FileNotFoundError(f"--masks {str(masks)!r} does not exist; pass a NIfTI file or a folder of them")
    found = sorted(p for p in masks.iterdir() if p.is_file() and p.name.endswith(_NIFTI_SUFFIXES))
    if found:
        images = [p for p in found if image_tail(p) is not None]
        if images:  # a case folder: images and their segmentation side by side
            segs = [p for p in found if _split_name(p)[2].lower() in _MASK_TAILS]
            if not segs:
                raise ValueError(
                    f"--masks {str(masks)!r} holds images ({', '.join(p.name for p in images[:4])}) and no "
                    "*seg.nii.gz mask; pass a folder of masks, a case folder with its *-seg.nii.gz, or a BraTS tree"
                )
            return segs
        return found
    found = sorted(p for p in masks.rglob("*seg.nii*") if p.name.endswith(_NIFTI_SUFFIXES))  # BraTS-style tree
    if not found:
        raise FileNotFoundError(f"no .nii/.nii.gz masks in {str(masks)!r} (nor *seg.nii.gz files below it)")
    return found


def _parse_sequence_map(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    result: dict[str, str] = {}
    for item in text.split(","):
        seq, sep, name = (part.strip() for part in item.partition("="))
        if not sep or not seq or not name:
            raise ValueError(f"--sequence-map {text!r}: {item!r} is not SEQ=SUFFIX (e.g. t1c=t1ce,t2f=flair)")
        if not _NAME.match(name) or name.lower() in _RESERVED_NAMES:
            raise ValueError(
                f"--sequence-map {text!r}: suffix {name!r} must be a plain name (letters, digits, '.', '+'), not one "
                f"of {list(_RESERVED_NAMES)}"
            )
        if seq in result:
            raise ValueError(f"--sequence-map {text!r} maps {seq!r} twice")
        result[seq] = name
    if len(set(result.values())) != len(result):
        raise ValueError(f"--sequence-map {text!r} gives two sequences the same suffix")
    return result


def _case_images(mask: Path, sequences: Sequence[str], seq_map: dict[str, str]) -> dict[str, Path]:
    """The case's own images next to a ``<case>-seg.nii.gz`` / ``<case>_seg.nii.gz`` mask, by model sequence."""

    case, sep, tail = _split_name(mask)
    if not sep or tail.lower() != "seg":
        return {}
    found = {}
    for seq in sequences:
        names = [seq_map[seq]] if seq in seq_map else list(dict.fromkeys([seq, SEQUENCE_ALIASES.get(seq, seq)]))
        hits = [mask.parent / f"{case}{sep}{n}{s}" for n in names for s in _NIFTI_SUFFIXES]
        hits = [p for p in hits if p.is_file()]
        if len(hits) > 1:
            raise ValueError(
                f"case {case!r}: several files for the model sequence {seq!r} ({', '.join(p.name for p in hits)}); "
                f"keep one, or pass --sequence-map {seq}=<suffix>"
            )
        if hits:
            found[seq] = hits[0]
    return found


def _check_device(spec: str) -> str:

    try:
        device = resolve_device(spec)
    except ValueError as e:
        raise ValueError(f"--device {spec!r}: {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {spec!r}: this PyTorch has no usable CUDA (torch.cuda.is_available() is False); pass "
                "--device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {spec!r}: MPS is not available here; pass --device cpu or auto")
    elif device.type != "cpu":
        raise ValueError(f"--device {spec!r}: unsupported device type {device.type!r}; use auto, cpu, cuda[:N], mps")
    return spec


def _preview(path: Path, volumes: dict, seg: object, z: int, title: str) -> None:
    # matplotlib is optional (samraug[demo]): only --preview needs it
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


@dataclass
class _Case:
    """One validated input mask: label, header, brain and the intensity statistics of its own images."""

    path: Path
    name: str
    label: Any
    header: Any
    brain: Any
    stats: dict[str, Any]
    images: dict[str, Any]  # local mode: the case's own images (the region is repainted inside them)


def _read_mask(path: Path, scheme: Any, atlas: Any) -> tuple[Any, Any]:

    case = _case_name(path)
    try:
        tensor, _ = read_nifti(path, case_id=case, label=True)
    except ValueError as e:
        hint = ""
        if "non-integer" in str(e):
            hint = "; is it an image rather than a mask? Masks hold integer labels: pass the *seg files"
        raise ValueError(f"{e}{hint}") from None
    label = tensor[0].numpy()
    values = np.unique(label)
    try:
        scheme.validate(values, f"mask {path}")
    except ValueError as e:
        unknown = {int(v) for v in values} - set(scheme.values)
        hint = label_hint(unknown, scheme)
        if len(values) > 16:
            hint += f"; it holds {len(values)} distinct values: is it an image rather than a mask?"
        raise ValueError(f"{e}{hint}") from None
    img = nib.load(str(path))
    if atlas is not None:  # whole-image mode paints on the atlas grid; local mode works on any grid
        atlas.check_grid(label.shape, img.affine, f"mask {path}")
    return label, img


def _read_image_like(path: Path, case: str, ref: Path, ref_img: Any, what: str) -> Any:
    """Read an image of a case and check it is on the mask's grid (shape, affine), naming both files."""

    tensor, affine = read_nifti(path, case_id=case)
    vol = tensor[0].numpy()
    if vol.shape != tuple(ref_img.shape[:3]):
        raise ValueError(
            f"case {case!r}: {what} {path} has shape {vol.shape} but the mask {ref} has {tuple(ref_img.shape[:3])}; "
            "a case's images and mask must share one grid (resample them onto the mask's grid)"
        )
    if not affines_match(affine, ref_img.affine):
        raise ValueError(
            f"case {case!r}: the affine of {what} {path} {format_affine(affine)} differs from that of the mask {ref} "
            f"{format_affine(ref_img.affine)} (tolerance {AFFINE_ATOL}); fix the headers or resample (a flipped or "
            "shifted image would give a wrong brain and intensity scale)"
        )
    return vol


def _json_default(obj: Any) -> Any:

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _run_synthesize(args: argparse.Namespace) -> int:

    # ---- arguments and inputs: every check before anything is written
    scheme = get_scheme(args.scheme)
    seq_map = _parse_sequence_map(args.sequence_map)
    device = _check_device(args.device)
    masks = _find_masks(args.masks, _image_names((), seq_map))
    check_output_dir(args.out, overwrite=args.overwrite, inputs=[args.masks] if args.masks.is_dir() else [])
    if args.brain is not None and len(masks) > 1:
        raise ValueError(f"--brain gives one brain mask but --masks holds {len(masks)} masks; pass one mask file")
    names: dict[str, Path] = {}
    for path in masks:
        other = names.setdefault(_case_name(path), path)
        if other != path:
            raise ValueError(f"masks {other} and {path} have the same case name {_case_name(path)!r}; rename one")
    if args.preview:
        try:
            import matplotlib  # noqa: F401  (optional, samraug[demo]: checked before anything is written)
        except ImportError:
            raise ImportError("--preview needs matplotlib: pip install 'samraug[demo]'") from None
    synth = Synthesizer(args.weights, device=device).load()  # strict: corrupt weights raise WeightsError here
    sequences = tuple(synth.sequences)
    unknown = sorted(set(seq_map) - set(sequences))
    if unknown:
        raise ValueError(f"--sequence-map names {unknown}, which the weights do not synthesize; they give {sequences}")
    if args.margin_mm < 0 or not math.isfinite(args.margin_mm):
        raise ValueError(f"--margin-mm must be a finite number >= 0, got {args.margin_mm}")
    check_max_region_mm(args.max_region_mm, "--max-region-mm")
    check_insertion(args.insert, args.n_insert, "--insert", "--n-insert")
    mixture = parse_edits(args.edits, "--edits")
    carving = bool(set(mixture) & set(CARVE_KINDS))
    if carving and args.no_edit:
        raise ValueError(f"--no-edit synthesizes the masks as they are: leave out --edits {args.edits}")
    if not set(mixture) & set(EDITOR_KINDS) and (args.insert or args.n_insert != 1):
        raise ValueError(
            f"--edits {args.edits} adds another mask's lesion as it lies and draws no random edit: leave out "
            "--insert / --n-insert, or pass --edits carve+random"
        )
    painter = SAMRPainter(
        synth,
        mode=args.mode,
        margin_mm=args.margin_mm,
        noise=args.noise,
        seam=args.seam,
        healthy=args.healthy,
        region=args.region,
        max_region_mm=args.max_region_mm,
    )
    local = painter.mode == "local"
    atlas = None if local else synth.atlas

    layouts: set[str] = set()
    cases: list[_Case] = []
    skipped: list[Path] = []
    warned = False
    for path in masks:
        case = _case_name(path)
        own = _case_images(path, sequences, seq_map)
        seen = {layout_of_name(case), *(layout_of_name(_split_name(p)[2]) for p in own.values())} - {None}
        for layout in seen:
            if not args.force_scheme:
                check_scheme_layout(
                    scheme,
                    layout,
                    f"mask {path}",
                    arg="--scheme",
                    hint=f", or --force-scheme if the labels really are in scheme {scheme.name!r}",
                )
        layouts |= seen  # type: ignore[arg-type]
        label, img = _read_mask(path, scheme, atlas)
        sources = {seq: _read_image_like(p, case, path, img, "image") for seq, p in own.items()}
        missing = [s for s in sequences if s not in sources]
        if local and missing:
            raise ValueError(
                f"mask {path}: local mode repaints the case's own images, but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing next to it; put {case}-<sequence>.nii.gz files "
                "beside the mask (see --sequence-map for other names) or use whole-image weights (e.g. --weights "
                f"samraug/weights/{BUNDLED_WHOLE_WEIGHTS.name}, on their atlas grid)"
            )
        if args.brain is not None:
            brain = _read_image_like(args.brain, case, path, img, "--brain") != 0
            what = f"--brain {args.brain}"
        elif scheme.has_brain_label:
            brain = scheme.to_samr(label) > 0
            what = "its brain label"
        elif sources:
            brain = np.zeros(label.shape, dtype=bool)
            for vol in sources.values():
                brain |= vol != 0
            what = f"the non-zero voxels of {', '.join(p.name for p in own.values())}"
        else:  # whole mode only: local mode has the case's images (checked above)
            brain = atlas.brain.cpu().numpy().copy()
            what = "the atlas brain"
            if not warned:
                warnings.warn(
                    "no brain mask (--brain) and no case images next to the masks: using the atlas brain (plus the "
                    "lesion) as each case's brain; pass --brain for exact results",
                    UserWarning,
                    stacklevel=1,
                )
                warned = True
        lesion = scheme.to_samr(label) >= 2 if scheme.has_brain_label else label != 0
        if not lesion.any():
            skipped.append(path)
            continue
        if not (lesion & brain).any():
            raise ValueError(
                f"mask {path}: the lesion ({int(lesion.sum())} voxels) lies entirely outside the brain ({what}); "
                "the mask and the brain do not belong together (check orientation/registration) -- nothing painted"
            )
        brain = brain | (label != 0)
        stats = synth.subject_stats(sources, brain, lesion)
        cases.append(_Case(path, case, label, img, brain, stats, sources if local else {}))
    if not cases:
        raise ValueError(
            f"none of the {len(masks)} masks under --masks {str(args.masks)!r} holds a lesion (all background); "
            "nothing to synthesize"
        )
    if carving:  # another mask's lesion where it lies: every mask on one grid
        if len(cases) < 2:
            raise ValueError(
                f"--edits {args.edits} adds another mask's lesion: --masks {str(args.masks)!r} holds "
                f"{len(cases)} mask with a lesion; pass a folder of two or more co-registered masks"
            )
        first = cases[0]
        for c in cases[1:]:
            same = c.label.shape == first.label.shape and affines_match(c.header.affine, first.header.affine)
            if not same:
                raise ValueError(
                    f"--edits {args.edits} adds another mask's lesion where it lies, but masks {first.path} "
                    f"{first.label.shape} and {c.path} {c.label.shape} are not on one grid (shape and affine); "
                    "register the cases to one space (e.g. BraTS' SRI24 240x240x155) or use --edits random"
                )
    # output file names: --sequence-map, else the BraTS 2021 names for a 2021 tree, else the model's names
    out_names = {
        seq: seq_map.get(seq, SEQUENCE_ALIASES.get(seq, seq) if layouts == {"brats2021"} else seq) for seq in sequences
    }
    if len(set(out_names.values())) != len(out_names) or set(out_names.values()) & set(_RESERVED_NAMES):
        raise ValueError(f"output sequence names {out_names} must be unique and not {list(_RESERVED_NAMES)}")

    # ---- synthesis into a staging folder, moved to --out at the end
    editor = LesionEditor(scheme, policy=EditPolicy(p_insert=args.insert, n_insert=args.n_insert))
    labels = [c.label for c in cases]
    written, matched = 0, sum(bool(c.stats) for c in cases)
    local_skips: list[str] = []
    with StagedOutput(args.out, overwrite=args.overwrite) as stage:
        bar = tqdm(total=len(cases) * args.n, desc="synthesize", unit="sample")
        for m, c in enumerate(cases):
            others = [i for i in range(len(cases)) if i != m]
            # a swap keeps another mask's lesion at its own place only where that mask shares this one's grid
            donors = (
                RecipientDonors([labels[i] for i in others], c.header.affine, [cases[i].header.affine for i in others])
                if others
                else None
            )
            for j in range(args.n):
                sample_seed = args.seed * 1_000_003 + m * 1009 + j
                generator = torch.Generator().manual_seed(sample_seed)
                donor_mask = None
                if args.no_edit:
                    edited, record = c.label, {"op": "none", "applied": False, "reason": "--no-edit"}
                else:
                    # the kind from a stream of its own: a kind's samples are those of that kind alone
                    kind = draw_edit_kind(mixture, np.random.RandomState([args.seed, m, j]))
                    edit_with = pool_edit(kind, editor, donors, sample_seed)
                    result = edit_with.random_edit(c.label, c.brain, donors=donors, generator=generator)
                    edited, record = np.asarray(result.label), result.record
                    if kind in CARVE_KINDS:
                        k = int(record["donor"])
                        donor_mask = str(cases[k + (k >= m)].path)
                sample = f"{c.name}-synth{j}"
                if local:  # the region around the edit repainted inside the case's own images, in their scale
                    images = {s: torch.from_numpy(np.asarray(v, dtype=np.float32)) for s, v in c.images.items()}
                    painted, paint_record = painter.paint(
                        images, c.label, np.asarray(edited), c.brain, c.header.affine, scheme, generator=generator
                    )
                    if paint_record.get("skipped"):
                        local_skips.append(f"{sample}: {paint_record['skipped']}")
                        bar.update(1)
                        continue
                    record = {**record, "paint": paint_record}
                    out_vols = {seq: painted[seq].numpy().astype(np.float32) for seq in sequences}
                else:
                    classes = synth.encode(edited, c.brain, scheme)  # the weights' classes (scheme-native or SAMR)
                    volumes = synth.synthesize_volume(classes, affine=c.header.affine, brain=c.brain, output="model")
                    out_vols = {}
                    for seq, vol in volumes.items():
                        arr = vol.numpy()
                        if seq in c.stats:
                            arr = denormalize(arr, c.stats[seq], c.brain)
                        out_vols[seq] = arr.astype(np.float32)
                with stage.entry(sample) as folder:
                    for seq, arr in out_vols.items():
                        header = c.header.header.copy()
                        header.set_data_dtype(np.float32)
                        image = nib.Nifti1Image(arr, c.header.affine, header)
                        nib.save(image, str(folder / f"{sample}-{out_names[seq]}.nii.gz"))
                    seg = np.asarray(edited)
                    seg_header = c.header.header.copy()
                    seg_header.set_data_dtype(np.uint8 if seg.min() >= 0 and seg.max() <= 255 else np.int16)
                    seg_image = nib.Nifti1Image(seg.astype(seg_header.get_data_dtype()), c.header.affine, seg_header)
                    nib.save(seg_image, str(folder / f"{sample}-seg.nii.gz"))
                    meta = {
                        "source_mask": str(c.path),
                        "scheme": scheme.name,
                        "weights": synth.key if synth.key is not None else f"bundled ({BUNDLED_WEIGHTS.name})",
                        "mode": painter.mode,
                        "seed": args.seed,
                        "sample": j,
                        "files": {seq: f"{sample}-{out_names[seq]}.nii.gz" for seq in out_vols},
                        "intensity": {s: ("subject" if s in c.stats else "model [-1, 1]") for s in out_vols},
                        "edit": record,
                    }
                    if donor_mask is not None:  # the record's donor indexes the other masks
                        meta["donor_mask"] = donor_mask
                    text = json.dumps(meta, indent=2, default=_json_default) + "\n"
                    (folder / "edit.json").write_text(text, encoding="utf-8")
                    if args.preview:
                        lesion = np.isin(np.asarray(edited), scheme.lesion_values)
                        counts = (lesion if lesion.any() else c.brain).sum(axis=(0, 1))
                        z = int(np.argmax(counts))
                        named = {out_names[s]: v for s, v in out_vols.items()}
                        _preview(folder / f"{sample}-preview.png", named, edited, z, f"{sample} (z={z})")
                written += 1
                bar.update(1)
        bar.close()
        out = stage.commit()
    scale = f"{matched} of {len(cases)} cases in their own images' scale, the others in [-1, 1]"
    print(f"wrote {written} synthetic samples ({', '.join(out_names.values())}; {scale}) to {out}")
    if local_skips:
        shown = "; ".join(local_skips[:10]) + (" ..." if len(local_skips) > 10 else "")
        print(f"left {len(local_skips)} samples unpainted (local mode could not hold the region): {shown}")
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        print(f"skipped {len(skipped)} masks without any lesion (all background): {shown}")
    return 0


# ---------------------------------------------------------------------------------------------------- info
def _register_info(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print a summary of a weights folder or Hub repo (model card)",
        description="Load WEIGHTS strictly and print its configuration and model-card summary (without WEIGHTS: "
        f"the default bundled demo weights {BUNDLED_WEIGHTS.name}, local mode).",
    )
    parser.add_argument(
        "weights",
        nargs="?",
        default=None,
        metavar="WEIGHTS",
        help=f"folder or org/name[@revision] (default: the bundled {BUNDLED_WEIGHTS.name})",
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

    w = load_weights(args.weights, device="cpu")
    cfg = w.config
    arch = {k: v for k, v in cfg.items() if k not in META_KEYS and k != "sequences"}
    preset = next(
        (name for name, values in PRESETS.items() if all(arch.get(k) == v for k, v in values.items())), "custom"
    )
    n_params = sum(p.numel() for p in w.generator.parameters())
    scheme = cfg.get("label_scheme", "samr")
    atlas = w.atlas
    if atlas is not None:
        spacing = [round(float(v), 4) for v in (atlas.affine[:3, :3] ** 2).sum(0) ** 0.5]
        atlas_row = f"shape {list(atlas.shape)}, spacing {spacing} mm, {atlas.n_sequences} sequences"
    else:
        voxel = cfg.get("voxel_size")
        atlas_row = "none (local mode paints on the subject's own grid" + (
            f"; training voxel size {voxel} mm)" if voxel else ")"
        )
    where = str(w.path)
    if args.weights is None:
        where += f" (the default: bundled demo weights {BUNDLED_WEIGHTS.name}, {w.mode} mode)"
    rows = [
        ("weights", where),
        ("mode", w.mode),
        ("model_type", str(cfg.get("model_type"))),
        ("preset", preset),
        ("architecture", ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(arch.items()))),
        ("sequences", ", ".join(w.sequences)),
        ("label scheme", scheme if isinstance(scheme, str) else scheme.get("name", "custom")),
        ("normalization", json.dumps(cfg.get("normalization", {}), sort_keys=True)),
        ("atlas", atlas_row),
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


# ---------------------------------------------------------------------------------------------------- export-nnunet
def _register_export_nnunet(subparsers: argparse._SubParsersAction) -> None:

    add_parser(subparsers)


# ---------------------------------------------------------------------------------------------------- main
#: Sub-command registration functions, in the order ``samraug --help`` lists them.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _register_phantom,
    _register_synthesize,
    _register_export_nnunet,
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
    except (ValueError, OSError, ImportError) as err:  # OSError: FileNotFound, FileExists, Permission, ...
        print(f"samraug {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"samraug {args.command}: interrupted; no partial output was left under its final name", file=sys.stderr)
        return 130
