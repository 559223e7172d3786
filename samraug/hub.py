"""Weights folders, the Hugging Face Hub, and the one resolver everything else uses.

A *weights folder* is exactly what :func:`push_to_hub` uploads:

- ``config.json``: the generator's architecture kwargs (``sequences`` included) plus ``model_type``,
  ``mode`` (``"whole"``, the default when absent, or ``"local"``), ``conditioning`` (``"native"``: the label
  scheme's own classes, or ``"samr"``: the paper's 5; absent in legacy folders, which mean ``"samr"``),
  ``label_scheme``, ``normalization``, ``atlas`` (geometry: spatial ``shape`` and 4x4 ``affine``; absent for
  generators without atlas), local generators' ``voxel_size`` and ``crop_size``, ``lineage`` (``--init-from``
  sources, newest first), ``samraug_version`` and ``format_version``. ``n_labels`` always equals the class count
  of ``label_scheme`` under ``conditioning``;
- ``model.safetensors``: the generator's tensors (float32, or float16 for compact storage; loading casts back);
- ``atlas.safetensors``: the :class:`samraug.atlas.Atlas` (whole-slice generators are useless without it; a
  local generator has none);
- ``README.md``: the model card.

:func:`resolve_weights` turns ``None`` (the bundled demo weights :data:`BUNDLED_WEIGHTS`, which are the local-mode
:data:`BUNDLED_LOCAL_WEIGHTS`; the whole-image demo weights are :data:`BUNDLED_WHOLE_WEIGHTS`), a local folder,
``"org/name"`` or ``"org/name@revision"`` into a local folder (through ``huggingface_hub.snapshot_download``, honouring
``HF_HUB_OFFLINE``); :func:`load_weights` loads it strictly. No pickle anywhere: safetensors and JSON only. The
low-level safetensors helpers live in :mod:`samraug.serialization` (re-exported here).

Example:
    >>> from samraug.hub import load_weights, save_weights
    >>> w = load_weights("my-org/samr-lite@v1.0", device="cuda")  # doctest: +SKIP
    >>> images = w.generator(mask, w.atlas.stack(z)[None].cuda())  # doctest: +SKIP
    >>> save_weights("/tmp/my-weights", generator, atlas, card={"data": "BraTS 2024 GLI"})  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samraug import __version__
from samraug.atlas import Atlas
from samraug.intensity import DEFAULT_NORMALIZATION, Normalization
from samraug.labels import CONDITIONINGS, SCHEMES, LabelScheme, get_scheme
from samraug.models.generator import GENERATOR_PRESETS, MODEL_TYPES, generator_class, generator_from_config
from samraug.seam import CONTEXT_FILLS
from samraug.serialization import (
    ATLAS_NAME,
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    LEGACY_CONDITIONING,
    META_KEYS,
    MODEL_NAME,
    WEIGHT_FILES,
    WeightsError,
    cast_safetensors,
    check_format_version,
    check_safetensors_header,
    corrupt_message,
    fsync_file,
    is_offline,
    load_state_dict_strict,
    read_safetensors,
    save_state_dict,
    sha256_file,
)

__all__ = [
    "ARCHITECTURE_LIMITS",
    "ATLAS_NAME",
    "BUNDLED_LOCAL_WEIGHTS",
    "BUNDLED_WEIGHTS",
    "BUNDLED_WHOLE_WEIGHTS",
    "CARD_NAME",
    "CHECKSUM_FILES",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "MAX_PARAMETERS",
    "META_KEYS",
    "MODEL_NAME",
    "RESERVED_SEQUENCE_NAMES",
    "WEIGHT_FILES",
    "LoadedWeights",
    "WeightsError",
    "check_config",
    "config_conditioning",
    "default_normalization",
    "is_offline",
    "load_state_dict_strict",
    "load_weights",
    "model_card",
    "push_to_hub",
    "read_config",
    "read_safetensors",
    "resolve_weights",
    "save_state_dict",
    "save_weights",
    "scheme_from_config",
    "scheme_to_config",
    "verify_checksums",
]

#: The bundled whole-image demo weights (mode ``"whole"``, with their MNI152 2 mm atlas; simulated phantom only).
#: Not the default: pass them explicitly, e.g. ``Synthesizer(BUNDLED_WHOLE_WEIGHTS)``.
BUNDLED_WHOLE_WEIGHTS = Path(__file__).resolve().parent / "weights" / "samr-tiny-phantom"
#: The bundled local-mode demo weights (mode ``"local"``, no atlas: they repaint the edited region inside the
#: subject's own images, on any grid; simulated phantom only).
BUNDLED_LOCAL_WEIGHTS = Path(__file__).resolve().parent / "weights" / "samr-tiny-local"
#: What ``weights=None`` means everywhere (:func:`resolve_weights`): the bundled local weights.
BUNDLED_WEIGHTS = BUNDLED_LOCAL_WEIGHTS
#: Files whose SHA-256 ``config.json`` records under ``"checksums"`` (a folder mixing two saves is refused).
CHECKSUM_FILES: tuple[str, ...] = (MODEL_NAME, ATLAS_NAME)
#: Names a sequence may not take: they are the label map and side files of every synthesized sample.
RESERVED_SEQUENCE_NAMES: tuple[str, ...] = ("seg", "label", "labels", "mask", "brain", "edit", "preview")
#: Upper bounds of the integer architecture keys of a config (larger values are refused before building).
ARCHITECTURE_LIMITS: dict[str, int] = {
    "base_channels": 4096,
    "max_channels": 8192,
    "n_down": 10,
    "depth": 10,
    "n_res_blocks": 64,
    "decoder_res_blocks": 16,
    "n_labels": 64,
    "atlas_slices": 15,
}
#: Most parameters a config may describe (a crafted config must not make us allocate terabytes).
MAX_PARAMETERS = 2_000_000_000
_MAX_SEQUENCES = 32
_SEQUENCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---------------------------------------------------------------------------------------------- config
def read_config(folder: str | Path) -> dict[str, Any]:
    """Read and check ``folder/config.json`` (``FileNotFoundError`` if missing, :class:`WeightsError` if
    invalid)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{CONFIG_NAME!r} not found in {Path(folder)}; a weights folder needs {list(WEIGHT_FILES[:3])} "
            "(write one with samraug.hub.save_weights)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not valid JSON ({e}); re-download it or re-export with save_weights") from e
    if not isinstance(config, dict):
        raise WeightsError(f"{path} must hold a JSON object, got {type(config).__name__}")
    check_config(config, source=str(path))
    return config


