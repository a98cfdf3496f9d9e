"""train_and_evaluate(config, workdir): the orchestrator of a run, with `loop.py` the only place in training
with side effects.

Loads data and the pretrained encoder (models/loading.py), builds the mining context (training/miner.py), runs the
cross-encoder phase when the config has one, then the bi-encoder phase, and evaluates on the eval split at the end.
Both phases run `loop.run_loop` (logs on process 0, checkpoints every K steps so rerunning the same command resumes,
stops on a non-finite loss with the step range); they differ by step function and batch source (batches.py:
the bi-encoder's next batch is built on the host while a step runs) and the bi-encoder's refresh hook. The
bi-encoder phase holds the current mining state (a MinerState, replaced by each refresh) and hands it to its
batch source and its checkpoints.
"""

import contextlib
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from hnm_jax import sharding
from hnm_jax.atomic_write import atomic_path, write_text
from hnm_jax.compile_stats import CompileCounter, enable_compilation_cache
from hnm_jax.config import (
    ConfigError,
    ExperimentSpec,
    check_against_data,
    check_splits,
    dataset_root,
    spec_from_config,
)
from hnm_jax.data import batches
from hnm_jax.data.beir import list_splits, load_texts, read_split
from hnm_jax.data.lengths import lengths_summary, resolve_lengths
from hnm_jax.data.synthetic import load_unlabelled_duplicates
from hnm_jax.evaluate import evaluate, format_table, write_metrics
from hnm_jax.metric_logging import MetricWriter
from hnm_jax.mining.negatives import Pool, cross_fit_folds
from hnm_jax.models.loading import build_cross_encoder, build_encoder
from hnm_jax.models.pretrained import CrossEncoderModel, check_model_folder, load_cross_encoder
from hnm_jax.training import miner
from hnm_jax.training.batches import BatchBuilder, CrossEncoderBatches, Prefetcher
from hnm_jax.training.ce_step import jit_ce_train_step
from hnm_jax.training.checkpointing import Checkpointer, miner_arrays, miner_position, miner_template, restore_miner
from hnm_jax.training.loop import init_state, run_loop
from hnm_jax.training.miner import MinerContext, MinerState, cross_fitted, load_dev_set, make_context
from hnm_jax.training.optimizer import learning_rate_schedule, make_optimizer
from hnm_jax.training.runs import CE_DIR, CE_FOLD_DIR
from hnm_jax.training.step import jit_train_step
from hnm_jax.workdir import WorkdirLock, make_workdir

log = logging.getLogger(__name__)


def _save_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    path = workdir / "config.json"
    text = config.to_json(indent=2, sort_keys=True)
    if path.exists() and json.loads(path.read_text()) != json.loads(text):
        log.warning("%s differs from this run's config; resuming with the new config", path)
    write_text(path, text + "\n")


def check_models(spec: ExperimentSpec) -> None:
    """Raises ModelNotFoundError (one line naming the key) unless `model.name` and `ce.model` are usable folders,
    packaged names or hub ids; reads no weights."""
    for key, name in (("model.name", spec.model.name), ("ce.model", spec.ce.source.model)):
        if name and name != "tiny":
            check_model_folder(name, key)


