"""CPT (continued pre-training): next-token loss on every token of the raw text corpus.

The corpus is the raw text behind the task's records -- ``meta["article"]`` or ``meta["text"]`` (the
knowledge-acquisition articles), de-duplicated in first-seen order. A task without raw text falls back to its
demonstrations as plain text (no chat template), and the manifest says so (``cpt_source``).

Training is TRL's ``SFTTrainer`` (``sdft.baselines.sft.SFTTrainer``) on a language-modeling dataset ``{"text": ...}``: each document is tokenized,
ends with the end-of-sequence token, and the documents are concatenated and cut into blocks of ``max_length``
tokens (``packing_strategy="wrapped"``, the usual pre-training chunking). ``completion_only_loss=False``: the labels
are the input ids at every position but padding. These settings are the method's defaults (``CPT_DEFAULTS``).
"""

from __future__ import annotations

from pathlib import Path

from trl import SFTConfig

from sdft.baselines.sft import SFTTrainer
from sdft.method import Method

RAW_TEXT_KEYS = ("article", "text")
CPT_DEFAULTS = {"completion_only_loss": False, "packing": True, "packing_strategy": "wrapped", "padding_free": False,
                "dataset_text_field": "text", "shuffle_dataset": True}


def corpus_texts(records: list[dict]) -> tuple[list[str], str]:
    """The de-duplicated raw documents of ``records`` and where they came from."""
    seen: set[str] = set()
    texts: list[str] = []
    source = None
    for key in RAW_TEXT_KEYS:
        for r in records:
            text = (r.get("meta") or {}).get(key)
            if isinstance(text, str) and text.strip() and text not in seen:
                seen.add(text)
                texts.append(text)
                source = source or f"meta.{key}"
    if texts:
        return texts, source
    for r in records:
        if r["demonstration"].strip() and r["demonstration"] not in seen:
            seen.add(r["demonstration"])
            texts.append(r["demonstration"])
    return texts, "demonstration (the task has no raw text in meta.article / meta.text)"


def build_cpt_trainer(cfg, records: list[dict], run_dir, model=None, tokenizer=None, callbacks=None):
    from datasets import Dataset

    from sdft.adapters import peft_config
    from sdft.training import load_student, run_callbacks

    texts, source = corpus_texts(records)
    if not texts:
        raise ValueError("CPT: the records hold no text to train on")
    if model is None:
        model, tokenizer = load_student(cfg)
    args = cfg.trainer_args(Path(run_dir) / "checkpoints")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list([{"text": t} for t in texts]),
        processing_class=tokenizer, callbacks=callbacks if callbacks is not None else run_callbacks(run_dir, cfg=cfg),
        peft_config=peft_config(cfg, model),
    )
    trainer.cpt_info = {"cpt_source": source, "cpt_documents": len(texts), "cpt_blocks": len(trainer.train_dataset),
                        "cpt_block_length": args.max_length}
    return trainer


def train_cpt(cfg, records: list[dict], run_dir, resume_from_checkpoint=None):
    """Next-token loss on every token of the de-duplicated raw text of the task."""
    from sdft.training import final_train_metrics

    trainer = build_cpt_trainer(cfg, records, run_dir)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer, {**final_train_metrics(trainer), **trainer.cpt_info}


METHODS = [Method(
    "cpt", train=train_cpt, config_class=SFTConfig, title="CPT", defaults=CPT_DEFAULTS,
    style={"color": "#8c564b", "marker": "v"}, description="next-token loss on the raw text corpus",
)]
