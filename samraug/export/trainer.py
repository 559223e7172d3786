"""``nnUNetTrainerSAMR``: nnU-Net v2's trainer with SAMR-synthesized cases mixed into its training batches.

Each training case nnU-Net's data loader reads is, with probability ``ratio``, replaced by a synthetic version
made on the fly through :class:`~samraug.transforms.SAMRSynthesize`: the preprocessed case is put back on its
original grid (un-cropped and un-transposed with nnU-Net's own case properties), its consecutive labels go back to
the export's label scheme, the lesion mask is edited (lesion swaps take donors from this fold's *training* cases
only) and every channel is painted in the case's (normalised) intensity scale; the result is cropped again, its
foreground locations recomputed, and nnU-Net's own augmentation and loss take it from there. Validation cases are
never touched. With whole-image weights the subjects must be on the atlas grid of the weights (as in a
:func:`~samraug.export.export_nnunet` dataset), and configurations that resample (a target spacing other than the
data's) keep their cases real, with a warning: there is no exact way back to the original grid. Local-mode weights,
the default, paint on any grid: a resampled case is painted where it lies, on its own cropped and resampled grid
(:func:`case_affine`), and needs no way back.

Settings come from the environment, because nnU-Net builds trainers from fixed arguments:

- ``SAMRAUG_NNUNET_RATIO``: probability that a training case is synthetic (default 0.5);
- ``SAMRAUG_NNUNET_WEIGHTS``: SAMR weights (folder or ``org/name[@rev]``; default: the bundled local-mode demo weights);
- ``SAMRAUG_NNUNET_DONORS``: donor masks for lesion swaps (default 4; 0: no swaps);
- ``SAMRAUG_NNUNET_SCHEME``: label scheme (default: ``dataset.json``'s ``samraug.label_scheme``);
- ``SAMRAUG_NNUNET_DEVICE``: where the generator runs (default ``cpu``, inside nnU-Net's augmentation workers;
  ``cuda`` needs ``nnUNet_n_proc_DA=0`` so that cases are loaded in the main process).

Local painting repaints only the edited region: about 1.4 s per edit of the README throughput benchmark's
240x240x155 subject with the bundled local weights on a 2-core CPU. Whole-image weights paint every axial slice
with brain (86 s for such a case with the tiny whole-image model), so with them on CPU workers a ratio well below
1 and many workers, or a GPU generator, are needed to keep nnU-Net's GPU busy.

Subclass it to set :attr:`nnUNetTrainerSAMR.samr_ratio` and friends instead. nnU-Net finds trainers by name inside
its own package ``nnunetv2.training.nnUNetTrainer``; :func:`install_trainer` (``samraug export-nnunet
--install-trainer``) writes a two-line module there that imports this class, after which

    nnUNetv2_train 501 3d_fullres 0 -tr nnUNetTrainerSAMR

trains with it.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchio as tio

from ..synthesis import get_synthesizer
from ..transforms import SAMRSynthesize
from .labels import NnunetLabels
from .nnunet import _sequence_map

try:  # nnunetv2 is an optional dependency (pip install "samraug[nnunet]")
    import nnunetv2.training.nnUNetTrainer as trainer_package
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"samraug.export.trainer needs nnU-Net v2 ({e}); install it with: pip install 'samraug[nnunet]'"
    ) from None

__all__ = [
    "SAMRCaseSynthesizer",
    "case_affine",
    "case_to_grid",
    "grid_to_case",
    "install_trainer",
    "nnUNetTrainerSAMR",
    "training_donors",
]

SHIM_NAME = "nnUNetTrainerSAMR.py"
SHIM = (
    '"""Written by samraug (samraug export-nnunet --install-trainer): makes nnUNetTrainerSAMR discoverable."""\n\n'
    "from samraug.export.trainer import nnUNetTrainerSAMR  # noqa: F401\n"
)


# ---------------------------------------------------------------------------------------------- geometry
def _numpy(x: Any) -> np.ndarray:
    """A loaded nnU-Net array (numpy, memory map or blosc2 NDArray) as a numpy array."""
    return x if isinstance(x, np.ndarray) else np.asarray(x[...])


def _affine(properties: Mapping[str, Any]) -> np.ndarray:
    """The original file's voxel-to-world affine (nibabel convention, RAS) from nnU-Net's case properties."""
    if "sitk_stuff" in properties:
        s = properties["sitk_stuff"]
        flip = np.diag([-1.0, -1.0, 1.0])  # ITK's LPS -> RAS
        direction = np.asarray(s["direction"], dtype=np.float64).reshape(3, 3)
        aff = np.eye(4)
        aff[:3, :3] = flip @ direction @ np.diag(np.asarray(s["spacing"], dtype=np.float64))
        aff[:3, 3] = flip @ np.asarray(s["origin"], dtype=np.float64)
        return aff
    if "nibabel_stuff" in properties:
        n = properties["nibabel_stuff"]
        return np.asarray(n.get("reoriented_affine", n["original_affine"]), dtype=np.float64)
    raise ValueError(f"case properties hold no geometry (keys {sorted(properties)}); use SimpleITKIO or NibabelIO")


def _resampled(properties: Mapping[str, Any], shape: Any) -> bool:
    """Whether nnU-Net resampled a case whose arrays have ``shape`` (without the channel axis) after cropping."""
    before = tuple(int(s) for s in properties["shape_after_cropping_and_before_resampling"])
    return tuple(int(s) for s in shape) != before


def case_to_grid(
    data: np.ndarray, seg: np.ndarray, properties: Mapping[str, Any], transpose_forward: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A preprocessed nnU-Net case back on its original voxel grid, in nibabel's ``(X, Y, Z)`` axis order.

    Returns ``(data (C, X, Y, Z), seg (X, Y, Z) with -1 outside the non-zero mask, affine)``. Raises
    ``ValueError`` when the configuration resampled the case (then there is no exact way back).
    """
    if _resampled(properties, data.shape[1:]):
        before = tuple(int(s) for s in properties["shape_after_cropping_and_before_resampling"])
        raise ValueError(
            f"the case was resampled ({before} -> {tuple(data.shape[1:])}): there is no exact way back to its "
            "original grid, which whole-image SAMR weights paint on; local-mode weights paint it on its own grid "
            "(case_affine)"
        )
    full_shape = tuple(int(s) for s in properties["shape_before_cropping"])
    box = tuple(slice(int(a), int(b)) for a, b in properties["bbox_used_for_cropping"])
    full = np.zeros((data.shape[0], *full_shape), dtype=np.float32)
    full[(slice(None), *box)] = data
    full_seg = np.full(full_shape, -1, dtype=np.int16)
    full_seg[box] = np.asarray(seg)[0]
    backward = [int(i) for i in np.argsort(transpose_forward)]
    full = full.transpose([0, *[i + 1 for i in backward]])
    full_seg = full_seg.transpose(backward)
    # nnU-Net's readers give (Z, Y, X) arrays (SimpleITK's order; NibabelIO transposes to match)
    return np.ascontiguousarray(full.transpose(0, 3, 2, 1)), np.ascontiguousarray(full_seg.T), _affine(properties)


