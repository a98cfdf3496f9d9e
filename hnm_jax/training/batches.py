"""The per-step batch sources of the two training phases, each a callable (step, params) -> global host batch.

`data/batches.py` holds the pure numpy pieces (rows, positives, token arrays, deterministic in (seed, epoch,
step)); this module puts them together with the mined negatives (training/miner.py): BatchBuilder and Prefetcher (the
bi-encoder: the next step's host work runs on a background thread while a step runs on the device; the mining
state is the one train.py hands in with each call) and CrossEncoderBatches (the cross-encoder: negatives drawn from
a mined pool, tokenized as pairs by `make_ce_batch`).
"""

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor

import jax
import numpy as np

from hnm_jax.config import ExperimentSpec
from hnm_jax.data import batches
from hnm_jax.data.tokenize import length_buckets
from hnm_jax.mining.negatives import NEGATIVE_STRATEGIES, Candidates, Pool, SelectSpec
from hnm_jax.models.pretrained import CrossEncoderModel
from hnm_jax.training import miner
from hnm_jax.training.miner import Inputs, MinerContext, MinerState


@dataclasses.dataclass
class StepInputs:
    """The host-side inputs of one step; `batch` is None until its negatives are drawn (see BatchBuilder)."""

    step: int
    rows: np.ndarray  # [B] split rows of the batch's queries
    pos_doc: np.ndarray  # [B] corpus row of each query's positive
    rng: np.random.Generator  # the step's generator, after drawing the positives
    batch: dict[str, np.ndarray] | None = None  # the global batch (step.BATCH_KEYS, + hybrid columns, guide)


class BatchBuilder:
    """Builds each step's global batch on the host, a pure function of (seed, step, params of that step).

    `start(step, state)` does what no parameters decide: rows, positives and, when the candidates of the mining
    state do not read the parameters (an offline pool, or no pool), the negatives, token arrays and lexical/guide
    columns too. It runs in a background thread while the previous step runs on the device, with that step's
    mining state: a refresh only replaces a state whose candidates read the parameters (a pool not mined yet, or
    an online one), and such a batch is drawn by `finish`. `finish(inputs, params, state)` completes an
    online-mined batch with the parameters and mining state of the step it feeds: the queries are re-encoded with
    them and re-queried against the index (the only part of mining that waits for the previous step).
    """

    def __init__(self, spec: ExperimentSpec, context: MinerContext, query_tokens: Inputs, doc_tokens: Inputs,
                 steps_per_epoch: int):
        self.spec, self.context, self.steps_per_epoch = spec, context, steps_per_epoch
        self.query_tokens, self.doc_tokens = query_tokens, doc_tokens
        self.strategy = NEGATIVE_STRATEGIES[spec.mining.strategy]
        mining = spec.mining
        self.select = SelectSpec(mining.num_negatives, mining.sampling, mining.simans_a, mining.simans_b,
                                 refill=mining.band_refill)

    def start(self, step: int, state: MinerState) -> StepInputs:
        """Rows and positives of `step` (and the whole batch when the mining state's candidates do not read the
        parameters)."""
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        split = self.context.split
        rng = batches.step_rng(self.spec.seed, epoch, in_epoch)
        rows = batches.batch_rows(self.spec.seed, epoch, in_epoch, len(split), self.spec.train.batch_size)
        inputs = StepInputs(step, rows, batches.sample_positives(split.positives[rows], rng), rng)
        if not miner.reads_params(self.context, state):
            self.finish(inputs, None, state)
        return inputs

    def finish(self, inputs: StepInputs, params, state: MinerState) -> dict[str, np.ndarray]:
        """The global batch of `inputs`, drawing its negatives with `params` (the parameters the step will update)
        from the mining state `state`."""
        if inputs.batch is None:
            context, rows, pos_doc = self.context, inputs.rows, inputs.pos_doc
            candidates = miner.candidates(context, state, rows, params, inputs.step)
            neg_doc = self.strategy(candidates, self.select, inputs.rng)
            batch = batches.make_batch(rows, context.split, self.query_tokens, self.doc_tokens, pos_doc, neg_doc,
                                       context.canonical, buckets=length_buckets(jax.default_backend()))
            columns = np.concatenate([pos_doc, neg_doc.reshape(-1)])
            if self.spec.loss.hybrid_logits:
                batch.update(miner.hybrid_columns(context, rows, columns, candidates.pool))
            if self.spec.ce.mining.guide_in_batch:
                batch["guide"] = miner.guide(context, state, rows, columns)
            inputs.batch = batch
        return inputs.batch


