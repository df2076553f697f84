"""Training data: documents -> byte-level BPE tokens -> packed, shuffled, resumable batches.

A language model learns from one long stream of token ids. This module builds that
stream from a folder of documents and serves it in the shape the loss wants:

1. **Documents.** By default the Python standard library's own source, which every
   Python install ships (``sysconfig.get_paths()["stdlib"]``, about 10 MB of real code
   once the test suites and machine-generated tables are left out), so training needs no
   download. Or any folder of ``.txt``, ``.md`` and ``.py`` files (``--data DIR``).
2. **Split by document.** Each document goes to validation when a seeded hash of its
   name falls below ``val_fraction``. Splitting the token stream instead would put the
   two halves of one file on both sides, and validation would measure memory.
3. **Tokenizer.** A byte-level BPE (the GPT-2 / DeepSeek family) trained with the
   ``tokenizers`` library on the training documents: it starts from the 256 byte values,
   so any text encodes, and merges the most frequent neighbouring pairs until
   ``vocab_size`` tokens exist. ``<|endoftext|>`` marks every document start.
4. **Packing.** The documents, each preceded by ``<|endoftext|>``, are concatenated and
   cut into windows of ``seq_len + 1`` tokens (inputs are the first ``seq_len``, targets
   the last ``seq_len``); no padding is wasted. Windows are visited in a seeded random
   order per epoch, so ``(seed, position)`` fixes every future batch and a checkpoint only
   needs to store ``position``.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm

from .runfolder import atomic_path, read_json, read_text, write_json
from .validation import UserError

ENDOFTEXT = "<|endoftext|>"
CORPUS_FILES = ("tokenizer.json", "train.npy", "val.npy", "data.json")  # what prepare_corpus writes
TEXT_SUFFIXES = (".txt", ".md", ".py")
# Parts of the standard library that are not code people write: test suites, installed packages,
# and generated tables (codec maps in encodings/, the pydoc help text in pydoc_data/).
STDLIB_SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                       "encodings", "pydoc_data"}


class DataError(UserError):
    """Training data that cannot be used. The message names the folder or file and what was expected."""


@dataclass(frozen=True)
class Document:
    """One file of the corpus: ``name`` is its path relative to the corpus folder (it seeds the split)."""

    name: str
    text: str


# ----------------------------------------------------------------------------- documents
def stdlib_dir() -> Path:
    """The folder holding the running Python's standard library source."""
    return Path(sysconfig.get_paths()["stdlib"])


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """``raw`` decoded as UTF-8, each byte that is not UTF-8 replaced by U+FFFD; and how many were.

    (Decoding with ``surrogateescape`` maps each bad byte to one lone surrogate, which counts them.)
    """
    escaped = raw.decode("utf-8", errors="surrogateescape")
    bad = sum(1 for ch in escaped if "\udc80" <= ch <= "\udcff")
    return (raw.decode("utf-8", errors="replace") if bad else escaped), bad