def check_config(config: Mapping[str, Any], source: str = "config") -> None:
    """Check a weights config: known ``model_type`` and ``mode``, architecture keys accepted by that generator,
    a known ``conditioning`` whose class count matches ``n_labels``, atlas geometry, and a format version this
    samraug can read. A config without ``conditioning`` is a legacy folder and means ``"samr"``; without ``mode``
    it is ``"whole"``.

    Example:
        >>> check_config({"model_type": "samr", "n_labels": 6, "label_scheme": "brats2024", "conditioning": "samr"})
        Traceback (most recent call last):
        ...
        samraug.serialization.WeightsError: config: n_labels 6 does not match ...
    """
    if "model_type" not in config:
        raise WeightsError(f"{source} has no 'model_type'; expected one of {list(MODEL_TYPES)}")
    mode = config.get("mode", "whole")
    try:
        cls = generator_class(config["model_type"], mode)
    except ValueError as e:
        raise WeightsError(f"{source}: {e}") from None
    check_format_version(config, source)
    allowed = set(cls.init_keys()) | set(META_KEYS)
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise WeightsError(
            f"{source} has unknown keys {unknown} for model_type {config['model_type']!r} (mode {mode!r}) "
            f"(allowed: {sorted(allowed)}); the weights were written by another tool or a newer samraug"
        )
    conditioning = config_conditioning(config)
    if conditioning not in CONDITIONINGS:
        raise WeightsError(f"{source}: unknown conditioning {conditioning!r}; expected one of {list(CONDITIONINGS)}")
    if "label_scheme" in config and "n_labels" in config:
        try:
            classes = scheme_from_config(config["label_scheme"]).classes(conditioning)
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{source}: invalid label_scheme {config['label_scheme']!r} ({e})") from None
        if int(config["n_labels"]) != len(classes):
            raise WeightsError(
                f"{source}: n_labels {config['n_labels']} does not match the {len(classes)} {conditioning!r} classes "
                f"{list(classes)} of label scheme {scheme_from_config(config['label_scheme']).name!r}; the config was "
                "edited or written by another tool (re-export with save_weights, passing the right conditioning)"
            )
    atlas = config.get("atlas")
    if atlas is not None:
        if not isinstance(atlas, Mapping) or "shape" not in atlas or "affine" not in atlas:
            raise WeightsError(f"{source}: 'atlas' must be an object with 'shape' and 'affine', got {atlas!r}")
        _check_atlas_geometry(atlas, source)
    if "sequences" in config:
        _check_sequence_names(config["sequences"], source)
    _check_architecture(config, cls, source)
    checksums = config.get("checksums")
    if checksums is not None:
        if not isinstance(checksums, Mapping) or not all(
            k in CHECKSUM_FILES and isinstance(v, str) and _HEX64.match(v) for k, v in checksums.items()
        ):
            raise WeightsError(
                f"{source}: 'checksums' must map {list(CHECKSUM_FILES)} to SHA-256 hex digests, got {checksums!r}"
            )
    lineage = config.get("lineage")
    if lineage is not None and (not isinstance(lineage, list) or not all(isinstance(x, str) for x in lineage)):
        raise WeightsError(f"{source}: 'lineage' must be a list of strings, got {lineage!r}")


