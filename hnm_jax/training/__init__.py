"""Training and the runs it leaves: train.py (train_and_evaluate, the orchestrator), loop.py (the one loop of both
phases), step.py and ce_step.py (the jitted steps), optimizer.py, checkpointing.py, batches.py (each phase's batch
source), runs.py (a workdir's config and trained models)."""
