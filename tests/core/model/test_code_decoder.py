"""Code generation's decoder: answers in the plan-then-code format, the fenced block taken back out, greedy answers
from the shared decode loop."""

from core.common.config import ModelConfig
from core.common.prompts import CODEGEN_INSTRUCTION, extract_code, format_answer
from core.model.code_decoder import sample_answers
from core.model.loading import load_model
from core.settings import ModelSettings
from demos import pyfuncs


def test_extract_code_takes_the_fenced_block():
    code = "def f(x):\n    return x"
    assert extract_code(format_answer(code, "return x")) == code
    assert format_answer(code, "return x").startswith("Plan: return x\n```python\n")
    assert extract_code("Plan: a\n```py\nold = 1\n```\nthen\n```python\ndef f(x):\n    return x\n```") == code  # the last block
    assert extract_code("Plan: cut off\n```python\ndef f(x):\n    return x") == code  # max_new_tokens ended the answer
    assert extract_code(code) == code  # no fence at all


def test_greedy_answers_come_from_the_shared_decode_loop_unchanged(tiny_model_dir):
    from core.common.prompts import render_prompt

    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)), ModelSettings())
    prompts = [row["prompt"] for row in pyfuncs.generate(2, seed=4)]
    got = [answers[0] for answers in sample_answers(model, tokenizer, CODEGEN_INSTRUCTION, prompts, n=1, max_new_tokens=24)]
    for prompt, answer in zip(prompts, got):
        enc = tokenizer(render_prompt(tokenizer, CODEGEN_INSTRUCTION, prompt), return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert answer == tokenizer.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)