def _check_sequence_names(sequences: Any, source: str) -> None:
    """Sequence names become file names: identifier-like, unique, not a label/side-file name, no separators."""
    if isinstance(sequences, str) or not isinstance(sequences, (list, tuple)):
        raise WeightsError(f"{source}: 'sequences' must be a list of names, got {sequences!r}")
    if not 1 <= len(sequences) <= _MAX_SEQUENCES:
        raise WeightsError(f"{source}: 'sequences' must hold 1 to {_MAX_SEQUENCES} names, got {len(sequences)}")
    for name in sequences:
        if not isinstance(name, str) or not _SEQUENCE_NAME.match(name):
            raise WeightsError(
                f"{source}: sequence name {name!r} is not allowed; names are letters, digits and '_' (starting with a "
                "letter, at most 32 characters), e.g. 't1n', 'flair' -- they become file names"
            )
        if name.lower() in RESERVED_SEQUENCE_NAMES:
            raise WeightsError(
                f"{source}: sequence name {name!r} collides with the label map / side files "
                f"{list(RESERVED_SEQUENCE_NAMES)} of a synthesized sample; rename the sequence"
            )
    lowered = [n.lower() for n in sequences]
    if len(set(lowered)) != len(lowered):
        raise WeightsError(f"{source}: sequence names {list(sequences)} are not unique (ignoring case)")


def _check_atlas_geometry(atlas: Mapping[str, Any], source: str) -> None:
    shape, affine = atlas["shape"], atlas["affine"]
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024 for v in shape)
    ):
        raise WeightsError(f"{source}: atlas 'shape' must be 3 integers in 1..1024, got {shape!r}")
    try:
        rows = [[float(v) for v in row] for row in affine]
    except (TypeError, ValueError):
        rows = []
    if len(rows) != 4 or any(len(r) != 4 for r in rows) or not all(math.isfinite(v) for r in rows for v in r):
        raise WeightsError(f"{source}: atlas 'affine' must be a finite 4x4 matrix, got {affine!r}")


def _check_architecture(config: Mapping[str, Any], cls: Any, source: str) -> None:
    """Bound the integer sizes, then count the parameters on the meta device (nothing allocated)."""
    for key in cls.init_keys():
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        limit = ARCHITECTURE_LIMITS.get(key, 4096)
        if not value <= limit:  # smaller values are checked by the generator's constructor
            raise WeightsError(f"{source}: {key}={value!r} is too large; samraug caps it at {limit}")
    try:
        with torch.device("meta"):
            model = generator_from_config(config)
    except (TypeError, ValueError, RuntimeError):
        return  # load_weights reports an invalid architecture with its own message
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise WeightsError(
            f"{source} describes a generator of {n:,} parameters, more than the {MAX_PARAMETERS:,} samraug loads; "
            "the config is corrupt or crafted (the 'paper' preset has about 320 M)"
        )


def config_conditioning(config: Mapping[str, Any]) -> str:
    """The conditioning a weights config declares (``"samr"`` for legacy folders without the key).

    Example:
        >>> config_conditioning({"model_type": "samr"}), config_conditioning({"conditioning": "native"})
        ('samr', 'native')
    """
    return str(config.get("conditioning", LEGACY_CONDITIONING))


# ---------------------------------------------------------------------------------------------- resolve
def _split_revision(spec: str, revision: str | None) -> tuple[str, str | None]:
    repo_id, sep, rev = spec.partition("@")
    if sep:
        if not rev:
            raise ValueError(
                f"weights {spec!r} ends with '@' but names no revision; use 'org/name@<branch|tag|commit>'"
            )
        if revision is not None and revision != rev:
            raise ValueError(f"weights {spec!r} pins revision {rev!r} but revision={revision!r} was also passed")
        return repo_id, rev
    return repo_id, revision


@functools.cache
def _warn_bundled(folder: Path) -> None:
    """Warn, once per process and folder, that ``folder`` (a bundled default) was trained on simulated data
    (``_warn_bundled.cache_clear()`` shows it again)."""
    warnings.warn(
        f"using the bundled demo weights {folder.name!r} ({folder}): they were trained on SIMULATED phantom data, "
        "not on real MRI; pass weights=... for real use",
        UserWarning,
        stacklevel=3,
    )


def resolve_weights(
    weights: str | Path | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
) -> Path:
    """The local folder of ``weights``: a local folder (returned as is), ``"org/name"`` or ``"org/name@revision"``
    (downloaded to / found in the Hugging Face cache with ``huggingface_hub.snapshot_download``; with
    ``HF_HUB_OFFLINE=1`` only the cache is used), or ``None`` for the bundled demo weights :data:`BUNDLED_WEIGHTS`
    (the local-mode :data:`BUNDLED_LOCAL_WEIGHTS`; pass :data:`BUNDLED_WHOLE_WEIGHTS` for the whole-image ones).

    Example:
        >>> resolve_weights("/data/my-samr-weights")  # doctest: +SKIP
        PosixPath('/data/my-samr-weights')
        >>> resolve_weights("my-org/samr-lite@v1.0")  # doctest: +SKIP
        PosixPath('/home/me/.cache/huggingface/hub/models--my-org--samr-lite/snapshots/3f2a...')
        >>> resolve_weights(None).name  # doctest: +SKIP
        'samr-tiny-local'
    """
    if weights is None:
        if revision is not None:
            raise ValueError(f"revision={revision!r} needs a Hub id; pass weights='org/name' with it")
        if not BUNDLED_WEIGHTS.is_dir():
            raise FileNotFoundError(
                f"no bundled weights are installed ({BUNDLED_WEIGHTS} does not exist); pass weights=<local folder>, "
                "'org/name' or 'org/name@revision', or train your own (recipes/train_samr.py)"
            )
        _warn_bundled(BUNDLED_WEIGHTS)
        return BUNDLED_WEIGHTS
    spec = str(weights)
    local = Path(spec).expanduser()
    if isinstance(weights, Path) or local.exists():
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} was passed with the local folder {spec!r}; revisions are for Hub ids"
            )
        return _local_folder(local)
    repo_id, rev = _split_revision(spec, revision)
    if not _REPO_ID.match(repo_id) or spec.startswith((".", "/", "~")):
        return _local_folder(local)
    return _snapshot(repo_id, rev, cache_dir, force_download)


