"""Tokenizer files in the real CLIP and T5 formats, made offline from a small corpus (no downloads, no torch).

`make_clip_tokenizer` learns a byte-level BPE (`vocab.json` + `merges.txt`, `</w>` word ends, lower-cased like
CLIP); `make_t5_tokenizer` trains a sentencepiece unigram model (`spiece.model`, `<pad>`=0, `</s>`=1, `<unk>`=2,
plus `<extra_id_N>` tokens as T5 has). Both folders load with paddlenlp's and transformers' tokenizer classes.
"""

import collections
import io
import json
import os

import regex

from ..utils.atomic import atomic_dir

CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenizer (openai/CLIP simple_tokenizer.py), applied to lower-cased, whitespace-collapsed text.
CLIP_WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 512


def bytes_to_unicode():
    """GPT-2/CLIP's reversible byte -> printable character table (256 entries, order matters for ids)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(c) for c in codes]))


def clip_words(text):
    """CLIP's word split: collapse whitespace, lower-case, regex pre-tokenize."""
    text = " ".join(text.split()).lower()
    return CLIP_WORD_PATTERN.findall(text)


def learn_bpe(corpus, num_merges):
    """Byte-level BPE merges learned on `corpus` (list of strings); each word ends with a `</w>` symbol.
    Ties between equally frequent pairs are broken lexicographically, so the result is deterministic."""
    byte_char = bytes_to_unicode()
    counts = collections.Counter()
    for line in corpus:
        for word in clip_words(line):
            chars = [byte_char[b] for b in word.encode("utf-8")]
            chars[-1] += "</w>"
            counts[tuple(chars)] += 1
    words = dict(counts)
    merges = []
    while len(merges) < num_merges:
        pairs = collections.Counter()
        for symbols, n in words.items():
            for pair in zip(symbols[:-1], symbols[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        words = {_merge_word(symbols, best): n for symbols, n in words.items()}
    return merges


def _merge_word(symbols, pair):
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def make_clip_tokenizer(folder, corpus, vocab_size=1000):
    """Write a CLIP tokenizer folder learned from `corpus`; returns the vocabulary size actually reached
    (at most `vocab_size`; a small corpus may run out of merges). `<|endoftext|>` gets the largest id, as in CLIP."""
    base = 2 * 256 + 2
    if vocab_size < base + 1:
        raise ValueError(f"vocab_size {vocab_size} is too small for a byte-level CLIP BPE (needs > {base})")
    corpus = _check_corpus(corpus)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = learn_bpe(corpus, vocab_size - base)
    seen = set(vocab)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            vocab.append(a + b)
    vocab += [CLIP_BOS, CLIP_EOS]
    special = {"bos_token": CLIP_BOS, "eos_token": CLIP_EOS, "unk_token": CLIP_EOS, "pad_token": CLIP_EOS}
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CLIP_MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": True,
        **special,
    }
    with atomic_dir(folder) as tmp:
        _write_json(os.path.join(tmp, "vocab.json"), {token: i for i, token in enumerate(vocab)})
        with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        _write_json(os.path.join(tmp, "tokenizer_config.json"), config)
        _write_json(os.path.join(tmp, "special_tokens_map.json"), special)
    return len(vocab)


def make_t5_tokenizer(folder, corpus, vocab_size=200, extra_ids=100):
    """Write a T5 tokenizer folder (`spiece.model` trained with sentencepiece on `corpus`); returns the full
    vocabulary size (sentencepiece pieces + `extra_ids` sentinel tokens), the size the T5 embedding needs."""
    import sentencepiece as spm

    corpus = _check_corpus(corpus)
    if vocab_size < 8:
        raise ValueError(f"vocab_size {vocab_size} is too small for a T5 sentencepiece model (needs >= 8)")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
    )
    pieces = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    extra = [f"<extra_id_{i}>" for i in range(extra_ids)]
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "additional_special_tokens": extra}
    config = {
        "tokenizer_class": "T5Tokenizer",
        "model_max_length": T5_MAX_LENGTH,
        "extra_ids": extra_ids,
        "legacy": True,
        "clean_up_tokenization_spaces": True,
        **special,
    }
    with atomic_dir(folder) as tmp:
        with open(os.path.join(tmp, "spiece.model"), "wb") as f:
            f.write(model.getvalue())
        _write_json(os.path.join(tmp, "tokenizer_config.json"), config)
        _write_json(os.path.join(tmp, "special_tokens_map.json"), special)
    return pieces + extra_ids


def _check_corpus(corpus):
    corpus = [corpus] if isinstance(corpus, str) else [str(line) for line in corpus]
    corpus = [line for line in corpus if line.strip()]
    if not corpus:
        raise ValueError("the tokenizer corpus is empty")
    return corpus


def set_model_max_length(folder, length):
    """Record in a tokenizer folder the prompt length its text encoder was trained for; pipelines default to it."""
    path = os.path.join(folder, "tokenizer_config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config["model_max_length"] = int(length)
    _write_json(path, config)


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
