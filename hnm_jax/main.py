"""The `hnm` command line: train | train-ce | eval | mine | export. Flags only; the work happens in the library.

    hnm train --config configs/quickstart.py [--config.train.batch_size=16 ...] --workdir DIR
    hnm train-ce --config configs/ablations/full_stack.py --workdir DIR    # the cross-encoder only (DIR/ce/model)
    hnm eval --workdir DIR [--data NAME_OR_PATH] [--split test] [--output FILE]    # the workdir's config keys
    hnm eval ... [--max-length N] [--batch-size B] [--search exact|ann] [--retriever dense|lexical|hybrid]
    hnm eval --model all-MiniLM-L6-v2 --data abt_buy --split test          # zero-shot, no training
    hnm eval ... --rerank DIR/ce/model [--rerank-depth 10]                 # + cross-encoder re-ranking stage
    hnm export --workdir DIR --out EXPORT_DIR [--cross-encoder]            # Hugging Face / sentence-transformers layout
    hnm mine --model all-MiniLM-L6-v2 --data abt_buy --output FILE.jsonl   # hard negatives for other trainers
    hnm mine ... [--workdir DIR | --config FILE] [--split train] [--retriever dense|lexical|hybrid]
                 [--num-negatives N] [--strategy hardest|band|uniform] [--pool-size M] [--cross-encoder FOLDER]
                 [--format jsonl|parquet] [--scores list|columns|none] [--keep-incomplete]

Multi-process (train, train-ce, eval): run the same command once per process with
    --coordinator HOST:PORT --num-processes N --process-id I
(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); HOST:PORT is process 0's address. When a process
is lost the others stop within HNM_PEER_TIMEOUT_S (default 15) seconds with one line; rerunning all of them resumes.

A workdir is locked while a command uses it (<workdir>/.lock): one `hnm train` / `train-ce` at a time, or any number
of `hnm eval` / `export` / `mine --workdir`; a second command exits with status 2 naming the holder.
Bad paths, configs and data: one line naming the path or key and what was expected, exit status 2.
"""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ml_collections

USAGE = __doc__
DISTRIBUTED_ENV = {"--coordinator": "JAX_COORDINATOR_ADDRESS", "--num-processes": "JAX_NUM_PROCESSES",
                   "--process-id": "JAX_PROCESS_ID"}


def _env_int(flag: str) -> int | None:
    """The integer in the environment variable standing in for `flag`, None when unset or empty."""
    name = DISTRIBUTED_ENV[flag]
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected an integer (like {flag})") from None


def init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None,
                     prog: str = "hnm") -> int:
    """Joins a multi-process run (`distributed.join`: `jax.distributed.initialize`, gloo collectives on CPU, a lost
    peer ends this process with one line starting with `prog`) when there is more than one process.

    Each argument that is None falls back to its environment variable (DISTRIBUTED_ENV). With no process count,
    or a count of 1, the run is single-process and nothing is initialized. Must run before any JAX computation.
    Returns the process count; raises ValueError naming the flag that is missing or wrong.
    """
    coordinator = coordinator or os.environ.get(DISTRIBUTED_ENV["--coordinator"]) or None
    num_processes = num_processes if num_processes is not None else _env_int("--num-processes")
    process_id = process_id if process_id is not None else _env_int("--process-id")
    if num_processes is None:
        if coordinator is not None or process_id is not None:
            raise ValueError("--num-processes (or JAX_NUM_PROCESSES) is required with --coordinator / --process-id")
        return 1
    if num_processes < 1:
        raise ValueError(f"--num-processes: expected a positive count, got {num_processes}")
    if num_processes == 1:
        return 1
    if coordinator is None or process_id is None:
        raise ValueError(f"--num-processes {num_processes} needs --coordinator HOST:PORT (JAX_COORDINATOR_ADDRESS) "
                         "and --process-id I (JAX_PROCESS_ID)")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id: expected 0..{num_processes - 1}, got {process_id}")
    from hnm_jax import distributed

    distributed.peer_timeout_s()  # a bad $HNM_PEER_TIMEOUT_S fails here, as a flag would
    distributed.join(coordinator, num_processes, process_id, prog)
    return num_processes


