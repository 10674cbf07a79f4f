"""Registration of a pair's target to its source (SimpleITK), measured and checked.

A pair from two scanners is rarely aligned in world coordinates: `register_target` finds the
transform that maps the source's world points onto the target's anatomy and returns the target
moved onto the source, with a report of what it did:

  1. start: world coordinates (identity) when the target covers at least half of the source, else
     the volumes' geometric centres laid on each other (`CenteredTransformInitializer`, GEOMETRY);
  2. metric: correlation when both sides are one modality, Mattes mutual information across
     modalities (MR against CT, PET against CT); a body mask on the source's frame, when one is
     known, restricts it to the body;
  3. on a grid of voxels of at least `GRID_MM` (finer volumes smoothed and resampled: `coarser`),
     a three-level pyramid (shrink 4, 2, 1; Gaussian smoothing of 2, 1, 0 voxels; fewer levels for
     thin volumes), `SAMPLES_PER_LEVEL` regularly spaced samples per level (jittered with a fixed
     seed: the same pair registers the same way every time), regular-step gradient descent with
     scales from the physical shift;
  4. rigid (`Euler3DTransform`), affine (`AffineTransform`, after a rigid stage) or deformable (a
     cubic B-spline on a coarse mesh after the affine stage, gradient descent with line search);
  5. the similarity before and after on the source's grid (both smoothed by one voxel; normalized:
     correlation within a modality, 2·MI / (H(source) + H(target)) across), the rotation (degrees),
     the translation at the source's centre (mm), the scales of an affine, the displacement of a
     deformable stage.

`check` turns the report into a `PairRejected` with the reason: the similarity got worse, stayed
below the floor a true pair reaches (the two volumes do not show one anatomy), the optimizer did not
converge, or the rotation / translation are beyond the plausible. Linear transforms move the
target's affine (no interpolation: the model grid samples it once); a deformable one resamples it
onto the source's grid. World coordinates are the volumes' RAS+ millimetres throughout.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from medgan_tf.data.io import Volume
from medgan_tf.data.rejections import PairRejected

METHODS = ("none", "rigid", "affine", "deformable")
MIN_SIMILARITY = {"correlation": 0.8, "mutual information": 0.3}  # below: not one anatomy (README "limits")
SAMPLES_PER_LEVEL = 40000  # random metric samples per pyramid level: seconds for a 256×256×100 pair
SEED = 20260  # the metric's sampling: the same pair registers the same way every time
GRID_MM = 2.0  # registration grid: voxels at least this size (finer volumes are smoothed and resampled)
BSPLINE_ITERATIONS = 25  # per level: a B-spline iteration costs ~50× a rigid one in SimpleITK


@dataclasses.dataclass(frozen=True)
class RegistrationSettings:
    """How targets are registered: `method` one of `METHODS` ("none": world coordinates, as
    without registration); pairs moved more than `max_rotation_deg` degrees or `max_translation_mm`
    mm, or whose similarity after registration is below `min_similarity` (None: `MIN_SIMILARITY`
    of the metric), are rejected."""

    method: str = "none"
    max_rotation_deg: float = 15.0
    max_translation_mm: float = 40.0
    min_similarity: float | None = None
    iterations: int = 200

    def __post_init__(self) -> None:
        from medgan_tf.errors import UserError

        if self.method not in METHODS:
            raise UserError(f"--register {self.method!r}; expected one of {', '.join(METHODS)}")
        for name, flag in (("max_rotation_deg", "--max-rotation"), ("max_translation_mm", "--max-translation")):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{flag}: expected a positive number; received {value!r}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"


def to_sitk(volume: Volume) -> Any:
    """`volume` as a float32 SimpleITK image whose physical space is the volume's RAS+ world."""
    import SimpleITK as sitk

    affine = np.asarray(volume.affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(np.asarray(volume.array, np.float32), (2, 1, 0))))
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in (affine[:3, :3] / spacing[None, :]).ravel()])
    image.SetOrigin([float(v) for v in affine[:3, 3]])
    return image