def case_affine(properties: Mapping[str, Any], transpose_forward: list[int], shape: Any) -> np.ndarray:
    """The voxel-to-world affine (nibabel convention, RAS) of a preprocessed nnU-Net case's own arrays.

    The arrays' axes are the original file's, transposed by the plans' ``transpose_forward``. They are cropped to
    ``bbox_used_for_cropping`` and resampled from ``shape_after_cropping_and_before_resampling`` to ``shape`` (the
    case's ``data.shape[1:]``). The resampling keeps the voxel edges: along each axis, voxel ``i`` of the resampled
    case sits at ``(i + 0.5) * before / shape - 0.5`` of the cropped one, as nnU-Net's resampling (and
    ``skimage.transform.resize``) places it. Local-mode weights paint a resampled case on this grid.

    Example:
        >>> props = {"sitk_stuff": {"spacing": (1.0, 1.0, 2.0), "direction": np.eye(3).ravel(), "origin": (0, 0, 0)},
        ...          "bbox_used_for_cropping": [[2, 10], [0, 8], [1, 9]],
        ...          "shape_after_cropping_and_before_resampling": (8, 8, 8)}
        >>> a = case_affine(props, [0, 1, 2], (4, 8, 8))   # the first (reader z) axis resampled from 8 to 4 voxels
        >>> (a @ [0, 0, 0, 1] + 0.0)[:3].tolist()  # z voxel 0: 0.5 of the cropped axis, + 2 cropped off, x 2 mm
        [-1.0, 0.0, 5.0]
    """
    needed = ("shape_after_cropping_and_before_resampling", "bbox_used_for_cropping")
    missing = [key for key in needed if key not in properties]
    if missing:
        raise ValueError(
            f"case properties lack {missing}: pass the properties nnU-Net's preprocessing saved with the case"
        )
    before = np.asarray(properties["shape_after_cropping_and_before_resampling"], dtype=np.float64)
    if np.ndim(shape) != 1 or len(shape) != len(before) or len(transpose_forward) != len(before):
        raise ValueError(
            f"shape {tuple(np.atleast_1d(shape))} and transpose_forward {list(transpose_forward)} must have one entry "
            f"per axis of the case ({len(before)}): pass data.shape[1:] (without the channel axis) and the plans' "
            "transpose_forward"
        )
    scale = before / np.asarray(shape, dtype=np.float64)
    start = np.array([float(lo) for lo, _ in properties["bbox_used_for_cropping"]])
    to_cropped = np.eye(4)  # case voxel -> voxel of the transposed, uncropped array
    to_cropped[:3, :3] = np.diag(scale)
    to_cropped[:3, 3] = (scale - 1.0) / 2.0 + start
    untranspose = np.eye(4)  # axis k of the transposed array is axis transpose_forward[k] of the reader's
    untranspose[:3, :3] = 0.0
    for k, axis in enumerate(transpose_forward):
        untranspose[int(axis), k] = 1.0
    to_xyz = np.eye(4)  # the reader's (Z, Y, X) order -> nibabel's (X, Y, Z)
    to_xyz[:3, :3] = np.eye(3)[::-1]
    return _affine(properties) @ to_xyz @ untranspose @ to_cropped


