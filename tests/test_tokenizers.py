"""Offline CLIP BPE / T5 sentencepiece tokenizer files: paddlenlp and transformers must give identical ids."""

import json
import os

import pytest
from transformers import CLIPTokenizer, CLIPTokenizerFast, T5Tokenizer, T5TokenizerFast

from ppflux_lightning.models.tokenizers import CLIP_EOS, learn_bpe, make_clip_tokenizer, make_t5_tokenizer

CORPUS = [
    "a photo of a red cat sitting on a wooden chair",
    "a watercolor painting of snowy mountains at sunset",
    "two dogs playing in the park on a sunny day",
    "macro photo of a bee on a yellow flower, 4k",
]
TEXTS = [
    "A red cat on a chair",
    "Mountains at SUNSET, photo 1234 -- unseen wörds 猫!",
    "zebra",
    "a " * 120 + "end",  # longer than 77 CLIP tokens: truncation
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    clip_size = make_clip_tokenizer(str(root / "clip"), CORPUS, vocab_size=600)
    t5_size = make_t5_tokenizer(str(root / "t5"), CORPUS, vocab_size=60)
    return str(root / "clip"), clip_size, str(root / "t5"), t5_size


def test_clip_ids_match_transformers(folders):
    from paddlenlp.transformers import CLIPTokenizer as PaddleCLIPTokenizer

    clip_dir = folders[0]
    ours = PaddleCLIPTokenizer.from_pretrained(clip_dir)
    slow, fast = CLIPTokenizer.from_pretrained(clip_dir), CLIPTokenizerFast.from_pretrained(clip_dir)
    for text in TEXTS:
        kwargs = dict(padding="max_length", max_length=77, truncation=True)
        ids = ours(text, **kwargs)["input_ids"]
        assert ids == slow(text, **kwargs).input_ids == fast(text, **kwargs).input_ids, text
        assert len(ids) == 77 and ids[0] == slow.bos_token_id and slow.eos_token_id in ids


def test_clip_vocab_layout(folders):
    clip_dir, size = folders[0], folders[1]
    with open(os.path.join(clip_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(clip_dir, "merges.txt"), encoding="utf-8") as f:
        merges = f.read().splitlines()
    assert len(vocab) == size <= 600 and sorted(vocab.values()) == list(range(size))
    assert vocab[CLIP_EOS] == size - 1 and vocab["<|startoftext|>"] == size - 2  # pooled = argmax(ids) works
    assert merges[0].startswith("#version") and len(merges) - 1 == size - 514
    assert vocab["a</w>"] == 256 + vocab["a"]  # bytes, then bytes + "</w>", then merges
    tok = CLIPTokenizer.from_pretrained(clip_dir)
    assert tok.tokenize("Cat") == tok.tokenize("cat") == ["cat</w>"]  # lower-cased, learned whole word


def test_learn_bpe_by_hand():
    # pair counts in "ab ab ac": (a, b</w>) 2, (a, c</w>) 1 -> first merge is (a, b</w>), then (a, c</w>)
    assert learn_bpe(["ab ab ac"], 5) == [("a", "b</w>"), ("a", "c</w>")]
    # ties break lexicographically: (a, b) and (b, c</w>) both appear once in "abc"
    assert learn_bpe(["abc"], 1) == [("a", "b")]


def test_t5_ids_match_transformers(folders):
    from paddlenlp.transformers import T5Tokenizer as PaddleT5Tokenizer

    t5_dir, size = folders[2], folders[3]
    ours = PaddleT5Tokenizer.from_pretrained(t5_dir)
    slow, fast = T5Tokenizer.from_pretrained(t5_dir), T5TokenizerFast.from_pretrained(t5_dir)
    for text in TEXTS:
        kwargs = dict(padding="max_length", max_length=32, truncation=True)
        ids = ours(text, **kwargs)["input_ids"]
        assert ids == slow(text, **kwargs).input_ids == fast(text, **kwargs).input_ids, text
    assert (slow.pad_token_id, slow.eos_token_id, slow.unk_token_id) == (0, 1, 2)
    assert len(slow) == size and slow.convert_tokens_to_ids("<extra_id_0>") == size - 1
    assert ours.convert_tokens_to_ids("<extra_id_0>") == size - 1
    short = slow("a cat", padding="max_length", max_length=8).input_ids
    assert short[short.index(1) + 1 :] == [0] * (8 - short.index(1) - 1)  # </s> then <pad>


def test_same_corpus_same_files(folders, tmp_path):
    make_clip_tokenizer(str(tmp_path / "clip"), CORPUS, vocab_size=600)
    make_t5_tokenizer(str(tmp_path / "t5"), CORPUS, vocab_size=60)
    for sub, name in (("clip", "vocab.json"), ("clip", "merges.txt"), ("t5", "spiece.model")):
        first = folders[0] if sub == "clip" else folders[2]
        with open(os.path.join(first, name), "rb") as a, open(tmp_path / sub / name, "rb") as b:
            assert a.read() == b.read(), name


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        make_clip_tokenizer(str(tmp_path / "c"), ["   "], vocab_size=600)
    with pytest.raises(ValueError, match="vocab_size 100"):
        make_clip_tokenizer(str(tmp_path / "c"), CORPUS, vocab_size=100)
    with pytest.raises(ValueError, match="vocab_size 3"):
        make_t5_tokenizer(str(tmp_path / "t"), CORPUS, vocab_size=3)
    assert not os.path.exists(tmp_path / "c")
