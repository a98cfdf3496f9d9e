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


def usable_columns(pos_doc: jax.Array, neg_doc: jax.Array) -> jax.Array:
    """bool [B*(1+N)]: the column holds a real document (row >= 0) seen in no earlier column."""
    cols = column_doc_ids(pos_doc, neg_doc)
    order = jnp.arange(cols.shape[0])
    earlier_same = (cols[:, None] == cols[None, :]) & (order[None, :] < order[:, None])
    return (cols >= 0) & ~jnp.any(earlier_same, axis=1)


def known_positive_columns(pos_doc: jax.Array, neg_doc: jax.Array, query_positives: jax.Array) -> jax.Array:
    """bool [B, B*(1+N)]: column j holds a known positive of query i (a row of `query_positives` [B, P], -1 padded)."""
    cols = column_doc_ids(pos_doc, neg_doc)
    return jnp.any((cols[None, :, None] == query_positives[:, None, :]) & (query_positives[:, None, :] >= 0), axis=-1)


def candidate_mask(pos_doc: jax.Array, neg_doc: jax.Array, query_positives: jax.Array) -> jax.Array:
    """Which columns count as candidates for each query: bool [B, B*(1+N)].

    Column j is kept for query i when it is query i's own positive (j == i), or when its document is
    (a) a real document (row >= 0), (b) not any known positive of query i (`query_positives` [B, P], -1 padded),
    and (c) the first column holding that document (a document twice in the batch counts once).
    """
    num_queries, num_cols = pos_doc.shape[0], pos_doc.shape[0] + neg_doc.size
    known_positive = known_positive_columns(pos_doc, neg_doc, query_positives)  # [B, C]
    own = jnp.arange(num_cols)[None, :] == jnp.arange(num_queries)[:, None]  # [B, C]
    return own | (usable_columns(pos_doc, neg_doc)[None, :] & ~known_positive)


def infonce_loss(scores: jax.Array, mask: jax.Array, temperature: float,
                 margins: jax.Array | None = None) -> jax.Array:
    """InfoNCE (multiple-negatives ranking loss) with the positive of query i in column i.

    loss = mean_i [ -s_ii / t + log sum_{j: mask_ij} exp((s_ij + m_ij) / t) ]

    with m_ij the additive margin of negative j (`additive_margins`; m_ii = 0, none when `margins` is None):
    a negative's logit is raised by m_ij / t, so the loss asks s_ii > s_ij + m_ij (AM-softmax / CosFace).

    Args:
      scores: [B, C] similarities (cosine for normalized embeddings), C >= B.
      mask: [B, C] bool, True = column j is a candidate for query i (column i must be True).
      temperature: t > 0.
      margins: optional [B, C] additive margins in score units (zero on the diagonal).
    Returns:
      scalar float32 loss; masked entries get exactly zero gradient.
    """
    if margins is not None:
        scores = scores + margins
    logits = jnp.where(mask, scores / temperature, NEG_INF)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    own = jnp.arange(scores.shape[0])
    return -jnp.mean(log_probs[own, own])


