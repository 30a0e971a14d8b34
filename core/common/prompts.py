"""The prompt format every task, trainer, decoder and teacher shares, and how answers are read back.

A prompt is a chat: the task's instruction as the system message, optional (input, answer)
demonstrations as earlier turns, then the input. SFT, KD and DPO train on exactly this chat, the
decoders score or generate after it, and the `openai` teacher is sent it.

    messages = task_messages("Classify ...", "Num_Bank_Accounts: 3; ...")
    prompt = render_prompt(tokenizer, "Classify ...", text, shots=[("an input", "Good")])
    parse_label("  standard.", ["Good", "Standard", "Bad"])   # -> "Standard"
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers costs seconds to import: not for those that only build prompts' text
    from transformers import PreTrainedTokenizerBase

Shots = list[tuple[str, str]] | tuple[tuple[str, str], ...]

# Code generation's two answer formats (`plan` in the task file): a plan line then the code, or the code alone.
CODEGEN_INSTRUCTION = (
    "You write Python. Answer with a one-line plan starting with 'Plan:', then the complete function "
    "in one ```python code block, and nothing else."
)
CODE_ONLY_INSTRUCTION = "You write Python. Answer with the complete function in one ```python code block, and nothing else."


def task_messages(instruction: str, text: str, shots: Shots = ()) -> list[dict[str, str]]:
    """The chat every prompt uses; `shots` are (input, answer) demonstrations put before the input."""
    messages = [{"role": "system", "content": instruction}]
    for shot_text, shot_answer in shots:
        messages += [{"role": "user", "content": shot_text}, {"role": "assistant", "content": shot_answer}]
    return messages + [{"role": "user", "content": text}]


def render_prompt(tokenizer: PreTrainedTokenizerBase, instruction: str, text: str, shots: Shots = ()) -> str:
    """The chat as text, ending where the assistant's answer begins."""
    return tokenizer.apply_chat_template(task_messages(instruction, text, shots), tokenize=False, add_generation_prompt=True)


def completion_chat(instruction: str, text: str, answer: str) -> dict:
    """One training row in TRL's prompt/completion chat form (the loss falls on `answer` only)."""
    return {"prompt": task_messages(instruction, text), "completion": [{"role": "assistant", "content": answer}]}


def answer_end_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token the chat template puts right after an assistant's answer (`<|im_end|>`, `<end_of_turn>`), as a list
    (empty for a template that ends an answer with nothing); the model's end-of-sequence token otherwise."""
    marker = "\x00"
    chat = tokenizer.apply_chat_template(task_messages("i", "t") + [{"role": "assistant", "content": marker}], tokenize=False)
    after = chat.rsplit(marker, 1)[1].lstrip(" ")
    ids = tokenizer(after, add_special_tokens=False).input_ids[:1] if after.strip() else []
    return ids or ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def prompt_tokens(tokenizer: PreTrainedTokenizerBase, instruction: str, text: str) -> int:
    """Tokens of the rendered prompt: what a request costs before any answer."""
    return len(tokenizer(render_prompt(tokenizer, instruction, text), add_special_tokens=False).input_ids)


def parse_label(answer: str, labels: list[str]) -> str | None:
    """The label an answer names: an exact match first (case-insensitive), else the earliest label mentioned."""
    stripped = answer.strip().strip(".").strip()
    for label in labels:
        if stripped.lower() == label.lower():
            return label
    lowered = answer.lower()
    hits = [(lowered.find(label.lower()), label) for label in labels if label.lower() in lowered]
    return min(hits)[1] if hits else None


def format_answer(code: str, plan: str | None = None) -> str:
    """The answer format the model is trained on: an optional plan line, then one fenced block."""
    block = f"```python\n{code.strip()}\n```"
    return f"Plan: {plan.strip()}\n{block}" if plan else block


def extract_code(answer: str) -> str:
    """The code of an answer: its last complete ```python block, an unterminated one (cut off), or the text."""
    blocks = re.findall(r"```(?:python|py)?[ \t]*\n(.*?)```", answer, flags=re.S)
    if blocks:
        return blocks[-1].strip()
    opened = re.search(r"```(?:python|py)?[ \t]*\n(.*)", answer, flags=re.S)
    return (opened.group(1) if opened else answer).strip()