def grid_to_case(
    data: np.ndarray, seg: np.ndarray, properties: Mapping[str, Any], transpose_forward: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`case_to_grid`: ``(data (C, ...), seg (1, ...))`` cropped like the preprocessed case."""
    d = np.asarray(data).transpose(0, 3, 2, 1).transpose([0, *[i + 1 for i in transpose_forward]])
    s = np.asarray(seg).T.transpose(transpose_forward)
    box = tuple(slice(int(a), int(b)) for a, b in properties["bbox_used_for_cropping"])
    return np.ascontiguousarray(d[(slice(None), *box)], dtype=np.float32), np.ascontiguousarray(s[box][None])


# ---------------------------------------------------------------------------------------------- synthesis
class SAMRCaseSynthesizer:
    """Turns nnU-Net training cases into synthetic ones through :class:`~samraug.transforms.SAMRSynthesize`.

    Args:
        channel_names: ``dataset.json``'s ``channel_names`` (the model's sequences are matched by these names,
            or BraTS 2021's ``t1, t1ce, t2, flair``).
        scheme: The label scheme of the dataset (consecutive labels map back to it).
        transpose_forward: The plans' ``transpose_forward``.
        label_manager: nnU-Net's label manager (for the foreground locations of edited cases).
        weights: SAMR weights: a folder, ``org/name[@rev]`` or a :class:`~samraug.synthesis.Synthesizer` (None:
            the bundled demo weights, local mode).
        donors: Donor label maps in the scheme (``(X, Y, Z)``), or None.
        device: Where the generator runs (``"cpu"`` inside nnU-Net's augmentation workers).

    Example:
        >>> synth = SAMRCaseSynthesizer({"0": "t1n"}, "brats2021", [0, 1, 2], manager)  # doctest: +SKIP
        >>> data, seg, props = synth(data, seg, props, seed=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        channel_names: Mapping[str, str],
        scheme: str,
        transpose_forward: list[int],
        label_manager: Any,
        *,
        weights: Any = None,
        donors: list[np.ndarray] | None = None,
        device: str = "cpu",
    ) -> None:
        self.channels = [channel_names[str(i)] for i in range(len(channel_names))]
        self.labels = NnunetLabels.from_scheme(scheme, region_based=False)
        self.transpose_forward = [int(i) for i in transpose_forward]
        self.label_manager = label_manager
        synth = get_synthesizer(weights, device=device)
        self.local = synth.config.get("mode", "whole") == "local"
        mapping = _sequence_map(self.channels, synth.sequences, None)
        self.transform = SAMRSynthesize(
            ratio=1.0, weights=synth, scheme=scheme, sequence_map=mapping, brain_key="brain", donors=donors
        )

    def __call__(
        self, data: np.ndarray, seg: np.ndarray, properties: Mapping[str, Any], *, seed: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        data, seg = _numpy(data), _numpy(seg)
        if self.local and _resampled(properties, data.shape[1:]):  # painted where it lies (local: any grid)
            affine = case_affine(properties, self.transpose_forward, data.shape[1:])
            images, edited = self._paint(data, seg[0], affine, seed)
            new_data, new_seg = images, edited[None]
        else:  # on the original grid (whole-image weights: the atlas grid), and back
            full, full_seg, affine = case_to_grid(data, seg, properties, self.transpose_forward)
            images, edited = self._paint(full, full_seg, affine, seed)
            new_data, new_seg = grid_to_case(images, edited, properties, self.transpose_forward)
        new_seg = new_seg.astype(np.int8 if new_seg.max() <= 127 else np.int16)
        props = dict(properties)
        props["class_locations"] = self._class_locations(new_seg, seed)
        return new_data, new_seg, props

    def _paint(self, data: np.ndarray, seg: np.ndarray, affine: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``data`` ``(C, X, Y, Z)`` and ``seg`` (consecutive labels, -1 outside the non-zero mask) on the grid of
        ``affine``, through the transform: ``(images (C, X, Y, Z) float32, edited labels int16, -1 outside)``."""
        brain = seg >= 0
        label = self.labels.to_scheme(np.where(brain, seg, 0))
        images = {
            c: tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(data[i][None])), affine=affine)
            for i, c in enumerate(self.channels)
        }
        subject = tio.Subject(
            **images,
            seg=tio.LabelMap(tensor=torch.from_numpy(label[None].astype(np.int64)), affine=affine),
            brain=tio.LabelMap(tensor=torch.from_numpy(brain[None].astype(np.uint8)), affine=affine),
        )
        state = torch.random.get_rng_state()
        torch.manual_seed(int(seed))
        try:
            out = self.transform(subject)
        finally:
            torch.random.set_rng_state(state)
        painted = np.stack([out[c].data[0].numpy() for c in self.channels]).astype(np.float32)
        edited = self.labels.to_consecutive(out["seg"].data[0].numpy()).astype(np.int16)
        edited[(edited == 0) & ~brain] = -1
        return painted, edited

    def _class_locations(self, seg: np.ndarray, seed: int) -> dict:

        lm = self.label_manager
        collect = list(lm.foreground_regions if lm.has_regions else lm.foreground_labels)
        return DefaultPreprocessor._sample_foreground_locations(seg, collect, seed=seed % (2**32))


def training_donors(
    dataset: Any, n: int, labels: NnunetLabels, transpose_forward: list[int], *, own_grid: bool, seed: int
) -> list[np.ndarray]:
    """Donor label maps (in the scheme) for lesion swaps: up to ``n`` cases of ``dataset`` (the fold's training
    cases; ``identifiers`` and nnU-Net's ``load_case``), drawn by ``seed``. A case's label map is put back on its
    original grid, ``(X, Y, Z)`` (:func:`case_to_grid`). A case nnU-Net resampled has no way back: it is left out,
    unless ``own_grid`` (local-mode weights, which paint such cases where they lie), which takes its label map as
    the case holds it, on its own grid (:func:`case_affine`'s, in the case's axis order). A donor of another shape
    than its recipient gives its lesion a random place.

    Example:
        >>> donors = training_donors(dataset_tr, 4, labels, [0, 1, 2], own_grid=True, seed=0)  # doctest: +SKIP
    """
    if n <= 0:
        return []
    keys = sorted(dataset.identifiers)
    chosen = np.random.default_rng(seed).choice(keys, size=min(int(n), len(keys)), replace=False)
    donors = []
    for key in chosen:
        data, seg, _, props = dataset.load_case(key)
        data, seg = _numpy(data), _numpy(seg)
        try:
            _, label, _ = case_to_grid(data, seg, props, transpose_forward)
        except ValueError:
            if not own_grid:
                continue
            label = seg[0]
        donors.append(labels.to_scheme(np.where(label >= 0, label, 0)))
    return donors


class _SAMRDataset:
    """nnU-Net dataset wrapper: ``load_case`` returns a synthetic version of the case with probability ``ratio``."""

    def __init__(self, dataset: Any, make: Any, ratio: float, seed: int) -> None:
        self._dataset = dataset
        self._make = make
        self.ratio = float(ratio)
        self._rng = np.random.default_rng([seed, os.getpid()])
        self._pid = os.getpid()
        self._seed = seed
        self.n_synthetic = 0
        self.n_real = 0
        self.n_fallback = 0

    def __getattr__(self, name: str) -> Any:  # identifiers, source_folder, ...
        return getattr(self._dataset, name)

    def __getitem__(self, identifier: str) -> Any:
        return self.load_case(identifier)

    def _generator(self) -> np.random.Generator:
        if os.getpid() != self._pid:  # a forked augmentation worker: its own stream
            self._pid = os.getpid()
            self._rng = np.random.default_rng([self._seed, self._pid])
        return self._rng

    def load_case(self, identifier: str) -> tuple[Any, Any, Any, Any]:
        data, seg, seg_prev, properties = self._dataset.load_case(identifier)
        rng = self._generator()
        if seg_prev is not None or rng.random() >= self.ratio:
            self.n_real += 1
            return data, seg, seg_prev, properties
        try:
            data, seg, properties = self._make(data, seg, properties, seed=int(rng.integers(0, 2**63 - 1)))
        except ValueError as e:
            self.n_fallback += 1
            if self.n_fallback == 1:
                warnings.warn(f"nnUNetTrainerSAMR keeps case {identifier!r} real: {e}", UserWarning, stacklevel=2)
            return data, seg, seg_prev, properties
        self.n_synthetic += 1
        return data, seg, seg_prev, properties


class nnUNetTrainerSAMR(nnUNetTrainer):
    """nnU-Net v2's default trainer, with a fraction ``samr_ratio`` of its training cases SAMR-synthesized.

    Settings: the ``samr_*`` class attributes, overridden by the ``SAMRAUG_NNUNET_*`` environment variables (see
    the module docstring). After training, ``trainer.samr_dataset.n_synthetic`` counts the synthetic cases drawn
    in this process (augmentation workers keep their own counts).

    Example:
        $ samraug export-nnunet --install-trainer
        $ SAMRAUG_NNUNET_RATIO=0.5 nnUNetv2_train 501 3d_fullres 0 -tr nnUNetTrainerSAMR
    """

    samr_ratio: float = 0.5
    samr_weights: str | None = None
    samr_donors: int = 4
    samr_scheme: str | None = None
    samr_device: str = "cpu"

    def _samr_settings(self) -> dict[str, Any]:
        env = os.environ
        ratio = float(env.get("SAMRAUG_NNUNET_RATIO", self.samr_ratio))
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"SAMRAUG_NNUNET_RATIO must be in [0, 1], got {ratio}")
        scheme = env.get("SAMRAUG_NNUNET_SCHEME", self.samr_scheme)
        if scheme is None:
            scheme = (self.dataset_json.get("samraug") or {}).get("label_scheme")
        if scheme is None:
            raise ValueError(
                "nnUNetTrainerSAMR needs the label scheme: export with samraug export-nnunet (dataset.json records "
                "it) or set SAMRAUG_NNUNET_SCHEME=brats2021|brats2023|brats2024"
            )
        return {
            "ratio": ratio,
            "weights": env.get("SAMRAUG_NNUNET_WEIGHTS", self.samr_weights) or None,
            "donors": int(env.get("SAMRAUG_NNUNET_DONORS", self.samr_donors)),
            "scheme": scheme,
            "device": env.get("SAMRAUG_NNUNET_DEVICE", self.samr_device),
        }

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        settings = self._samr_settings()
        self.print_to_log_file(f"SAMR: {settings}")
        labels = NnunetLabels.from_scheme(settings["scheme"], region_based=False)
        synth = get_synthesizer(settings["weights"], device=settings["device"])
        # training cases only: no validation mask leaks into the synthetic cases
        donors = training_donors(
            dataset_tr,
            settings["donors"],
            labels,
            self._transpose(),
            own_grid=synth.config.get("mode", "whole") == "local",
            seed=self.fold if isinstance(self.fold, int) else 0,
        )
        make = SAMRCaseSynthesizer(
            self.dataset_json["channel_names"],
            settings["scheme"],
            self._transpose(),
            self.label_manager,
            weights=synth,
            donors=donors or None,
            device=settings["device"],
        )
        self.samr_dataset = _SAMRDataset(
            dataset_tr, make, settings["ratio"], seed=12345 + (self.fold if isinstance(self.fold, int) else 0)
        )
        return self.samr_dataset, dataset_val

    def _transpose(self) -> list[int]:
        return [int(i) for i in self.plans_manager.transpose_forward]


# ---------------------------------------------------------------------------------------------- discovery
def install_trainer(target: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> Path:
    """Write the module that makes ``-tr nnUNetTrainerSAMR`` work; returns its path.

    ``target`` defaults to the installed ``nnunetv2/training/nnUNetTrainer`` folder (where nnU-Net looks for
    trainers). An existing file with other content is kept unless ``overwrite``.

    Example:
        >>> install_trainer()  # doctest: +SKIP
        PosixPath('.../site-packages/nnunetv2/training/nnUNetTrainer/nnUNetTrainerSAMR.py')
    """
    if target is None:
        target = trainer_package.__path__[0]
    folder = Path(target)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the nnunetv2/training/nnUNetTrainer folder")
    path = folder / SHIM_NAME
    if path.exists() and path.read_text() != SHIM and not overwrite:
        raise FileExistsError(f"{path} exists with other content; pass overwrite=True (--overwrite) to replace it")
    fd, tmp = tempfile.mkstemp(prefix=f".{SHIM_NAME}.", suffix=".partial", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(SHIM)
    os.replace(tmp, path)
    return path
