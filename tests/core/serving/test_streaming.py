"""Streaming: the text a stream hands its reader is the answer's text, cut where a stop string comes; a reader that
goes (or a stop string) ends its row's decode at the next step, on the tiny model."""

import pytest
import torch
from transformers import AutoTokenizer

from core.common.config import ModelConfig
from core.model.fast_decode import greedy_decode
from core.model.loading import load_model
from core.model.schema import SchemaDecoder, TaskSchema
from core.serving.streaming import TokenStream, feeder
from core.settings import ModelSettings
from demos import invoices


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _read(stream: TokenStream, ids: list[int]) -> tuple[list[str], list[bool]]:
    """Feed `ids` one by one, taking the text after each: the parts read and what each feed answered."""
    parts, answers = [], []
    for token in ids:
        answers.append(stream.feed(token))
        text, _ = stream.take()
        parts.append(text)
        if not answers[-1]:
            break
    return parts, answers


def test_the_text_read_is_the_decoded_text_even_where_a_character_spans_tokens(tokenizer):
    text = '{"vendor": "Zürich Ölwerke ✓ 東京", "total": 12.5}'
    ids = tokenizer(text, add_special_tokens=False).input_ids
    stream = TokenStream(tokenizer)
    parts, answers = _read(stream, ids)
    assert all(answers) and "".join(parts) == tokenizer.decode(ids)
    assert not any("\ufffd" in p for p in parts)  # never half a character
    assert sum(1 for p in parts if p) > 5  # it came as it was fed, not at the end
    stream.finish()
    assert stream.take() == ("", True)


@pytest.mark.parametrize("stop", ["Total", "\n\n", "tal: 4"])
def test_a_stop_string_is_never_sent_and_ends_the_row(tokenizer, stop):
    text = "Vendor: Acme\n\nTotal: 42 EUR and more text after it"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    stream = TokenStream(tokenizer, stop=[stop, "never here"])
    parts, answers = _read(stream, ids)
    assert "".join(parts) == text[: text.index(stop)] and stream.stopped
    assert answers[-1] is False and len(answers) < len(ids)  # the decode was told to stop before the end


def test_a_partial_stop_string_is_held_back_then_released(tokenizer):
    stream = TokenStream(tokenizer, stop=["ENDX"])
    ids = tokenizer("abc END more", add_special_tokens=False).input_ids
    parts, answers = _read(stream, ids)
    assert all(answers) and "".join(parts) == "abc END more" and not stream.stopped


def test_a_reader_that_goes_stops_its_own_row_and_a_batch_stops_when_all_rows_have(tiny_model_dir):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)), ModelSettings())
    decoder = SchemaDecoder(model, tokenizer, TaskSchema.from_dict(invoices.SCHEMA), "Extract.", max_new_tokens=120)
    docs = [d["document"] for d in invoices.generate(2, seed=3)]
    enc = tokenizer([decoder.prompt(d) for d in docs], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    full, _ = greedy_decode(model, dict(enc), 60, tokenizer.eos_token_id, tokenizer.pad_token_id)

    class GoesAfter(TokenStream):  # a client that reads `n` tokens and disconnects
        def __init__(self, n):
            super().__init__(tokenizer)
            self.n = n

        def feed(self, token):
            if self.fed >= self.n:
                self.cancel()
            return super().feed(token)

    streams = [GoesAfter(5), None]
    cut, _ = greedy_decode(model, dict(enc), 60, tokenizer.eos_token_id, tokenizer.pad_token_id, on_token=feeder(streams))
    assert torch.equal(cut[0, :6], full[0, :6]) and (cut[0, 6:] == tokenizer.pad_token_id).all()  # row 0 ended at its 6th
    assert torch.equal(cut[1], full[1])  # the other row's answer is untouched
    streams = [GoesAfter(3), GoesAfter(4)]
    both, _ = greedy_decode(model, dict(enc), 60, tokenizer.eos_token_id, tokenizer.pad_token_id, on_token=feeder(streams))
    assert both.shape[1] == 5  # the decode stopped once neither row had a reader
    assert [s.fed for s in streams] == [3, 4]


def test_the_streamed_text_of_a_constrained_extraction_is_its_answer(tiny_model_dir):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)), ModelSettings())
    decoder = SchemaDecoder(model, tokenizer, TaskSchema.from_dict(invoices.SCHEMA), "Extract.", max_new_tokens=120)
    docs = [d["document"] for d in invoices.generate(2, seed=4)]
    streams = [TokenStream(tokenizer), TokenStream(tokenizer)]
    results = decoder.extract(docs, on_token=feeder(streams))
    assert [s.take()[0] for s in streams] == [r.text for r in results]
    assert all(r.valid for r in results)  # closed within the budget, as unstreamed
