"""The schema decoder: refused schemas name their JSON pointer; constrained output always validates."""

import json

import pytest

from core.errors import SchemaError
from core.model.schema import SchemaDecoder, TaskSchema, grammar_compiler
from core.settings import ModelSettings
from demos import invoices

SMALL = {
    "type": "object",
    "properties": {
        "kind": {"enum": ["a", "b"]},
        "name": {"type": "string", "maxLength": 8},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 4}},
    },
    "required": ["kind", "name", "n"],
}


@pytest.mark.parametrize(
    "schema, pointer, words",
    [
        ({"type": "objekt"}, "/type", "is not valid"),
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}, "/properties/a/$ref", "outside the document"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "/properties/a/$ref", "does not resolve"),
        ({"type": "array", "items": {"type": "string"}}, "/type", "object at the top level"),
        ({"type": "object", "properties": {"a": {"type": "string", "maxLength": -1}}}, "/properties/a/maxLength", ""),
    ],
)
def test_bad_schemas_are_refused_with_their_pointer(schema, pointer, words):
    with pytest.raises(SchemaError) as caught:
        TaskSchema.from_dict(schema, "task.schema.json")
    assert caught.value.pointer == pointer
    assert words in caught.value.problem and "task.schema.json" in str(caught.value)


def test_oversized_and_unreadable_schemas_are_refused(tmp_path):
    big = {"type": "object", "properties": {f"field_{i}": {"type": "string", "description": "x" * 100} for i in range(200)}}
    with pytest.raises(SchemaError, match="over the limit"):
        TaskSchema.from_dict(big, max_bytes=4096)
    path = tmp_path / "s.json"
    path.write_text("{not json")
    with pytest.raises(SchemaError, match="not JSON") as caught:
        TaskSchema.load(path, 64 * 1024)
    assert caught.value.pointer == "" and str(path) in str(caught.value)


def test_keywords_the_grammar_ignores_are_listed():
    schema = json.loads(json.dumps(SMALL))
    schema["properties"]["tags"]["uniqueItems"] = True
    schema["properties"]["name"]["description"] = "an annotation, not a constraint"
    loaded = TaskSchema.from_dict(schema)
    assert loaded.unenforced == ["/properties/tags/uniqueItems"]
    assert TaskSchema.from_dict(invoices.SCHEMA).unenforced == []  # the demo schema is enforced entirely


def test_schemas_and_grammars_are_cached(tiny_model_dir):
    from transformers import AutoTokenizer

    assert TaskSchema.from_dict(SMALL) is TaskSchema.from_dict(json.loads(json.dumps(SMALL)))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    compiler = grammar_compiler(tokenizer, len(tokenizer))
    compiler.compile_json_schema(TaskSchema.from_dict(SMALL).text)
    size = compiler.get_cache_size_bytes()
    compiler.compile_json_schema(TaskSchema.from_dict(SMALL).text)
    assert compiler.get_cache_size_bytes() == size > 0 and grammar_compiler(tokenizer, len(tokenizer)) is compiler


def test_dumps_writes_keys_in_schema_order():
    schema = TaskSchema.from_dict(SMALL)
    assert schema.dumps({"n": 3, "tags": ["x"], "kind": "a", "name": "é"}) == '{"kind":"a","name":"é","n":3,"tags":["x"]}'


def test_a_random_model_writes_valid_json_only_when_constrained(tiny_model_dir):
    """The tiny model has random weights: whatever it 'wants', the grammar leaves only valid documents."""
    from core.common.config import ModelConfig
    from core.model.loading import load_model

    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)), ModelSettings())
    schema = TaskSchema.from_dict(SMALL)
    docs = ["first document", "a second, longer document about b", "third"]
    constrained = SchemaDecoder(model, tokenizer, schema, "Extract.", max_new_tokens=120, batch_size=2).extract(docs, top_k=3)
    assert all(r.valid and not r.errors for r in constrained), [r.errors for r in constrained]
    assert all(r.completion_tokens > 0 and r.prompt_tokens > 0 for r in constrained)
    assert len(constrained[0].top_logprobs) == constrained[0].completion_tokens
    free = SchemaDecoder(model, tokenizer, schema, "Extract.", max_new_tokens=20, constrained=False).extract(docs[:1])
    assert not free[0].valid and free[0].errors


def test_a_document_over_the_context_is_refused_not_truncated(tiny_model_dir):
    from core.common.config import ModelConfig
    from core.errors import DocumentTooLong
    from core.model.loading import load_model

    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)), ModelSettings())
    decoder = SchemaDecoder(model, tokenizer, TaskSchema.from_dict(SMALL), "Extract.", max_new_tokens=64)
    context = model.config.max_position_embeddings
    with pytest.raises(DocumentTooLong, match=f"context of {context}"):
        decoder.extract(["word " * context])


@pytest.mark.slow
def test_smollm2_extracts_an_invoice_that_validates(embedded_dir):
    """The real embedded model, zero-shot, on the demo schema: valid by construction, and it copies some fields."""
    from core.common.config import ModelConfig
    from core.model.loading import load_model

    model, tokenizer = load_model(ModelConfig(base_model=str(embedded_dir)), ModelSettings())
    row = invoices.generate(1, seed=11)[0]
    [result] = SchemaDecoder(model, tokenizer, TaskSchema.from_dict(invoices.SCHEMA), invoices.INSTRUCTION).extract([row["document"]])
    assert result.valid, result.errors
    assert result.output["vendor"]["country"] in invoices.COUNTRIES and result.output["items"]
