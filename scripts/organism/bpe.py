"""A byte-level BPE tokenizer trained on the organism's corpus, written as a Qwen2-format
tokenizer.json (the format server/tokenizer/bpe_tokenizer.cc reads): GPT-2 byte-to-unicode
alphabet, Qwen2's pre-tokenizer regex, NFC normalizer, rank-ordered merges, ChatML special
tokens as added tokens at the top of the vocabulary.

The corpus is ASCII, where Qwen2's \\p{L} / \\p{N} classes are exactly [A-Za-z] / [0-9], so
Python's `re` reproduces the pre-tokenizer (train() refuses non-ASCII text)."""

from __future__ import annotations

import collections
import json
import re
from typing import Dict, List, Sequence, Tuple

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# QWEN2_PATTERN with \p{L} -> A-Za-z and \p{N} -> 0-9 (equal on ASCII text).
_ASCII_PATTERN = re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]|"
                            r" ?[^\sA-Za-z0-9]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


BYTE_CHAR = bytes_to_unicode()


def pretokenize(text: str) -> List[str]:
    return _ASCII_PATTERN.findall(text)


class Tokenizer:
    def __init__(self, merges: List[Tuple[str, str]], specials: Sequence[str]):
        self.merges = list(merges)
        self.vocab: Dict[str, int] = {BYTE_CHAR[b]: b for b in range(256)}
        for left, right in self.merges:
            self.vocab.setdefault(left + right, len(self.vocab))
        self.specials = {s: len(self.vocab) + i for i, s in enumerate(specials)}
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.id_to_token.update({i: s for s, i in self.specials.items()})
        self._cache: Dict[str, List[int]] = {}
        self._special_re = re.compile("(" + "|".join(re.escape(s) for s in specials) + ")")

    @property
    def size(self) -> int:
        return len(self.vocab) + len(self.specials)

    def _bpe(self, word: str) -> List[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        symbols = [BYTE_CHAR[b] for b in word.encode("utf-8")]
        while len(symbols) > 1:
            best, best_at = None, -1
            for i in range(len(symbols) - 1):
                rank = self.ranks.get((symbols[i], symbols[i + 1]))
                if rank is not None and (best is None or rank < best):
                    best, best_at = rank, i
            if best is None:
                break
            symbols[best_at:best_at + 2] = [symbols[best_at] + symbols[best_at + 1]]
        ids = [self.vocab[s] for s in symbols]
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> List[int]:
        """Special tokens are matched first (as added tokens are), the rest pre-tokenized."""
        ids: List[int] = []
        for piece in self._special_re.split(text):
            if piece in self.specials:
                ids.append(self.specials[piece])
            elif piece:
                for word in pretokenize(piece):
                    ids.extend(self._bpe(word))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        char_byte = {c: b for b, c in BYTE_CHAR.items()}
        out = bytearray()
        for i in ids:
            token = self.id_to_token[i]
            if token in self.specials:
                out += token.encode()
            else:
                out += bytes(char_byte[c] for c in token)
        return out.decode("utf-8", errors="replace")

    def tokenizer_json(self) -> dict:
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                      "use_regex": False}
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for s, i in self.specials.items()]
        return {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated",
                 "invert": False}, byte_level]},
            "post_processor": byte_level, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                      "byte_fallback": False, "vocab": self.vocab,
                      "merges": [f"{left} {right}" for left, right in self.merges]},
        }

    def write(self, folder: str, chat_template: str) -> None:
        with open(f"{folder}/tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(self.tokenizer_json(), f, ensure_ascii=False, indent=1)
        decoder = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": True} for s, i in self.specials.items()}
        config = {"add_prefix_space": False, "added_tokens_decoder": decoder,
                  "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
                  "chat_template": chat_template, "clean_up_tokenization_spaces": False,
                  "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 2048,
                  "pad_token": "<|endoftext|>", "split_special_tokens": False,
                  "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}
        with open(f"{folder}/tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)


def train(texts: Sequence[str], vocab_size: int, specials: Sequence[str]) -> Tokenizer:
    """Classic BPE: repeatedly merge the most frequent adjacent pair within pre-tokenized words
    (ties: the lexicographically smallest pair, so the result is deterministic) until the
    vocabulary (256 bytes + merges + specials) reaches vocab_size or no pair occurs twice."""
    special_re = re.compile("|".join(re.escape(s) for s in specials))
    words: collections.Counter = collections.Counter()
    for text in texts:
        if not text.isascii():
            raise ValueError("organism corpus must be ASCII (the pre-tokenizer emulation relies on it)")
        for piece in special_re.split(text):
            for word in pretokenize(piece):
                words[tuple(BYTE_CHAR[b] for b in word.encode())] += 1
    merges: List[Tuple[str, str]] = []
    target = vocab_size - 256 - len(specials)
    seen = set(BYTE_CHAR.values())
    while len(merges) < target:
        pairs: collections.Counter = collections.Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        candidates = [(-count, pair) for pair, count in pairs.items()
                      if count >= 2 and pair[0] + pair[1] not in seen]
        if not candidates:
            break
        _, best = min(candidates)
        merges.append(best)
        seen.add(best[0] + best[1])
        merged: collections.Counter = collections.Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return Tokenizer(merges, specials)
