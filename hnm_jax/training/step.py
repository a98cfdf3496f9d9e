"""TrainState and the pure, jitted contrastive train step.

A batch (global arrays, leading axis sharded over 'data'):
  query_ids, query_mask   [B, Lq] int32
  pos_ids, pos_mask       [B, Ld] int32      the positive document of each query
  neg_ids, neg_mask       [B, N, Ld] int32   N explicit negatives per query (N may be 0)
  pos_doc                 [B] int32          corpus row of each positive
  neg_doc                 [B, N] int32       corpus row of each negative (-1 = empty slot)
  query_positives         [B, P] int32       every known positive of each query (-1 padded)
With a frozen trunk (model.freeze_layers > 0) the texts come as its cached hidden states instead of token ids:
  query_hidden [B, Lq, H], pos_hidden [B, Ld, H], neg_hidden [B, N, Ld, H] (compute dtype; masks as above)
  lexical (optional)      [B, B*(1+N)] f32   raw BM25 of each (query, column) pair, for hybrid logits, with
  lexical_lo, lexical_span, hybrid_beta  [B] f32  each query's deployed fusion coefficients
                                             (`mining.retriever.hybrid_logits`)
  guide (optional)        [B, B*(1+N)] bool  False = the cross-encoder calls the column a likely positive of
                                             the query (guide-model masking, `negatives.guide_mask`)
"""

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hnm_jax.errors import fail as _fail
from hnm_jax.losses import (
    additive_margins,
    candidate_mask,
    column_doc_ids,
    hinge_active_fraction,
    in_batch_accuracy,
    infonce_loss,
    known_positive_columns,
    margin_diagnostics,
    margin_loss,
    uniformity_loss,
    usable_columns,
)
from hnm_jax.mining.retriever import hybrid_logits
from hnm_jax.mining.schedules import BandSpec, band_at, band_mask
from hnm_jax.models.encoder import RNG_IMPLS, PoolingSpec, embed, embed_hidden, split_frozen

MARGIN_KINDS = ("none", "additive", "hinge")


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """`loss.*`: the contrastive objective of `train_step` (ConfigError naming the key when a value is impossible)."""

    temperature: float
    infonce_weight: float
    margin_kind: str
    margin_weight: float
    margin: float
    margin_alpha: float
    margin_relative: bool
    uniformity_weight: float
    hybrid_logits: bool  # train on the deployed weighted fusion of dense + BM25 (retriever.*), per-query affine

    def __post_init__(self):
        if not 1e-3 <= self.temperature <= 10.0:
            _fail("loss.temperature", f"must be in [0.001, 10] (logits = scores / temperature), got {self.temperature}")
        for key in ("infonce_weight", "margin_weight", "uniformity_weight"):
            if not 0.0 <= getattr(self, key) <= 100.0:
                _fail(f"loss.{key}", f"must be in [0, 100], got {getattr(self, key)}")
        if self.margin_kind not in MARGIN_KINDS:
            _fail("loss.margin_kind", f"unknown {self.margin_kind!r}; valid: {', '.join(MARGIN_KINDS)}")
        if self.margin_weight and self.margin_kind != "hinge":
            _fail("loss.margin_weight", "weights the hinge margin loss: set loss.margin_kind = 'hinge' (or 0 here)")
        if self.margin_kind == "hinge" and not self.margin_weight:
            _fail("loss.margin_weight", "must be > 0 with loss.margin_kind = 'hinge'")
        if self.margin_kind == "additive" and not self.infonce_weight:
            _fail("loss.infonce_weight", "the additive margin acts inside InfoNCE: infonce_weight must be > 0")
        if self.infonce_weight == 0 and self.margin_weight == 0:
            _fail("loss.infonce_weight", "infonce_weight and margin_weight are both 0: nothing to train")
        if not 0.0 <= self.margin <= 2.0:
            _fail("loss.margin", f"must be in [0, 2] (cosine scores), got {self.margin}")
        if not -2.0 <= self.margin_alpha <= 2.0:
            _fail("loss.margin_alpha", f"must be in [-2, 2], got {self.margin_alpha}")