def _config_file_arg(argv: list[str]) -> str | None:
    """The file part of --config FILE[:arg] in `argv` (None when absent)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1].partition(":")[0]
        if arg.startswith("--config="):
            return arg.removeprefix("--config=").partition(":")[0]
    return None


def _train(argv: list[str], command: str = "train") -> int:
    from absl import flags
    from ml_collections import config_flags

    from hnm_jax.training.train import train_and_evaluate, train_cross_encoder_run
    from hnm_jax.workdir import WorkdirError, check_new_or_run

    prog = f"hnm {command}"
    config_file = _config_file_arg(argv)
    if config_file is not None and not Path(config_file).is_file():
        what = "no such file" if not Path(config_file).exists() else "not a file"
        raise WorkdirError(f"{config_file}: {what} (expected a config file for --config, like "
                           "configs/quickstart.py[:arg])")
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:arg]).",
                                    flag_values=flag_values, lock_config=True, sys_argv=[prog, *argv])
    flags.DEFINE_string("workdir", None, "Where checkpoints, logs and eval results go.", flag_values=flag_values)
    flags.DEFINE_string("coordinator", None, "Multi-process: HOST:PORT of process 0.", flag_values=flag_values)
    flags.DEFINE_integer("num-processes", None, "Multi-process: how many processes.", flag_values=flag_values)
    flags.DEFINE_integer("process-id", None, "Multi-process: this process, 0..N-1.", flag_values=flag_values)
    try:
        flag_values([prog, *argv])
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as error:  # bad flag or override
        message = " ".join(str(error).replace("\\n", " ").replace("\\'", "").replace("'", "").split())
        print(f"{prog}: {message}", file=sys.stderr)
        return 2
    if flag_values.config is None or flag_values.workdir is None:
        print(f"{prog}: --config and --workdir are required\n\n{USAGE}", file=sys.stderr)
        return 2
    check_new_or_run(flag_values.workdir)
    try:
        init_distributed(flag_values.coordinator, flag_values["num-processes"].value,
                         flag_values["process-id"].value, prog)
    except ValueError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    run = train_cross_encoder_run if command == "train-ce" else train_and_evaluate
    run(flag_values.config, flag_values.workdir)
    return 0


def _train_ce(argv: list[str]) -> int:
    return _train(argv, command="train-ce")


def _eval(argv: list[str]) -> int:
    from hnm_jax.training.runs import ZERO_SHOT_MAX_LENGTH

    parser = argparse.ArgumentParser(
        prog="hnm eval", description="Evaluate a trained workdir (with its config: every eval.*, index.*, data.* and "
                                     "ce.* key) or a model zero-shot (configs/base.py settings). Flags override.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="a training workdir (its newest checkpoint and config.json)")
    source.add_argument("--model", help="a model folder, packaged name or hub id (zero-shot)")
    parser.add_argument("--data", help="benchmark name or BEIR folder (default: the workdir's dataset; with "
                                        "data.folds the workdir's fold of it)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", help="metrics JSON (default: WORKDIR/eval_<split>.json)")
    parser.add_argument("--max-length", type=int,
                        help=f"tokens per query and document, 0 = auto from the data (default: the workdir's "
                             f"eval.max_length, {ZERO_SHOT_MAX_LENGTH} for --model)")
    parser.add_argument("--batch-size", type=int, help="encoding batch (default: eval.batch_size)")
    parser.add_argument("--search", choices=("exact", "ann"),
                        help="dense search: exact top-k over the whole corpus, or ScaNN with the index.* settings "
                             "(default: eval.search, exact)")
    parser.add_argument("--retriever", choices=("dense", "lexical", "hybrid"),
                        help="deployed retrieval mode (default: the workdir's retriever.mode, dense for --model)")
    parser.add_argument("--rerank", help="cross-encoder folder: re-rank the retriever's top k (default: the "
                                         "workdir's DIR/ce/model when its config sets ce.rerank_depth)")
    parser.add_argument("--rerank-depth", type=int, help="k (default: the config's ce.rerank_depth, else 10)")
    parser.add_argument("--coordinator", help="multi-process: HOST:PORT of process 0")
    parser.add_argument("--num-processes", type=int, help="multi-process: how many processes")
    parser.add_argument("--process-id", type=int, help="multi-process: this process, 0..N-1")
    args = parser.parse_args(argv)
    if args.model and not args.data:
        parser.error("--data is required with --model")
    from hnm_jax.models.pretrained import check_model_folder
    from hnm_jax.workdir import WorkdirLock, check_output_file, check_run

    if args.workdir:  # paths first: each fails in one line before any model work
        check_run(args.workdir)
    else:
        check_model_folder(args.model, "--model")
    if args.rerank:
        check_model_folder(args.rerank, "--rerank")
    if args.output:  # its folders are created, as `write_metrics` does
        check_output_file(args.output, "--output", folder_exists=False)
    try:
        init_distributed(args.coordinator, args.num_processes, args.process_id, "hnm eval")
    except ValueError as error:
        parser.error(str(error))
    if not args.workdir:
        return _evaluate(args)
    import jax

    with WorkdirLock(args.workdir, "hnm eval", shared=True, process_index=jax.process_index()):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    """`hnm eval` once its flags and paths are checked (and the workdir, if any, is locked)."""
    import jax

    from hnm_jax import sharding
    from hnm_jax.evaluate import evaluate, format_table, write_metrics
    from hnm_jax.training.runs import EvalFlags, load_run

    run = load_run(workdir=args.workdir, model=args.model, config=None if args.workdir else _default_config(),
                   data=args.data, split=args.split, cross_encoder=args.rerank,
                   evaluation=EvalFlags(args.max_length, args.batch_size, args.search, args.retriever,
                                        args.rerank_depth))
    metrics = evaluate(run.spec, run.encoder, (run.data.root, run.data.corpus, run.data.queries), run.data.split,
                       sharding=sharding.batch_sharding(sharding.make_mesh()), cache_dir=run.cache_dir,
                       reranker=run.cross_encoder)
    if jax.process_index() != 0:  # every process computed the same metrics; one writes them
        return 0
    output = args.output or (run.workdir and run.workdir / f"eval_{args.split}.json")
    if output:
        write_metrics(metrics, Path(output))
    print(format_table({run.label: metrics}))
    return 0


def _default_config() -> "ml_collections.ConfigDict":
    """configs/base.py's config: what `hnm eval --model` and `hnm mine` without --workdir or --config run under
    (the CLI hands it to `load_run`: hnm_jax imports nothing of configs/)."""
    from configs.base import get_config

    return get_config()


def _export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hnm export", description="Export a trained encoder (HF layout).")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cross-encoder", action="store_true",
                        help="export the run's cross-encoder (its newest checkpoint in WORKDIR/ce) instead")
    args = parser.parse_args(argv)

    from hnm_jax.workdir import WorkdirError, WorkdirLock, check_new_or_run, check_run

    check_run(args.workdir)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise WorkdirError(f"{args.out}: not a folder (expected a folder for --out, new or existing)")
    check_new_or_run(args.out)
    from hnm_jax.training.runs import load_trained, load_trained_cross_encoder

    with WorkdirLock(args.workdir, "hnm export", shared=True):
        model = load_trained_cross_encoder(args.workdir) if args.cross_encoder else load_trained(args.workdir)[0]
    model.export(Path(args.out))
    print(f"exported {args.workdir} -> {args.out}")
    return 0


class _UsageError(ValueError):
    """A bad flag; `hnm mine` prints it as one line."""


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line naming the flag (the usage block is what --help is for)
        raise _UsageError(message)


def _mine(argv: list[str]) -> int:
    from hnm_jax.mine import DEFAULT_NUM_NEGATIVES, DEFAULT_STRATEGY, FORMATS, SCORE_LAYOUTS

    parser = _OneLineParser(
        prog="hnm mine", description="Mine hard negatives with the training pipeline (retriever, mine_pool, band, "
                                     "optional CE filter) and write one row per (query, positive) of a split: query, "
                                     "positive, negative_1..N and scores, as sentence-transformers reads them.")
    parser.add_argument("--workdir", help="a training workdir: its newest checkpoint and its config's keys")
    parser.add_argument("--model", help="a model folder, packaged name or hub id (with configs/base.py or --config)")
    parser.add_argument("--config", help="a config file (configs/*.py[:arg]): mining.*, band.*, retriever.*, "
                                         "index.*, data.*, ce.* keys (default: configs/base.py)")
    parser.add_argument("--data", help="benchmark name or BEIR folder (default: the workdir's or config's dataset)")
    parser.add_argument("--split", help="qrels split to mine for (default: data.train_split)")
    parser.add_argument("--output", required=True, help="FILE.jsonl or FILE.parquet")
    parser.add_argument("--format", choices=FORMATS, help="default: parquet for a .parquet output, else jsonl")
    parser.add_argument("--retriever", choices=("dense", "lexical", "hybrid"),
                        help="default: mining.retriever, or retriever.mode when that is ''")
    parser.add_argument("--strategy", help=f"hardest | band (the final band of band.*) | uniform (default: the "
                                           f"config's mining.strategy when it mines a pool, else {DEFAULT_STRATEGY})")
    parser.add_argument("--num-negatives", type=int, help=f"negatives per row (default: mining.num_negatives when "
                                                          f"the config mines a pool, else {DEFAULT_NUM_NEGATIVES})")
    parser.add_argument("--pool-size", type=int, help="candidates mined per query (default: mining.pool_size)")
    parser.add_argument("--cross-encoder", help="cross-encoder folder: drops pool candidates it calls likely "
                                                "positives (ce.threshold, ce.margin) and gives the scores")
    parser.add_argument("--scores", choices=SCORE_LAYOUTS, default="list",
                        help="list: one `score` column [positive, negatives] (the sentence-transformers label "
                             "column); columns: positive_score, negative_i_score (+ *_ce_score); none")
    parser.add_argument("--keep-incomplete", action="store_true",
                        help="keep rows with fewer than N negatives (null slots) instead of leaving them out")
    try:
        args = parser.parse_args(argv)
        if args.workdir and (args.model or args.config):
            parser.error("--workdir brings its own model and config: drop --model / --config")
        if not (args.workdir or args.model or args.config):
            parser.error("give --model, --config or --workdir")
        if args.model and not (args.config or args.data):
            parser.error("--data is required with --model")
    except _UsageError as error:
        print(f"hnm mine: {error}", file=sys.stderr)
        return 2

    from hnm_jax.models.pretrained import check_model_folder
    from hnm_jax.workdir import WorkdirLock, check_output_file, check_run

    check_output_file(args.output, "--output")  # paths first: each fails in one line before any model work
    if args.workdir:
        check_run(args.workdir)
    if args.model:
        check_model_folder(args.model, "--model")
    if args.cross_encoder:
        check_model_folder(args.cross_encoder, "--cross-encoder")
    if not args.workdir:
        return _mine_with(args)
    with WorkdirLock(args.workdir, "hnm mine", shared=True):
        return _mine_with(args)


def _mine_with(args: argparse.Namespace) -> int:
    """`hnm mine` once its flags and paths are checked (and the workdir, if any, is locked)."""
    import time

    from hnm_jax.mine import check_format, mine_to_rows, write_rows
    from hnm_jax.models.pretrained import ModelNotFoundError
    from hnm_jax.training.runs import MiningFlags, load_run

    fmt = args.format or ("parquet" if Path(args.output).suffix == ".parquet" else "jsonl")
    check_format(fmt)  # before any model work
    try:
        run = load_run(workdir=args.workdir, model=args.model, config=args.config or (None if args.workdir else
                                                                                      _default_config()),
                       data=args.data, split=args.split, cross_encoder=args.cross_encoder,
                       mining=MiningFlags(args.strategy, args.num_negatives, args.pool_size, args.retriever))
    except (FileNotFoundError, ModelNotFoundError) as error:  # a missing workdir, checkpoint or model folder
        print(f"hnm mine: {error}", file=sys.stderr)
        return 2
    start, spec, data = time.perf_counter(), run.spec, run.data
    rows = mine_to_rows(spec, run.encoder, data.corpus, data.queries, data.split, cross_encoder=run.cross_encoder,
                        scores=args.scores, keep_incomplete=args.keep_incomplete, cache_dir=run.cache_dir)
    write_rows(rows, args.output, fmt)
    print(f"hnm mine: {len(rows)} rows ({len(data.split)} {data.split.name} queries, {spec.mining.num_negatives} "
          f"{spec.mining.strategy} negatives each, {spec.mining_retriever.mode} retriever"
          f"{', CE-filtered' if run.cross_encoder else ''}) -> {args.output} ({fmt}), "
          f"{time.perf_counter() - start:.1f} s")
    return 0


COMMANDS = {"train": _train, "train-ce": _train_ce, "eval": _eval, "export": _export, "mine": _mine}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no "PyTorch was not found" banner: we never use it
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("jax", "absl", "bm25s", "tensorboardX"):  # keep our INFO lines, not every library's
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from hnm_jax.compile_stats import enable_compilation_cache

    enable_compilation_cache()  # every command: compiled programs persist on disk (a config update, no computation)
    # Importing these (and hnm_jax.training.loop) must run no JAX computation: `init_distributed` comes later.
    from hnm_jax import distributed
    from hnm_jax.config import ConfigError
    from hnm_jax.data.beir import DataError
    from hnm_jax.models.pretrained import ModelNotFoundError
    from hnm_jax.training.checkpointing import CheckpointError
    from hnm_jax.workdir import WorkdirError

    failed: tuple[type[Exception], ...] = (CheckpointError,)
    if argv[0] in ("train", "train-ce"):  # `hnm eval --model` never imports the trainer
        from hnm_jax.training.loop import TrainingDiverged

        failed += (TrainingDiverged,)
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (ConfigError, DataError, WorkdirError, ModelNotFoundError) as error:  # bad input: fix it and rerun
        print(f"hnm {argv[0]}: {error}", file=sys.stderr)
        return 2
    except failed as error:  # the run failed; what was saved is kept
        distributed.await_peer_loss(error)  # a collective failed: a lost peer ends this process in one line
        print(f"hnm {argv[0]}: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        distributed.await_peer_loss(error)
        raise


if __name__ == "__main__":
    sys.exit(main())