def coarser(image: Any, grid_mm: float = GRID_MM) -> Any:
    """`image` on a grid of voxels at least `grid_mm` along every axis (Gaussian pre-smoothing of
    half the new voxel size against aliasing), or `image` itself when its voxels already are: a
    256×256×100 volume of 1 mm pixels registers on 128×128×100, in seconds, still well below a voxel."""
    import SimpleITK as sitk

    spacing = np.asarray(image.GetSpacing(), np.float64)
    wanted = np.maximum(spacing, grid_mm)
    if np.allclose(wanted, spacing):
        return image
    size = np.maximum(1, np.round(np.asarray(image.GetSize()) * spacing / wanted)).astype(int)
    variance = [float(v) for v in 0.25 * np.maximum(wanted ** 2 - spacing ** 2, 0.0)]  # mm², 0 along kept axes
    smoothed = sitk.DiscreteGaussian(image, variance, 32, 0.01, True)
    # Voxel centres: the new grid covers the same extent, its first centre half a new voxel in.
    direction = np.asarray(image.GetDirection(), np.float64).reshape(3, 3)
    origin = np.asarray(image.GetOrigin()) + direction @ ((wanted - spacing) / 2.0)
    return sitk.Resample(smoothed, [int(v) for v in size], sitk.Transform(), sitk.sitkLinear, [float(v) for v in origin],
                         [float(v) for v in wanted], [float(v) for v in direction.ravel()], float(np.min(
                             sitk.GetArrayViewFromImage(image))), sitk.sitkFloat32)


def metric_of(source_modality: str, target_modality: str) -> str:
    """"correlation" for one modality on both sides, "mutual information" across modalities."""
    return "correlation" if source_modality == target_modality else "mutual information"


def register_target(source: Volume, target: Volume, settings: RegistrationSettings, metric: str,
                    mask: Volume | None = None) -> tuple[Volume, dict[str, Any]]:
    """`target` registered to `source` → (the target moved onto the source, report dict).

    `metric`: `metric_of` the pair's modalities; `mask`: a body mask on the source's frame (its
    non-zero voxels), or None. The report (`check` judges it) holds no path or identity.
    """
    import time

    import SimpleITK as sitk

    started = time.monotonic()
    fixed, moving = coarser(to_sitk(source)), coarser(to_sitk(target))
    fixed_mask = sitk.Cast(to_sitk(mask) != 0, sitk.sitkUInt8) if mask is not None else None
    start, start_name = _start(source, target, fixed, moving)
    transform, converged, iterations = start, True, 0
    stages = ["rigid"] + (["affine"] if settings.method in ("affine", "deformable") else [])
    for stage in stages:
        initial = sitk.Euler3DTransform(start) if stage == "rigid" else _affine_from(transform)
        transform, done, used = _run_stage(fixed, moving, initial, metric, fixed_mask, settings.iterations)
        converged, iterations = converged and done, iterations + used
    report = {"method": settings.method, "metric": metric, "start": start_name}
    report.update(linear_report(_matrix(transform), _centre(source), start_matrix=_matrix(start)))
    final = transform
    if settings.method == "deformable":
        final, displacement, done = _deformable(fixed, moving, transform, metric, fixed_mask, settings.iterations)
        converged = converged and done
        report["displacement_mm"] = displacement
    # Smoothed by one voxel: on two grids that coincide, linear interpolation would otherwise
    # favour the untouched voxels of world coordinates over any sub-voxel correction.
    smoothed = [sitk.SmoothingRecursiveGaussian(image, min(image.GetSpacing())) for image in (fixed, moving)]
    before, after = (similarity(*smoothed, transform, metric) for transform in (start, final))
    report.update(similarity_before=round(before, 4), similarity_after=round(after, 4), converged=bool(converged),
                  iterations=int(iterations), seconds=round(time.monotonic() - started, 2))
    if settings.method == "deformable":
        moved = sitk.Resample(to_sitk(target), to_sitk(source), final, sitk.sitkLinear, float(np.min(target.array)),
                              sitk.sitkFloat32)
        array = np.transpose(sitk.GetArrayFromImage(moved), (2, 1, 0))
        registered = dataclasses.replace(target, array=array.astype(np.float32), affine=np.asarray(source.affine, np.float64).copy())
    else:
        # Value at world x = target at M·x: the target's voxel v now sits at M⁻¹·affine·v.
        registered = dataclasses.replace(target, affine=np.linalg.inv(_matrix(final)) @ np.asarray(target.affine, np.float64))
    return registered, report