def _local_folder(path: Path) -> Path:
    path = path.expanduser()
    if path.is_file():
        raise ValueError(f"weights {str(path)!r} is a file; pass the folder that holds {list(WEIGHT_FILES)}")
    if not path.is_dir():
        raise FileNotFoundError(
            f"weights folder {str(path)!r} does not exist; pass an existing folder, 'org/name' or 'org/name@revision'"
        )
    return path


def _snapshot(repo_id: str, revision: str | None, cache_dir: str | Path | None, force_download: bool) -> Path:
    # huggingface_hub's download client (it loads its submodules lazily): imported only when weights are fetched
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = is_offline()
    what = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    if offline and force_download:
        raise ValueError("force_download=True needs the network, but HF_HUB_OFFLINE is set; unset it to re-download")
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=list(WEIGHT_FILES),
            local_files_only=offline,
            force_download=force_download,
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        where = str(cache_dir) if cache_dir is not None else "the Hugging Face cache (HF_HOME / HF_HUB_CACHE)"
        detail = f" The cached copy is incomplete: {e}" if isinstance(e, IncompleteSnapshotError) else ""
        raise FileNotFoundError(
            f"weights {what} are not in the local cache ({where}) and the Hub cannot be reached"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: go online once to download them, point HF_HOME / "
            f"HF_HUB_CACHE or cache_dir at a cache that has them, or pass a local weights folder (no local folder "
            f"{repo_id!r} exists).{detail}"
        ) from e
    except RevisionNotFoundError as e:
        raise ValueError(
            f"revision {revision!r} not found in {repo_id!r}; pass an existing branch, tag or commit"
        ) from e
    except RepositoryNotFoundError as e:
        raise ValueError(
            f"Hub repository {repo_id!r} not found (or private: log in with `hf auth login`); check the name"
        ) from e
    return Path(folder)


# ---------------------------------------------------------------------------------------------- load
@dataclass
class LoadedWeights:
    """What :func:`load_weights` returns: the generator (eval mode, on the device), its atlas, the config and the
    local folder."""

    generator: nn.Module
    atlas: Atlas | None
    config: dict[str, Any]
    path: Path

    @property
    def sequences(self) -> tuple[str, ...]:
        """Output sequences of the generator, in order."""
        return tuple(self.config["sequences"])

    @property
    def normalization(self) -> dict[str, Any]:
        """How training intensities were normalised."""
        return dict(self.config.get("normalization") or {})

    @property
    def label_scheme(self) -> LabelScheme:
        """The label scheme of the training data."""
        return scheme_from_config(self.config.get("label_scheme", "samr"))

    @property
    def conditioning(self) -> str:
        """``"native"`` (the scheme's own classes) or ``"samr"`` (legacy folders without the key)."""
        return config_conditioning(self.config)

    @property
    def mode(self) -> str:
        """``"whole"`` (whole-slice generator) or ``"local"`` (region painting)."""
        return str(self.config.get("mode", "whole"))


def load_weights(
    weights: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
) -> LoadedWeights:
    """Resolve ``weights`` (see :func:`resolve_weights`) and load generator + atlas + config strictly.

    Example:
        >>> w = load_weights("my-org/samr-lite", device="cuda")  # doctest: +SKIP
        >>> w.generator.sequences, w.atlas.data.shape  # doctest: +SKIP
    """
    path = resolve_weights(weights, revision=revision, cache_dir=cache_dir, force_download=force_download)
    config = read_config(path)
    try:
        generator = generator_from_config(config)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path / CONFIG_NAME} does not describe a valid generator: {e}") from e
    uses_atlas = bool(getattr(generator, "use_atlas", False))
    if uses_atlas and "atlas" not in config:
        raise WeightsError(f"{path / CONFIG_NAME} has no 'atlas' geometry; re-export the weights with save_weights")
    tensors, _ = read_safetensors(path / MODEL_NAME, "generator weights")
    load_state_dict_strict(generator, tensors, source=str(path / MODEL_NAME))
    atlas = _load_atlas(path, config) if "atlas" in config else None
    verify_checksums(path, config)  # after the structural checks, whose messages are more specific
    generator.to(device).eval()
    return LoadedWeights(generator=generator, atlas=atlas, config=config, path=path)


