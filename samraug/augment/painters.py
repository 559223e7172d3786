"""Painters: what turns an edited label map into images. One small interface, usable alone or by name.

A painter takes the subject's images (``{sequence: (X, Y, Z) tensor}`` in the subject's own scale), the label map
before and after the edit (in ``scheme``), the brain mask and the affine, and returns new images (same keys, shapes
and dtypes) with a JSON-able record. Three painters:

* ``"samr"`` (:class:`SAMRPainter`): the SAMR generator, ``mode="whole"`` (every brain slice painted from the
  atlas, mapped to the subject's scale) or ``mode="local"`` (only a margin around the edited region, blended into
  the real images; :func:`samraug.local_synthesis.paint_local`). The default mode is the weights' ``config["mode"]``
  (absent: whole). In whole mode a subject off the atlas grid is painted only when declared in the atlas's space
  (``space="MNI152"``): resampled to the atlas grid, painted and resampled back (:mod:`samraug.atlas_space`).
* ``"copy-paste"`` (:class:`CopyPastePainter`, CarveMix-style): the donor's intensities are moved into the voxels
  the edit made lesion, per sequence, after matching the donor's normal brain to the subject's (mean and standard
  deviation of the non-lesion brain).
* ``"labels-to-image"`` (:class:`LabelsToImagePainter`): TorchIO's ``RandomLabelsToImage`` + ``RandomBlur`` on the
  edited labels, in the subject's scale, used only in (a dilation of) the voxels the edit changed, so the rest of
  the anatomy stays real.

``mode`` belongs to the SAMR painter: passing it with another painter is an error.

Example:
    >>> painter = get_painter("copy-paste")
    >>> painter.name
    'copy-paste'
    >>> get_painter("labels-to-image", mode="local")
    Traceback (most recent call last):
    ...
    ValueError: mode='local' belongs to the SAMR painter (painter='samr'); the 'labels-to-image' painter has no mode
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torchio as tio
from scipy import ndimage

from samraug.atlas_space import check_space, from_atlas_grid, normalize_space, to_atlas_grid, weights_space
from samraug.augment.core import _make_pending
from samraug.augment.views import ItemView
from samraug.labels import LabelScheme
from samraug.local_synthesis import DEFAULT_MAX_REGION_MM, check_max_region_mm, paint_local
from samraug.region import REGION_SEEDS, check_mm
from samraug.seam import HEALTHY_MODES, SEAM_MODES
from samraug.synthesis import Synthesizer, get_synthesizer
from samraug.texture import NOISE_MODES

__all__ = [
    "LOCAL_SETTINGS",
    "PAINTERS",
    "CopyPastePainter",
    "Donor",
    "LabelsToImagePainter",
    "Painter",
    "SAMRPainter",
    "check_local_settings",
    "get_painter",
]


#: The local SAMR painter's settings (constructor arguments), as :meth:`SAMRPainter.local_settings` returns them and a
#: replay record (:class:`~samraug.transforms.SAMRSynthesizeFixed`'s ``painter``) rebuilds the painter from.
LOCAL_SETTINGS = ("margin_mm", "feather_mm", "noise", "seam", "healthy", "region", "max_region_mm")


def check_local_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Local SAMR painter settings (any subset of :data:`LOCAL_SETTINGS`) checked without the weights: the same
    values, lengths as floats, or a ``ValueError`` naming the setting and what it accepts. :class:`SAMRPainter` and
    a replay record (:class:`~samraug.transforms.SAMRSynthesizeFixed`'s ``painter``) check theirs here, so a bad
    value is refused when the painter or the transform is built, not when the first subject is painted.

    Example:
        >>> check_local_settings({"healthy": "mirror", "margin_mm": 4})
        {'healthy': 'mirror', 'margin_mm': 4.0}
        >>> check_local_settings({"healthy": "bogus"})
        Traceback (most recent call last):
        ...
        ValueError: healthy must be one of ('model', 'harmonic', 'spline', 'mirror'), got 'bogus'
    """
    if not isinstance(settings, Mapping):
        raise TypeError(f"local painter settings must be a mapping, got {settings!r}")
    unknown = sorted(set(settings) - set(LOCAL_SETTINGS))
    if unknown:
        raise ValueError(f"painter settings {unknown} are not local SAMR painter settings {LOCAL_SETTINGS}")
    choices = {"noise": NOISE_MODES, "seam": SEAM_MODES, "healthy": HEALTHY_MODES, "region": REGION_SEEDS}
    out = dict(settings)
    for name, value in settings.items():
        if name in ("margin_mm", "feather_mm"):
            out[name] = check_mm(value, name)
        elif name == "max_region_mm":
            out[name] = check_max_region_mm(value)
        elif value not in choices[name]:
            raise ValueError(f"{name} must be one of {choices[name]}, got {value!r}")
    return out


