"""Hypothesis property tests: every LesionEditor output satisfies every validity rule, for every operation, the
random policy and every label scheme, on random small 2D and 3D masks (brains of one or two ellipsoids, lesions
of a tumour with an enhancing rim / necrotic core, an edema shell and an optional cavity, plus noise)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samraug.editing import EditPolicy, LesionEditor, check_valid
from samraug.labels import get_scheme

SCHEMES = ("samr", "brats2021", "brats2023", "brats2024")
SHAPES = {2: (24, 24), 3: (16, 16, 12)}
EXAMPLES = 150
MIN_FRAGMENT = 3


@dataclass
class Case:
    scheme: str
    label: np.ndarray | torch.Tensor  # in the scheme, in some dtype
    brain: np.ndarray  # boolean
    brain_arg: np.ndarray | None  # what the editor gets (None for "samr" half of the time)

    @property
    def ndim(self) -> int:
        return self.brain.ndim


def _ellipsoid(shape, center, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    d = sum(((grid[i] - center[i]) / radii[i]) ** 2 for i in range(len(shape)))
    return d <= 1.0


@st.composite
def brains(draw, ndim: int) -> np.ndarray:
    shape = SHAPES[ndim]
    parts = draw(st.integers(1, 2))
    brain = np.zeros(shape, bool)
    for _ in range(parts):
        center = [s / 2 + draw(st.floats(-0.12, 0.12)) * s for s in shape]
        radii = [draw(st.floats(0.28, 0.48)) * s for s in shape]
        brain |= _ellipsoid(shape, center, radii)
    return brain


@st.composite
def lesion_maps(draw, scheme: str, brain: np.ndarray) -> np.ndarray:
    """A label map in ``scheme``: 0..2 lesions (tumour core/rim, edema shell, optional cavity), inside the brain."""
    s = get_scheme(scheme)
    shape = brain.shape
    ndim = brain.ndim
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    label = np.full(shape, s.defaults[0], dtype=np.int64)
    if s.has_brain_label:
        label[brain] = s.values_of("normal_brain")[0]
    tumour = s.values_of("tumor")
    edema = s.values_of("edema")
    cavity = s.values_of("cavity")
    inside = np.argwhere(brain)
    n_lesions = draw(st.sampled_from([1, 2, 1, 1, 1, 1, 0]))  # hypothesis favours the first element
    grid = np.indices(shape, dtype=np.float64)
    for _ in range(n_lesions):
        c = inside[draw(st.integers(0, len(inside) - 1))] + np.array([draw(st.floats(-0.5, 0.5)) for _ in shape])
        r = np.sqrt(sum((grid[i] - c[i]) ** 2 for i in range(ndim))) + rng.normal(0, 0.35, shape)
        rt = draw(st.floats(1.2, 4.0 if ndim == 2 else 2.8))
        shell = draw(st.floats(0.0, 2.5))
        if shell > 0.6:
            label[(r < rt + shell) & brain] = edema[0]
        label[(r < rt) & brain] = tumour[-1]  # enhancing rim (or the single tumour value)
        if len(tumour) > 1 and rt > 2.0:
            label[(r < rt * 0.5) & brain] = tumour[0]  # necrotic core
        if cavity and draw(st.booleans()):
            off = np.array([draw(st.floats(-1.5, 1.5)) for _ in shape])
            rc = np.sqrt(sum((grid[i] - c[i] - off[i]) ** 2 for i in range(ndim)))
            label[(rc < draw(st.floats(0.8, 1.8))) & brain] = cavity[0]
    return label


@st.composite
def cases(draw, ndim: int | None = None, scheme: str | None = None, shape_only: tuple | None = None) -> Case:
    ndim = ndim or draw(st.sampled_from([2, 3]))
    scheme = scheme or draw(st.sampled_from(SCHEMES))
    brain = draw(brains(ndim))
    label = draw(lesion_maps(scheme, brain))
    kind = draw(st.sampled_from(["uint8", "int16", "int64", "float32", "torch-uint8", "torch-int64"]))
    if kind.startswith("torch"):
        lab = torch.from_numpy(label.astype(kind.split("-")[1]))
    else:
        lab = label.astype(kind)
    brain_arg = None if scheme == "samr" and draw(st.booleans()) else brain
    if brain_arg is not None and draw(st.booleans()):
        brain_arg = torch.from_numpy(brain_arg)
    return Case(scheme, lab, brain, brain_arg)


def _np(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _editor(case: Case, **kw) -> LesionEditor:
    return LesionEditor(case.scheme, min_fragment=MIN_FRAGMENT, max_retries=kw.pop("max_retries", 5), **kw)


def assert_valid(case: Case, res, reference=None) -> None:
    """Every rule of check_valid, plus type/dtype/shape, a JSON-able record and 'unedited when not applied'."""
    out, rec = res.label, res.record
    assert type(out) is type(case.label)
    assert out.dtype == case.label.dtype and tuple(out.shape) == tuple(case.label.shape)
    assert json.loads(json.dumps(rec)) == rec
    assert isinstance(rec["applied"], bool) and "op" in rec
    if rec["applied"]:
        assert rec["reason"] is None
    else:
        assert isinstance(rec["reason"], str) and rec["reason"]
        assert np.array_equal(_np(out), _np(case.label)), "an edit that was not applied must return the input"
        # the construction guarantees every rule but the edema one (a shrunk or warped shell may come off the
        # tumour); any other rule caught by the editor's final check would be a bug
        if "validity rules" in rec["reason"]:
            assert all("edema" in part for part in rec["reason"].split(": ", 1)[1].split("; ")), rec["reason"]
    problems = check_valid(
        out, case.brain, case.scheme, original=case.label, reference=reference, min_fragment=MIN_FRAGMENT
    )
    assert problems == [], (rec, problems)


def assert_replays(editor: LesionEditor, case: Case, res, donors=None) -> None:
    record = json.loads(json.dumps(res.record))
    again = editor.replay(case.label, case.brain_arg, record, donors=donors)
    assert np.array_equal(_np(again.label), _np(res.label))


@settings(max_examples=EXAMPLES)
@given(case=cases())
def test_mirror_is_valid(case: Case) -> None:
    editor = _editor(case)
    res = editor.mirror(case.label, case.brain_arg)
    assert_valid(case, res)
    assert_replays(editor, case, res)


@settings(max_examples=EXAMPLES)
@given(case=cases(), factor=st.floats(0.3, 3.0))
def test_scale_is_valid(case: Case, factor: float) -> None:
    editor = _editor(case)
    res = editor.scale(case.label, case.brain_arg, factor=factor)
    assert_valid(case, res)
    assert_replays(editor, case, res)


@settings(max_examples=EXAMPLES)
@given(case=cases(), data=st.data())
def test_move_is_valid(case: Case, data) -> None:
    integer = data.draw(st.booleans())
    elem = st.integers(-8, 8) if integer else st.floats(-8.0, 8.0)
    shift = data.draw(st.lists(elem, min_size=case.ndim, max_size=case.ndim))
    editor = _editor(case)
    res = editor.move(case.label, case.brain_arg, shift=shift)
    assert_valid(case, res)
    assert_replays(editor, case, res)


@settings(max_examples=EXAMPLES)
@given(case=cases(), data=st.data())
def test_rotate_is_valid(case: Case, data) -> None:
    n = 1 if case.ndim == 2 else data.draw(st.sampled_from([1, 3]))
    angles = data.draw(st.lists(st.floats(-180.0, 180.0), min_size=n, max_size=n))
    editor = _editor(case)
    res = editor.rotate(case.label, case.brain_arg, angles=angles)
    assert_valid(case, res)
    assert_replays(editor, case, res)


@settings(max_examples=EXAMPLES)
@given(case=cases(), strength=st.floats(0.0, 4.0), smoothness=st.floats(2.0, 12.0), seed=st.integers(0, 2**31 - 2))
def test_perturb_is_valid(case: Case, strength: float, smoothness: float, seed: int) -> None:
    editor = _editor(case)
    res = editor.perturb(case.label, case.brain_arg, strength=strength, smoothness=smoothness, seed=seed)
    assert_valid(case, res)
    assert_replays(editor, case, res)


@settings(max_examples=EXAMPLES)
@given(data=st.data(), at=st.sampled_from(["donor", "random"]), seed=st.integers(0, 2**31 - 2))
def test_swap_is_valid(data, at: str, seed: int) -> None:
    case = data.draw(cases())
    donor = data.draw(cases(ndim=case.ndim, scheme=case.scheme))
    editor = _editor(case)
    gen = torch.Generator().manual_seed(seed)
    res = editor.swap(case.label, case.brain_arg, donor.label, donor.brain_arg, at=at, generator=gen, donor=0)
    assert_valid(case, res, reference=donor.label)
    if res.record["applied"] and at == "donor":  # the donor's lesion, clipped to the brain, values unchanged
        scheme = get_scheme(case.scheme)
        out, don = _np(res.label).astype(np.int64), _np(donor.label).astype(np.int64)
        out_lesion = scheme.to_samr(out, case.brain) >= 2
        donor_lesion = scheme.to_samr(don, donor.brain) >= 2
        assert not (out_lesion & ~donor_lesion).any()
        assert np.array_equal(out[out_lesion], don[out_lesion])
    assert_replays(editor, case, res, donors=[(donor.label, donor.brain_arg)])


@settings(max_examples=EXAMPLES)
@given(case=cases())
def test_remove_is_valid(case: Case) -> None:
    editor = _editor(case)
    res = editor.remove(case.label, case.brain_arg)
    assert_valid(case, res)
    scheme = get_scheme(case.scheme)
    had_lesion = bool((scheme.to_samr(_np(case.label), case.brain) >= 2).any())
    assert res.record["applied"] == had_lesion
    assert not (scheme.to_samr(_np(res.label), case.brain) >= 2).any()


@settings(max_examples=EXAMPLES)
@given(case=cases())
def test_resampling_at_the_identity_is_exact(case: Case) -> None:
    """Every resampling path (rotation, scaling, sub-voxel move, perturbation) at (numerically) the identity
    reproduces the exact path (an integer move by 0), values, sub-labels and all."""
    editor = _editor(case)
    zero = [0] * case.ndim
    exact = editor.move(case.label, case.brain_arg, shift=zero)
    assert_valid(case, exact)
    others = [
        editor.rotate(case.label, case.brain_arg, angles=360.0),
        editor.scale(case.label, case.brain_arg, factor=1.0 + 1e-12),
        editor.move(case.label, case.brain_arg, shift=[1e-9, *zero[1:]]),
        editor.perturb(case.label, case.brain_arg, strength=0.0, seed=0),
    ]
    for res in others:
        assert res.record["applied"] == exact.record["applied"], res.record
        assert np.array_equal(_np(res.label), _np(exact.label)), res.record


POLICIES = [
    EditPolicy(),
    EditPolicy(p_remove=0.0, p_swap=0.5, p_mirror=0.5, p_scale=0.8, p_rotate=0.5, p_perturb=0.5, p_move=0.8),
    EditPolicy(p_remove=0.0, p_swap=1.0, p_mirror=0.0, p_scale=0.0, p_rotate=0.0, p_perturb=0.0, p_move=0.0),
    EditPolicy(p_remove=0.0, p_mirror=0.0, p_scale=0.0, p_rotate=0.0, p_perturb=0.0, p_move=1.0, max_shift=0.6),
]


@settings(max_examples=EXAMPLES)
@given(data=st.data(), policy=st.sampled_from(POLICIES), seed=st.integers(0, 2**31 - 2))
def test_random_edit_is_valid_and_replays(data, policy: EditPolicy, seed: int) -> None:
    case = data.draw(cases())
    donors = [data.draw(cases(ndim=case.ndim, scheme=case.scheme)) for _ in range(data.draw(st.integers(0, 2)))]
    donor_args = [(d.label, d.brain_arg) for d in donors]
    editor = _editor(case, policy=policy)
    res = editor.random_edit(
        case.label, case.brain_arg, donors=donor_args, generator=torch.Generator().manual_seed(seed)
    )
    swap = res.record.get("swap")
    reference = donors[swap["donor"]].label if res.record["applied"] and swap else None
    assert_valid(case, res, reference=reference)
    assert set(res.record["drawn"]) <= {"remove", "swap", "mirror", "scale", "rotate", "perturb", "move"}
    assert_replays(editor, case, res, donors=donor_args)
    again = editor.random_edit(
        case.label, case.brain_arg, donors=donor_args, generator=torch.Generator().manual_seed(seed)
    )
    assert again.record == res.record and np.array_equal(_np(again.label), _np(res.label))


@pytest.mark.slow
@settings(max_examples=2000)
@given(data=st.data(), seed=st.integers(0, 2**31 - 2))
def test_every_operation_is_valid_large_run(data, seed: int) -> None:
    case = data.draw(cases())
    donor = data.draw(cases(ndim=case.ndim, scheme=case.scheme))
    editor = _editor(case, policy=data.draw(st.sampled_from(POLICIES)))
    gen = torch.Generator().manual_seed(seed)
    b = case.brain_arg
    assert_valid(case, editor.mirror(case.label, b))
    assert_valid(case, editor.scale(case.label, b, factor=data.draw(st.floats(0.3, 3.0))))
    shift = data.draw(st.lists(st.floats(-8, 8), min_size=case.ndim, max_size=case.ndim))
    assert_valid(case, editor.move(case.label, b, shift=shift))
    assert_valid(case, editor.rotate(case.label, b, angles=data.draw(st.floats(-180, 180))))
    assert_valid(case, editor.perturb(case.label, b, strength=data.draw(st.floats(0, 4)), generator=gen))
    res = editor.swap(case.label, b, donor.label, at=data.draw(st.sampled_from(["donor", "random"])), generator=gen)
    assert_valid(case, res, reference=donor.label)
    assert_valid(case, editor.remove(case.label, b))
    res = editor.random_edit(case.label, b, donors=[donor.label], generator=gen)
    assert_valid(case, res, reference=donor.label if res.record.get("swap") and res.record["applied"] else None)
    assert_replays(editor, case, res, donors=[donor.label])