def train_cross_encoder(spec: ExperimentSpec, ce_dir: Path, context: MinerContext, pool: Pool | None,
                        mesh: jax.sharding.Mesh, rows: np.ndarray | None = None) -> CrossEncoderModel:
    """Trains a cross-encoder on the positives of the split rows `rows` (None: every query of `context.split`) and
    negatives drawn from those rows' entries of the mined `pool` (see CrossEncoderBatches), checkpointing in `ce_dir`
    (<workdir>/ce, or <workdir>/ce/fold<k> when cross-fitted; rerunning resumes); exports the HF folder
    <ce_dir>/model at the end. Loads that folder instead when it exists (the pool is then not read).
    """
    rows = np.arange(len(context.split)) if rows is None else np.asarray(rows)
    export_dir = ce_dir / "model"
    if (export_dir / "config.json").is_file():  # the export is renamed into place last: it is complete
        return load_cross_encoder(str(export_dir), max_length=spec.ce.source.max_length,
                                  dtype=jax.numpy.dtype(spec.model.dtype))
    try:
        sharding.check_batch_size(spec.ce.train.batch_size, mesh, key="ce.batch_size")
        per_epoch = batches.steps_per_epoch(len(rows), spec.ce.train.batch_size)
    except ValueError as error:
        raise ConfigError(str(error).replace("train.batch_size", "ce.batch_size")
                          + (" (cross-fitting: each CE trains on half of them)" if len(rows) < len(context.split)
                             else "")) from None
    model = build_cross_encoder(spec.model, spec.ce.source, spec.seed)
    total = spec.ce.train.total_steps(per_epoch)
    tx = make_optimizer(dataclasses.replace(spec.train, learning_rate=spec.ce.train.learning_rate), total)
    checkpointer = Checkpointer(ce_dir / "checkpoints", keep=1)
    state, state_sharding, _ = init_state(model.graphdef, model.state, tx, spec.seed, mesh, checkpointer)
    step_fn = jit_ce_train_step(tx, spec.ce.train.loss, spec.model.dropout > 0, state_sharding,
                                sharding.batch_sharding(mesh), rng_impl=spec.model.rng_impl)
    writer = MetricWriter(ce_dir)
    try:
        state = run_loop(step_fn, state, CrossEncoderBatches(spec, context, pool, model, rows, per_epoch),
                         total=total, batch_size=spec.ce.train.batch_size, mesh=mesh, writer=writer,
                         checkpointer=checkpointer, log_every=spec.train.log_every,
                         checkpoint_every=spec.train.checkpoint_every, prefix="ce_train/", desc="train-ce")
    finally:
        checkpointer.close()
        writer.close()
    model = dataclasses.replace(model, state=state.params)
    if jax.process_index() == 0:
        with atomic_path(export_dir) as partial:
            model.export(partial)
    return model