def make_ce_batch(ce: CrossEncoderModel, query_texts: list[str], doc_texts: tuple[str, ...], rows: np.ndarray,
                  pos_doc: np.ndarray, neg_doc: np.ndarray, max_length: int) -> dict[str, np.ndarray]:
    """A cross-encoder batch (see `ce_train_step`): query rows[i] paired with its positive, then its negatives.

    pos_doc [B], neg_doc [B, N] corpus rows (-1 = empty slot) -> input_ids, attention_mask, token_type_ids
    [B, 1+N, max_length] and valid [B, 1+N].
    """
    docs = np.concatenate([pos_doc[:, None], neg_doc], axis=1)
    b, c = docs.shape
    tokens, type_ids = ce.tokenize([query_texts[r] for r in rows for _ in range(c)],
                                   [doc_texts[d] if d >= 0 else "" for d in docs.reshape(-1)], max_length)
    return {"input_ids": tokens.input_ids.reshape(b, c, max_length),
            "attention_mask": tokens.attention_mask().reshape(b, c, max_length),
            "token_type_ids": type_ids.reshape(b, c, max_length), "valid": docs >= 0}


class Prefetcher:
    """`builder`'s batches for steps < `total`: while step s runs, `builder.start(s + 1)` runs on a host thread."""

    def __init__(self, builder: BatchBuilder, total: int):
        self.builder, self.total = builder, total
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hnm-batch")
        self.ahead: Future[StepInputs] | None = None

    def __call__(self, step: int, params, state: MinerState) -> dict[str, np.ndarray]:
        """The batch of `step` with the step's parameters and mining state (see BatchBuilder)."""
        inputs = self.ahead.result() if self.ahead is not None else self.builder.start(step, state)
        batch = self.builder.finish(inputs, params, state)
        self.ahead = self.executor.submit(self.builder.start, step + 1, state) if step + 1 < self.total else None
        return batch

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)


class CrossEncoderBatches:
    """The cross-encoder's batches: the positives of the split rows `rows` and `ce.num_negatives` negatives drawn
    uniformly from those rows' entries of `pool` (the mined pool of `context.split`; its first `ce.negatives_top`,
    0: all), in its own batch order (seed + 1, not the bi-encoder's); `per_epoch` batches per epoch."""

    def __init__(self, spec: ExperimentSpec, context: MinerContext, pool: Pool, model: CrossEncoderModel,
                 rows: np.ndarray, per_epoch: int):
        self.spec, self.context, self.model, self.rows, self.per_epoch = spec, context, model, rows, per_epoch
        top = spec.ce.train.negatives_top or pool.indices.shape[1]
        self.pool = Pool(**{k: v[:, :top] if v.ndim == 2 else v for k, v in pool.arrays().items()})
        self.select, self.seed = SelectSpec(spec.ce.train.num_negatives), spec.seed + 1

    def __call__(self, step: int, params=None) -> dict[str, np.ndarray]:
        spec, context, positives = self.spec, self.context, self.context.split.positives
        epoch, in_epoch = divmod(step, self.per_epoch)
        rng = batches.step_rng(self.seed, epoch, in_epoch)
        rows = self.rows[batches.batch_rows(self.seed, epoch, in_epoch, len(self.rows), spec.ce.train.batch_size)]
        candidates = Candidates(positives[rows], context.num_docs, self.pool.take(rows), (-np.inf, np.inf),
                                "absolute")
        neg_doc = NEGATIVE_STRATEGIES["uniform"](candidates, self.select, rng)
        return make_ce_batch(self.model, context.query_texts, context.doc_texts, rows,
                             batches.sample_positives(positives[rows], rng), neg_doc, spec.ce.source.max_length)
