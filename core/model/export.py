"""A registered adapter in the forms other tools load: PEFT/vLLM, a merged model, GGUF for llama.cpp and Ollama.

    registry = Registry("runs")
    version = registry.resolve("invoices", "production")
    export_adapter(registry.path("invoices", version), registry.task_config("invoices", version), ModelSettings(),
                   Path("export/invoices"), about={"task": "invoices", "version": version})  # `distill-slm registry export`

writes, into a folder that appears complete or not at all:

    adapter/       the LoRA as PEFT's `PeftModel.from_pretrained` and vLLM's `--lora-modules NAME=PATH` load it
    merged/        base + adapter merged into one transformers model folder (no PEFT needed to load it)
    model.gguf     where llama.cpp's converter is given (`llama_cpp`: a llama.cpp checkout), the merged model as GGUF
    export.json    what was exported: task, version, the base model and its sha256, the adapter's sha256, how to load each

The base model's hash is of its weight files, so whoever loads the adapter can check it meets the base it was trained
on (a LoRA over another base loads without complaint and answers badly).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from core.common.config import TaskConfig
from core.common.files import fsync_folder
from core.errors import ConfigError
from core.model.loading import load_model, resolve_base_model
from core.settings import ModelSettings

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def weights_sha256(folder: Path) -> str:
    """One sha256 over a model folder's weight files (name and content, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def export_adapter(source: Path, cfg: TaskConfig, settings: ModelSettings, out: Path, about: dict, llama_cpp: Path | None = None) -> dict:
    """Export the adapter in folder `source`, trained with `cfg`, into `out` (module docstring); `about` (task, version)
    heads export.json. Returns what export.json says."""
    task = about.get("task", cfg.name)
    base_dir, gguf_file = resolve_base_model(cfg.model.base_model, settings)
    if gguf_file is not None or not Path(base_dir).is_dir():
        raise ConfigError(f"model.base_model {cfg.model.base_model!r}: export needs the base as a local folder, not {base_dir!r}")
    if out.exists():
        raise ConfigError(f"--to {out}: already exists; export into a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        adapter = staging / "adapter"
        adapter.mkdir()
        for name in ADAPTER_FILES:
            shutil.copy2(source / name, adapter / name)
        adapter_config = json.loads((adapter / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = str(Path(base_dir).resolve())  # where this machine's base lives
        (adapter / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
        # Merged in fp32 whatever the training precision: NF4 weights cannot take the adapter's deltas exactly.
        model, tokenizer = load_model(cfg.model.model_copy(update={"quantization": "none", "precision": "fp32"}), settings, adapter=source)
        tokenizer.save_pretrained(adapter)
        merged = model.merge_and_unload()
        merged.save_pretrained(staging / "merged")
        tokenizer.save_pretrained(staging / "merged")
        gguf = _gguf(staging / "merged", staging / "model.gguf", llama_cpp)
        manifest = about | {
            "base_model": cfg.model.base_model,
            "base_model_dir": str(Path(base_dir).resolve()),
            "base_model_sha256": weights_sha256(Path(base_dir)),
            "adapter_sha256": weights_sha256(adapter),
            "lora": {k: adapter_config.get(k) for k in ("r", "lora_alpha", "target_modules")},
            "written": {"adapter": "adapter/", "merged": "merged/", "gguf": gguf},
            "load": {
                "peft": f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(Path(base_dir).resolve())!r}), 'adapter')",
                "vllm": f"vllm serve {Path(base_dir).resolve()} --enable-lora --max-lora-rank {adapter_config.get('r')} "
                f"--lora-modules {task}=adapter",
                "transformers": "AutoModelForCausalLM.from_pretrained('merged')",
                "llama.cpp": "llama-cli -m model.gguf" if gguf == "model.gguf" else None,
            },
        }
        (staging / "export.json").write_text(json.dumps(manifest, indent=2))
        for folder in (adapter, staging / "merged", staging):
            fsync_folder(folder)
        os.rename(staging, out)
        fsync_folder(out.parent, files=False)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _gguf(merged: Path, target: Path, llama_cpp: Path | None) -> str:
    """llama.cpp's own converter over the merged folder (f16), or why there is no GGUF."""
    if llama_cpp is None:
        return "not written: give --llama-cpp DIR (a llama.cpp checkout with convert_hf_to_gguf.py) for GGUF"
    script = llama_cpp / "convert_hf_to_gguf.py"
    if not script.exists():
        raise ConfigError(f"--llama-cpp {llama_cpp}: no convert_hf_to_gguf.py there")
    done = subprocess.run(
        [sys.executable, str(script), str(merged), "--outfile", str(target), "--outtype", "f16"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise ConfigError(f"llama.cpp's converter failed: {done.stderr.strip()[-500:]}")
    return target.name
