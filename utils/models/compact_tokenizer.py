"""A `transformers` tokenizer for the compact vocabulary, so TransformerLens's `to_tokens`, `to_str_tokens` and
`to_string` work on the course GPT exactly as on GPT-2.

It is GPT-2's tokenizer followed by a lookup: text is cleaned as the corpus was (4-space indents become tabs),
split by GPT-2's byte-level BPE, and each GPT-2 token becomes its compact id, or the "unknown" id, shown as
`⁇`. A real tokenizer class (rather than a wrapper around the bridge) keeps the bridge's own code paths:
padding, batching, BOS handling and decoding all go through `transformers` as they do for GPT-2.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizer

from utils.corpus import END_OF_TEXT_ID, CompactVocab, clean_source
from utils.tokenizer import END_OF_TEXT, gpt2_tokenizer

UNKNOWN = "⁇"


class CompactGPT2Tokenizer(PreTrainedTokenizer):
    """GPT-2's BPE with ids renumbered into a `CompactVocab` (most frequent tokens first, unknown last)."""

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, kept: list[int], **kwargs) -> None:
        self._gpt2 = gpt2_tokenizer()
        self._kept = [int(i) for i in kept]
        self._strings = self._gpt2.convert_ids_to_tokens(self._kept)  # byte-level strings, e.g. 'Ġdef'
        self._ids = {s: i for i, s in enumerate(self._strings)}
        self._ids[UNKNOWN] = len(self._strings)
        if END_OF_TEXT_ID not in self._kept:
            raise ValueError("the compact vocabulary must keep <|endoftext|> (it separates files and opens prompts)")
        # add_bos_token: TransformerLens would otherwise reload the tokenizer by name to get a BOS-adding one.
        kwargs.setdefault("add_bos_token", True)
        super().__init__(bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT, unk_token=UNKNOWN,
                         kept=self._kept, **kwargs)
        self.model_max_length = 1024
        self.init_kwargs.setdefault("name_or_path", "course-gpt")  # TransformerLens reads it (never reloads: add_bos_token)

    @classmethod
    def from_vocab(cls, vocab: CompactVocab) -> "CompactGPT2Tokenizer":
        return cls(vocab.kept.tolist())

    @property
    def vocab_size(self) -> int:
        return len(self._ids)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._ids)

    def prepare_for_tokenization(self, text: str, is_split_into_words: bool = False, **kwargs):
        return clean_source(text), kwargs

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self._gpt2.backend_tokenizer.encode(text, add_special_tokens=False).tokens

    def _convert_token_to_id(self, token: str) -> int:
        return self._ids.get(token, self._ids[UNKNOWN])

    def _convert_id_to_token(self, index: int) -> str:
        return self._strings[index] if 0 <= index < len(self._strings) else UNKNOWN

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        pieces, run = [], []
        for token in [*tokens, None]:
            if token is None or token == UNKNOWN:  # UNKNOWN is not a byte-level string: decode the run before it
                pieces.append(self._gpt2.convert_tokens_to_string(run) if run else "")
                if token is not None:
                    pieces.append(UNKNOWN)
                run = []
            else:
                run.append(token)
        return "".join(pieces)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        return token_ids_0 + (token_ids_1 or [])  # like GPT-2: TransformerLens prepends BOS itself

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary lives in the course GPT's checkpoint
