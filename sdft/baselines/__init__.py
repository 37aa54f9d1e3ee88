"""The paper's baselines, each a thin layer over a TRL / transformers trainer (see README.md here).

Every entry point has the signature of ``sdft.trainer.train_sdft``::

    train_xxx(cfg, records, run_dir, resume_from_checkpoint=None) -> (model, tokenizer, info)

and is reached through ``python -m sdft.train --method xxx`` (``sdft.train.METHOD_ENTRY_POINTS``).
"""
