"""Atlas spaces: which template space a whole-image generator's atlas lives in, and painting subjects of that space
on another grid (1 mm, cropped) by resampling them to the atlas grid and back.

A whole-image SAMR generator paints from its atlas, so a subject must be *registered* to the atlas's template
space. An affine header cannot tell that (MNI152 and SRI24 are both RAS millimetres), so the space is never read
from the subject: the weights' config names the atlas's space (``"atlas_space"``, e.g. ``"MNI152"``) and the user
declares the subject's (``space="MNI152"`` on the painter, transform or dataset). When both agree, a subject on
another grid of that space is resampled to the atlas grid (:func:`samraug.grid.resample`: images trilinear, labels
and brain mask nearest), painted there, and the painted brain is resampled back; the voxels replaced are the
subject's brain voxels that the atlas-grid brain covers, the others keep their real values. A subject of unknown
or another space is refused with an error naming the ways out (local mode, or registration to the atlas).

Legacy weights folders without ``atlas_space`` are of unknown space (the bundled whole-image demo weights,
:data:`samraug.hub.BUNDLED_WHOLE_WEIGHTS`, name ``MNI152``: the digital phantom on MNI152 at 2 mm).

Example:
    >>> weights_space({"atlas_space": "mni152"})
    'MNI152'
    >>> check_space("SRI24", "MNI152", "subject 'a'")
    Traceback (most recent call last):
    ...
    ValueError: subject 'a' is declared in space 'SRI24' but the weights' atlas is in 'MNI152'; use local mode...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from samraug.grid import check_affine, resample

__all__ = [
    "OnAtlasGrid",
    "check_space",
    "from_atlas_grid",
    "normalize_space",
    "to_atlas_grid",
    "weights_space",
]


_WAY_OUT = (
    "use local mode (weights trained with mode='local' paint inside the subject's own anatomy on any grid), or "
    "register the subject to the atlas (e.g. ANTs/FSL to the {space} template) and pass space={space!r}"
)


def normalize_space(space: str | None) -> str | None:
    """Canonical spelling of a space name (upper case, no surrounding blanks); None stays None.

    Example:
        >>> normalize_space(" mni152 ")
        'MNI152'
    """
    if space is None:
        return None
    if not isinstance(space, str) or not space.strip():
        raise ValueError(f"space must be a non-empty string such as 'MNI152' or 'SRI24', got {space!r}")
    return space.strip().upper()


def weights_space(config: Mapping[str, Any]) -> str | None:
    """The atlas space of a weights config (``config["atlas_space"]``, normalised); a legacy config without the key,
    or local-mode weights (no atlas), are of unknown space (None).

    Example:
        >>> weights_space({}) is None
        True
        >>> from samraug.hub import BUNDLED_WHOLE_WEIGHTS, read_config
        >>> weights_space(read_config(BUNDLED_WHOLE_WEIGHTS))
        'MNI152'
    """
    if config.get("atlas_space") is not None:
        return normalize_space(str(config["atlas_space"]))
    return None


def check_space(declared: str | None, atlas_space: str | None, what: str = "subject") -> str:
    """Raise ``ValueError`` unless the subject's declared space equals the atlas's; returns the space.

    Called only for a subject that is *not* on the atlas grid (on the grid, the whole-image path needs no space).
    """
    declared, atlas_space = normalize_space(declared), normalize_space(atlas_space)
    if atlas_space is None:
        raise ValueError(
            f"{what} is not on the atlas grid and the weights do not name their atlas's space (config "
            f"'atlas_space'), so it cannot be resampled onto it; save the weights with atlas_space=..., "
            + _WAY_OUT.format(space="atlas's")
        )
    if declared is None:
        raise ValueError(
            f"{what} is not on the atlas grid and its space is unknown (headers cannot tell template spaces "
            f"apart); if it is registered to {atlas_space}, pass space={atlas_space!r}; otherwise "
            + _WAY_OUT.format(space=atlas_space)
        )
    if declared != atlas_space:
        raise ValueError(
            f"{what} is declared in space {declared!r} but the weights' atlas is in {atlas_space!r}; "
            + _WAY_OUT.format(space=atlas_space)
        )
    return declared


@dataclass
class OnAtlasGrid:
    """A subject resampled onto the atlas grid, and what is needed to map a painting back.

    Attributes:
        images: ``{key: (X, Y, Z) tensor}`` on the atlas grid (trilinear; outside the subject: its background).
        label_before, label_after: Label maps on the atlas grid (nearest).
        brain: Brain mask on the atlas grid (nearest).
        shape, affine: The subject's own grid.
        atlas_affine: The atlas grid's affine.
    """

    images: dict[str, torch.Tensor]
    label_before: np.ndarray
    label_after: np.ndarray
    brain: np.ndarray
    shape: tuple[int, int, int]
    affine: np.ndarray
    atlas_affine: np.ndarray


def _background(image: torch.Tensor, brain: np.ndarray) -> float:
    outside = image[torch.from_numpy(~brain)]
    return float(outside.float().median()) if outside.numel() else float(image.float().min())


def to_atlas_grid(
    images: Mapping[str, torch.Tensor],
    label_before: np.ndarray,
    label_after: np.ndarray,
    brain: np.ndarray,
    affine: np.ndarray,
    atlas_shape: tuple[int, int, int],
    atlas_affine: np.ndarray,
) -> OnAtlasGrid:
    """Resample a subject (images trilinear, labels and brain nearest) onto the atlas grid.

    Example:
        >>> img = {"t1n": torch.arange(8.0).reshape(2, 2, 2)}
        >>> lab = np.zeros((2, 2, 2), np.uint8); brain = np.ones((2, 2, 2), bool)
        >>> on = to_atlas_grid(img, lab, lab, brain, np.eye(4), (2, 2, 2), np.eye(4))
        >>> torch.equal(on.images["t1n"], img["t1n"])
        True
    """
    affine = check_affine(np.asarray(affine, dtype=np.float64), "subject affine")
    atlas_affine = check_affine(np.asarray(atlas_affine, dtype=np.float64), "atlas affine")
    shape = tuple(int(s) for s in np.asarray(label_after).shape)
    brain_b = np.asarray(brain, dtype=bool)
    out_images: dict[str, torch.Tensor] = {}
    for key, img in images.items():
        arr = img.detach().cpu().float().numpy()
        on = resample(arr, affine, atlas_shape, atlas_affine, order=1, cval=_background(img, brain_b))
        out_images[key] = torch.from_numpy(on)
    lb = resample(np.asarray(label_before), affine, atlas_shape, atlas_affine, order=0, cval=0)
    la = resample(np.asarray(label_after), affine, atlas_shape, atlas_affine, order=0, cval=0)
    br = resample(brain_b, affine, atlas_shape, atlas_affine, order=0, cval=0)
    if not br.any():
        raise ValueError(
            "the subject's brain does not overlap the atlas grid after resampling: it is not in the atlas's space "
            "(check the declared space and the affine)"
        )
    return OnAtlasGrid(out_images, lb, la, br, shape, affine, atlas_affine)  # type: ignore[arg-type]


def from_atlas_grid(
    painted: Mapping[str, torch.Tensor], original: Mapping[str, torch.Tensor], on: OnAtlasGrid, brain: np.ndarray
) -> dict[str, torch.Tensor]:
    """Map images painted on the atlas grid back onto the subject's grid: the subject's brain voxels covered by the
    atlas-grid brain take the (trilinearly resampled) painted values, every other voxel keeps its real value.
    Shapes and dtypes are those of ``original``."""
    covered = resample(on.brain, on.atlas_affine, on.shape, on.affine, order=0, cval=0)
    replace = torch.from_numpy(covered & np.asarray(brain, dtype=bool))
    out: dict[str, torch.Tensor] = {}
    for key, img in original.items():
        back = resample(painted[key].detach().cpu().float().numpy(), on.atlas_affine, on.shape, on.affine, order=1)
        out[key] = torch.where(replace, torch.from_numpy(back).to(img.dtype), img)
    return out
