"""The pure, jitted cross-encoder train step (reuses `TrainState` from `step.py`).

A batch (global arrays, leading axis sharded over 'data'): B queries, each paired with 1 + N documents,
the positive first.
  input_ids, attention_mask, token_type_ids   [B, 1+N, L] int32   `[CLS] query [SEP] doc [SEP]` pairs
  valid                                       [B, 1+N] bool       real pairs (False = empty negative slot,
                                                                  or a padding row when valid[:, 0] is False)

The B*(1+N) pairs go through the cross-encoder as one [B*(1+N), L] batch; the logits are reshaped to
[B, 1+N] and scored with `CE_LOSSES[loss_name]` (listwise softmax or pointwise sigmoid BCE).
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hnm_jax.losses import CE_LOSSES, ce_accuracy
from hnm_jax.training.step import TrainState, create_train_state, resolve_rng_impl, step_key

__all__ = ["CE_BATCH_KEYS", "CETrainSpec", "TrainState", "ce_logits", "ce_train_step", "create_train_state",
           "jit_ce_train_step"]

CE_BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "valid")


@dataclasses.dataclass(frozen=True)
class CETrainSpec:
    """How a cross-encoder is trained here (`ce.*`): `train_steps` optimizer steps (or `train_epochs` > 0 epochs over
    its queries: `total_steps`) of `batch_size` queries, each with its positive and `num_negatives` negatives drawn
    from the first `negatives_top` pool entries (0: all), AdamW at peak `learning_rate`, `CE_LOSSES[loss]`;
    `cross_fit`: two CEs, each trained on half the queries (when the CE guides mining). ValueError
    'CETrainSpec.<field>: ...' when a value is impossible."""

    train_steps: int
    batch_size: int
    num_negatives: int
    negatives_top: int
    learning_rate: float
    loss: str
    cross_fit: bool
    train_epochs: int = 0

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of one CE's training: train_epochs x steps_per_epoch when train_epochs > 0, else
        train_steps."""
        return self.train_epochs * steps_per_epoch if self.train_epochs > 0 else self.train_steps

    def __post_init__(self):
        if self.train_epochs < 0:
            raise ValueError(f"CETrainSpec.train_epochs: must be >= 0 (0: train_steps), got {self.train_epochs}")
        if self.loss not in CE_LOSSES:
            raise ValueError(f"CETrainSpec.loss: unknown {self.loss!r}; valid: {', '.join(sorted(CE_LOSSES))}")
        if self.negatives_top < 0:
            raise ValueError(f"CETrainSpec.negatives_top: must be >= 0 (0: the whole pool), got {self.negatives_top}")
        for key in ("train_steps", "batch_size", "num_negatives"):
            if getattr(self, key) < 1:
                raise ValueError(f"CETrainSpec.{key}: must be >= 1, got {getattr(self, key)}")
        if not 0.0 < self.learning_rate < 1.0:
            raise ValueError(f"CETrainSpec.learning_rate: must be in (0, 1), got {self.learning_rate}")


def ce_logits(graphdef: Any, params: Any, batch: dict, dropout_rng: jax.Array | None) -> jax.Array:
    """Cross-encoder logits of every (query, document) pair of the batch: [B, 1+N] float32."""
    b, c, length = batch["input_ids"].shape
    model = nnx.merge(graphdef, params)

    def flat(name: str) -> jax.Array:
        return batch[name].reshape(b * c, length)

    logits = model(flat("input_ids"), flat("attention_mask"), flat("token_type_ids"), dropout_rng=dropout_rng)
    return logits.reshape(b, c)


def _check_loss_name(loss_name: str) -> None:
    if loss_name not in CE_LOSSES:
        raise ValueError(f"cross-encoder loss_name must be one of {sorted(CE_LOSSES)}, got {loss_name!r}")


def ce_train_step(state: TrainState, batch: dict, *, tx: optax.GradientTransformation, loss_name: str,
                  dropout: bool = False, rng_impl: str = "threefry") -> tuple[TrainState, dict]:
    """One optimizer step of the cross-encoder on `CE_LOSSES[loss_name]`. Pure: jit it (`jit_ce_train_step`).

    Dropout (the model's rates) is on when `dropout`, with key `step_key(state.rng, state.step, rng_impl)`.
    Metrics (scalars): loss, accuracy (`ce_accuracy`), grad_norm, positive_logit (mean over real rows),
    negative_logit (mean over valid negatives).
    """
    _check_loss_name(loss_name)
    loss_fn = CE_LOSSES[loss_name]
    step_rng = step_key(state.rng, state.step, rng_impl) if dropout else None
    valid = batch["valid"].astype(bool)

    def objective(params: Any) -> tuple[jax.Array, jax.Array]:
        logits = ce_logits(state.graphdef, params, batch, step_rng)
        return loss_fn(logits, valid), logits

    (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rows = valid[:, 0]
    negatives = valid.at[:, 0].set(False)
    metrics = {
        "loss": loss,
        "accuracy": ce_accuracy(logits, valid),
        "grad_norm": optax.tree.norm(grads),
        "positive_logit": jnp.sum(jnp.where(rows, logits[:, 0], 0.0)) / jnp.maximum(1, jnp.sum(rows)),
        "negative_logit": jnp.sum(jnp.where(negatives, logits, 0.0)) / jnp.maximum(1, jnp.sum(negatives)),
    }
    new_state = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new_state, metrics


def jit_ce_train_step(tx: optax.GradientTransformation, loss_name: str, dropout: bool, state_sharding: Any = None,
                      batch_sharding: Any = None, rng_impl: str = "threefry"):
    """jax.jit of ce_train_step with the state donated; with shardings, state replicated and batches over 'data'."""
    _check_loss_name(loss_name)
    step = functools.partial(ce_train_step, tx=tx, loss_name=loss_name, dropout=dropout,
                             rng_impl=resolve_rng_impl(rng_impl))
    if state_sharding is None and batch_sharding is None:
        return jax.jit(step, donate_argnums=0)
    return jax.jit(step, in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, None),
                   donate_argnums=0)
