"""The optax chain: global-norm clipping, AdamW with linear warm-up, then linear decay to zero or constant."""

import jax
import optax

from hnm_jax.config import TrainSpec
from hnm_jax.models.encoder import is_frozen


def learning_rate_schedule(spec: TrainSpec, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 over warmup_fraction * total_steps, then linear decay to 0 at total_steps
    (`lr_schedule = "linear"`) or the peak rate to the end (`"constant"`, so a curriculum's hard end is trained on).
    """
    warmup = int(round(spec.warmup_fraction * total_steps))
    if spec.lr_schedule == "constant":
        decay = optax.constant_schedule(spec.learning_rate)
    else:
        decay = optax.linear_schedule(spec.learning_rate, 0.0, max(total_steps - warmup, 1))
    if not warmup:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, spec.learning_rate, warmup), decay], [warmup])


def decay_mask(params):
    """Weight decay on matrices only (kernels, embeddings), not on biases and LayerNorm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(spec: TrainSpec, total_steps: int, freeze_layers: int = 0) -> optax.GradientTransformation:
    """clip_by_global_norm (when grad_clip > 0) followed by AdamW. With a frozen trunk (freeze_layers = K > 0,
    `encoder.is_frozen`) only the other parameters go through them: the frozen ones get `set_to_zero` (no optimizer
    state, no weight decay) and the clipping norm is over the trainable gradients."""
    tx = optax.adamw(learning_rate_schedule(spec, total_steps), weight_decay=spec.weight_decay, mask=decay_mask)
    if spec.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(spec.grad_clip), tx)
    if not freeze_layers:
        return tx

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if is_frozen(path, freeze_layers) else "trainable", params)

    return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)