@dataclass
class Donor:
    """A donor subject for copy-paste: its images (``{sequence: (X, Y, Z)}``, on the subject's grid), its label map
    (in the same scheme) and its brain mask."""

    images: Mapping[str, torch.Tensor]
    label: np.ndarray
    brain: np.ndarray


class Painter(ABC):
    """Turns an edited label map into images (see the module docstring)."""

    name: ClassVar[str]

    @abstractmethod
    def paint(
        self,
        images: Mapping[str, torch.Tensor],
        label_before: np.ndarray,
        label_after: np.ndarray,
        brain: np.ndarray,
        affine: np.ndarray,
        scheme: LabelScheme,
        *,
        generator: torch.Generator | None = None,
        donor: Donor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """New images (same keys, shapes, dtypes as ``images``) and a JSON-able record."""


def _check_inputs(images: Mapping[str, torch.Tensor], label_after: np.ndarray, brain: np.ndarray) -> None:
    if not images:
        raise ValueError("images is empty; pass {sequence: (X, Y, Z) tensor}")
    for key, img in images.items():
        if tuple(img.shape) != tuple(label_after.shape):
            raise ValueError(f"image {key!r} has shape {tuple(img.shape)} but the label map {label_after.shape}")
    if tuple(brain.shape) != tuple(label_after.shape):
        raise ValueError(f"brain mask has shape {brain.shape} but the label map {label_after.shape}")


def _normal_stats(image: torch.Tensor, normal: np.ndarray, what: str) -> tuple[float, float]:
    values = image[torch.from_numpy(normal)].double()
    if values.numel() < 2:
        raise ValueError(f"{what}: fewer than 2 normal-brain voxels to match intensities on")
    return float(values.mean()), max(float(values.std()), 1e-6)


class SAMRPainter(Painter):
    """The SAMR generator (``mode="whole"`` or ``"local"``; default: the weights' ``config["mode"]``, else whole).

    Args:
        synthesizer: A :class:`~samraug.synthesis.Synthesizer` (cloned), weights (folder / hub id), or None for the
            bundled demo weights (:data:`samraug.hub.BUNDLED_WEIGHTS`: local mode).
        mode: ``"whole"`` or ``"local"``.
        device, dtype: For weights given by name.
        margin_mm, feather_mm: Local mode: margin around the edited region and blending width.
        noise: Local mode: ``"match"`` (default) tops the region's noise up to the real image's around it (drawn
            from the painting's ``generator``; :mod:`samraug.texture`), ``"none"`` keeps the model's painting as
            it is.
        seam: Local mode: ``"poisson"`` (default) corrects the painting so it continues the real image across the
            region's border (:mod:`samraug.seam`), ``"none"`` keeps it as painted.
        healthy: Local mode: what paints the region's voxels that are healthy after the edit: ``"model"`` (default,
            the generator), ``"harmonic"`` (classical 3D harmonic inpainting from the real brain around the
            region), ``"spline"`` (a thin-plate spline under tension, :func:`samraug.seam.spline_fill`, which also
            continues the border's slopes) or ``"mirror"`` (the spline guided by the other hemisphere's tissue at the
            mirrored place, :mod:`samraug.mirror_fill`); with any fill the generator paints only the lesion classes.
        region: Local mode: what seeds the repainted region before ``margin_mm``: ``"lesions"`` (default, the
            changed voxels plus the old and the new lesion) or ``"changed"`` (the changed voxels alone, so a lesion
            the edit kept, e.g. the real one beside an inserted lesion, ``EditPolicy(p_insert=...)``, stays real).
        space: Whole mode: the template space the subjects are registered to (e.g. ``"MNI152"``). A subject off
            the atlas grid is painted only when this equals the weights' atlas space
            (:func:`samraug.atlas_space.weights_space`): it is resampled to the atlas grid, painted and resampled
            back (:mod:`samraug.atlas_space`). None: subjects must sit on the atlas grid.
        max_region_mm: Local mode: a connected part of the region wider than this (mm, along any axis) leaves the
            sample unpainted (default 160: many lesions inserted at once can chain into one part that spans the
            brain; raise it to paint those too).

    Example:
        >>> from samraug.hub import BUNDLED_WHOLE_WEIGHTS  # the whole-image demo weights: MNI152, 2 mm
        >>> painter = SAMRPainter(BUNDLED_WHOLE_WEIGHTS, space="MNI152")  # doctest: +SKIP
        >>> out, record = painter.paint(images_1mm, label, edited, brain, affine_1mm, scheme)  # doctest: +SKIP
        >>> record["resampled"]["space"]  # doctest: +SKIP
        'MNI152'
    """

    name = "samr"

    def __init__(
        self,
        synthesizer: Any = None,
        *,
        mode: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        margin_mm: float = 8.0,
        feather_mm: float = 3.0,
        space: str | None = None,
        noise: str = "match",
        seam: str = "poisson",
        healthy: str = "model",
        region: str = "lesions",
        max_region_mm: float = DEFAULT_MAX_REGION_MM,
    ) -> None:
        if isinstance(synthesizer, Synthesizer):
            self.synthesizer = synthesizer.clone()
        else:
            self.synthesizer = get_synthesizer(synthesizer, device=device, dtype=dtype)
        trained = str(self.synthesizer.config.get("mode", "whole"))
        resolved = mode if mode is not None else trained
        if resolved not in ("whole", "local"):
            raise ValueError(f"mode must be 'whole' or 'local', got {resolved!r}")
        if resolved != trained:
            raise ValueError(
                f"mode={resolved!r} but the weights {self.synthesizer.weights or '(in memory)'} were trained for mode "
                f"{trained!r}; leave mode unset or pass weights trained for {resolved!r} mode"
            )
        self.mode = resolved
        settings = check_local_settings(
            {
                "margin_mm": margin_mm,
                "feather_mm": feather_mm,
                "noise": noise,
                "seam": seam,
                "healthy": healthy,
                "region": region,
                "max_region_mm": max_region_mm,
            }
        )
        self.margin_mm, self.feather_mm = settings["margin_mm"], settings["feather_mm"]
        self.noise, self.seam, self.healthy = settings["noise"], settings["seam"], settings["healthy"]
        self.region, self.max_region_mm = settings["region"], settings["max_region_mm"]
        self.space = normalize_space(space)

    def local_settings(self) -> dict[str, Any]:
        """The local painter's settings (:data:`LOCAL_SETTINGS`) as plain values: ``SAMRPainter(weights,
        mode="local", **settings)`` rebuilds a painter that paints the same voxels (local painting is deterministic).

        Example:
            >>> SAMRPainter(mode="local", healthy="mirror").local_settings()["healthy"]  # doctest: +SKIP
            'mirror'
        """
        if self.mode != "local":
            raise ValueError("local_settings() describes a local-mode painter; this one paints whole images")
        return {name: getattr(self, name) for name in LOCAL_SETTINGS}

    def paint(
        self,
        images: Mapping[str, torch.Tensor],
        label_before: np.ndarray,
        label_after: np.ndarray,
        brain: np.ndarray,
        affine: np.ndarray,
        scheme: LabelScheme,
        *,
        generator: torch.Generator | None = None,
        donor: Donor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        _check_inputs(images, label_after, brain)
        if self.mode == "local":
            out, record = paint_local(
                images,
                label_before,
                label_after,
                brain,
                affine,
                scheme,
                self.synthesizer,
                margin_mm=self.margin_mm,
                feather_mm=self.feather_mm,
                noise=self.noise,
                generator=generator,
                seam=self.seam,
                healthy=self.healthy,
                region=self.region,
                max_region_mm=self.max_region_mm,
            )
            return out, {"painter": self.name, "mode": "local", **record}
        synth = self.synthesizer
        try:
            synth.atlas.check_grid(label_after.shape, affine, "subject")
        except ValueError as off_grid:
            try:
                space = check_space(self.space, weights_space(synth.config), "subject")
            except ValueError as e:
                raise ValueError(f"{e} ({off_grid})") from None
            on = to_atlas_grid(images, label_before, label_after, brain, affine, synth.atlas.shape, synth.atlas.affine)
            painted, record = self._paint_whole(
                on.images, on.label_before, on.label_after, on.brain, on.atlas_affine, scheme
            )
            out = from_atlas_grid(painted, images, on, brain)
            resampled = {"space": space, "shape": list(on.shape), "atlas_shape": list(synth.atlas.shape)}
            return out, record | {"resampled": resampled}
        return self._paint_whole(images, label_before, label_after, brain, affine, scheme)

    def _paint_whole(
        self,
        images: Mapping[str, torch.Tensor],
        label_before: np.ndarray,
        label_after: np.ndarray,
        brain: np.ndarray,
        affine: np.ndarray,
        scheme: LabelScheme,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Whole-image painting of a subject on the atlas grid."""
        synth = self.synthesizer
        sequences = synth.sequences
        unknown = sorted(set(images) - set(sequences))
        if unknown:
            raise ValueError(f"images {unknown} are not made by this model (it makes {list(sequences)})")
        view_images = {sequences.index(k): (k, None, v) for k, v in images.items()}
        item = dict(images)
        view = ItemView(np.asarray(label_before), np.asarray(brain, dtype=bool), view_images, np.asarray(affine))
        pending = _make_pending(item, view, np.asarray(label_after), scheme, intensity="match", synth=synth)
        out = pending.synthesize(synth)
        return {k: out[k].to(images[k].dtype) for k in images}, {"painter": self.name, "mode": "whole"}


class CopyPastePainter(Painter):
    """CarveMix-style: the donor's intensities fill the voxels the edit made lesion (see the module docstring)."""

    name = "copy-paste"

    def paint(
        self,
        images: Mapping[str, torch.Tensor],
        label_before: np.ndarray,
        label_after: np.ndarray,
        brain: np.ndarray,
        affine: np.ndarray,
        scheme: LabelScheme,
        *,
        generator: torch.Generator | None = None,
        donor: Donor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        _check_inputs(images, label_after, brain)
        if donor is None:
            raise ValueError("the copy-paste painter needs a donor: pass donor=Donor(images, label, brain)")
        missing = sorted(set(images) - set(donor.images))
        if missing:
            raise ValueError(f"the donor has no image {missing}; it must hold every sequence of the subject")
        if tuple(donor.label.shape) != tuple(label_after.shape):
            raise ValueError(f"donor label map {donor.label.shape} is not on the subject's grid {label_after.shape}")
        before, after = np.asarray(label_before), np.asarray(label_after)
        region = (after != before) & (after != 0)
        from_donor = region & (np.asarray(donor.label) != 0)
        normal = np.asarray(brain, dtype=bool) & (before == 0)
        donor_normal = np.asarray(donor.brain, dtype=bool) & (np.asarray(donor.label) == 0)
        out: dict[str, torch.Tensor] = {}
        mask = torch.from_numpy(from_donor)
        for key, img in images.items():
            mu, sd = _normal_stats(img, normal, f"subject image {key!r}")
            dmu, dsd = _normal_stats(donor.images[key], donor_normal, f"donor image {key!r}")
            matched = (donor.images[key].double() - dmu) / dsd * sd + mu
            out[key] = torch.where(mask, matched.to(img.dtype), img)
        record = {
            "painter": self.name,
            "pasted_voxels": int(from_donor.sum()),
            "unpainted_voxels": int((region & ~from_donor).sum()),  # lesion where the donor has none: left real
        }
        return out, record


class LabelsToImagePainter(Painter):
    """TorchIO ``RandomLabelsToImage`` + ``RandomBlur`` on the edited labels, used only near the edit.

    Args:
        dilation_mm: How far around the changed voxels the generated image replaces the real one.
        blur_std: ``RandomBlur`` standard deviation range (mm).
    """

    name = "labels-to-image"

    def __init__(self, *, dilation_mm: float = 2.0, blur_std: tuple[float, float] = (0.5, 1.0)) -> None:
        if dilation_mm < 0:
            raise ValueError(f"dilation_mm must be >= 0, got {dilation_mm}")
        self.dilation_mm = float(dilation_mm)
        self.blur_std = (float(blur_std[0]), float(blur_std[1]))

    def paint(
        self,
        images: Mapping[str, torch.Tensor],
        label_before: np.ndarray,
        label_after: np.ndarray,
        brain: np.ndarray,
        affine: np.ndarray,
        scheme: LabelScheme,
        *,
        generator: torch.Generator | None = None,
        donor: Donor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        _check_inputs(images, label_after, brain)
        before, after = np.asarray(label_before), np.asarray(label_after)
        brain_b = np.asarray(brain, dtype=bool)
        changed = after != before
        spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))
        if self.dilation_mm > 0 and changed.any():
            dist = ndimage.distance_transform_edt(~changed, sampling=spacing)
            region = (dist <= self.dilation_mm) & brain_b
        else:
            region = changed & brain_b
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        # classes: 0 outside the brain, 1 normal brain, 2.. one per label value of the edited map
        values = sorted(int(v) for v in np.unique(after) if v != 0)
        classes = np.where(brain_b, 1, 0).astype(np.int64)
        for k, v in enumerate(values):
            classes[after == v] = k + 2
        normal = brain_b & (before == 0)
        region_t = torch.from_numpy(region)
        out: dict[str, torch.Tensor] = {}
        for i, (key, img) in enumerate(images.items()):
            torch.manual_seed(seed + i)  # TorchIO draws from torch's global generator
            subject = tio.Subject(label=tio.LabelMap(tensor=torch.from_numpy(classes)[None], affine=affine))
            made = tio.Compose(
                [
                    tio.RandomLabelsToImage(label_key="label", image_key="image", ignore_background=False),
                    tio.RandomBlur(std=self.blur_std),
                ]
            )(subject)["image"].data[0]
            mu, sd = _normal_stats(img, normal, f"image {key!r}")
            inside = torch.from_numpy(normal)
            gmu, gsd = float(made[inside].double().mean()), max(float(made[inside].double().std()), 1e-6)
            matched = ((made.double() - gmu) / gsd * sd + mu).to(img.dtype)
            out[key] = torch.where(region_t, matched, img)
        return out, {"painter": self.name, "seed": seed, "painted_voxels": int(region.sum())}


PAINTERS: Mapping[str, type[Painter]] = {
    "samr": SAMRPainter,
    "copy-paste": CopyPastePainter,
    "labels-to-image": LabelsToImagePainter,
}


def get_painter(painter: str | Painter = "samr", *, mode: str | None = None, **kwargs: Any) -> Painter:
    """A painter by name (``"samr"``, ``"copy-paste"``, ``"labels-to-image"``) or as given; ``mode``: SAMR only."""
    if isinstance(painter, Painter):
        if mode is not None and not isinstance(painter, SAMRPainter):
            raise ValueError(f"mode={mode!r} belongs to the SAMR painter; the {painter.name!r} painter has no mode")
        return painter
    if painter not in PAINTERS:
        raise ValueError(f"unknown painter {painter!r}; use one of {sorted(PAINTERS)} or a Painter instance")
    if painter == "samr":
        return SAMRPainter(mode=mode, **kwargs)
    if mode is not None:
        raise ValueError(
            f"mode={mode!r} belongs to the SAMR painter (painter='samr'); the {painter!r} painter has no mode"
        )
    return PAINTERS[painter](**kwargs)
