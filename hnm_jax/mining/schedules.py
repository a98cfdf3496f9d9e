"""Hardness bands and curricula for negative selection: pure, jit-able.

A *band* ``(lo, hi)`` keeps a negative with score ``s`` when, by `BandSpec.mode`,

    absolute:  lo <= s <= hi
    relative:  lo * s_pos <= s <= hi * s_pos           (fractions of its query's positive score)
    gap:       s_pos + lo <= s <= s_pos + hi           (offsets from the positive: lo = -d_hi, hi = -d_lo)

The gap band is the one to use: ``hi > 0`` keeps negatives scoring above the positive (the model's errors),
``lo`` bounds how easy a kept negative may be. False negatives are a separate rule (labelled positives, exact
twins, the cross-encoder), not the band's upper edge. A *curriculum* moves the band from an easy start band
to the final band over the first ``curriculum_steps`` steps (both edges, start <= end per edge):

    t = progress(step)                       in [0, 1], non-decreasing in step
    band(step) = start + t * (end - start)   per bound

A band *fills* N slots from a pool in band order (`band_fill_order`): the entries inside the band first (by a
priority: the sampler's keys, or the score, hardest first), then the entries nearest to the band by
`band_distance` (0 inside; how far below the lower or above the upper bound), so N slots are filled whenever the
pool holds N entries, whatever the band's width.

Everything here takes arrays and a frozen :class:`BandSpec`, so the band can be computed inside a
jitted train step from the traced step counter without recompiling (the spec is static; the step and
the band values are traced).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = jax.Array | np.ndarray | int | float


def _progress_fraction(step: ArrayLike, total: int) -> jax.Array:
    """p = clip(step / total, 0, 1) as float32."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.clip(step / jnp.float32(max(int(total), 1)), 0.0, 1.0)


def progress_none(step: ArrayLike, total: int, num_stages: int = 1) -> jax.Array:
    """No curriculum: t = 1 at every step (the final band is used throughout)."""
    del total, num_stages
    return jnp.ones_like(jnp.asarray(step, jnp.float32))


def progress_linear(step: ArrayLike, total: int, num_stages: int = 1) -> jax.Array:
    """t = clip(step / total, 0, 1)."""
    del num_stages
    return _progress_fraction(step, total)


def progress_cosine(step: ArrayLike, total: int, num_stages: int = 1) -> jax.Array:
    """t = (1 - cos(pi * p)) / 2 with p = clip(step / total, 0, 1): slow start, slow finish."""
    del num_stages
    p = _progress_fraction(step, total)
    return jnp.clip(0.5 * (1.0 - jnp.cos(jnp.float32(math.pi) * p)), 0.0, 1.0)


