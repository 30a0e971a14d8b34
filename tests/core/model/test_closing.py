"""Budget-aware closing: every prefix of a valid answer closes validly, and answers validate within any budget."""

import pytest
import xgrammar as xgr

from core.common.config import ModelConfig
from core.errors import AnswerBudgetTooSmall, ConfigError
from core.model.closing import JsonPrefix
from core.model.fast_decode import greedy_decode
from core.model.loading import load_model
from core.model.schema import GrammarMask, SchemaDecoder, TaskSchema, compile_grammar
from core.settings import ModelSettings
from demos import invoices

# A held-out shape: references, nested objects and arrays, enums, patterns, a format, a union with null, escapes.
SHIPPING = {
    "type": "object",
    "$defs": {
        "party": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 2, "maxLength": 40},
                "address": {"$ref": "#/$defs/address"},
                "phone": {"type": "string", "pattern": "^\\+[0-9]{6,12}$"},
            },
            "required": ["name", "address"],
        },
        "address": {
            "type": "object",
            "properties": {
                "street": {"type": "string"},
                "city": {"type": "string", "minLength": 1},
                "postcode": {"type": "string", "pattern": "^[A-Z0-9]{3,8}$"},
                "country": {"enum": ["US", "DE", "FR", "GB", "JP"]},
            },
            "required": ["city", "country"],
        },
    },
    "properties": {
        "notice_id": {"type": "string", "pattern": "^SN-[0-9]{4}-[A-Z]{2}$"},
        "shipped_on": {"type": "string", "format": "date"},
        "carrier": {"enum": ["DHL", "UPS", "FedEx", "Maersk"]},
        "sender": {"$ref": "#/$defs/party"},
        "recipient": {"$ref": "#/$defs/party"},
        "packages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "weight_kg": {"type": "number", "exclusiveMinimum": 0},
                    "fragile": {"type": "boolean"},
                    "contents": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                },
                "required": ["weight_kg", "contents"],
            },
        },
        "priority": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 5}, {"type": "null"}]},
        "notes": {"type": "string"},
    },
    "required": ["notice_id", "shipped_on", "carrier", "sender", "recipient", "packages"],
}
NOTICE = {
    "notice_id": "SN-2024-AB",
    "shipped_on": "2024-03-05",
    "carrier": "UPS",
    "sender": {
        "name": "Acme Ltd",
        "address": {"street": "1 Main St", "city": "Leeds", "postcode": "LS14AP", "country": "GB"},
        "phone": "+441132",
    },
    "recipient": {"name": "Bob", "address": {"city": "Lyon", "country": "FR"}},
    "packages": [
        {"weight_kg": 2.5, "fragile": True, "contents": ["books", 'a "quoted" mug \u00e9']},
        {"weight_kg": 10, "contents": ["tools"]},
    ],
    "priority": 2,
    "notes": "leave at door",
}


@pytest.mark.parametrize("schema_dict, answer", [(SHIPPING, NOTICE), (invoices.SCHEMA, invoices.generate(1, seed=3)[0]["target"])])
def test_every_prefix_of_a_valid_answer_has_a_closing_that_validates_and_xgrammar_accepts(tiny_model_dir, schema_dict, answer):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)), ModelSettings())
    schema = TaskSchema.from_dict(schema_dict)
    text = schema.dumps(answer)
    assert not schema.errors(answer)
    grammar = compile_grammar(tokenizer, model.get_output_embeddings().weight.shape[0], schema)
    for cut in range(len(text) + 1):
        closing = JsonPrefix(schema_dict).feed(text[:cut]).closing()
        assert closing is not None, text[:cut]
        assert not schema.parse(text[:cut] + closing)[1], (text[:cut], closing)
        matcher = xgr.GrammarMatcher(grammar)
        assert matcher.accept_string(text[:cut] + closing) and matcher.is_completed(), (text[:cut], closing)
    assert JsonPrefix(schema_dict).feed(text).closing() == ""


def test_the_closing_is_the_shortest_way_out():
    prefix = JsonPrefix(SHIPPING).feed('{"notice_id":"SN-20')
    assert prefix.closing() == (
        '11-AA","shipped_on":"2000-01-01","carrier":"DHL","sender":{"name":"aa","address":{"city":"a","country":"US"}},'
        '"recipient":{"name":"aa","address":{"city":"a","country":"US"}},"packages":[{"weight_kg":1,"contents":[""]}]}'
    )
    within_enum = JsonPrefix(SHIPPING).feed('{"notice_id":"SN-2024-AB","shipped_on":"2024-03-05","carrier":"Fe')
    assert within_enum.closing().startswith('dEx","sender":')
    assert JsonPrefix({"type": "object", "allOf": [{}]}).closing() is None  # not modelled: the decoder runs as without it


def test_a_random_model_under_tight_budgets_always_validates(tiny_model_dir):
    """The tiny model's weights are random: it writes the longest strings the grammar allows and never stops by itself."""
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)), ModelSettings())
    schema = TaskSchema.from_dict(SHIPPING)
    documents = [d["document"] for d in invoices.generate(4, seed=5)]
    decoder = SchemaDecoder(model, tokenizer, schema, "Extract the shipping notice.", max_new_tokens=160, batch_size=4)
    for budget in (decoder.min_answer_tokens, decoder.min_answer_tokens + 7, 160):
        for result in decoder.extract(documents, max_new_tokens=budget):
            assert result.valid and result.closed_early, (budget, result.text, result.errors)
            assert result.completion_tokens <= budget
    with pytest.raises(AnswerBudgetTooSmall, match="shortest valid answer"):
        decoder.extract(documents[:1], max_new_tokens=decoder.min_answer_tokens - 1)
    with pytest.raises(ConfigError, match="max_new_tokens=20 cannot hold"):
        SchemaDecoder(model, tokenizer, schema, "Extract.", max_new_tokens=20)


def test_the_embedded_model_is_untouched_until_the_budget_is_tight(embedded_dir):
    model, tokenizer = load_model(ModelConfig(base_model=str(embedded_dir)), ModelSettings())
    schema = TaskSchema.from_dict(invoices.SCHEMA)
    decoder = SchemaDecoder(model, tokenizer, schema, invoices.INSTRUCTION, max_new_tokens=90, batch_size=1)
    enc = tokenizer([decoder.prompt(invoices.generate(1, seed=9)[0]["document"])], return_tensors="pt", add_special_tokens=False)
    free, _ = greedy_decode(model, enc, 90, tokenizer.eos_token_id, tokenizer.pad_token_id, [GrammarMask(decoder.grammar, 1)])
    budgeted = GrammarMask(decoder.grammar, 1, 90, schema.schema, tokenizer)
    closed, _ = greedy_decode(model, enc, 90, tokenizer.eos_token_id, tokenizer.pad_token_id, [budgeted])
    text = tokenizer.decode(closed[0], skip_special_tokens=True)
    assert budgeted.closed_early[0] and not schema.parse(text)[1], text
    # the model's own tokens up to where the closing began, then the shortest valid ending
    kept = next(i for i, (a, b) in enumerate(zip(free[0].tolist(), closed[0].tolist())) if a != b)
    assert kept > 30 and tokenizer.decode(free[0, :kept]) == tokenizer.decode(closed[0, :kept])
