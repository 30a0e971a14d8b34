"""Free-text answers (`type: text`): the model's reply to the input, under the task's instruction, taken as written.

The decode is code generation's (`core.model.code_decoder.CodeDecoder`: greedy in left-padded batches on the shared
decode loop, streaming through `on_token`, or sampled); only what the service does with the answer differs: it is the
reply itself, with nothing extracted and nothing run.

    decoder = TextDecoder(model, tokenizer, "Answer the customer's question.", max_new_tokens=128)
    replies = [a.text for a in decoder.answer(["Where is my parcel?"])]
"""

from __future__ import annotations

from core.model.code_decoder import CodeDecoder


class TextDecoder(CodeDecoder):
    answers = "text"
