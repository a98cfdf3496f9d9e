"""TrainState and the pure, jitted contrastive train step.

A batch (global arrays, leading axis sharded over 'data'):
  query_ids, query_mask   [B, Lq] int32
  pos_ids, pos_mask       [B, Ld] int32      the positive document of each query
  neg_ids, neg_mask       [B, N, Ld] int32   N explicit negatives per query (N may be 0)
  pos_doc                 [B] int32          corpus row of each positive
  neg_doc                 [B, N] int32       corpus row of each negative (-1 = empty slot)
  query_positives         [B, P] int32       every known positive of each query (-1 padded)
  lexical (optional)      [B, B*(1+N)] f32   normalized BM25 of each (query, column) pair, for hybrid logits
  guide (optional)        [B, B*(1+N)] bool  False = the cross-encoder calls the column a likely positive of
                                             the query (guide-model masking, `negatives.guide_mask`)
"""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hnm_jax.config import LossSpec
from hnm_jax.losses import (
    candidate_mask,
    hybrid_scores,
    in_batch_accuracy,
    infonce_loss,
    margin_loss,
    uniformity_loss,
    usable_columns,
)
from hnm_jax.mining.schedules import BandSpec, band_at, band_mask
from hnm_jax.models.encoder import PoolingSpec, embed

BATCH_KEYS = ("query_ids", "query_mask", "pos_ids", "pos_mask", "neg_ids", "neg_mask", "pos_doc", "neg_doc",
              "query_positives")


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; `graphdef` is static (part of the jit cache key)."""

    graphdef: Any = flax.struct.field(pytree_node=False)
    params: Any
    opt_state: Any
    step: jax.Array  # scalar int32: optimizer steps taken
    rng: jax.Array  # raw uint32 PRNG key; step keys are fold_in(rng, step)


def create_train_state(graphdef: Any, params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh state at step 0."""
    return TrainState(graphdef=graphdef, params=params, opt_state=tx.init(params),
                      step=jnp.zeros((), jnp.int32), rng=jax.random.PRNGKey(seed))


