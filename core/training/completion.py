"""The one piece every completion trainer shares: a forward that projects to the vocabulary only
where the loss is taken, and the token-accuracy figure TRL logs.

With a completion-only loss on short answers (a label is 1-3 tokens after a ~120-token prompt),
the vocabulary projection over every prompt position and its backward are most of a CPU step.
`logits_to_keep` with the positions that predict completion tokens leaves the loss identical and
makes a step several times faster (`distill-slm bench sft-throughput`).

    step = completion_forward(model, inputs)
    loss = F.cross_entropy(step.logits.transpose(1, 2), step.targets, ignore_index=-100)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CompletionStep:
    outputs: object  # the model's output (logits only at the kept positions)
    logits: torch.Tensor  # [B, kept positions, V], float32
    targets: torch.Tensor  # [B, kept positions]: the next token, -100 where no loss is taken
    scored: torch.Tensor  # targets != -100

    def token_accuracy(self) -> float:
        with torch.no_grad():
            hits = (self.logits.argmax(-1) == self.targets) & self.scored
            return (hits.sum() / self.scored.sum().clamp(min=1)).item()


def completion_forward(model, inputs: dict) -> CompletionStep:
    """Forward `inputs` (TRL's collated batch with `labels`), keeping logits only at positions that predict a completion token."""
    targets = inputs["labels"][:, 1:]  # position t predicts token t+1
    keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False, logits_to_keep=keep)
    picked = targets[:, keep]
    return CompletionStep(outputs, outputs.logits.float(), picked, picked != -100)
