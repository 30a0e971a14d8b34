"""bench schema's two grammar engines: XGrammar's mask (what the product decodes with) and llguidance's, compared for
speed, must hold the model to the same format: the schema's first property, compact separators, from the first token.
(They need not allow the same token splits of a string: on the embedded model their greedy answers differ in which
tokens spell a value, so the bench compares speed, not answers.)"""

import torch

from bench.schema import _LLGuidanceMask, _mask, _variants
from core.model.loading import load_model
from core.model.schema import SchemaDecoder, TaskSchema
from core.settings import ModelSettings
from demos import invoices


def test_the_cold_compile_variants_are_distinct_schemas_of_the_demos_shape():
    variants = _variants(3)
    assert len({TaskSchema.from_dict(v).text for v in variants}) == 3
    assert all(v["required"] == invoices.SCHEMA["required"] for v in variants)


def test_either_engine_holds_greedy_decoding_to_the_schemas_compact_json(tiny_cfg):
    import llguidance.hf

    model, tokenizer = load_model(tiny_cfg.model, ModelSettings())
    schema = TaskSchema.from_dict(invoices.SCHEMA)
    decoder = SchemaDecoder(model, tokenizer, schema, invoices.INSTRUCTION)
    enc = tokenizer(decoder.prompt(invoices.generate(1, seed=3)[0]["document"]), return_tensors="pt", add_special_tokens=False)
    ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=decoder.vocab_size)
    answers = []
    for processors in ([], [_mask(decoder)], [_LLGuidanceMask(tokenizer, ll_tokenizer, schema.text)]):
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=12, do_sample=False, logits_processor=processors, pad_token_id=tokenizer.pad_token_id
            )
        answers.append(tokenizer.decode(out[0, enc["input_ids"].shape[1] :]))
    free, xgrammar, llg = answers
    assert not free.startswith('{"doc_type":"')  # the untrained model alone writes anything
    assert xgrammar.startswith('{"doc_type":"') and llg.startswith('{"doc_type":"')