def encode_pair_batch(graphdef: Any, params: Any, batch: dict, pooling: PoolingSpec,
                      dropout_rng: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Embeds the queries [B, D] and the candidate columns [B*(1+N), D] (positives, then negatives)."""
    model = nnx.merge(graphdef, params)
    q_rng, d_rng = (None, None) if dropout_rng is None else jax.random.split(dropout_rng)
    queries = embed(model, batch["query_ids"], batch["query_mask"], pooling, dropout_rng=q_rng)
    b, n, length = batch["neg_ids"].shape
    doc_ids = jnp.concatenate([batch["pos_ids"], batch["neg_ids"].reshape(b * n, length)])
    doc_mask = jnp.concatenate([batch["pos_mask"], batch["neg_mask"].reshape(b * n, length)])
    docs = embed(model, doc_ids, doc_mask, pooling, dropout_rng=d_rng)
    return queries, docs


def contrastive_loss(params: Any, graphdef: Any, batch: dict, loss_spec: LossSpec, pooling: PoolingSpec,
                     dropout_rng: jax.Array | None, band: tuple[jax.Array, jax.Array] | None = None,
                     band_relative: bool = False) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The weighted training loss of one batch and its (scores [B, C], candidate mask [B, C]), C = B*(1+N).

    loss = w_nce * InfoNCE + w_margin * margin loss + w_unif * uniformity(documents), on scores that are the
    cosine plus, when hybrid_beta > 0, beta times the normalized BM25 of the same pair (`batch["lexical"]`).
    `band` (lo, hi), when given, masks explicit negatives whose fresh cosine lies outside it.
    """
    queries, docs = encode_pair_batch(graphdef, params, batch, pooling, dropout_rng)
    dense = queries @ docs.T  # global matmul: in-batch negatives span every device
    mask = candidate_mask(batch["pos_doc"], batch["neg_doc"], batch["query_positives"])
    if "guide" in batch:
        mask = mask & batch["guide"]
    b = dense.shape[0]
    if band is not None:
        in_band = band_mask(dense[:, b:], jnp.diagonal(dense), band, band_relative)
        mask = mask & jnp.concatenate([jnp.ones((b, b), bool), in_band], axis=1)
    scores = hybrid_scores(dense, batch["lexical"], loss_spec.hybrid_beta) if "lexical" in batch else dense
    loss = jnp.zeros((), jnp.float32)
    if loss_spec.infonce_weight:
        loss += loss_spec.infonce_weight * infonce_loss(scores, mask, loss_spec.temperature)
    if loss_spec.margin_weight:
        loss += loss_spec.margin_weight * margin_loss(scores, mask, loss_spec.margin, loss_spec.margin_alpha,
                                                      loss_spec.margin_relative)
    if loss_spec.uniformity_weight:
        usable = usable_columns(batch["pos_doc"], batch["neg_doc"])
        loss += loss_spec.uniformity_weight * uniformity_loss(docs, usable)
    return loss, (dense, mask)


def _with_fault(loss_fn: Any, now: jax.Array, value: float) -> Any:
    """`loss_fn` whose loss is multiplied by `value` (NaN or Inf) when `now` is true (tests only)."""

    def faulty(params: Any) -> tuple[jax.Array, Any]:
        loss, aux = loss_fn(params)
        return loss * jnp.where(now, jnp.float32(value), jnp.float32(1.0)), aux

    return faulty


def train_step(state: TrainState, batch: dict, *, tx: optax.GradientTransformation, loss_spec: LossSpec,
               band_spec: BandSpec | None, pooling: PoolingSpec, dropout: bool, fault_step: int = -1,
               fault_value: float = float("nan")) -> tuple[TrainState, dict]:
    """One optimizer step on the contrastive loss. Pure: jit it (see `jit_train_step`).

    Tests only: with `fault_step` = k >= 1, the loss of the k-th step (1-based) is multiplied by `fault_value`
    (NaN or Inf), so its loss and gradients become non-finite as in a real divergence.
    """
    step_rng = jax.random.fold_in(state.rng, state.step) if dropout else None
    band = None if band_spec is None else band_at(state.step, band_spec)
    loss_fn = functools.partial(contrastive_loss, graphdef=state.graphdef, batch=batch, loss_spec=loss_spec,
                                pooling=pooling, dropout_rng=step_rng, band=band,
                                band_relative=band_spec is not None and band_spec.relative)
    if fault_step >= 1:
        loss_fn = _with_fault(loss_fn, state.step + 1 == fault_step, fault_value)
    (loss, (scores, mask)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    diag = jnp.diagonal(scores)
    own = jnp.arange(scores.shape[1])[None, :] == jnp.arange(scores.shape[0])[:, None]
    hardest = jnp.max(jnp.where(mask & ~own, scores, -jnp.inf), axis=-1)
    metrics = {
        "loss": loss,
        "in_batch_accuracy": in_batch_accuracy(scores, mask),
        "grad_norm": optax.tree.norm(grads),
        "positive_score": jnp.mean(diag),
        "hardest_negative_score": jnp.mean(hardest),
        "candidates_per_query": jnp.mean(jnp.sum(mask, axis=-1).astype(jnp.float32)),
    }
    if "guide" in batch:
        metrics["guide_masked_per_query"] = jnp.mean(jnp.sum(~batch["guide"], axis=-1).astype(jnp.float32))
    if band is not None:
        metrics["band_lo"], metrics["band_hi"] = band
        explicit = mask[:, scores.shape[0]:] & (batch["neg_doc"].reshape(-1) >= 0)[None, :]
        metrics["explicit_negative_score"] = jnp.sum(jnp.where(explicit, scores[:, scores.shape[0]:], 0.0)) / (
            jnp.maximum(jnp.sum(explicit), 1))
    new_state = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new_state, metrics


def jit_train_step(tx: optax.GradientTransformation, loss_spec: LossSpec, band_spec: BandSpec | None,
                   pooling: PoolingSpec, dropout: bool, state_sharding: Any, batch_sharding: Any,
                   fault_step: int = -1, fault_value: float = float("nan")):
    """jax.jit of train_step with the state replicated and donated, and batches sharded over 'data'.

    The band moves with `state.step` inside the jitted function: one trace for the whole run. `fault_step`,
    `fault_value`: see `train_step` (tests only; `train.inject_nan_at_step`).
    """
    step = functools.partial(train_step, tx=tx, loss_spec=loss_spec, band_spec=band_spec, pooling=pooling,
                             dropout=dropout, fault_step=fault_step, fault_value=fault_value)
    return jax.jit(step, in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, None),
                   donate_argnums=0)
