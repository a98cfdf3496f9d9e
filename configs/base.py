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
    c.model.attention = "auto"  # auto (CPU: einsum; GPU: cudnn for bf16, else xla) | einsum | xla | cudnn (xla/cudnn: jax.nn.dot_product_attention, no attention-prob dropout)
    c.model.rng_impl = "auto"  # dropout PRNG: auto (CPU: threefry; GPU/TPU: rbg) | threefry | rbg | unsafe_rbg
    c.model.normalize = True  # L2-normalize pooled embeddings as the model's own modules say (False: never; raw dots)
    c.model.freeze_layers = 0  # freeze embeddings + lowest K blocks: run once per text, cached, no dropout (0: off)

    c.data = ml_collections.ConfigDict()
    c.data.name = "abt_buy"  # a benchmark under $HNM_DATA_DIR (default ../shared/datasets); ignored if data.path is set
    c.data.path = ""  # any BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)
    c.data.train_split = "train"  # qrels split used for training
    c.data.eval_split = "test"  # qrels split evaluated at the end of training
    c.data.query_max_length = 0  # tokens per query in training (0: auto, covers length_coverage of the queries)
    c.data.doc_max_length = 0  # tokens per document in training and mining (0: auto, as above for the corpus)
    c.data.max_length_cap = 256  # upper bound of every auto length (sentence-transformers' MiniLM max_seq_length)
    c.data.length_coverage = 0.95  # auto lengths cover this share of a side's records (measured at load, logged)
    c.data.skip_empty = False  # skip (and count) records with empty text instead of failing
    c.data.memory_budget_mb = 0.0  # token arrays larger than this stream to memory-mapped files in the workdir (0: none)
    c.data.folds = 0  # K > 0: K-fold CV over every labelled query (data/folds.py); 0: the dataset's own splits
    c.data.fold = 0  # the fold this run tests on, in [0, data.folds)
    c.data.fold_seed = 0  # seed of the folds (queries sharing a positive share a fold) and of the dev slice
    c.data.fold_dev_fraction = 0.1  # share of the other folds' queries held out as the fold's dev split (0: none)

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # global batch (queries per step); must divide by the device count
    c.train.num_epochs = 1  # passes over the training queries
    c.train.max_steps = 0  # stop after this many steps (0: num_epochs full epochs)
    c.train.learning_rate = 2e-5  # peak AdamW learning rate
    c.train.warmup_fraction = 0.1  # linear warm-up over this fraction of the steps, then the lr_schedule
    c.train.lr_schedule = "linear"  # after warm-up: linear (decay to 0 at the end) | constant (the peak rate)
    c.train.weight_decay = 0.01  # AdamW decoupled weight decay
    c.train.grad_clip = 1.0  # global-norm gradient clipping (0 turns it off)
    c.train.checkpoint_every = 50  # save an orbax checkpoint every K steps (and always at the end)
    c.train.keep_checkpoints = 2  # how many recent checkpoints to keep
    c.train.log_every = 10  # write train metrics every K steps
    c.train.inject_nan_at_step = -1  # tests only: loss and gradients of step K (1-based, as logged) become NaN (-1: off)

    c.loss = ml_collections.ConfigDict()
    c.loss.temperature = 0.05  # InfoNCE temperature (0.05 = the sentence-transformers scale of 20)
    c.loss.infonce_weight = 1.0  # weight of InfoNCE over [B, B*(1+N)] logits (0 = margin loss alone)
    c.loss.margin_kind = "none"  # none | additive (negative logits raised by m(h)/t in InfoNCE) | hinge (a loss beside)
    c.loss.margin_weight = 0.0  # weight of the hinge margin loss (margin_kind = hinge only)
    c.loss.margin = 0.1  # m0 in m(h) = max(0, m0 + alpha * h): the score gap asked between positive and negative
    c.loss.margin_alpha = 0.0  # alpha: the margin grows with the negative's hardness h (0 = constant margin)
    c.loss.margin_relative = True  # h = s_neg - s_pos (hardness relative to the positive) instead of s_neg
    c.loss.uniformity_weight = 0.0  # weight of the uniformity regularizer on the batch's documents (anti-collapse)
    c.loss.hybrid_logits = False  # train on the deployed weighted BM25 + dense fusion (retriever.*), per-query affine

    c.mining = ml_collections.ConfigDict()
    c.mining.strategy = "random"  # how N negatives are chosen: in_batch | random | uniform | hardest | band
    c.mining.pool = "none"  # where uniform/hardest/band pick from: none | offline (mined once) | online (refreshed)
    c.mining.num_negatives = 1  # N explicit negatives per query (logits are [B, B*(1+N)])
    c.mining.pool_size = 50  # M candidates mined per training query (known positives and exact twins removed)
    c.mining.sampling = "uniform"  # inside the band: uniform | simans (SimANS weights around the positive's score)
    c.mining.simans_a = 5.0  # SimANS sharpness a in exp(-a (s_neg - s_pos - b)^2)
    c.mining.simans_b = -0.1  # SimANS offset b: most likely negatives score about s_pos + b
    c.mining.band_refill = True  # band: fill the slots the band leaves empty with the pool entries nearest to it
    c.mining.band_in_step = False  # also mask explicit negatives outside the band on the step's fresh scores (no refill)
    c.mining.refresh_every_epochs = 1  # online pool: re-encode the corpus and rebuild the index every K epochs
    c.mining.retriever = ""  # what mines the pool: "" (= retriever.mode) | dense | lexical | hybrid (retriever.*)
    c.mining.oracle_filter = False  # keep the known unlabelled duplicates (unlabelled_duplicates.tsv) out of pools

    c.band = ml_collections.ConfigDict()
    c.band.mode = "gap"  # gap: keep s_pos + lo <= s_neg <= s_pos + hi | relative: lo*s_pos..hi*s_pos | absolute: lo..hi
    c.band.lo = -2.0  # lower bound of the kept band after the curriculum (gap: -d_hi, how easy a negative may be)
    c.band.hi = 2.0  # upper bound (gap: -d_lo; > 0 keeps negatives scoring above the positive, the model's errors)
    c.band.curriculum = "none"  # none | linear | cosine | step: move the band from (start_lo, start_hi) to (lo, hi)
    c.band.start_lo = -0.8  # lower bound at step 0 (a curriculum: <= lo; easy negatives, well below the positive)
    c.band.start_hi = -0.4  # upper bound at step 0 (a curriculum: <= hi; both edges move from easy to hard)
    c.band.curriculum_steps = 0  # steps over which the band moves (0: curriculum_fraction of the run's steps)
    c.band.curriculum_fraction = 1.0  # the band reaches its end after this fraction of the run (1: at its last step)
    c.band.num_stages = 4  # stages of the "step" curriculum

    c.retriever = ml_collections.ConfigDict()
    c.retriever.mode = "dense"  # deployed pipeline: dense | lexical | hybrid (eval; mining too unless mining.retriever)
    c.retriever.fusion = "weighted"  # hybrid fusion: weighted (min-max per query) | rrf
    c.retriever.dense_weight = 1.0  # weight of the dense score (or dense rank in rrf)
    c.retriever.lexical_weight = 0.3  # weight of the BM25 score (or BM25 rank in rrf)
    c.retriever.lexical_tokens = "words"  # BM25 tokens: words | codes (adjacent tokens with a digit also joined)
    c.retriever.rrf_k = 60  # rrf constant k in w / (k + rank)
    c.retriever.depth = 100  # candidates taken from each source before fusion

    c.index = ml_collections.ConfigDict()
    c.index.exact_threshold = 20_000  # corpora smaller than this are searched exactly (jitted matmul + top-k)
    c.index.num_leaves = 0  # ScaNN partitions (0: ~sqrt(N))
    c.index.leaves_to_search = 0  # partitions probed per query (0: auto)
    c.index.reorder = 0  # candidates re-scored exactly (0: auto)
    c.index.dims_per_block = 2  # ScaNN asymmetric hashing: dimensions per block
    c.index.anisotropic_threshold = 0.2  # ScaNN anisotropic quantization threshold

    c.eval = ml_collections.ConfigDict()
    c.eval.max_length = 0  # tokens per query and document at evaluation (0: auto, the wider of the two data lengths)
    c.eval.batch_size = 128  # encoding batch at evaluation
    c.eval.search = "exact"  # exact (dense top-k over the whole corpus) | ann (ScaNN with the index.* settings)
    c.eval.duplicates_relevant = True  # unlabelled_duplicates.tsv's (query, doc) pairs count as relevant (synthetic)

    c.ce = ml_collections.ConfigDict()
    c.ce.model = ""  # trained cross-encoder folder; "" = train one from model.name in <workdir>/ce when needed
    c.ce.filter = False  # drop pool candidates the cross-encoder calls likely positives (false negatives)
    c.ce.guide_in_batch = False  # also mask in-batch/explicit candidates the CE calls likely positives, in the loss
    c.ce.rerank_depth = 0  # evaluation re-ranks the retriever's top-k with the CE (0 = off; metrics per stage)
    c.ce.rerank_weight = 0.0  # ... by CE logit (0), or by retriever score + this x the min-max-scaled CE logit
    c.ce.threshold = 0.9  # likely positive when sigmoid(CE logit) > threshold (1 = rule off)
    c.ce.margin = 0.1  # ... or when its logit is within this margin of the query's positive (-inf = rule off)
    c.ce.prefer_top = 0  # move the k highest-CE kept candidates to the front of the pool (0 = pool order)
    c.ce.rescore_top = 0  # the CE scores the first k pool candidates of each query (0 = all; cost: Q*k pairs)
    c.ce.cross_fit = True  # two CEs, each trained on half the queries, each filters the other half's pools
    c.ce.gate_min_precision = 0.5  # filter only if >= this share of what the rules drop on dev pairs is a match
    c.ce.max_length = 0  # tokens of a `[CLS] query [SEP] doc [SEP]` pair (0: auto, query + document lengths)
    c.ce.train_steps = 60  # optimizer steps of cross-encoder training (on positives + mined negatives)
    c.ce.train_epochs = 0  # > 0: train the CE this many epochs over its queries instead (replaces train_steps)
    c.ce.batch_size = 16  # queries per CE step, each with its positive and num_negatives negatives
    c.ce.num_negatives = 3  # mined negatives per query in CE training, drawn from the first negatives_top of the pool
    c.ce.negatives_top = 10  # CE training draws its negatives from the first k pool candidates (0 = the whole pool)
    c.ce.learning_rate = 1e-4  # peak AdamW rate of CE training (its head starts random; 3e-5 learnt only the bias)
    c.ce.loss = "listwise"  # listwise (softmax over positive + negatives) | binary (sigmoid BCE per pair)

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
        c.ce.max_length = 32
        c.ce.train_steps = 2
        c.ce.batch_size = 8
        c.ce.learning_rate = 1e-3
    elif arg:
        raise ValueError(f"configs/base.py: unknown config argument {arg!r}; expected '' or 'tiny'")
    c.lock()
    return c