BATCH_KEYS = ("query_ids", "query_mask", "pos_ids", "pos_mask", "neg_ids", "neg_mask", "pos_doc", "neg_doc",
              "query_positives")


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; `graphdef` is static (part of the jit cache key)."""

    graphdef: Any = flax.struct.field(pytree_node=False)
    params: Any
    opt_state: Any
    step: jax.Array  # scalar int32: optimizer steps taken
    rng: jax.Array  # raw uint32 threefry PRNG key; step keys are fold_in(rng, step) (see `step_key`)


def resolve_rng_impl(kind: str, platform: str | None = None) -> str:
    """The PRNG `kind` (one of RNG_IMPLS) means on `platform` (default: JAX's default backend)."""
    if kind not in RNG_IMPLS:
        raise ValueError(f"rng_impl must be one of {RNG_IMPLS}, got {kind!r}")
    if kind != "auto":
        return kind
    return "threefry" if (platform or jax.default_backend()) == "cpu" else "rbg"


def step_key(rng: jax.Array, step: jax.Array, rng_impl: str = "threefry") -> jax.Array:
    """The dropout key of `step`: fold_in(rng, step) on the stored threefry key (raw uint32 [2]); for another
    `rng_impl` its 4 words of threefry bits become a typed key of that implementation, so checkpoints (which store
    the threefry key) restore under any choice and the same (seed, step) always gives the same key."""
    key = jax.random.fold_in(rng, step)
    if resolve_rng_impl(rng_impl) == "threefry":
        return key
    return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl=resolve_rng_impl(rng_impl))


