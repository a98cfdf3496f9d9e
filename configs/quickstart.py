"""The demo: fine-tune the packaged all-MiniLM-L6-v2 on abt_buy (train split), evaluate on test.

    hnm train --config configs/quickstart.py --workdir workdirs/quickstart

Figure: see README "Results" (test accuracy@1 zero-shot vs fine-tuned, measured with `make demo`).
"""

from configs import base


def get_config(arg: str | None = None):
    c = base.get_config(arg)
    c.data.name = "abt_buy"
    c.train.num_epochs = 2
    c.train.batch_size = 32
    c.train.learning_rate = 3e-5
    c.mining.strategy = "random"
    c.mining.num_negatives = 1
    return c
