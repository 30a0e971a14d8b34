"""The completion forward: logits only where the loss is taken, the loss identical to the full projection's."""

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.training.completion import completion_forward


def test_the_kept_positions_give_the_full_forwards_loss_and_accuracy(tiny_model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts, answers = ["Num_Bank_Accounts: 7, Delay: 12 days", "Income: 40k"], [" Bad", " Standard credit"]
    rows = [tokenizer(p + a).input_ids for p, a in zip(prompts, answers)]
    prompt_lengths = [len(tokenizer(p).input_ids) for p in prompts]
    width = max(map(len, rows))
    input_ids = torch.tensor([r + [tokenizer.pad_token_id or 0] * (width - len(r)) for r in rows])
    attention_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = input_ids.clone()
    for i, (n, r) in enumerate(zip(prompt_lengths, rows)):
        labels[i, :n], labels[i, len(r) :] = -100, -100  # completion-only: the answer's tokens alone are scored
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    with torch.no_grad():
        step = completion_forward(model, inputs)
        full = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    targets = labels[:, 1:]
    expected = F.cross_entropy(full[:, :-1].transpose(1, 2), targets, ignore_index=-100)
    kept = F.cross_entropy(step.logits.transpose(1, 2), step.targets, ignore_index=-100)
    assert step.logits.shape[1] < width - 1  # the prompt positions were not projected to the vocabulary
    assert int(step.scored.sum()) == int((targets != -100).sum()) > 2
    assert torch.allclose(kept, expected, atol=1e-4)
    hits = ((full[:, :-1].argmax(-1) == targets) & (targets != -100)).sum() / (targets != -100).sum()
    assert abs(step.token_accuracy() - hits.item()) < 1e-6
