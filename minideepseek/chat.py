"""Text in, text out: load a model with its tokenizer, stream a continuation, or chat in a loop.

Behind ``minideepseek generate`` and ``minideepseek chat``. A model comes from either

* a training run folder (``minideepseek train --out runs/NAME``: config.json, tokenizer.json,
  checkpoint-*/), loaded with ``train.load_trained``; its documents begin with ``<|endoftext|>``,
  so prompts are placed after one and generation stops at the next;
* a checkpoint folder in the hub or official format (``checkpoint.load_pretrained``), with a
  ``tokenizer.json`` beside it (DeepSeek's own uses ``<｜begin▁of▁sentence｜>`` /
  ``<｜end▁of▁sentence｜>`` and its chat turns ``<｜User｜>`` / ``<｜Assistant｜>``).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tokenizers import Tokenizer
from torch import nn

from .checkpoint import load_pretrained
from .data import decode_utf8, read_tokenizer
from .generation import GenerationStats, generate
from .train import checkpoints, load_trained_model
from .validation import UserError

ENDOFTEXT = "<|endoftext|>"  # our trainer's document separator (data.ENDOFTEXT)
DEEPSEEK_BOS, DEEPSEEK_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
DEEPSEEK_USER, DEEPSEEK_ASSISTANT = "<｜User｜>", "<｜Assistant｜>"


class ChatError(UserError):
    """A model folder, tokenizer or setting that generate/chat cannot use; the message names it."""


@dataclass
class TextModel:
    """A model, its tokenizer, and the token ids that begin and end a document (None when it has none)."""

    model: nn.Module
    tokenizer: Tokenizer
    bos_id: int | None
    eos_id: int | None

    @property
    def deepseek_chat(self) -> bool:
        """Whether the tokenizer has DeepSeek's chat-turn tokens."""
        return self.tokenizer.token_to_id(DEEPSEEK_USER) is not None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def load_text_model(path: str | Path, device: str | torch.device = "cpu", tokenizer: str | Path | None = None,
                    dtype: torch.dtype = torch.float32, progress: bool = True) -> TextModel:
    """A training run folder or a hub/official checkpoint folder, with its tokenizer: ``tokenizer``, or
    the folder's ``tokenizer.json``. Weights that hold NaN or inf are refused (they cannot generate)."""
    path = Path(path)
    if not path.is_dir():
        raise ChatError(f"{path} is not a folder: pass a run folder (minideepseek train --out) "
                        "or a checkpoint folder")
    tokenizer_file = Path(tokenizer) if tokenizer else path / "tokenizer.json"
    if not tokenizer_file.is_file():  # the tokenizer first: seconds, where the model may take minutes
        raise ChatError(f"no tokenizer at {tokenizer_file}: pass --tokenizer PATH/tokenizer.json")
    found = read_tokenizer(tokenizer_file)
    if checkpoints(path):  # a training run: checkpoint-NNNNNNNN/ folders
        model = load_trained_model(path, device, strict=True).to(dtype)
    else:
        model = load_pretrained(path, dtype=dtype, device=device, strict=True, progress=progress)
    if found.get_vocab_size() > model.config.vocab_size:
        raise ChatError(f"the tokenizer has {found.get_vocab_size()} tokens but the model's vocab_size is "
                        f"{model.config.vocab_size}")
    if found.token_to_id(ENDOFTEXT) is not None:
        bos = eos = found.token_to_id(ENDOFTEXT)
    else:
        bos, eos = found.token_to_id(DEEPSEEK_BOS), found.token_to_id(DEEPSEEK_EOS)
    return TextModel(model.eval(), found, bos, eos)


def repair_text(text: str, what: str = "the input") -> str:
    """Text that came from outside (a command-line argument, a line typed into the terminal) as valid
    UTF-8: bytes that are not UTF-8 arrive as lone surrogates (Python's ``surrogateescape``), which
    no tokenizer takes; they become U+FFFD, with a warning that says how many there were."""
    fixed, replaced = decode_utf8(text.encode("utf-8", errors="surrogateescape"))
    if replaced:
        warnings.warn(f"{what} held {replaced} byte(s) that are not UTF-8, replaced by U+FFFD", stacklevel=2)
    return fixed