def progress_step(step: ArrayLike, total: int, num_stages: int = 4) -> jax.Array:
    """Piecewise constant: ``num_stages`` equal-length stages, t = stage / (num_stages - 1).

    stage = min(floor(clip(step, 0, total) * S / total), S - 1), so the start band holds during the first
    stage and the final band from the last stage (step >= (S-1)/S * total) on. S <= 1 gives t = 1.
    Integer arithmetic, so stage boundaries are exact.
    """
    stages = int(num_stages)
    total = max(int(total), 1)
    if stages <= 1:
        return progress_none(step, total)
    s = jnp.clip(jnp.asarray(step, jnp.int32), 0, total)
    # s * stages could overflow int32 only for totals ~ 2**31 / stages; compute in float64-free int math.
    stage = jnp.minimum((s * stages) // total, stages - 1)
    return stage.astype(jnp.float32) / jnp.float32(stages - 1)


BAND_MODES = ("gap", "relative", "absolute")

CURRICULA: dict[str, Callable[..., jax.Array]] = {
    "none": progress_none,
    "linear": progress_linear,
    "cosine": progress_cosine,
    "step": progress_step,
}


@dataclasses.dataclass(frozen=True)
class BandSpec:
    """Hardness band (and its curriculum) for selecting negatives; static under jit.

    lo, hi: the kept band at the end of the curriculum (always, when curriculum == "none").
    mode: how the bounds read (BAND_MODES, see the module docstring): "gap" (offsets from the positive's
      score), "relative" (fractions of it; for pos < 0 the band is empty unless lo >= hi) or "absolute".
    curriculum: one of CURRICULA; the band moves from (start_lo, start_hi) at step 0 to (lo, hi) at
      curriculum_steps (0: `curriculum_fraction` of the run, fixed by `for_run(total_steps)`). Easy to hard on
      both edges: start_lo <= lo and start_hi <= hi (checked when there is a curriculum).
    num_stages is used by "step".
    """

    lo: float = -2.0
    hi: float = 2.0
    mode: str = "gap"
    curriculum: str = "none"
    start_lo: float = -2.0
    start_hi: float = 0.0
    curriculum_steps: int = 0
    curriculum_fraction: float = 1.0
    num_stages: int = 4

    def __post_init__(self) -> None:
        if self.mode not in BAND_MODES:
            raise ValueError(f"BandSpec.mode={self.mode!r} is unknown; expected one of {', '.join(BAND_MODES)}")
        if self.curriculum not in CURRICULA:
            raise ValueError(f"BandSpec.curriculum={self.curriculum!r} is unknown; expected one of {sorted(CURRICULA)}")
        if self.curriculum_steps < 0:
            raise ValueError(f"BandSpec.curriculum_steps must be >= 0 (0: a fraction of the run), got "
                             f"{self.curriculum_steps}")
        if not 0.0 < self.curriculum_fraction <= 1.0:
            raise ValueError(f"BandSpec.curriculum_fraction must be in (0, 1], got {self.curriculum_fraction}")
        if self.num_stages < 1:
            raise ValueError(f"BandSpec.num_stages must be >= 1, got {self.num_stages}")
        if self.lo > self.hi:
            raise ValueError(f"BandSpec.lo must be <= hi (the band is empty): lo={self.lo} > hi={self.hi}")
        if self.start_lo > self.start_hi:
            raise ValueError(f"BandSpec.start_lo must be <= start_hi (the start band is empty): "
                             f"start_lo={self.start_lo} > start_hi={self.start_hi}")
        if self.curriculum != "none" and (self.start_lo > self.lo or self.start_hi > self.hi):
            raise ValueError(f"BandSpec.start_lo: a curriculum moves the band from easy to hard on both edges, so "
                             f"start_lo <= lo and start_hi <= hi; got start ({self.start_lo}, {self.start_hi}) and "
                             f"end ({self.lo}, {self.hi})")

    def for_run(self, total_steps: int) -> BandSpec:
        """This spec with `curriculum_steps` fixed for a run of `total_steps` (when 0: the fraction of it)."""
        if self.curriculum_steps:
            return self
        return dataclasses.replace(self, curriculum_steps=max(1, round(self.curriculum_fraction * total_steps)))


def _interpolate(start: float, end: float, t: jax.Array) -> jax.Array:
    """start + t * (end - start), exact at t=0 and t=1 and monotone in t (clipped to [start, end])."""
    a, b = jnp.float32(start), jnp.float32(end)
    value = jnp.clip(a + t * (b - a), jnp.minimum(a, b), jnp.maximum(a, b))
    return jnp.where(t >= 1.0, b, jnp.where(t <= 0.0, a, value))


def band_at(step: jax.Array | int, spec: BandSpec) -> tuple[jax.Array, jax.Array]:
    """Band (lo, hi) at ``step``: float32 scalars interpolated from the start band to the final band.

    t = CURRICULA[spec.curriculum](step, spec.curriculum_steps, spec.num_stages)
    lo = start_lo + t * (lo_end - start_lo),  hi = start_hi + t * (hi_end - start_hi)
    With start <= end per bound, both bounds are non-decreasing in step.
    """
    if spec.curriculum not in CURRICULA:
        raise ValueError(f"unknown curriculum {spec.curriculum!r}; expected one of {sorted(CURRICULA)}")
    if spec.curriculum != "none" and not spec.curriculum_steps:
        raise ValueError("band_at: curriculum_steps is 0 (a fraction of the run): call spec.for_run(total) first")
    t = CURRICULA[spec.curriculum](step, spec.curriculum_steps, spec.num_stages)
    return _interpolate(spec.start_lo, spec.lo, t), _interpolate(spec.start_hi, spec.hi, t)


def _score_bounds(pos_scores: ArrayLike, band: tuple[ArrayLike, ArrayLike], mode: str) -> tuple[jax.Array, jax.Array]:
    """The band in score units, broadcastable to [..., N]: (lo', hi') with lo' <= s <= hi' inside (see band_mask)."""
    if mode not in BAND_MODES:
        raise ValueError(f"band: mode {mode!r} is unknown; expected one of {', '.join(BAND_MODES)}")
    lo = jnp.asarray(band[0], jnp.float32)
    hi = jnp.asarray(band[1], jnp.float32)
    lo = lo[..., None] if lo.ndim else lo
    hi = hi[..., None] if hi.ndim else hi
    if mode != "absolute":
        pos = jnp.asarray(pos_scores, jnp.float32)[..., None]
        lo, hi = (lo * pos, hi * pos) if mode == "relative" else (pos + lo, pos + hi)
    return lo, hi


def band_mask(
    neg_scores: jax.Array | np.ndarray,
    pos_scores: jax.Array | np.ndarray | float,
    band: tuple[ArrayLike, ArrayLike],
    mode: str,
) -> jax.Array:
    """Which negatives lie inside the band.

    neg_scores: [..., N]; pos_scores: [...] (one positive score per row, broadcast over N; ignored
    when ``mode == "absolute"``); band: (lo, hi) scalars (or arrays broadcastable to [...]).
    Returns bool [..., N], True = keep:
      absolute:  lo <= s <= hi
      relative:  lo * pos <= s <= hi * pos
      gap:       pos + lo <= s <= pos + hi
    NaN scores are never kept; -inf scores are kept only when the lower bound is -inf.
    """
    neg = jnp.asarray(neg_scores)
    lo, hi = _score_bounds(pos_scores, band, mode)
    return jnp.broadcast_to((neg >= lo) & (neg <= hi), neg.shape)


def band_distance(
    neg_scores: jax.Array | np.ndarray,
    pos_scores: jax.Array | np.ndarray | float,
    band: tuple[ArrayLike, ArrayLike],
    mode: str,
) -> jax.Array:
    """How far each negative lies outside the band, in score units: float32 [..., N], 0 inside.

    With (lo', hi') the band's bounds in score units (`band_mask`: lo' = pos + lo in gap mode, ...):
        d(s) = max(lo' - s, 0) + max(s - hi', 0)
    i.e. lo' - s below the band, s - hi' above it. NaN scores get +inf (never near the band).
    """
    neg = jnp.asarray(neg_scores, jnp.float32)
    lo, hi = _score_bounds(pos_scores, band, mode)
    distance = jnp.maximum(lo - neg, 0.0) + jnp.maximum(neg - hi, 0.0)
    return jnp.where(jnp.isnan(distance), jnp.inf, jnp.broadcast_to(distance, neg.shape))


def band_fill_order(
    neg_scores: jax.Array | np.ndarray,
    pos_scores: jax.Array | np.ndarray | float,
    band: tuple[ArrayLike, ArrayLike],
    mode: str,
    valid: jax.Array | np.ndarray | None = None,
    priority: jax.Array | np.ndarray | None = None,
) -> jax.Array:
    """The order in which a band fills slots from a pool: int32 [..., M], a permutation of the columns per row.

    neg_scores: [..., M] pool scores; pos_scores: [...]; valid: bool [..., M] (None: all; invalid entries come
    last); priority: float [..., M] (None: the score, i.e. hardest first; e.g. a sampler's Gumbel keys).
    Sorted by (group, key, column), with
      group 0: valid and inside the band      key = -priority   (highest priority first)
      group 1: valid and outside the band     key = band_distance (nearest to the band first)
      group 2: invalid                        key = 0
    The first N columns are the band's N slots: every in-band entry before any out-of-band one, and
    min(N, #valid) of them valid. NaN keys sort as +inf.
    """
    neg = jnp.asarray(neg_scores, jnp.float32)
    valid = jnp.ones(neg.shape, bool) if valid is None else jnp.broadcast_to(jnp.asarray(valid, bool), neg.shape)
    priority = neg if priority is None else jnp.asarray(priority, jnp.float32)
    inside = band_mask(neg, pos_scores, band, mode) & valid
    group = jnp.where(inside, 0, jnp.where(valid, 1, 2)).astype(jnp.int32)
    key = jnp.where(inside, -priority, jnp.where(valid, band_distance(neg, pos_scores, band, mode), 0.0))
    key = jnp.where(jnp.isnan(key), jnp.inf, key)
    column = jnp.broadcast_to(jnp.arange(neg.shape[-1], dtype=jnp.int32), neg.shape)
    return jnp.lexsort((column, key, group), axis=-1).astype(jnp.int32)


def band_fill(
    neg_scores: jax.Array | np.ndarray,
    pos_scores: jax.Array | np.ndarray | float,
    band: tuple[ArrayLike, ArrayLike],
    mode: str,
    num: int,
    valid: jax.Array | np.ndarray | None = None,
    priority: jax.Array | np.ndarray | None = None,
    refill: bool = True,
) -> jax.Array:
    """The columns of the `num` slots a band fills: int32 [..., num], -1 = empty slot.

    The first `num` columns of `band_fill_order`; with `refill`, every valid one is kept (in-band entries first,
    then the nearest outside), so min(num, #valid) slots are filled; without it only the in-band ones (the band
    as a filter: rows with fewer in-band entries keep empty slots, and an entry of priority -inf, one a sampler
    gave no chance, is never kept). `num` is static.
    """
    neg = jnp.asarray(neg_scores, jnp.float32)
    valid = jnp.ones(neg.shape, bool) if valid is None else jnp.broadcast_to(jnp.asarray(valid, bool), neg.shape)
    order = band_fill_order(neg, pos_scores, band, mode, valid, priority)[..., :num]
    keep = valid
    if not refill:  # the band as a filter: in-band entries the sampler gave a chance (priority > -inf) only
        keep = keep & band_mask(neg, pos_scores, band, mode)
        if priority is not None:
            keep = keep & (jnp.asarray(priority, jnp.float32) > -jnp.inf)
    columns = jnp.where(jnp.take_along_axis(keep, order, axis=-1), order, -1).astype(jnp.int32)
    if columns.shape[-1] < num:  # fewer pool entries than slots: the rest stay empty
        pad = [(0, 0)] * (columns.ndim - 1) + [(0, num - columns.shape[-1])]
        columns = jnp.pad(columns, pad, constant_values=-1)
    return columns


def simans_weights(
    neg_scores: np.ndarray | jax.Array,
    pos_scores: np.ndarray | jax.Array | float,
    a: float = 1.0,
    b: float = 0.0,
) -> np.ndarray | jax.Array:
    """SimANS sampling weights (Zhou et al. 2022), normalized over the last axis.

    neg_scores: [..., N]; pos_scores: [...] (broadcast over N).
        w_i = exp(-a * (s_i - s_pos - b)^2) / sum_j exp(-a * (s_j - s_pos - b)^2)
    so the most likely negatives score about ``s_pos + b`` (take b < 0 to prefer negatives slightly
    below the positive). Invalid entries (-inf, +inf or NaN score) get weight 0; a row with no valid entry
    is all zeros. Numpy in -> numpy out (float32), jax in -> jax out.
    """
    xp = jnp if isinstance(neg_scores, jax.Array) or isinstance(pos_scores, jax.Array) else np
    neg = xp.asarray(neg_scores, dtype=xp.float32)
    pos = xp.asarray(pos_scores, dtype=xp.float32)[..., None]
    valid = xp.isfinite(neg)
    logits = -xp.float32(a) * xp.square(neg - pos - xp.float32(b))
    logits = xp.where(valid, logits, -xp.inf)
    row_max = xp.max(xp.where(valid, logits, xp.float32(-3.0e38)), axis=-1, keepdims=True)
    unnorm = xp.where(valid, xp.exp(logits - row_max), xp.float32(0.0))
    total = xp.sum(unnorm, axis=-1, keepdims=True)
    return xp.where(total > 0, unnorm / xp.where(total > 0, total, 1.0), xp.float32(0.0)).astype(xp.float32)