def verify_checksums(folder: str | Path, config: Mapping[str, Any]) -> None:
    """Check the files of a weights folder against the SHA-256 digests its ``config.json`` records.

    Raises :class:`WeightsError` naming the file when a digest differs (a folder that mixes two saves, e.g. a new
    model with an old atlas, or a damaged file). Configs without ``"checksums"`` (older saves) are not checked.
    """
    folder = Path(folder)
    for name, digest in dict(config.get("checksums") or {}).items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{name!r} not found in {folder}; the weights folder is incomplete")
        if sha256_file(path) != digest:
            raise WeightsError(
                f"{path} does not match the SHA-256 recorded in {folder / CONFIG_NAME}: the folder mixes files of "
                "different saves (or the file was damaged); re-export all files together with save_weights or "
                "re-download (force_download=True)"
            )


def _load_atlas(path: Path, config: Mapping[str, Any]) -> Atlas:
    check_safetensors_header(path / ATLAS_NAME, "atlas")
    try:
        atlas = Atlas.load(path)
    except (OSError, RuntimeError) as e:
        raise WeightsError(corrupt_message(path / ATLAS_NAME, e)) from e
    sequences = tuple(config["sequences"])
    if tuple(atlas.sequences) != sequences:
        raise WeightsError(
            f"atlas sequences {tuple(atlas.sequences)} do not match the generator's {sequences} in {path}; "
            "the atlas and the generator must come from the same training run (re-export with save_weights)"
        )
    geometry = config["atlas"]
    shape = tuple(int(s) for s in geometry["shape"])
    if tuple(atlas.data.shape[1:]) != shape:
        raise WeightsError(
            f"atlas has shape {tuple(atlas.data.shape[1:])} but config.json records {shape}; the atlas file does "
            "not belong to this config (re-export with save_weights)"
        )
    affine = torch.as_tensor(geometry["affine"], dtype=torch.float64)
    if tuple(affine.shape) != (4, 4) or not torch.allclose(
        affine, torch.as_tensor(atlas.affine, dtype=torch.float64), atol=1e-4
    ):
        raise WeightsError(
            "atlas affine does not match the affine recorded in config.json; the atlas file does not belong to "
            "this config (re-export with save_weights)"
        )
    return atlas


def scheme_from_config(value: Any) -> LabelScheme:
    """The :class:`~samraug.labels.LabelScheme` a config records (a built-in name or a scheme object)."""
    if isinstance(value, str):
        return get_scheme(value)
    if isinstance(value, Mapping):
        return LabelScheme(
            name=value["name"],
            names={int(k): v for k, v in value["names"].items()},
            samr={int(k): int(v) for k, v in value["samr"].items()},
            regions={k: tuple(v) for k, v in value.get("regions", {}).items()},
            defaults={int(k): int(v) for k, v in value.get("defaults", {}).items()},
        )
    raise WeightsError(f"label_scheme must be a scheme name or a scheme object, got {value!r}")


def scheme_to_config(scheme: str | LabelScheme) -> str | dict[str, Any]:
    """A label scheme as a JSON-able config value: its name for the built-in schemes, its definition otherwise."""
    s = get_scheme(scheme)
    if s.name in SCHEMES and SCHEMES[s.name] == s:
        return s.name
    return {
        "name": s.name,
        "names": {str(k): v for k, v in s.names.items()},
        "samr": {str(k): v for k, v in s.samr.items()},
        "regions": {k: list(v) for k, v in s.regions.items()},
        "defaults": {str(k): v for k, v in s.defaults.items()},
    }


# ---------------------------------------------------------------------------------------------- save


def default_normalization() -> dict[str, Any]:
    """The intensity normalisation recorded in new weights (``samraug.intensity.DEFAULT_NORMALIZATION``)."""
    return json.loads(json.dumps(dict(DEFAULT_NORMALIZATION)))


