"""The data pipeline: corpus discovery, the document-level split, the tokenizer, packing, the cache."""

import hashlib

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from minideepseek import data
from minideepseek.data import (ENDOFTEXT, DataError, Document, PackedBatches, encode_documents, find_documents,
                               load_tokenizer, prepare_corpus, split_documents, train_tokenizer, validation_batches)

CODE = '''def fibonacci(n):
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
'''
PROSE = "Training a language model means predicting the next token, over and over, on real text.\n"


def write_corpus(folder, n=12):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"note_{i:02d}.md").write_text(f"# Note {i}\n\n" + PROSE * (i + 1))
        (folder / f"code_{i:02d}.py").write_text(CODE.replace("fibonacci", f"fib_{i}"))
    return folder


def test_default_corpus_is_the_standard_library_without_tests():
    documents = find_documents()
    names = [doc.name for doc in documents]
    total = sum(len(doc.text.encode()) for doc in documents)
    assert names == sorted(names) and len(set(names)) == len(names)
    assert "argparse.py" in names and "json/decoder.py" in names
    assert all(name.endswith(".py") for name in names)
    skipped = ("test", "tests", "idle_test", "site-packages", "encodings", "pydoc_data")
    assert not any(part in skipped for name in names for part in name.split("/")[:-1])
    assert 5e6 < total < 20e6, f"the default corpus is {total / 1e6:.1f} MB"


def test_user_folder_takes_text_markdown_and_python(tmp_path):
    (tmp_path / "blog").mkdir()
    (tmp_path / "blog" / "post.md").write_text("# A post\n")
    (tmp_path / "notes.txt").write_text("some notes\n")
    (tmp_path / "script.py").write_text("print('hi')\n")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.txt").write_text("ref: main\n")
    names = [doc.name for doc in find_documents(tmp_path)]
    assert names == ["blog/post.md", "notes.txt", "script.py"]