def _cross_encoder_phase(spec: ExperimentSpec, workdir: Path, context: MinerContext, state: MinerState, params,
                         mesh: jax.sharding.Mesh, writer: MetricWriter
                         ) -> tuple[MinerContext, MinerState, CrossEncoderModel | None]:
    """The run's cross-encoders (`ce.model`, or trained in <workdir>/ce), the context's judges when they guide
    mining (`miner.with_judges`). Returns the context and mining state after it and the CE evaluation re-ranks
    with (None when the config uses none). A missing pool is mined first with the current parameters, and a pool
    not judged yet is judged.

    Cross-fitting (`ce.cross_fit`, when the CE is trained here and guides mining): the training queries split in
    two halves (`cross_fit_folds`), a CE trained on each (<workdir>/ce/fold0, fold1), and each scores only the
    other half's pools and batch rows, so no CE judges a query it was trained on. Evaluation re-ranks with the
    fold-0 CE. Otherwise one CE, trained on every query (<workdir>/ce), scores every query.
    """
    if not spec.ce.needed:
        return context, state, None
    scorer = None
    if spec.ce.source.model:
        ces = [build_cross_encoder(spec.model, spec.ce.source, spec.seed)]
    else:
        if state.pool is None:
            state, stats = miner.refresh(context, state, params, 0)
            writer.write(0, stats, prefix="refresh/")
        if cross_fitted(spec):
            folds = cross_fit_folds(len(context.split), spec.seed)
            ces = [train_cross_encoder(spec, workdir / CE_DIR / CE_FOLD_DIR.format(k), context, state.pool, mesh,
                                       rows=np.flatnonzero(folds == k)) for k in (0, 1)]
            scorer = 1 - folds  # the CE of the other fold
        else:
            ces = [train_cross_encoder(spec, workdir / CE_DIR, context, state.pool, mesh)]
    if context.guided:
        context = miner.with_judges(context, ces, scorer)
        if state.pool is not None and state.pool.ce is None:
            state, stats = miner.judge(context, state)
            writer.write(state.pool_step, stats, prefix="refresh/")
    return context, state, ces[0]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Trains as `config` says, checkpointing into `workdir`; returns the eval-split metrics. Holds the workdir's
    exclusive lock (hnm_jax/workdir.py) from its creation to the end: a second run on it raises WorkdirBusy."""
    with contextlib.ExitStack() as hold:
        return _train_and_evaluate(config, workdir, hold)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, hold: contextlib.ExitStack
                        ) -> dict[str, float]:
    spec = spec_from_config(config)
    enable_compilation_cache()  # see compile_stats: compiled programs persist across runs
    compiles = CompileCounter().start()
    mesh = sharding.make_mesh()
    batch_sharding = sharding.batch_sharding(mesh)
    root, corpus, queries = load_texts(dataset_root(spec.data), skip_empty=spec.data.skip_empty)
    check_splits(spec, list_splits(root))  # before any split, model or token is read
    train_split = read_split(root, spec.data.train_split, corpus, queries)
    check_against_data(spec, train_queries=len(train_split), devices=mesh.size, processes=jax.process_count())
    # a synthetic benchmark's unlabelled duplicates: counted in the pools per refresh, kept out by the oracle filter
    duplicates = load_unlabelled_duplicates(root, corpus, queries, train_split)
    if spec.mining.oracle_filter and duplicates is None:
        raise ConfigError(f"mining.oracle_filter: needs the known unlabelled duplicates of the training queries, and "
                          f"{root} lists none (unlabelled_duplicates.tsv, as hnm_jax.data.synthetic.write_beir writes)")
    check_models(spec)
    workdir = make_workdir(workdir)  # a config that fails the checks above leaves no workdir behind
    hold.enter_context(WorkdirLock(workdir, "hnm train", process_index=jax.process_index()))
    if jax.process_index() == 0:
        _save_config(config, workdir)
    steps_per_epoch = batches.steps_per_epoch(len(train_split), spec.train.batch_size)
    total_steps = spec.train.max_steps or spec.train.num_epochs * steps_per_epoch
    spec = dataclasses.replace(spec, band=spec.band.for_run(total_steps))  # the curriculum spans a share of the run
    encoder = build_encoder(spec.model, spec.seed)
    spec, length_stats = resolve_lengths(spec, encoder.tokenizer, corpus.texts, queries.texts)
    dev = load_dev_set(spec, root, corpus, queries) if miner.guided(spec) else None  # the split of the CE gate
    context, query_tokens, doc_tokens = make_context(spec, workdir, encoder, corpus, queries, train_split,
                                                     batch_sharding, dev=dev,
                                                     duplicates=duplicates if miner.mines(spec) else None)
    tx = make_optimizer(spec.train, total_steps, freeze_layers=spec.model.freeze_layers)
    lr_at = learning_rate_schedule(spec.train, total_steps)
    checkpointer = Checkpointer(workdir / "checkpoints", keep=spec.train.keep_checkpoints)
    state, state_sharding, restored = init_state(encoder.graphdef, encoder.state, tx, spec.seed, mesh, checkpointer,
                                                  miner_template(context, encoder.config.hidden_size))
    mined = MinerState()  # the current mining state: replaced by each refresh
    if restored is not None:
        if restored[2] is not None:
            mined = restore_miner(context, restored[2], restored[1])
        log.info("resumed from step %d", int(state.step))
    band = spec.band if spec.mining.strategy == "band" else None  # logged; masks in the step if band_in_step
    step_fn = jit_train_step(tx, spec.loss, band, encoder.pooling, spec.model.dropout > 0, state_sharding,
                             batch_sharding, fault_step=spec.train.inject_nan_at_step, rng_impl=spec.model.rng_impl,
                             band_in_step=spec.mining.band_in_step)

    writer = MetricWriter(workdir)
    writer.write(0, {**lengths_summary(length_stats), "band/curriculum_steps": float(spec.band.curriculum_steps)},
                 prefix="setup/")
    context, mined, ce = _cross_encoder_phase(spec, workdir, context, mined, state.params, mesh, writer)

    def refresh_when_due(step: int, state) -> None:
        nonlocal mined
        if miner.refresh_due(context, mined, step, steps_per_epoch):
            mined, stats = miner.refresh(context, mined, state.params, step)
            writer.write(step, stats, prefix="refresh/")
            writer.write_histogram(step, "refresh/pool_dense_scores", mined.pool.dense)

    def log_extras(step: int, step_s: float) -> dict[str, float]:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        extras = {"learning_rate": float(lr_at(step)), "epoch": epoch + in_epoch / steps_per_epoch, "step_s": step_s}
        if context.enabled:
            extras["index_staleness_steps"] = step - mined.pool_step
        return extras

    def checkpoint_extras(step: int) -> dict[str, Any]:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        position = {"step": step + 1, "epoch": epoch, "step_in_epoch": in_epoch + 1, **miner_position(mined)}
        return {"position": position, "pool": miner_arrays(mined)}

    source = Prefetcher(BatchBuilder(spec, context, query_tokens, doc_tokens, steps_per_epoch), total_steps)

    def next_batch(step: int, params) -> dict[str, np.ndarray]:  # the batch source of the current mining state
        return source(step, params, mined)

    try:
        state = run_loop(step_fn, state, next_batch, total=total_steps, batch_size=spec.train.batch_size, mesh=mesh,
                         writer=writer, checkpointer=checkpointer, log_every=spec.train.log_every,
                         checkpoint_every=spec.train.checkpoint_every, prefix="train/", desc="train",
                         before_step=refresh_when_due, log_extras=log_extras, checkpoint_extras=checkpoint_extras)
    finally:
        source.close()
        checkpointer.close()

    metrics = evaluate(spec, encoder, (root, corpus, queries), spec.data.eval_split, state=state.params,
                       sharding=batch_sharding, cache_dir=workdir / "cache",
                       reranker=ce if spec.ce.rerank.rerank_depth else None)
    metrics["train_steps"] = total_steps
    metrics["mining_retriever"] = spec.mining_retriever.mode if context.enabled else None  # None: no mined pool
    if jax.process_index() == 0:
        write_metrics(metrics, workdir / f"eval_{spec.data.eval_split}.json")
        writer.write(total_steps, {k: v for k, v in metrics.items() if isinstance(v, float)},
                     prefix=f"eval_{spec.data.eval_split}/")
        print(format_table({f"fine-tuned ({spec.data.eval_split})": metrics}))
    writer.write(total_steps, compiles.stop(), prefix="setup/")  # setup/compiles, setup/compile_s, ...
    writer.close()
    return metrics


def train_cross_encoder_run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """`hnm train-ce`: trains only the cross-encoder, into <workdir>/ce (exported to <workdir>/ce/model).

    Its negatives are mined by `model.name` with the mining retriever (a pool of `mining.pool_size`, mined
    once, whatever `mining.pool` says). Then it re-ranks the deployed retriever's top `ce.rerank_depth` (10 when 0) on
    the eval split; returns those metrics (both stages) and writes them to <workdir>/ce/eval_<split>.json.
    It is one CE trained on every training query (no cross-fitting). A later `hnm train` with the same workdir
    uses it unless that run cross-fits (`ce.cross_fit` with a CE-guided pool: it trains <workdir>/ce/fold0, fold1).
    Holds the workdir's exclusive lock, as `train_and_evaluate` does.
    """
    with contextlib.ExitStack() as hold:
        return _train_cross_encoder_run(config, workdir, hold)


def _train_cross_encoder_run(config: ml_collections.ConfigDict, workdir: str | Path, hold: contextlib.ExitStack
                             ) -> dict[str, Any]:
    spec = spec_from_config(config)
    enable_compilation_cache()
    mining = dataclasses.replace(spec.mining, strategy="uniform", pool="offline",
                                 num_negatives=min(spec.ce.train.num_negatives, spec.mining.pool_size))
    spec = dataclasses.replace(spec, mining=mining)
    check_models(spec)
    workdir = make_workdir(workdir)
    hold.enter_context(WorkdirLock(workdir, "hnm train-ce", process_index=jax.process_index()))
    if jax.process_index() == 0:
        _save_config(config, workdir)
    mesh = sharding.make_mesh()
    batch_sharding = sharding.batch_sharding(mesh)
    root, corpus, queries = load_texts(dataset_root(spec.data), skip_empty=spec.data.skip_empty)
    train_split = read_split(root, spec.data.train_split, corpus, queries)
    spec = dataclasses.replace(spec, band=spec.band.for_run(1))  # no bi-encoder steps: the final band throughout
    encoder = build_encoder(spec.model, spec.seed)
    spec = resolve_lengths(spec, encoder.tokenizer, corpus.texts, queries.texts)[0]
    context = make_context(spec, workdir, encoder, corpus, queries, train_split, batch_sharding)[0]
    mined = MinerState()
    if not (workdir / CE_DIR / "model" / "config.json").is_file():
        mined = miner.refresh(context, mined, encoder.state, 0)[0]
    ce = train_cross_encoder(spec, workdir / CE_DIR, context, mined.pool, mesh)
    eval_spec = dataclasses.replace(spec, ce=spec.ce.replace(rerank_depth=spec.ce.rerank.rerank_depth or 10))
    metrics = evaluate(eval_spec, encoder, (root, corpus, queries), spec.data.eval_split, sharding=batch_sharding,
                       cache_dir=workdir / "cache", reranker=ce)
    if jax.process_index() == 0:
        write_metrics(metrics, workdir / CE_DIR / f"eval_{spec.data.eval_split}.json")
        print(format_table({stage: values for stage, values in metrics["stages"].items()}))
    return metrics