def save_weights(
    folder: str | Path,
    generator: nn.Module,
    atlas: Atlas | None,
    *,
    label_scheme: str | LabelScheme = "samr",
    conditioning: str = "native",
    normalization: Mapping[str, Any] | None = None,
    card: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    lineage: Sequence[str] | None = None,
    voxel_size: Sequence[float] | None = None,
    crop_size: Sequence[int] | None = None,
    context_fill: str | None = None,
    atlas_dtype: torch.dtype | None = None,
    atlas_space: str | None = None,
) -> Path:
    """Write a weights folder: ``config.json``, ``model.safetensors``, ``atlas.safetensors`` and ``README.md``.

    The files are written into a temporary folder beside ``folder`` and moved into place only when all four are
    complete, so a failure (disk full, Ctrl-C) leaves the previous weights intact; ``config.json`` records the
    SHA-256 of the model and the atlas, and :func:`load_weights` refuses a folder whose files do not match it.

    Args:
        folder: Output folder (created; an existing weights folder is replaced as a whole).
        generator: A samraug generator (``SAMRGenerator`` or ``Pix2PixGenerator``; DDP / ``torch.compile``
            wrappers are unwrapped).
        atlas: Its :class:`samraug.atlas.Atlas` (same sequences, in the same order); None for a generator
            without atlas (``use_atlas=False``, e.g. a local generator).
        label_scheme: Label scheme of the training data (a name or a ``LabelScheme``).
        conditioning: The classes the generator was trained on: ``"native"`` (the scheme's own lesion classes) or
            ``"samr"`` (the paper's 5 classes); ``n_labels`` must equal that class count.
        normalization: Intensity normalisation used in training (default: the library's).
        card: Model-card facts: ``data``, ``preset``, ``steps``, ``command``, ``validation`` (a dict of numbers),
            ``simulated`` (bool: trained on simulated data), ``notes``, ``license``; other keys are listed as is.
        dtype: Storage dtype of the generator tensors, e.g. ``torch.float16`` (loading casts back to float32).
        lineage: Where the weights were initialised from, newest first (``--init-from`` source, then its own
            lineage); recorded in the config and the model card.
        voxel_size, crop_size: Local generators: the training grid (mm, RAS) and crop (voxels).
        context_fill: Local generators: ``"zero"`` or ``"harmonic"`` (what their context shows inside the region;
            absent means ``"zero"``, the contract before the option).
        atlas_dtype: Storage dtype of the atlas images, e.g. ``torch.float16`` (default float32).
        atlas_space: Whole-image generators: the template space of the atlas (e.g. ``"MNI152"``, ``"SRI24"``); subjects
            declared in that space on another grid are resampled to the atlas grid (:mod:`samraug.atlas_space`).

    Example:
        >>> card = {"data": "phantom", "simulated": True}
        >>> save_weights("/tmp/w", gen, atlas, card=card, dtype=torch.float16)  # doctest: +SKIP
    """
    generator = getattr(generator, "_orig_mod", generator)  # torch.compile wrapper
    generator = getattr(generator, "module", generator)  # DistributedDataParallel / DataParallel wrapper
    model_type = getattr(generator, "model_type", None)
    if model_type is None or not hasattr(generator, "config"):
        raise TypeError(
            f"generator must be a samraug generator (SAMRGenerator, Pix2PixGenerator, LocalGenerator), got "
            f"{type(generator)}"
        )
    mode = str(getattr(generator, "mode", "whole"))
    generator_class(model_type, mode)
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"unknown conditioning {conditioning!r}; use one of {list(CONDITIONINGS)}")
    classes = scheme_from_config(scheme_to_config(label_scheme)).classes(conditioning)
    if int(generator.n_labels) != len(classes):
        other = "samr" if conditioning == "native" else "native"
        raise ValueError(
            f"the generator has n_labels={generator.n_labels} but label scheme "
            f"{scheme_from_config(scheme_to_config(label_scheme)).name!r} with conditioning={conditioning!r} has "
            f"{len(classes)} classes {list(classes)}; pass the conditioning it was trained with (e.g. "
            f"conditioning={other!r}) or the right label_scheme"
        )
    sequences = tuple(generator.sequences)
    uses_atlas = bool(getattr(generator, "use_atlas", False))
    if atlas is None and uses_atlas:
        raise ValueError("the generator uses an atlas (use_atlas=True) but atlas is None; pass its Atlas")
    if atlas is not None and tuple(atlas.sequences) != sequences:
        raise ValueError(
            f"atlas sequences {tuple(atlas.sequences)} do not match the generator's {sequences}; build the atlas "
            "from the same sequences in the same order"
        )
    if uses_atlas and generator.atlas_slices != 3:
        raise ValueError(
            f"generator expects atlas_slices={generator.atlas_slices}, but Atlas.stack gives 3 slices per sequence; "
            "train with atlas_slices=3"
        )
    if lineage is not None and (isinstance(lineage, str) or not all(isinstance(x, str) for x in lineage)):
        raise ValueError(f"lineage must be a list of strings (newest first), got {lineage!r}")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype (e.g. torch.float16), got {dtype}")
    if context_fill is not None and context_fill not in CONTEXT_FILLS:
        raise ValueError(f"context_fill must be one of {CONTEXT_FILLS}, got {context_fill!r}")
    if atlas_space is not None:
        if atlas is None:
            raise ValueError("atlas_space names the space of the atlas, but this generator has none; leave it unset")
        if not isinstance(atlas_space, str) or not atlas_space.strip():
            raise ValueError(f"atlas_space must be a template name such as 'MNI152' or 'SRI24', got {atlas_space!r}")
    geometry = None
    if atlas is not None:
        affine = [[float(v) for v in row] for row in torch.as_tensor(atlas.affine, dtype=torch.float64).tolist()]
        if not all(math.isfinite(v) for row in affine for v in row):
            raise ValueError("atlas affine contains NaN or inf")
        geometry = {"shape": [int(s) for s in atlas.data.shape[1:]], "affine": affine}
    config: dict[str, Any] = {
        "model_type": model_type,
        **({"mode": mode} if mode != "whole" else {}),
        "conditioning": conditioning,
        **generator.config,
        "label_scheme": scheme_to_config(label_scheme),
        "normalization": Normalization.from_config(normalization).to_config()
        if normalization
        else default_normalization(),
        **({"atlas": geometry} if geometry is not None else {}),
        **({"voxel_size": [float(v) for v in voxel_size]} if voxel_size is not None else {}),
        **({"crop_size": [int(v) for v in crop_size]} if crop_size is not None else {}),
        **({"context_fill": str(context_fill)} if context_fill not in (None, "zero") else {}),
        **({"lineage": list(lineage)} if lineage else {}),
        **({"atlas_space": str(atlas_space).strip().upper()} if atlas_space else {}),
        "samraug_version": __version__,
        "format_version": FORMAT_VERSION,
    }
    if atlas_dtype is not None and not atlas_dtype.is_floating_point:
        raise ValueError(f"atlas_dtype must be a floating dtype (e.g. torch.float16), got {atlas_dtype}")
    check_config(config, source="the config save_weights would write")
    folder = Path(os.path.abspath(Path(folder).expanduser()))
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"weights folder {folder} is a file; pass a folder path")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        stored = str(dtype).replace("torch.", "") if dtype is not None else "float32"
        meta = {"model_type": model_type, "dtype": stored}
        save_state_dict(generator, tmp / MODEL_NAME, dtype=dtype, metadata=meta)
        if atlas is not None:
            atlas.save(tmp)
            if not (tmp / ATLAS_NAME).is_file():
                raise RuntimeError(f"Atlas.save did not write {ATLAS_NAME} in {tmp}")
            if atlas_dtype is not None:
                cast_safetensors(tmp / ATLAS_NAME, atlas_dtype)
        config["checksums"] = {name: sha256_file(tmp / name) for name in CHECKSUM_FILES if (tmp / name).is_file()}
        (tmp / CARD_NAME).write_text(model_card(config, card, dtype=stored), encoding="utf-8")
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for name in WEIGHT_FILES:
            if (tmp / name).is_file():
                fsync_file(tmp / name)
        _install(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _install(tmp: Path, folder: Path) -> None:
    """Move the files written in ``tmp`` into ``folder`` so that no reader sees a mix of two saves.

    A missing or empty folder, or one holding only weights files, is replaced by renaming folders (atomic). A folder
    that holds other files too (e.g. a git clone of a Hub repo) gets its ``config.json`` removed first and written
    last: in between, :func:`load_weights` refuses the folder (no config, or checksums that do not match).
    """
    if not folder.exists():
        os.replace(tmp, folder)
        return
    entries = {p.name for p in folder.iterdir()}
    if entries <= set(WEIGHT_FILES):
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except BaseException:
            os.replace(old, folder)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    (folder / CONFIG_NAME).unlink(missing_ok=True)
    for name in (MODEL_NAME, ATLAS_NAME, CARD_NAME, CONFIG_NAME):
        if (tmp / name).is_file():
            os.replace(tmp / name, folder / name)
        elif name == ATLAS_NAME:
            (folder / name).unlink(missing_ok=True)  # no atlas in this save (local weights): none may linger


_CARD_KEYS = (
    "title",
    "data",
    "preset",
    "steps",
    "command",
    "validation",
    "training curve",
    "simulated",
    "notes",
    "license",
)


def model_card(config: Mapping[str, Any], card: Mapping[str, Any] | None = None, *, dtype: str = "float32") -> str:
    """The ``README.md`` model card of a weights folder, from its config and the training facts in ``card``
    (see :func:`save_weights`).

    Example:
        >>> text = model_card(config, {"data": "phantom", "simulated": True, "steps": 2000})  # doctest: +SKIP
    """
    card = dict(card or {})
    simulated = bool(card.get("simulated", False))
    license_ = str(card.get("license", "apache-2.0"))
    model_type = config.get("model_type", "samr")
    title = card.get("title") or f"samraug {model_type} generator"
    tags = ["samraug", "mri", "brain-tumor", "image-synthesis", "data-augmentation", "pytorch_model_hub_mixin"]
    lines = [
        "---",
        "library_name: samraug",
        f"license: {license_}",
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
        "",
        f"# {title}",
        "",
    ]
    if simulated:
        lines += [
            "> **Trained on simulated data.** These weights were trained on samraug's digital phantom (MNI152 "
            "anatomy with simulated lesions and an MR signal model), not on real patient MRI. They are for demos "
            "and tests; do not expect realistic images on real scans.",
            "",
        ]
    conditioning = config_conditioning(config)
    try:
        classes = ", ".join(scheme_from_config(config.get("label_scheme", "samr")).classes(conditioning))
    except (KeyError, TypeError, ValueError, WeightsError):
        classes = "see config.json"
    local = config.get("mode", "whole") == "local"
    if local:
        what = (
            f"from the one-hot classes ({classes}) of 2c+1 adjacent slices of an edited label map and the "
            "normalised images with a region blanked out (plus the region mask), the local generator paints the "
            "region of the central slice in [-1, 1]"
        )
        usage = "painted = w.generator(mask, context)  # samraug.models.local.build_local_inputs builds both"
    elif int(config.get("mask_slices", 1)) > 1:
        m = int(config["mask_slices"])
        what = (
            f"from the one-hot lesion classes ({classes}) of {m} adjacent slices (z-{m // 2}..z+{m // 2}) and three "
            "adjacent atlas slices per sequence, the generator paints co-registered MR slices in [-1, 1]"
        )
        usage = (
            "images = w.generator(mask_stack(classes[None], w.generator.n_labels), w.atlas.stack(z)[None])  "
            f"# classes: ({m}, H, W) slices z-{m // 2}..z+{m // 2}; mask_stack from samraug.labels"
        )
    else:
        what = (
            f"from a one-hot lesion mask ({classes}) and three adjacent atlas slices per sequence, the generator "
            "paints co-registered MR slices in [-1, 1]"
        )
        usage = "images = w.generator(mask_onehot, w.atlas.stack(z)[None])  # (1, n_sequences, H, W)"
    lines += [
        "Lesion-mask-based synthesis of anatomic and molecular MRI (SAMR, MICCAI 2020) with "
        f"[samraug](https://pypi.org/project/samraug/): {what}. Research use only, not for clinical use.",
        "",
        "## Usage",
        "",
        "```python",
        "from samraug.hub import load_weights",
        'w = load_weights("<this folder or org/name@revision>", device="cpu")',
        usage,
        "```",
        "",
        "## Model",
        "",
        f"- model type: `{model_type}` ({'local' if local else 'whole'} mode)",
        f"- conditioning: `{conditioning}` (classes: {classes})",
        f"- sequences (output order): {', '.join(f'`{s}`' for s in config.get('sequences', []))}",
    ]
    arch = {k: v for k, v in config.items() if k not in META_KEYS and k != "sequences"}
    lines.append("- architecture: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(arch.items())))
    lines.append(f"- stored dtype: {dtype} (loaded as float32)")
    scheme = config.get("label_scheme", "samr")
    lines.append(f"- training label scheme: `{scheme if isinstance(scheme, str) else scheme.get('name')}`")
    lines.append(f"- intensity normalisation: `{json.dumps(config.get('normalization', {}), sort_keys=True)}`")
    atlas = config.get("atlas") or {}
    if atlas:
        lines.append(f"- atlas grid: shape {atlas.get('shape')}, affine {atlas.get('affine')}")
    lines += ["", "## Training", ""]
    lines.append(f"- data: {card.get('data', 'not recorded')}")
    lines.append(f"- preset: {card.get('preset') or _preset_of(config)}")
    lines.append(f"- steps: {card.get('steps', 'not recorded')}")
    lines.append(f"- trained on simulated data: {'yes' if simulated else 'no'}")
    lineage = config.get("lineage") or []
    if lineage:
        lines.append("- initialised from (newest first): " + " <- ".join(f"`{x}`" for x in lineage))
    else:
        lines.append("- initialised from: random initialisation")
    if config.get("voxel_size"):
        lines.append(f"- training grid: voxel size {config['voxel_size']} mm (RAS), crop {config.get('crop_size')}")
    if config.get("context_fill", "zero") != "zero":
        lines.append(
            f"- context fill: `{config['context_fill']}` (the hidden region is shown to the model filled in 3D by "
            "harmonic interpolation from the brain around it; a residual generator paints over that fill)"
        )
    if card.get("command"):
        lines += ["", "Exact command:", "", "```bash", str(card["command"]), "```"]
    validation = card.get("validation")
    lines += ["", "## Validation", ""]
    if isinstance(validation, Mapping) and validation:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in validation.items()]
    elif validation:
        lines.append(str(validation))
    else:
        lines.append("No validation numbers recorded.")
    curve = card.get("training curve")
    if isinstance(curve, Mapping) and curve.get("rows"):
        columns = [str(c).removeprefix("val/") for c in curve["columns"]]
        lines += ["", "## Training curve", "", "Periodic validation of this run (`log.csv`):", ""]
        lines += ["| step | " + " | ".join(columns) + " |", "| ---: |" + " ---: |" * len(columns)]
        for row in curve["rows"]:
            cells = [f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else "" for v in row[1:]]
            lines.append(f"| {int(row[0])} | " + " | ".join(cells) + " |")
    if card.get("notes"):
        lines += ["", "## Notes", "", str(card["notes"])]
    extra = {k: v for k, v in card.items() if k not in _CARD_KEYS}
    if extra:
        lines += ["", "## Further details", ""]
        lines += [f"- {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def _preset_of(config: Mapping[str, Any]) -> str:
    if config.get("model_type") in (None, "samr") and config.get("mode", "whole") == "whole":
        defaults = {"stretch_out": True, "use_atlas": True, "decoder_res_blocks": 1, "norm": "batch"}
        for name, kwargs in GENERATOR_PRESETS.items():
            if all(config.get(k) == v for k, v in {**defaults, **kwargs}.items()):
                return f"{name} (architecture match)"
    return "not recorded"


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    branch: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload samraug weights",
) -> str:
    """Check a weights folder (it must load strictly) and upload exactly its four files to ``repo_id``
    (created if needed) with ``HfApi.upload_folder``. Returns the commit URL.

    Example:
        >>> push_to_hub("/tmp/w", "my-org/samr-lite", branch="v1")  # doctest: +SKIP
    """
    from huggingface_hub import HfApi  # the upload client: imported only when weights are pushed

    folder = _local_folder(Path(folder))
    missing = [name for name in WEIGHT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"weights folder {folder} lacks {missing}; write it with samraug.hub.save_weights")
    load_weights(folder)  # refuse to upload anything that would not load
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    if branch is not None:
        api.create_branch(repo_id=repo_id, branch=branch, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        allow_patterns=list(WEIGHT_FILES),
        commit_message=commit_message,
        revision=branch,
    )
    return str(getattr(info, "commit_url", info))