def check(report: dict[str, Any], settings: RegistrationSettings) -> None:
    """PairRejected (the reason names the measured value and the limit) when the registration in
    `report` cannot be trusted; nothing otherwise."""
    floor = settings.min_similarity if settings.min_similarity is not None else MIN_SIMILARITY[report["metric"]]
    before, after = report["similarity_before"], report["similarity_after"]
    what = f"registration ({report['method']}, {report['metric']})"
    if after < before - 0.02:
        raise PairRejected(f"{what}: similarity got worse ({before:.3f} → {after:.3f})")
    if after < floor:
        raise PairRejected(f"{what}: similarity {after:.3f} after registration is below {floor:.3f}; "
                           "the two volumes do not look like one anatomy")
    if not report["converged"]:
        raise PairRejected(f"{what}: the optimizer did not converge in {settings.iterations} iterations")
    if report["rotation_deg"] > settings.max_rotation_deg:
        raise PairRejected(f"{what}: rotation {report['rotation_deg']:.1f}° is beyond --max-rotation "
                           f"{settings.max_rotation_deg:g}°")
    if report["translation_mm"] > settings.max_translation_mm:
        raise PairRejected(f"{what}: translation {report['translation_mm']:.1f} mm is beyond --max-translation "
                           f"{settings.max_translation_mm:g} mm")


def log_line(report: dict[str, Any]) -> str:
    """One line of a pair's registration (no path, no identity), for the converter's log."""
    line = (f"{report['method']} ({report['metric']}): rotation {report['rotation_deg']:.2f}°, translation "
            f"{report['translation_mm']:.2f} mm, similarity {report['similarity_before']:.3f} → "
            f"{report['similarity_after']:.3f}, {report['iterations']} iterations, {report['seconds']:.1f} s")
    if "scales" in report and report["method"] != "rigid":
        line += ", scales " + "/".join(f"{s:.3f}" for s in report["scales"])
    if "displacement_mm" in report:
        line += f", deformation mean {report['displacement_mm']['mean']:.2f} / max {report['displacement_mm']['max']:.2f} mm"
    return line


def linear_report(matrix: np.ndarray, centre: np.ndarray, start_matrix: np.ndarray | None = None) -> dict[str, Any]:
    """What a 4×4 world transform (source point → target point) does, relative to `start_matrix`
    (default identity): rotation angle (degrees, of the rotation part of its polar decomposition),
    translation of the source's `centre` (mm, and its vector), the scales (singular values)."""
    relative = matrix if start_matrix is None else np.linalg.inv(start_matrix) @ matrix
    u, scales, vt = np.linalg.svd(relative[:3, :3])
    rotation = u @ vt
    angle = math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0))))
    shift = relative[:3, :3] @ centre + relative[:3, 3] - centre
    return {"rotation_deg": round(angle, 4), "translation_mm": round(float(np.linalg.norm(shift)), 4),
            "translation_vector_mm": [round(float(v), 4) for v in shift],
            "scales": [round(float(v), 5) for v in scales], "matrix": np.round(relative, 6).tolist()}