def create_train_state(graphdef: Any, params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh state at step 0."""
    return TrainState(graphdef=graphdef, params=params, opt_state=tx.init(params),
                      step=jnp.zeros((), jnp.int32), rng=jax.random.PRNGKey(seed))


def encode_pair_batch(graphdef: Any, params: Any, batch: dict, pooling: PoolingSpec,
                      dropout_rng: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Embeds the queries [B, D] and the candidate columns [B*(1+N), D] (positives, then negatives).

    Queries as wide as the documents (the same length bucket) go through the encoder with them in one pass, one
    dropout draw: the step's program holds the encoder once, which cuts its compile by about a quarter (MiniLM 32 x
    32 first call 24.6-24.9 s -> 16.9-20.0 s, results/bench_first_step.json, a426daa); otherwise two passes. A batch of
    a frozen trunk's hidden states (`*_hidden`) runs only the blocks above it (`embed_hidden`).
    """
    model = nnx.merge(graphdef, params)
    kind, encode = ("hidden", embed_hidden) if "query_hidden" in batch else ("ids", embed)
    b, n, length = batch["neg_mask"].shape
    negatives = batch[f"neg_{kind}"]
    doc_x = jnp.concatenate([batch[f"pos_{kind}"], negatives.reshape(b * n, *negatives.shape[2:])])  # N may be 0
    doc_mask = jnp.concatenate([batch["pos_mask"], batch["neg_mask"].reshape(b * n, length)])
    query_x = batch[f"query_{kind}"]
    if query_x.shape[1] == length:  # one forward pass over [B + B*(1+N), L]: fewer, larger matmuls
        both = encode(model, jnp.concatenate([query_x, doc_x]), jnp.concatenate([batch["query_mask"], doc_mask]),
                      pooling, dropout_rng=dropout_rng)
        return both[:b], both[b:]
    q_rng, d_rng = (None, None) if dropout_rng is None else jax.random.split(dropout_rng)
    queries = encode(model, query_x, batch["query_mask"], pooling, dropout_rng=q_rng)
    docs = encode(model, doc_x, doc_mask, pooling, dropout_rng=d_rng)
    return queries, docs


def own_negative_columns(num_queries: int, num_negatives: int) -> jax.Array:
    """bool [B, B*(1+N)]: column j holds one of query i's own explicit negatives (columns B + i*N .. B + i*N + N-1)."""
    cols = jnp.arange(num_queries * (1 + num_negatives))
    owner = jnp.where(cols >= num_queries, (cols - num_queries) // max(num_negatives, 1), -1)
    return owner[None, :] == jnp.arange(num_queries)[:, None]


def apply_step_band(dense: jax.Array, mask: jax.Array, band: tuple[jax.Array, jax.Array], mode: str,
                    num_negatives: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The in-step band: masks each query's own explicit negatives whose fresh score lies outside `band`.

    dense, mask: [B, B*(1+N)]. In-batch columns (the positives) and other queries' negatives are untouched.
    Returns (new mask, own [B, C] = the query's own unmasked explicit negatives before the band, kept = own & in band).
    """
    b = dense.shape[0]
    in_band = band_mask(dense, jnp.diagonal(dense), band, mode)
    own = own_negative_columns(b, num_negatives) & mask
    return mask & (~own | in_band), own, own & in_band


def explicit_negatives(batch: dict, in_band: jax.Array | None = None) -> jax.Array:
    """bool [B, B*(1+N)]: query i's own explicit negative slots the loss trains on.

    Column j is one of query i's own N negative columns holding a real document (row >= 0) that is no known
    positive of the query, not masked by the guide (`batch["guide"]`) nor by the in-step band (`in_band` [B, C],
    None: no band). A document repeated from an earlier column counts: the query still sees it there.
    """
    pos_doc, neg_doc = batch["pos_doc"], batch["neg_doc"]
    b, n = neg_doc.shape
    real = (column_doc_ids(pos_doc, neg_doc) >= 0)[None, :]
    keep = own_negative_columns(b, n) & real & ~known_positive_columns(pos_doc, neg_doc, batch["query_positives"])
    if "guide" in batch:
        keep = keep & batch["guide"]
    return keep if in_band is None else keep & in_band


def contrastive_loss(params: Any, graphdef: Any, batch: dict, loss_spec: LossSpec, pooling: PoolingSpec,
                     dropout_rng: jax.Array | None, band: tuple[jax.Array, jax.Array] | None = None,
                     band_mode: str = "gap") -> tuple[jax.Array, tuple[jax.Array, jax.Array, dict]]:
    """The weighted training loss of one batch, its (scores [B, C], candidate mask [B, C]) and diagnostics.

    loss = w_nce * InfoNCE (+ additive margins) + w_margin * hinge margin loss + w_unif * uniformity(documents), on
    scores that are the cosine or, with `batch["lexical"]` (loss.hybrid_logits), the deployed retriever's weighted
    fusion of cosine and BM25 on the dense scale (`retriever.hybrid_logits`). `band` (lo, hi), when given, masks
    each query's OWN explicit negatives whose fresh cosine lies outside it (`band_mode`); in-batch columns and other
    queries' negatives are untouched. C = B*(1+N).

    Diagnostics (N > 0): explicit_negatives_per_query (mean count of `explicit_negatives`: N when every slot is
    filled and trained on) and explicit_negative_gap (their mean cosine gap s_pos - s_neg); with `band`, the band's
    band_kept_*; with hybrid logits, hybrid_beta_mean.
    """
    queries, docs = encode_pair_batch(graphdef, params, batch, pooling, dropout_rng)
    dense = queries @ docs.T  # global matmul: in-batch negatives span every device
    mask = candidate_mask(batch["pos_doc"], batch["neg_doc"], batch["query_positives"])
    if "guide" in batch:
        mask = mask & batch["guide"]
    b, n = batch["neg_doc"].shape
    diagnostics = {}
    gap = jax.lax.stop_gradient(jnp.diagonal(dense)[:, None] - dense)
    if band is not None:
        mask, own_negative, kept = apply_step_band(dense, mask, band, band_mode, n)
        diagnostics["band_kept_per_query"] = jnp.mean(jnp.sum(kept, axis=-1).astype(jnp.float32))
        diagnostics["band_kept_fraction"] = jnp.sum(kept) / jnp.maximum(jnp.sum(own_negative), 1)
        diagnostics["band_kept_gap_mean"] = jnp.sum(jnp.where(kept, gap, 0.0)) / jnp.maximum(jnp.sum(kept), 1)
    if n:
        explicit = explicit_negatives(batch, None if band is None else band_mask(
            jax.lax.stop_gradient(dense), jnp.diagonal(jax.lax.stop_gradient(dense)), band, band_mode))
        diagnostics["explicit_negatives_per_query"] = jnp.mean(jnp.sum(explicit, axis=-1).astype(jnp.float32))
        diagnostics["explicit_negative_gap"] = jnp.sum(jnp.where(explicit, gap, 0.0)) / jnp.maximum(
            jnp.sum(explicit), 1)
    scores = dense
    if "lexical" in batch:
        scores = hybrid_logits(dense, batch["lexical"], batch["lexical_lo"], batch["lexical_span"],
                               batch["hybrid_beta"])
        diagnostics["hybrid_beta_mean"] = jnp.mean(batch["hybrid_beta"])
    margins = None
    if loss_spec.margin_kind == "additive":
        margins = additive_margins(scores, loss_spec.margin, loss_spec.margin_alpha, loss_spec.margin_relative)
        diagnostics.update(margin_diagnostics(jax.lax.stop_gradient(scores), mask, margins, loss_spec.temperature))
    loss = jnp.zeros((), jnp.float32)
    if loss_spec.infonce_weight:
        loss += loss_spec.infonce_weight * infonce_loss(scores, mask, loss_spec.temperature, margins)
    if loss_spec.margin_kind == "hinge":
        hinge = margin_loss(scores, mask, loss_spec.margin, loss_spec.margin_alpha, loss_spec.margin_relative)
        diagnostics["margin_active_fraction"] = hinge_active_fraction(jax.lax.stop_gradient(scores), mask,
                                                                      loss_spec.margin, loss_spec.margin_alpha,
                                                                      loss_spec.margin_relative)
        diagnostics["margin_loss_delta"] = loss_spec.margin_weight * hinge
        loss += loss_spec.margin_weight * hinge
    if loss_spec.uniformity_weight:
        usable = usable_columns(batch["pos_doc"], batch["neg_doc"])
        uniformity = uniformity_loss(docs, usable)
        diagnostics["uniformity"] = uniformity
        loss += loss_spec.uniformity_weight * uniformity
    return loss, (dense, mask, diagnostics)


def _with_fault(loss_fn: Any, now: jax.Array, value: float) -> Any:
    """`loss_fn` whose loss is multiplied by `value` (NaN or Inf) when `now` is true (tests only)."""

    def faulty(params: Any) -> tuple[jax.Array, Any]:
        loss, aux = loss_fn(params)
        return loss * jnp.where(now, jnp.float32(value), jnp.float32(1.0)), aux

    return faulty


def train_step(state: TrainState, batch: dict, *, tx: optax.GradientTransformation, loss_spec: LossSpec,
               band_spec: BandSpec | None, pooling: PoolingSpec, dropout: bool, fault_step: int = -1,
               fault_value: float = float("nan"), rng_impl: str = "threefry",
               band_in_step: bool = True) -> tuple[TrainState, dict]:
    """One optimizer step on the contrastive loss. Pure: jit it (see `jit_train_step`).

    band_spec: the band of a "band" run (None: none); its edges at this step are logged (band_lo, band_hi) and, with
    `band_in_step`, it masks the query's own explicit negatives on their fresh scores (`apply_step_band`); without,
    the negatives the host chose (and refilled) are all trained on.
    Dropout keys come from `step_key(state.rng, state.step, rng_impl)` (one of RNG_IMPLS). With a frozen trunk
    (the model's freeze_layers > 0) only the other parameters are differentiated, and the frozen ones are carried
    over as they are (bit for bit; `tx` gives them no state, see `make_optimizer`).
    Tests only: with `fault_step` = k >= 1, the loss of the k-th step (1-based) is multiplied by `fault_value`
    (NaN or Inf), so its loss and gradients become non-finite as in a real divergence.
    """
    step_rng = step_key(state.rng, state.step, rng_impl) if dropout else None
    band = None if band_spec is None else band_at(state.step, band_spec)
    loss_fn = functools.partial(contrastive_loss, graphdef=state.graphdef, batch=batch, loss_spec=loss_spec,
                                pooling=pooling, dropout_rng=step_rng, band=band if band_in_step else None,
                                band_mode="gap" if band_spec is None else band_spec.mode)
    if fault_step >= 1:
        loss_fn = _with_fault(loss_fn, state.step + 1 == fault_step, fault_value)
    freeze_layers = nnx.merge(state.graphdef, state.params).freeze_layers
    differentiated, params = loss_fn, state.params
    if freeze_layers:  # differentiate the trainable parameters only
        frozen, params = split_frozen(state.params, freeze_layers)
        differentiated = lambda trainable: loss_fn(nnx.merge_state(frozen, trainable))  # noqa: E731
    (loss, (scores, mask, diagnostics)), grads = jax.value_and_grad(differentiated, has_aux=True)(params)
    grad_norm = optax.tree.norm(grads)
    if freeze_layers:  # zeros where tx wants the whole tree (set_to_zero never reads them)
        grads = nnx.merge_state(jax.tree.map(jnp.zeros_like, frozen), grads)
    with jax.named_scope("optimizer"):  # a name in the HLO metadata, for profiles (benchmarks/profile_step.py)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
    if freeze_layers:
        params = nnx.merge_state(frozen, split_frozen(params, freeze_layers)[1])
    diag = jnp.diagonal(scores)
    own = jnp.arange(scores.shape[1])[None, :] == jnp.arange(scores.shape[0])[:, None]
    hardest = jnp.max(jnp.where(mask & ~own, scores, -jnp.inf), axis=-1)
    metrics = {
        "loss": loss,
        "in_batch_accuracy": in_batch_accuracy(scores, mask),
        "grad_norm": grad_norm,
        "positive_score": jnp.mean(diag),
        "hardest_negative_score": jnp.mean(hardest),
        "candidates_per_query": jnp.mean(jnp.sum(mask, axis=-1).astype(jnp.float32)),
    }
    metrics.update(diagnostics)
    if "guide" in batch:
        metrics["guide_masked_per_query"] = jnp.mean(jnp.sum(~batch["guide"], axis=-1).astype(jnp.float32))
    if band is not None:
        metrics["band_lo"], metrics["band_hi"] = band
    if batch["neg_doc"].shape[1]:
        explicit = mask & own_negative_columns(*batch["neg_doc"].shape)  # each query's own kept negatives
        metrics["explicit_negative_score"] = jnp.sum(jnp.where(explicit, scores, 0.0)) / (
            jnp.maximum(jnp.sum(explicit), 1))
    new_state = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new_state, metrics


def jit_train_step(tx: optax.GradientTransformation, loss_spec: LossSpec, band_spec: BandSpec | None,
                   pooling: PoolingSpec, dropout: bool, state_sharding: Any, batch_sharding: Any,
                   fault_step: int = -1, fault_value: float = float("nan"), rng_impl: str = "threefry",
                   band_in_step: bool = True):
    """jax.jit of train_step with the state replicated and donated, and batches sharded over 'data'.

    The band moves with `state.step` inside the jitted function: one trace for the whole run. `fault_step`,
    `fault_value`: see `train_step` (tests only; `train.inject_nan_at_step`). `rng_impl`: see `step_key`.
    `band_in_step`: whether the band masks explicit negatives in the step (else it is only logged).
    """
    step = functools.partial(train_step, tx=tx, loss_spec=loss_spec, band_spec=band_spec, pooling=pooling,
                             dropout=dropout, fault_step=fault_step, fault_value=fault_value,
                             rng_impl=resolve_rng_impl(rng_impl), band_in_step=band_in_step)
    return jax.jit(step, in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, None),
                   donate_argnums=0)