def in_batch_accuracy(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Fraction of queries whose own positive has the highest score among their candidates: scalar."""
    masked = jnp.where(mask, scores, -jnp.inf)
    return jnp.mean(jnp.argmax(masked, axis=-1) == jnp.arange(scores.shape[0]))


def additive_margins(scores: jax.Array, margin: float, alpha: float, relative: bool) -> jax.Array:
    """Hardness-growing additive margins m_ij for InfoNCE logits: [B, C] -> [B, C], zero on the diagonal.

        h_ij = s_ij - s_ii   (relative: the negative's hardness relative to its query's positive; > 0 = an error)
        h_ij = s_ij          (relative=False)
        m_ij = max(0, margin + alpha * stop_gradient(h_ij))   for j != i,   m_ii = 0

    The margin is a target, not optimized (stop-gradient); alpha > 0 gives harder negatives larger margins.
    """
    scores = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
    num_queries, num_cols = scores.shape
    own = jnp.arange(num_cols)[None, :] == jnp.arange(num_queries)[:, None]
    positive = jnp.diagonal(scores)[:, None]
    hardness = jax.lax.stop_gradient(jnp.where(relative, scores - positive, scores))
    return jnp.where(own, 0.0, jnp.maximum(0.0, margin + alpha * hardness))


def margin_diagnostics(scores: jax.Array, mask: jax.Array, margins: jax.Array, temperature: float) -> dict:
    """How much an additive margin changes the InfoNCE loss of one batch (for logging; scalars).

    active_fraction: share of the (query, negative) candidate pairs with m_ij > 0.
    loss_delta: InfoNCE with the margins minus InfoNCE without them.
    grad_share: ||G_m - G_0||_F / ||G_m||_F, with G the gradient of the loss w.r.t. the [B, C] scores, with (m)
      and without (0) margins: the margin's share of the gradient that reaches the encoder.
    """
    num_queries, num_cols = scores.shape
    own = jnp.arange(num_cols)[None, :] == jnp.arange(num_queries)[:, None]
    negative = mask & ~own
    active = jnp.sum(negative & (margins > 0)) / jnp.maximum(jnp.sum(negative), 1)
    with_margin = jax.grad(infonce_loss)(scores, mask, temperature, margins)
    without = jax.grad(infonce_loss)(scores, mask, temperature)
    share = jnp.linalg.norm(with_margin - without) / jnp.maximum(jnp.linalg.norm(with_margin), 1e-12)
    delta = infonce_loss(scores, mask, temperature, margins) - infonce_loss(scores, mask, temperature)
    return {"margin_active_fraction": active, "margin_loss_delta": delta, "margin_grad_share": share}


def margin_loss(scores: jax.Array, mask: jax.Array, margin: float, alpha: float, relative: bool) -> jax.Array:
    """Hardness-adaptive margin (hinge) loss; the positive of query i is column i.

    For every candidate negative j != i of query i (mask_ij True):

        h_ij = s_ij                  (relative=False)
        h_ij = s_ij - s_ii           (relative=True: hardness relative to the positive)
        m_ij = margin + alpha * stop_gradient(h_ij)   (the margin grows with hardness; a target, not optimized)
        l_ij = max(0, m_ij - (s_ii - s_ij))

        loss = mean_i [ sum_{j != i} mask_ij * l_ij / max(1, sum_{j != i} mask_ij) ]

    Where the hinge is active, d l_ij / d s_ij = 1 and d l_ij / d s_ii = -1 (the margin carries no gradient).

    Args:
      scores: [B, C] similarities, C >= B.
      mask: [B, C] bool, True = column j is a candidate for query i (column i is ignored: it is the positive).
      margin: base margin.
      alpha: hardness slope (0 = constant margin).
      relative: Python or traced bool, see h_ij above.
    Returns:
      scalar float32 (or wider if `scores` is wider); masked entries (even inf/NaN scores) get exactly zero gradient.
    """
    scores = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
    num_queries, num_cols = scores.shape
    own = jnp.arange(num_cols)[None, :] == jnp.arange(num_queries)[:, None]  # [B, C]
    negative = mask & ~own  # [B, C]
    safe = jnp.where(negative, scores, 0.0)  # masked entries never reach the math: no NaN, zero gradient
    positive = jnp.diagonal(scores)[:, None]  # [B, 1] s_ii
    hardness = jnp.where(relative, safe - positive, safe)
    target = margin + alpha * jax.lax.stop_gradient(hardness)
    per_pair = jnp.where(negative, jnp.maximum(0.0, target - (positive - safe)), 0.0)  # [B, C]
    count = jnp.maximum(1.0, jnp.sum(negative, axis=-1))  # [B]
    return jnp.mean(jnp.sum(per_pair, axis=-1) / count)


def hinge_active_fraction(scores: jax.Array, mask: jax.Array, margin: float, alpha: float,
                          relative: bool) -> jax.Array:
    """Share of the (query, negative) candidate pairs whose hinge in `margin_loss` is active (> 0): scalar."""
    num_queries, num_cols = scores.shape
    own = jnp.arange(num_cols)[None, :] == jnp.arange(num_queries)[:, None]
    negative = mask & ~own
    positive = jnp.diagonal(scores)[:, None]
    hardness = jnp.where(relative, scores - positive, scores)
    active = negative & (margin + alpha * hardness - (positive - scores) > 0)
    return jnp.sum(active) / jnp.maximum(jnp.sum(negative), 1)


def uniformity_loss(embeddings: jax.Array, valid: jax.Array, t: float = 2.0) -> jax.Array:
    """Uniformity on the hypersphere (Wang & Isola, 2020), a regularizer against collapse.

        loss = log [ 1/|P| sum_{(a, b) in P} exp(-t ||x_a - x_b||^2) ],   P = {a < b : valid_a and valid_b}

    with ||x_a - x_b||^2 = ||x_a||^2 + ||x_b||^2 - 2 x_a.x_b (clipped at 0). Equals 0 when all valid rows
    coincide (collapse) and is negative when they spread; lower = more uniform. Returns 0 when |P| = 0.

    Args:
      embeddings: [M, D] L2-normalized rows.
      valid: [M] bool; False rows (duplicate or empty columns) are ignored and get zero gradient.
      t: temperature t > 0.
    Returns:
      scalar float32 (or wider if `embeddings` is wider).
    """
    x = embeddings.astype(jnp.promote_types(embeddings.dtype, jnp.float32))
    num_rows = x.shape[0]
    x = jnp.where(valid[:, None], x, 0.0)
    sq_norm = jnp.sum(x * x, axis=-1)  # [M]
    sq_dist = jnp.maximum(sq_norm[:, None] + sq_norm[None, :] - 2.0 * (x @ x.T), 0.0)  # [M, M]
    upper = jnp.arange(num_rows)[:, None] < jnp.arange(num_rows)[None, :]
    pairs = upper & valid[:, None] & valid[None, :]  # [M, M]
    count = jnp.sum(pairs)
    log_sum = jax.nn.logsumexp(jnp.where(pairs, -t * sq_dist, NEG_INF))
    return jnp.where(count > 0, log_sum - jnp.log(jnp.maximum(count, 1).astype(x.dtype)), 0.0)


# ---------------------------------------------------------------- cross-encoder losses
# Layout: B queries, each scored against 1 + N documents: column 0 is the positive, columns 1..N the negatives.
# `valid` [B, 1+N] marks real pairs; a row whose positive is invalid (valid[i, 0] False) is batch padding.


def ce_listwise_loss(logits: jax.Array, valid: jax.Array) -> jax.Array:
    """Listwise softmax cross-entropy of a cross-encoder, the positive in column 0.

        loss_i = -l_i0 + log sum_{j: valid_ij} exp(l_ij)
        loss   = sum_i r_i loss_i / max(1, sum_i r_i),   r_i = valid_i0 (padding rows count for nothing)

    Args:
      logits: [B, 1+N] relevance logits.
      valid: [B, 1+N] bool, True = a real (query, document) pair.
    Returns:
      scalar float32 (or wider if `logits` is wider); invalid entries (even inf/NaN) get exactly zero gradient.
    """
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    safe = jnp.where(valid, logits, NEG_INF)
    per_row = jax.nn.logsumexp(safe, axis=-1) - safe[:, 0]  # [B]
    rows = valid[:, 0]
    return jnp.sum(jnp.where(rows, per_row, 0.0)) / jnp.maximum(1.0, jnp.sum(rows))


def ce_binary_loss(logits: jax.Array, valid: jax.Array) -> jax.Array:
    """Pointwise sigmoid binary cross-entropy of a cross-encoder: column 0 is label 1, the others label 0.

        bce(l, y) = -y log sigmoid(l) - (1 - y) log(1 - sigmoid(l)) = softplus(l) - l y
        loss      = sum_ij valid_ij bce(l_ij, [j == 0]) / max(1, sum_ij valid_ij)

    Args:
      logits: [B, 1+N] relevance logits.
      valid: [B, 1+N] bool, True = a real (query, document) pair.
    Returns:
      scalar float32 (or wider if `logits` is wider); invalid entries (even inf/NaN) get exactly zero gradient.
    """
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    safe = jnp.where(valid, logits, 0.0)
    labels = (jnp.arange(logits.shape[1]) == 0)[None, :].astype(safe.dtype)
    bce = jax.nn.softplus(safe) - safe * labels  # softplus = logaddexp(l, 0): stable, smooth at any order
    return jnp.sum(jnp.where(valid, bce, 0.0)) / jnp.maximum(1.0, jnp.sum(valid))


def ce_accuracy(logits: jax.Array, valid: jax.Array) -> jax.Array:
    """Fraction of non-padding rows (valid[:, 0]) whose positive (column 0) beats every valid negative: scalar.

    Strict: a tie with a negative is a miss. Rows without valid negatives count as hits.
    """
    masked = jnp.where(valid, logits, -jnp.inf)
    rows = valid[:, 0]
    hit = (masked[:, 0] > jnp.max(masked[:, 1:], axis=-1, initial=-jnp.inf)) & rows
    return jnp.sum(hit) / jnp.maximum(1, jnp.sum(rows))


CE_LOSSES = {"listwise": ce_listwise_loss, "binary": ce_binary_loss}
