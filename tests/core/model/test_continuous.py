"""Continuous batching gives each row the answer it gets decoded alone: rows joining mid-way, leaving early, each
under its own grammar and budget, on the tiny model (and on the embedded model's real weights)."""

import pytest

from core.common.config import ModelConfig
from core.model.continuous import Row, RunningBatch, shared_prefix, supported
from core.model.loading import load_model
from core.model.schema import GrammarMask, SchemaDecoder, TaskSchema
from core.settings import ModelSettings
from demos import invoices

OTHER = {
    "type": "object",
    "properties": {"vendor": {"type": "string", "maxLength": 12}, "paid": {"type": "boolean"}},
    "required": ["vendor", "paid"],
}


def _encode(tokenizer, prompts):
    return dict(tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False))


def _row(decoder: SchemaDecoder, handle, budget: int) -> Row:
    mask = GrammarMask(decoder.grammar, 1, budget, decoder.schema.schema, decoder.tokenizer)
    return Row(handle, mask, budget)


@pytest.mark.parametrize("base", ["tiny", "embedded"])
def test_rows_that_join_and_leave_get_the_answers_they_get_alone(base, tiny_model_dir, embedded_dir):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir if base == "tiny" else embedded_dir)), ModelSettings())
    assert supported(model)
    task = SchemaDecoder(model, tokenizer, TaskSchema.from_dict(invoices.SCHEMA), invoices.INSTRUCTION, max_new_tokens=120)
    own = SchemaDecoder(model, tokenizer, TaskSchema.from_dict(OTHER), invoices.INSTRUCTION, max_new_tokens=40)
    docs = [d["document"] for d in invoices.generate(4, seed=11)]
    plan = [(task, docs[0], 120), (own, docs[1], 40), (task, docs[2], 90), (own, docs[3], 40)]  # decoder, document, budget
    alone = [decoder.extract([doc], max_new_tokens=budget, batch_size=1)[0].text for decoder, doc, budget in plan]
    batch = RunningBatch(model, tokenizer.eos_token_id, tokenizer.pad_token_id)
    ended, steps = {}, 0
    batch.add(_encode(tokenizer, [task.prompt(docs[0]), own.prompt(docs[1])]), [_row(task, 0, 120), _row(own, 1, 40)])
    while len(batch) or len(ended) < 4:
        if steps == 5:  # two more rows join a running batch, one of them with a longer prompt than the rows running
            batch.add(_encode(tokenizer, [task.prompt(docs[2]), own.prompt(docs[3] * 2)]), [_row(task, 2, 90), _row(own, 3, 40)])
            plan[3] = (own, docs[3] * 2, 40)
            alone[3] = own.extract([docs[3] * 2], max_new_tokens=40, batch_size=1)[0].text
        for row in batch.step():
            ended[row.handle] = tokenizer.decode(row.tokens, skip_special_tokens=True)
        steps += 1
    assert [ended[i] for i in range(4)] == alone
    assert all(text.startswith("{") for text in alone)


def test_rows_prefilled_from_a_cached_prefix_get_the_answers_of_a_whole_prefill(embedded_dir):
    """The task's instruction is prefilled once; rows that begin with it are prefilled from the document on, two at
    once (each padded between the prefix and its document) and one joining mid-way, beside a row prefilled whole."""
    model, tokenizer = load_model(ModelConfig(base_model=str(embedded_dir)), ModelSettings())
    task = SchemaDecoder(model, tokenizer, TaskSchema.from_dict(invoices.SCHEMA), invoices.INSTRUCTION, max_new_tokens=100)
    docs = [d["document"] for d in invoices.generate(4, seed=5)]
    alone = [task.extract([doc], max_new_tokens=100, batch_size=1)[0].text for doc in docs]
    prefix_ids = shared_prefix(tokenizer, task.prompt)
    prompts = [tokenizer(task.prompt(doc), add_special_tokens=False).input_ids for doc in docs]
    assert 10 < len(prefix_ids) < min(map(len, prompts)) and all(p[: len(prefix_ids)] == prefix_ids for p in prompts)
    assert docs[0] not in tokenizer.decode(prefix_ids)  # the template's part only

    def rests(indices):
        return dict(
            tokenizer.pad({"input_ids": [prompts[i][len(prefix_ids) :] for i in indices]}, return_tensors="pt", padding_side="left")
        )

    batch = RunningBatch(model, tokenizer.eos_token_id, tokenizer.pad_token_id)
    prefix = batch.prefill_prefix(prefix_ids)
    batch.add(rests([0, 1]), [_row(task, 0, 100), _row(task, 1, 100)], prefix)
    batch.add(_encode(tokenizer, [task.prompt(docs[2])]), [_row(task, 2, 100)])  # whole, beside them
    ended, steps = {}, 0
    while len(batch) or len(ended) < 4:
        if steps == 3:
            batch.add(rests([3]), [_row(task, 3, 100)], prefix)
        for row in batch.step():
            ended[row.handle] = tokenizer.decode(row.tokens, skip_special_tokens=True)
        steps += 1
    assert [ended[i] for i in range(4)] == alone