def rigid_matrix(rotation_deg: tuple[float, float, float], translation_mm: tuple[float, float, float],
                 centre: np.ndarray) -> np.ndarray:
    """4×4 world transform: rotations about x, then y, then z (degrees) about `centre`, then a
    translation (mm). What `synth --misalign` draws and a registration is expected to recover."""
    rx, ry, rz = (math.radians(v) for v in rotation_deg)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    rotation = (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
                @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = np.asarray(centre, np.float64) - rotation @ centre + np.asarray(translation_mm, np.float64)
    return matrix


def similarity(fixed: Any, moving: Any, transform: Any, metric: str) -> float:
    """Normalized similarity of `moving` under `transform` to `fixed`, on the voxels of `fixed`
    that the moved volume covers: Pearson correlation, or 2·MI / (H(A) + H(B)) of a 32-bin joint
    histogram between the 1st and 99th percentiles (1 identical, 0 independent)."""
    import SimpleITK as sitk

    step = max(1, int(round((fixed.GetNumberOfPixels() / 2e6) ** (1 / 3))))  # ≤ ~2 M voxels: fast enough
    grid = fixed[::step, ::step, ::step] if step > 1 else fixed
    outside = -3.0e38
    moved = sitk.GetArrayFromImage(sitk.Resample(moving, grid, transform, sitk.sitkLinear, outside, sitk.sitkFloat32))
    a, b = sitk.GetArrayFromImage(grid).ravel().astype(np.float64), moved.ravel().astype(np.float64)
    inside = b > outside / 2
    a, b = a[inside], b[inside]
    if a.size < 100 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    if metric == "correlation":
        return float(np.corrcoef(a, b)[0, 1])
    edges = [np.linspace(*np.percentile(v, (1, 99)), 33) if np.ptp(np.percentile(v, (1, 99))) > 0
             else np.linspace(v.min(), v.max(), 33) for v in (a, b)]
    joint, _, _ = np.histogram2d(np.clip(a, edges[0][0], edges[0][-1]), np.clip(b, edges[1][0], edges[1][-1]), bins=edges)
    p = joint / joint.sum()

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    h_a, h_b, h_ab = entropy(p.sum(1)), entropy(p.sum(0)), entropy(p.ravel())
    return 0.0 if h_a + h_b == 0 else float(2 * (h_a + h_b - h_ab) / (h_a + h_b))


# --------------------------------------------------------------------------- SimpleITK stages


def _start(source: Volume, target: Volume, fixed: Any, moving: Any) -> tuple[Any, str]:
    """The starting transform (an Euler3D about the source's centre) and its name."""
    import SimpleITK as sitk

    from medgan_tf.data import geometry

    if geometry.overlap_fraction(target, source.array.shape, source.affine) >= 0.5:
        start = sitk.Euler3DTransform()
        start.SetCenter([float(v) for v in _centre(source)])
        return start, "world"
    start = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                              sitk.CenteredTransformInitializerFilter.GEOMETRY)
    return sitk.Euler3DTransform(start), "centres"


def _method(fixed: Any, metric: str, fixed_mask: Any, iterations: int, bspline: bool = False) -> Any:
    """An ImageRegistrationMethod with the metric, pyramid, sampling and optimizer (module doc)."""
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    if metric == "correlation":
        method.SetMetricAsCorrelation()
    else:
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    size = np.asarray(fixed.GetSize())
    shrinks = [f for f in (4, 2, 1) if f == 1 or size.min() / f >= 12][-(2 if bspline else 3):]
    sigmas = {4: 2.0, 2: 1.0, 1: 0.0}
    method.SetShrinkFactorsPerLevel(shrinks)
    method.SetSmoothingSigmasPerLevel([sigmas[f] for f in shrinks])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentagePerLevel(
        [float(min(1.0, SAMPLES_PER_LEVEL / (8 if bspline else 1) * f ** 3 / size.prod())) for f in shrinks], SEED)
    method.SetInterpolator(sitk.sitkLinear)
    if bspline:
        method.SetOptimizerAsGradientDescentLineSearch(learningRate=1.0, numberOfIterations=iterations,
                                                       convergenceMinimumValue=1e-5, convergenceWindowSize=5)
    else:
        method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=iterations,
                                                        relaxationFactor=0.7, gradientMagnitudeTolerance=1e-8)
        # A small central region: the scales come out the same, the estimate is 3× faster on large grids.
        method.SetOptimizerScalesFromPhysicalShift(centralRegionRadius=1)
    return method