class TextStream:
    """Turns one row's streamed token ids into text pieces: decoding the whole reply each time and
    writing what is new keeps multi-token characters (a UTF-8 byte split across tokens) whole."""

    def __init__(self, text_model: TextModel, write: Callable[[str], None]):
        self.text_model, self.write = text_model, write
        self.ids: list[int] = []
        self.text = ""

    def __call__(self, row: int, tokens: list[int]) -> None:
        self.ids += tokens
        text = self.text_model.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete character: wait for the rest of its bytes
            return
        self.write(text[len(self.text):])
        self.text = text


def write_out(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def complete(text_model: TextModel, prompt: str, max_new_tokens: int, stream: bool = True,
             **options) -> tuple[str, GenerationStats]:
    """The continuation of ``prompt`` (streamed to stdout when ``stream``), and the generation stats.

    ``options`` are ``generate``'s keyword arguments (temperature, top_k, top_p, seed, cache, speculative).
    """
    ids = ([text_model.bos_id] if text_model.bos_id is not None else []) + text_model.encode(prompt)
    stats = GenerationStats()
    max_seq_len = text_model.model.config.max_seq_len
    if len(ids) >= max_seq_len:
        raise ChatError(f"the prompt is {len(ids)} tokens; this model reads at most max_seq_len={max_seq_len}")
    max_new_tokens = min(max_new_tokens, max_seq_len - len(ids))
    out = generate(text_model.model, ids, max_new_tokens, eos_id=text_model.eos_id, stats=stats,
                   callback=TextStream(text_model, write_out) if stream else None, **options)
    return text_model.decode(out[len(ids):]), stats


class _StopReply(Exception):
    """Raised by the chat stream to end a reply as soon as the model starts the user's next turn."""


def chat(text_model: TextModel, max_new_tokens: int = 256, read: Callable[[str], str] = input,
         write: Callable[[str], None] = write_out, **options) -> None:
    """A small REPL: each line you type is a user turn; the model's reply streams back.

    ``/reset`` forgets the conversation, ``/quit`` (or end of input) leaves. Models with
    DeepSeek's chat tokens get their template; others (a model trained by ``minideepseek
    train`` is a plain language model) see "User: ...\\nAssistant:" and the reply ends where
    the model starts a new "User:" line.
    """
    config = text_model.model.config
    if not 0 < max_new_tokens < config.max_seq_len:
        raise ChatError(f"max_new_tokens must be between 1 and max_seq_len - 1 = {config.max_seq_len - 1}, "
                         f"got {max_new_tokens}")
    history: list[int] = []
    write("chat: /reset forgets the conversation, /quit leaves\n")
    while True:
        try:
            line = repair_text(read("you> "), "the line")
        except EOFError:
            write("\n")
            return
        if line.strip() == "/quit":
            return
        if line.strip() == "/reset":
            history = []
            continue
        if not history and text_model.bos_id is not None:
            history = [text_model.bos_id]
        if text_model.deepseek_chat:
            history += text_model.encode(f"{DEEPSEEK_USER}{line}{DEEPSEEK_ASSISTANT}")
        else:
            history += text_model.encode(f"User: {line}\nAssistant:")
        history = history[-(config.max_seq_len - max_new_tokens):]  # keep the most recent context
        write("model> ")
        reply: list[int] = []

        def stream(row: int, tokens: list[int], shown=TextStream(text_model, write)) -> None:
            reply.extend(tokens)
            if not text_model.deepseek_chat and "\nUser:" in text_model.decode(reply):
                raise _StopReply
            shown(row, tokens)

        try:
            generate(text_model.model, history, max_new_tokens, eos_id=text_model.eos_id, callback=stream, **options)
        except _StopReply:
            text = text_model.decode(reply)
            reply = text_model.encode(text[:text.index("\nUser:")])
        history += reply
        write("\n")
