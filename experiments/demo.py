"""`make demo`: zero-shot all-MiniLM-L6-v2 vs the same model fine-tuned with configs/quickstart.py on abt_buy.

    python -m experiments.demo --workdir workdirs/demo

Prints both test-split evaluations side by side; rerunning reuses finished parts (training resumes).
"""

import argparse
import json
import logging
import time
from pathlib import Path

from hnm_jax import sharding
from hnm_jax.config import dataset_root, load_config_file, spec_from_config
from hnm_jax.data.beir import load_texts
from hnm_jax.evaluate import evaluate, format_table, write_metrics
from hnm_jax.models.pretrained import load_encoder
from hnm_jax.training.train import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="workdirs/demo")
    parser.add_argument("--config", default=str(REPO / "configs/quickstart.py"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(args.workdir)
    config = load_config_file(args.config)
    spec = spec_from_config(config)
    start = time.time()

    zero_shot_path = workdir / f"zero_shot_{spec.data.eval_split}.json"
    if zero_shot_path.exists():
        zero_shot = json.loads(zero_shot_path.read_text())
    else:
        mesh = sharding.make_mesh()
        zero_shot = evaluate(spec, load_encoder(spec.model.name), load_texts(dataset_root(spec.data), skip_empty=spec.data.skip_empty), spec.data.eval_split,
                             sharding=sharding.batch_sharding(mesh), cache_dir=workdir / "cache")
        write_metrics(zero_shot, zero_shot_path)
    fine_tuned = train_and_evaluate(config, workdir / "quickstart")

    print(f"\n{spec.model.name} on {spec.data.name or spec.data.path}, {spec.data.eval_split} split "
          f"({zero_shot['num_queries']} queries, {zero_shot['num_docs']} documents), {time.time() - start:.0f} s:")
    print(format_table({"zero-shot": zero_shot, "fine-tuned": fine_tuned}))


if __name__ == "__main__":
    main()
