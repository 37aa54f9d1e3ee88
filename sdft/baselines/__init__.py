"""The paper's baselines, each a thin layer over a TRL / transformers trainer (see README.md here).

Every module of this package lists its methods (``METHODS``: :class:`sdft.method.Method` objects), which the method
registry (``sdft.registry``) registers on its first look-up; a new baseline is one module here and its name in that
list. Each training function has the signature::

    train_xxx(cfg, records, run_dir, resume_from_checkpoint=None) -> (trainer, info)

and is reached through ``python -m sdft.train --method xxx``.
"""
