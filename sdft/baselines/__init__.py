"""The paper's baselines, each a thin layer over a TRL / transformers trainer (see README.md here).

Every module of this package registers its methods (``sdft.registry.register_method``) and is imported on the
first registry look-up, so a new baseline is one module here. Each training function has the signature::

    train_xxx(cfg, records, run_dir, resume_from_checkpoint=None) -> (trainer, info)

and is reached through ``python -m sdft.train --method xxx``.
"""
