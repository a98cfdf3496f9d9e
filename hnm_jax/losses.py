"""Contrastive losses over in-batch plus explicit negatives. Pure and jit-able.

Layout (DESIGN.md): B queries, each with one positive and N explicit negatives. The candidate columns are
the B positives followed by the B*N negatives in query-major order,

    columns = [pos_0, ..., pos_{B-1}, neg_{0,0}, ..., neg_{0,N-1}, neg_{1,0}, ..., neg_{B-1,N-1}]

so logits are [B, B*(1+N)] and the label of query i is column i. Negatives are removed with a boolean mask of
the same shape (never a gather), so shapes stay static under jit.
"""

import jax
import jax.numpy as jnp

NEG_INF = -1e9  # finite "minus infinity": keeps softmax gradients exactly zero and free of NaN


def column_doc_ids(pos_doc: jax.Array, neg_doc: jax.Array) -> jax.Array:
    """Corpus row of each candidate column: [B] and [B, N] -> [B*(1+N)] (-1 = empty slot)."""
    return jnp.concatenate([pos_doc, neg_doc.reshape(-1)])


def candidate_mask(pos_doc: jax.Array, neg_doc: jax.Array, query_positives: jax.Array) -> jax.Array:
    """Which columns count as candidates for each query: bool [B, B*(1+N)].

    Column j is kept for query i when it is query i's own positive (j == i), or when its document is
    (a) a real document (row >= 0), (b) not any known positive of query i (`query_positives` [B, P], -1 padded),
    and (c) the first column holding that document (a document twice in the batch counts once).
    """
    cols = column_doc_ids(pos_doc, neg_doc)  # [C]
    num_queries, num_cols = pos_doc.shape[0], cols.shape[0]
    known_positive = jnp.any(
        (cols[None, :, None] == query_positives[:, None, :]) & (query_positives[:, None, :] >= 0), axis=-1
    )  # [B, C]
    earlier_same = (cols[:, None] == cols[None, :]) & (jnp.arange(num_cols)[None, :] < jnp.arange(num_cols)[:, None])
    first_occurrence = ~jnp.any(earlier_same, axis=1)  # [C]
    usable = (cols >= 0) & first_occurrence  # [C]
    own = jnp.arange(num_cols)[None, :] == jnp.arange(num_queries)[:, None]  # [B, C]
    return own | (usable[None, :] & ~known_positive)


def infonce_loss(scores: jax.Array, mask: jax.Array, temperature: float) -> jax.Array:
    """InfoNCE (multiple-negatives ranking loss) with the positive of query i in column i.

    loss = mean_i [ -s_ii / t + log sum_{j: mask_ij} exp(s_ij / t) ]

    Args:
      scores: [B, C] similarities (cosine for normalized embeddings), C >= B.
      mask: [B, C] bool, True = column j is a candidate for query i (column i must be True).
      temperature: t > 0.
    Returns:
      scalar float32 loss; masked entries get exactly zero gradient.
    """
    logits = jnp.where(mask, scores / temperature, NEG_INF)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    own = jnp.arange(scores.shape[0])
    return -jnp.mean(log_probs[own, own])


def in_batch_accuracy(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Fraction of queries whose own positive has the highest score among their candidates: scalar."""
    masked = jnp.where(mask, scores, -jnp.inf)
    return jnp.mean(jnp.argmax(masked, axis=-1) == jnp.arange(scores.shape[0]))