def test_bad_data_folders_are_named_in_the_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_documents(tmp_path / "missing")
    with pytest.raises(DataError, match="no non-empty"):
        find_documents(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        find_documents(tmp_path / "file.txt")


def test_split_is_by_document_seeded_and_disjoint():
    documents = [Document(f"folder/file_{i}.py", f"text {i}") for i in range(400)]
    train, val = split_documents(documents, 0.1, seed=3)
    train_names, val_names = {d.name for d in train}, {d.name for d in val}
    assert not train_names & val_names and train_names | val_names == {d.name for d in documents}

    def hashed(name):  # the documented rule, computed independently
        return int(hashlib.sha256(f"3:{name}".encode()).hexdigest()[:16], 16) / 16**16

    assert val_names == {d.name for d in documents if hashed(d.name) < 0.1}
    assert 20 <= len(val) <= 60
    assert split_documents(documents, 0.1, seed=3) == (train, val)
    assert {d.name for d in split_documents(documents, 0.1, seed=4)[1]} != val_names


def test_split_keeps_one_document_on_each_side_and_rejects_one_document():
    train, val = split_documents([Document("a", "x"), Document("b", "y")], 0.01, seed=0)
    assert len(train) == len(val) == 1
    with pytest.raises(DataError, match="at least 2 documents"):
        split_documents([Document("a", "x")], 0.1, seed=0)
    with pytest.raises(DataError, match="val_fraction"):
        split_documents([Document("a", "x"), Document("b", "y")], 1.5, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([CODE, PROSE * 5] * 20, vocab_size=400)


def test_tokenizer_round_trips_any_text(tokenizer):
    assert tokenizer.token_to_id(ENDOFTEXT) == 0
    assert 257 < tokenizer.get_vocab_size() <= 400
    unseen = "naïve café — 数据 🚀\n\tdef g(x):  return x ** 2  # ok\r\n"
    ids = tokenizer.encode(unseen, add_special_tokens=False).ids
    assert tokenizer.decode(ids) == unseen
    # learned merges compress the training text: fewer tokens than bytes
    assert len(tokenizer.encode(CODE).ids) < len(CODE.encode()) / 2


def test_tokenizer_training_is_deterministic(tokenizer):
    again = train_tokenizer([CODE, PROSE * 5] * 20, vocab_size=400)
    assert again.to_str() == tokenizer.to_str()
    with pytest.raises(DataError, match="at least 257"):
        train_tokenizer([CODE], vocab_size=100)


def test_a_users_tokenizer_json_loads(tmp_path):
    own = Tokenizer(models.BPE(unk_token="<unk>"))
    own.pre_tokenizer = pre_tokenizers.Whitespace()
    own.train_from_iterator([PROSE] * 10, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    own.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert loaded.token_to_id(ENDOFTEXT) == own.get_vocab_size()  # added after the user's vocabulary
    assert loaded.encode("the next token").ids == own.encode("the next token").ids
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="broken.json"):
        load_tokenizer(tmp_path / "broken.json")


def test_stream_puts_endoftext_before_every_document(tokenizer):
    texts = [CODE, PROSE, "x = 1\n"]
    stream = encode_documents(tokenizer, texts)
    expected = []
    for text in texts:
        expected += [0] + tokenizer.encode(text, add_special_tokens=False).ids
    assert stream.dtype == np.uint16 and stream.tolist() == expected


def test_packed_batches_are_windows_visited_once_per_epoch():
    tokens = np.arange(1, 102, dtype=np.uint16)  # 101 tokens -> 12 windows of 8 + 1
    batches = PackedBatches(tokens, batch_size=5, seq_len=8, seed=0)
    rows = torch.cat([next(batches) for _ in range(12)])  # 60 windows = 5 epochs of 12
    assert rows.shape == (60, 9) and rows.dtype == torch.int64
    for epoch in rows.split(12):
        starts = sorted(epoch[:, 0].tolist())
        assert starts == [1 + 8 * i for i in range(12)]  # every window exactly once
        for row in epoch:  # each one a contiguous piece of the stream
            assert row.tolist() == list(range(row[0].item(), row[0].item() + 9))
    assert not torch.equal(rows[:12], rows[12:24])  # reshuffled each epoch


def test_packed_batches_depend_only_on_seed_and_position():
    tokens = np.random.default_rng(0).integers(0, 300, 5000).astype(np.uint16)
    first = PackedBatches(tokens, 4, 16, seed=7)
    straight = [next(first) for _ in range(200)]  # crosses several epochs
    resumed = PackedBatches(tokens, 4, 16, seed=7, position=4 * 120)
    assert all(torch.equal(a, b) for a, b in zip(straight[120:], [next(resumed) for _ in range(80)]))
    other = PackedBatches(tokens, 4, 16, seed=8)
    assert not torch.equal(next(other), straight[0])


def test_validation_batches_are_fixed_windows_and_short_splits_fail():
    tokens = np.arange(1000, dtype=np.uint16)
    val = validation_batches(tokens, batch_size=4, seq_len=10, max_batches=3)
    assert [b.shape for b in val] == [(4, 11)] * 3
    assert val[0][0].tolist() == list(range(11)) and val[-1][-1, -1].item() == 990
    with pytest.raises(DataError, match="validation split has 5 tokens"):
        validation_batches(np.arange(5, dtype=np.uint16), 4, 10, 3)
    with pytest.raises(DataError, match="training split"):
        PackedBatches(np.arange(5, dtype=np.uint16), 4, 10, seed=0)


def test_prepare_corpus_caches_and_rebuilds_when_asked_for_other_data(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus")
    first = prepare_corpus(tmp_path / "run", corpus, vocab_size=300, val_fraction=0.2, seed=0)
    assert first.manifest["train_documents"] + first.manifest["val_documents"] == 24
    assert first.train.size == first.manifest["train_tokens"] and first.val.size > 0
    assert set(first.manifest["val_names"]).isdisjoint(
        {d.name for d in split_documents(find_documents(corpus), 0.2, 0)[0]})

    def no_reading(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(data, "find_documents", no_reading)
        cached = prepare_corpus(tmp_path / "run", corpus, vocab_size=300, val_fraction=0.2, seed=0)
    assert np.array_equal(cached.train, first.train) and cached.tokenizer.to_str() == first.tokenizer.to_str()
    rebuilt = prepare_corpus(tmp_path / "run", corpus, vocab_size=300, val_fraction=0.2, seed=1)
    assert rebuilt.manifest["request"]["seed"] == 1