def _run_stage(fixed: Any, moving: Any, initial: Any, metric: str, fixed_mask: Any, iterations: int) -> tuple[Any, bool, int]:
    """One linear stage → (the transform found, converged, iterations at the finest level)."""
    method = _method(fixed, metric, fixed_mask, iterations)
    method.SetInitialTransform(initial, inPlace=False)
    found = method.Execute(fixed, moving)
    used = int(method.GetOptimizerIteration())
    found = found.GetBackTransform() if hasattr(found, "GetBackTransform") else found
    return _unwrap(found), used < iterations, used


def _deformable(fixed: Any, moving: Any, linear: Any, metric: str, fixed_mask: Any,
                iterations: int) -> tuple[Any, dict[str, float], bool]:
    """A cubic B-spline on top of `linear` → (composite transform, displacement statistics mm, converged)."""
    import SimpleITK as sitk

    mesh = [max(2, int(round(n * s / 60.0))) for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]  # ~6 cm knots
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    iterations = min(iterations, BSPLINE_ITERATIONS)
    method = _method(fixed, metric, fixed_mask, iterations, bspline=True)
    method.SetMovingInitialTransform(linear)
    method.SetInitialTransform(bspline, inPlace=True)
    method.Execute(fixed, moving)
    converged = int(method.GetOptimizerIteration()) < iterations
    step = max(1, int(round((fixed.GetNumberOfPixels() / 2e5) ** (1 / 3))))
    grid = fixed[::step, ::step, ::step]
    field = sitk.TransformToDisplacementField(bspline, sitk.sitkVectorFloat64, grid.GetSize(), grid.GetOrigin(),
                                              grid.GetSpacing(), grid.GetDirection())
    lengths = np.linalg.norm(sitk.GetArrayFromImage(field).reshape(-1, 3), axis=1)
    composite = sitk.CompositeTransform([linear, bspline])
    stats = {"mean": round(float(lengths.mean()), 4), "p95": round(float(np.percentile(lengths, 95)), 4),
             "max": round(float(lengths.max()), 4)}
    return composite, stats, converged


def _unwrap(transform: Any) -> Any:
    """A plain Euler3D / Affine transform out of what `Execute` returns (a composite of one)."""
    import SimpleITK as sitk

    if transform.GetName() == "CompositeTransform":
        transform = sitk.CompositeTransform(transform).GetNthTransform(0)
    name = transform.GetName()
    return sitk.Euler3DTransform(transform) if name == "Euler3DTransform" else sitk.AffineTransform(transform)


def _affine_from(transform: Any) -> Any:
    import SimpleITK as sitk

    affine = sitk.AffineTransform(3)
    affine.SetCenter(transform.GetCenter())
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    return affine


def _matrix(transform: Any) -> np.ndarray:
    """4×4 of a centred linear SimpleITK transform: x ↦ R(x − c) + c + t."""
    rotation = np.asarray(transform.GetMatrix(), np.float64).reshape(3, 3)
    centre, translation = np.asarray(transform.GetCenter()), np.asarray(transform.GetTranslation())
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + translation
    return matrix


def _centre(volume: Volume) -> np.ndarray:
    """World mm of the centre of `volume`'s voxel grid."""
    from medgan_tf.data import geometry

    return geometry.voxel_to_world(volume.affine, (np.asarray(volume.array.shape, np.float64) - 1.0)[None] / 2.0)[0]
