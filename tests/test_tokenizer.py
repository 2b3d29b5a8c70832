"""GPT-2's tokenizer works offline, from OpenAI's verified files, and TransformerLens accepts it."""

from __future__ import annotations

import hashlib

from utils.tokenizer import OPENAI_SHA256, gpt2_tokenizer, openai_bpe_files


def test_openai_files_match_published_digests():
    for path in openai_bpe_files():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == OPENAI_SHA256[path.name]


def test_known_token_ids():
    tok = gpt2_tokenizer()
    assert len(tok) == 50257
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok(" Hello")["input_ids"] == [18435]  # a leading space is part of the token
    assert tok("<|endoftext|>")["input_ids"] == [50256]


def test_bridge_tokens_and_round_trip(gpt2):
    assert gpt2.to_tokens("Hello world").tolist() == [[50256, 15496, 995]]
    text = "Transformers, from scratch: 1234 tokens."
    assert gpt2.to_string(gpt2.to_tokens(text, prepend_bos=False)[0]) == text
    assert "".join(gpt2.to_str_tokens(text, prepend_bos=False)) == text