def find_documents(data_dir: str | Path | None = None) -> list[Document]:
    """Every document of the corpus, sorted by name.

    ``data_dir=None``: the standard library's ``.py`` files without its tests, installed packages
    and generated tables. Otherwise every ``.txt``, ``.md`` and ``.py`` file under ``data_dir``
    (hidden folders such as ``.git`` skipped). Empty files are skipped.
    """
    if data_dir is None:
        root, suffixes, skipped = stdlib_dir(), (".py",), STDLIB_SKIPPED_DIRS
        where = f"the Python standard library at {root}"
    else:
        root, suffixes, skipped = Path(data_dir), TEXT_SUFFIXES, {"__pycache__", "site-packages"}
        where = str(root)
        if not root.exists():
            raise DataError(f"data folder {root} does not exist")
        if not root.is_dir():
            raise DataError(f"--data must be a folder of {'/'.join(TEXT_SUFFIXES)} files, but {root} is a file")
    documents, not_files, not_utf8 = [], [], {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in skipped and not name.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if path.suffix not in suffixes or (data_dir is None and name.startswith("test_")):
                continue
            if not path.is_file():  # a FIFO would block the read forever; a broken link has nothing to read
                not_files.append(path.name)
                continue
            text, replaced = decode_utf8(path.read_bytes())
            if replaced:
                not_utf8[path.relative_to(root).as_posix()] = replaced
            if text.strip():
                documents.append(Document(path.relative_to(root).as_posix(), text))
    if not_files:
        warnings.warn(f"skipped {len(not_files)} entries of {where} that are not regular files: "
                      f"{', '.join(sorted(not_files)[:3])}", stacklevel=2)
    if not_utf8:
        first = min(not_utf8)
        warnings.warn(f"{len(not_utf8)} file(s) of {where} are not valid UTF-8 (e.g. {first}): "
                      f"{sum(not_utf8.values())} bytes replaced by U+FFFD", stacklevel=2)
    if not documents:
        raise DataError(f"no non-empty {'/'.join(suffixes)} files found in {where}"
                        + ("; pass --data DIR with your own text" if data_dir is None else ""))
    return sorted(documents, key=lambda doc: doc.name)


# --8<-- [start:split]
def split_documents(documents: list[Document], val_fraction: float, seed: int) -> tuple[list[Document], list[Document]]:
    """(train, validation), a whole document on one side only.

    A document is for validation when sha256(f"{seed}:{name}"), read as a number in [0, 1), is below
    ``val_fraction``: the same files land on the same side on every machine and every run with that seed.
    Each side gets at least one document.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if len(documents) < 2:
        raise DataError(f"a train/validation split by document needs at least 2 documents, found "
                        f"{len(documents)}; split your text into several files")

    def hash_point(doc: Document) -> float:
        digest = hashlib.sha256(f"{seed}:{doc.name}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    ranked = sorted(documents, key=hash_point)
    n_val = sum(hash_point(doc) < val_fraction for doc in ranked)
    n_val = min(max(n_val, 1), len(ranked) - 1)
    val_names = {doc.name for doc in ranked[:n_val]}
    train = [doc for doc in documents if doc.name not in val_names]
    val = [doc for doc in documents if doc.name in val_names]
    return train, val
# --8<-- [end:split]


# ----------------------------------------------------------------------------- tokenizer
# --8<-- [start:tokenizer]
def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer with ``vocab_size`` tokens (fewer if the texts run out of pairs to merge).

    Token 0 is ``<|endoftext|>``, then the 256 byte symbols, then the merges in the order learned.
    """
    if vocab_size < 257:
        raise DataError(f"vocab_size must be at least 257 (256 bytes + {ENDOFTEXT}), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    # Split on the GPT-2 pattern (words, numbers, runs of spaces, punctuation) and map every byte to a
    # printable character, so merges never cross a word boundary and no byte is unknown.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer
# --8<-- [end:tokenizer]


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """How many UTF-8 bytes of text each token id stands for (0 for special tokens such as ``<|endoftext|>``).

    Bits per byte (``val_bpb``) divides a loss by these counts, which makes it independent of the tokenizer.
    A byte-level BPE token is a string of byte symbols, one character per byte; a token of another
    tokenizer is measured by decoding it alone.
    """
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    special = {token.content for token in tokenizer.get_added_tokens_decoder().values() if token.special}
    lengths = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    for token, index in tokenizer.get_vocab().items():
        if token in special:
            continue
        lengths[index] = (len(token) if set(token) <= alphabet
                          else len(tokenizer.decode([index], skip_special_tokens=False).encode()))
    return lengths


def read_tokenizer(path: str | Path) -> Tokenizer:
    """A ``tokenizer.json`` (the Hugging Face ``tokenizers`` format) as it is; a DataError naming the file
    when it is missing or not a tokenizer."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"tokenizer file {path} does not exist")
    try:
        return Tokenizer.from_str(read_text(path, max_bytes=256 * 2**20, error=DataError))
    except DataError:
        raise
    except Exception as error:  # tokenizers raises a bare Exception on malformed files
        raise DataError(f"{path} is not a tokenizers tokenizer.json: {error}") from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """``read_tokenizer``, with ``<|endoftext|>`` added if it lacks it."""
    tokenizer = read_tokenizer(path)
    if tokenizer.token_to_id(ENDOFTEXT) is None:
        tokenizer.add_special_tokens([ENDOFTEXT])
    return tokenizer


def encode_documents(tokenizer: Tokenizer, texts: list[str], progress: bool = False) -> np.ndarray:
    """One stream ``[eot, doc0..., eot, doc1..., ...]`` as uint16 (uint32 for vocabularies over 65,536)."""
    eot = tokenizer.token_to_id(ENDOFTEXT)
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 2**16 else np.uint32
    pieces = []
    chunk = 64  # encode_batch runs a chunk on all cores; chunks keep memory flat and feed the progress bar
    for start in tqdm(range(0, len(texts), chunk), desc="tokenizing", unit="chunk", disable=not progress):
        for encoding in tokenizer.encode_batch(texts[start:start + chunk], add_special_tokens=False):
            pieces.append(np.array([eot] + encoding.ids, dtype=dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


# ----------------------------------------------------------------------------- the corpus, cached
@dataclass
class TokenizedCorpus:
    """The tokenizer and the two token streams a run trains and validates on."""

    tokenizer: Tokenizer
    train: np.ndarray
    val: np.ndarray
    manifest: dict


def prepare_corpus(cache_dir: str | Path, data_dir: str | Path | None = None, tokenizer_path: str | Path | None = None,
                   vocab_size: int = 2048, val_fraction: float = 0.05, seed: int = 0,
                   progress: bool = False) -> TokenizedCorpus:
    """Find, split and tokenize the corpus; write ``tokenizer.json``, ``train.npy``, ``val.npy`` and
    ``data.json`` (what was read, how it was split, token counts) into ``cache_dir``. A second call
    with the same arguments reads them back instead.

    ``tokenizer_path``: use this tokenizer.json instead of training one (``vocab_size`` is then ignored).
    """
    cache_dir = Path(cache_dir)
    request = {"data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
               "tokenizer": None if tokenizer_path is None else str(Path(tokenizer_path).resolve()),
               "vocab_size": vocab_size, "val_fraction": val_fraction, "seed": seed}
    if (cache_dir / "data.json").is_file():
        try:
            cached = load_corpus(cache_dir)
            if cached.manifest.get("request") == request:
                return cached
        except DataError:
            pass  # a damaged cache (a copy cut short, an edited file): build it again
    documents = find_documents(data_dir)
    train_docs, val_docs = split_documents(documents, val_fraction, seed)
    train_texts = [doc.text for doc in train_docs]
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else train_tokenizer(train_texts, vocab_size)
    train = encode_documents(tokenizer, train_texts, progress)
    val = encode_documents(tokenizer, [doc.text for doc in val_docs], progress)
    manifest = {
        "request": request,
        "source": str(data_dir) if data_dir is not None else f"python standard library ({stdlib_dir()})",
        "vocab_size": tokenizer.get_vocab_size(),
        "train_documents": len(train_docs), "val_documents": len(val_docs),
        "train_tokens": int(train.size), "val_tokens": int(val.size),
        "bytes": sum(len(doc.text.encode()) for doc in documents),
        "val_names": [doc.name for doc in val_docs],
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "data.json").unlink(missing_ok=True)
    with atomic_path(cache_dir / "tokenizer.json") as tmp:
        tokenizer.save(str(tmp))
    for name, tokens in (("train.npy", train), ("val.npy", val)):
        with atomic_path(cache_dir / name) as tmp, open(tmp, "wb") as f:
            np.save(f, tokens)
    # Written last: its presence says the other three files are complete.
    write_json(cache_dir / "data.json", manifest)
    return TokenizedCorpus(tokenizer, train, val, manifest)


def load_corpus(cache_dir: str | Path) -> TokenizedCorpus:
    """Read back what ``prepare_corpus`` wrote (no pickle: ``.npy`` arrays of integers only), checked:
    a damaged or foreign file is a DataError that names it."""
    cache_dir = Path(cache_dir)
    missing = [name for name in CORPUS_FILES if not (cache_dir / name).is_file()]
    if missing:
        raise DataError(f"{cache_dir} lacks the tokenized corpus files {missing}")
    manifest = read_json(cache_dir / "data.json", error=DataError)
    if not isinstance(manifest, dict):
        raise DataError(f"{cache_dir / 'data.json'}: expected a JSON object, found {type(manifest).__name__}")
    tokenizer = load_tokenizer(cache_dir / "tokenizer.json")
    train, val = (load_tokens(cache_dir / name, tokenizer.get_vocab_size()) for name in ("train.npy", "val.npy"))
    return TokenizedCorpus(tokenizer, train, val, manifest)


def load_tokens(path: Path, vocab_size: int) -> np.ndarray:
    """A token stream written by ``prepare_corpus``: one dimension, unsigned integers below ``vocab_size``."""
    try:
        tokens = np.load(path, allow_pickle=False)  # never unpickle: an object array is refused here
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path} is not a readable token array ({str(error).splitlines()[0]})") from None
    if tokens.ndim != 1 or tokens.dtype.kind != "u":
        raise DataError(f"{path} holds a {tokens.dtype} array of shape {tokens.shape}; token ids are a "
                        "one-dimensional array of unsigned integers")
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise DataError(f"{path} holds token id {int(tokens.max())}, outside the tokenizer's {vocab_size} tokens")
    return tokens


# ----------------------------------------------------------------------------- batches
def window_count(n_tokens: int, seq_len: int) -> int:
    """How many windows of seq_len + 1 tokens, consecutive ones sharing one token, fit in the stream."""
    return max(0, (n_tokens - 1) // seq_len)


def check_stream(tokens: np.ndarray, seq_len: int, what: str) -> None:
    if window_count(tokens.size, seq_len) == 0:
        raise DataError(f"the {what} split has {tokens.size} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
                        "add documents, lower seq_len, or change val_fraction")


# --8<-- [start:packing]
class PackedBatches:
    """Endless (batch_size, seq_len + 1) int64 batches from one token stream, reproducible from (seed, position).

    Window i is ``tokens[i * seq_len : i * seq_len + seq_len + 1]``: consecutive windows share a token,
    so every token after the first is a target exactly once per epoch. Epoch e visits the windows
    in the order of a permutation drawn from ``(seed, e)``. ``position`` counts the windows served so
    far; a checkpoint stores it, and ``PackedBatches(tokens, ..., position=saved)`` continues the
    same sequence of batches.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, position: int = 0):
        check_stream(tokens, seq_len, "training")
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.position = position
        self.n_windows = window_count(tokens.size, seq_len)
        self._order_epoch, self._order = -1, np.empty(0, dtype=np.int64)

    @property
    def epoch(self) -> float:
        """Passes over the training windows so far (fractional)."""
        return self.position / self.n_windows

    def window_order(self, epoch: int) -> np.ndarray:
        """The permutation of window indices for ``epoch``."""
        if epoch != self._order_epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._order_epoch = epoch
        return self._order

    def window(self, index: int) -> np.ndarray:
        start = index * self.seq_len
        return self.tokens[start:start + self.seq_len + 1]

    def __iter__(self) -> "PackedBatches":
        return self

    def __next__(self) -> torch.Tensor:
        rows = []
        for k in range(self.position, self.position + self.batch_size):
            epoch, offset = divmod(k, self.n_windows)
            rows.append(self.window(int(self.window_order(epoch)[offset])))
        self.position += self.batch_size
        return torch.from_numpy(np.stack(rows).astype(np.int64))
# --8<-- [end:packing]


def validation_batches(tokens: np.ndarray, batch_size: int, seq_len: int, max_batches: int) -> list[torch.Tensor]:
    """A fixed validation set: up to ``max_batches`` batches of windows spread evenly over the stream.

    The same windows every evaluation, so the curve moves only when the model does.
    """
    check_stream(tokens, seq_len, "validation")
    n_windows = window_count(tokens.size, seq_len)
    count = min(n_windows, max_batches * batch_size)
    starts = np.linspace(0, n_windows - 1, count).round().astype(np.int64) * seq_len
    windows = np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)
    return list(torch.from_numpy(windows).split(batch_size))
