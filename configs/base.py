"""Every key of an hnm_jax run, one comment line each. Other configs import this and change a few keys.

    hnm train --config configs/base.py --workdir workdirs/base
    hnm train --config configs/base.py:tiny --workdir /tmp/tiny     # tiny model, a few steps (tests)

Figure: base is the plain in-batch + random-negative recipe; see quickstart.py / README for measured numbers.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the locked default config; `arg == "tiny"` shrinks the model and the budget for tests."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # root of every random choice: same config + seed -> same numbers

    c.model = ml_collections.ConfigDict()
    c.model.name = "all-MiniLM-L6-v2"  # local folder, packaged name, hub id, or "tiny" (random 2-layer BERT, hidden 32)
    c.model.dtype = "float32"  # compute dtype: float32 (CPU default) or bfloat16 (GPU/TPU; params stay float32)
    c.model.dropout = 0.1  # hidden and attention dropout while training (0 turns it off)

    c.data = ml_collections.ConfigDict()
    c.data.name = "abt_buy"  # a benchmark under $HNM_DATA_DIR (default ../shared/datasets); ignored if data.path is set
    c.data.path = ""  # any BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)
    c.data.train_split = "train"  # qrels split used for training
    c.data.eval_split = "test"  # qrels split evaluated at the end of training
    c.data.query_max_length = 64  # tokens per query while training (records here are short: median ~26)
    c.data.doc_max_length = 64  # tokens per document while training
    c.data.skip_empty = False  # skip (and count) records with empty text instead of failing

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # global batch (queries per step); must divide by the device count
    c.train.num_epochs = 1  # passes over the training queries
    c.train.max_steps = 0  # stop after this many steps (0: num_epochs full epochs)
    c.train.learning_rate = 2e-5  # peak AdamW learning rate
    c.train.warmup_fraction = 0.1  # linear warm-up over this fraction of the steps, then linear decay to 0
    c.train.weight_decay = 0.01  # AdamW decoupled weight decay
    c.train.grad_clip = 1.0  # global-norm gradient clipping (0 turns it off)
    c.train.checkpoint_every = 50  # save an orbax checkpoint every K steps (and always at the end)
    c.train.keep_checkpoints = 2  # how many recent checkpoints to keep
    c.train.log_every = 10  # write train metrics every K steps

    c.loss = ml_collections.ConfigDict()
    c.loss.temperature = 0.05  # InfoNCE temperature (0.05 = the sentence-transformers scale of 20)

    c.mining = ml_collections.ConfigDict()
    c.mining.strategy = "random"  # explicit negatives: in_batch (none) | random
    c.mining.num_negatives = 1  # N explicit negatives per query (logits are [B, B*(1+N)])

    c.eval = ml_collections.ConfigDict()
    c.eval.max_length = 128  # tokens per query and document at evaluation (the zero-shot reference used 128)
    c.eval.batch_size = 128  # encoding batch at evaluation

    if arg == "tiny":
        c.model.name = "tiny"
        c.data.query_max_length = 16
        c.data.doc_max_length = 16
        c.train.batch_size = 8
        c.train.max_steps = 2
        c.train.checkpoint_every = 1
        c.train.log_every = 1
        c.train.learning_rate = 1e-3
        c.eval.max_length = 16
        c.eval.batch_size = 16
    elif arg:
        raise ValueError(f"configs/base.py: unknown config argument {arg!r}; expected '' or 'tiny'")
    c.lock()
    return c
