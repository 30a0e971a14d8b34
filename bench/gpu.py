"""QLoRA on a CUDA GPU: the base in 4-bit NF4 against bf16 LoRA, on the same rows and steps, and the builtin engine there.

Run on a machine with a CUDA GPU (on one without, it says so and measures nothing):

* **embedded base**: `core.training.sft_trainer.train_sft` trains the creditmix classifier on the embedded model twice,
  the base in bf16 (LoRA) and in NF4 with double quantization (QLoRA), bf16 compute, same rows, steps and seed: peak GPU
  memory of each (`torch.cuda.max_memory_allocated` over load + training), tokens/s, last training loss, and macro-F1 of
  each student on held-out rows (calibrated decoder, the base in the precision it was trained over);
* **a larger base of the same family**: SmolLM2-1.7B's shape (24 layers, hidden 2048) with random weights, saved in bf16:
  the same two trainings for a few steps, for memory and speed only (random weights learn nothing worth scoring);
* **decode**: the embedded model in bf16 on the GPU, schema-constrained extraction of the invoices documents (XGrammar,
  budget-aware closing) one document at a time and 8 at once: tokens/s, field F1, schema-valid rate.

Ratios: QLoRA's peak memory over LoRA's (the saving NF4 buys), QLoRA's tokens/s over LoRA's (what it costs).
With `out`, the figures are written after each part, so a run cut short keeps what it measured.

    distill-slm bench gpu [--quick] [--json]
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from pathlib import Path

import torch

from core.common.config import ModelConfig, TaskConfig
from core.common.files import atomic_write_text
from core.common.rows import Example
from core.common.splits import balanced_split
from core.evaluation.metrics import classification_metrics, extraction_metrics
from core.model.decoders import classification_decoder
from core.model.loading import load_adapter, load_model, resolve_base_model
from core.model.schema import SchemaDecoder, TaskSchema
from core.settings import ModelSettings
from core.training.sft_trainer import train_sft
from demos import creditmix, invoices

# SmolLM2-1.7B's shape: what the embedded 135M model's family offers at the size where NF4 starts to matter.
LARGER_SHAPE = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32)


def _free() -> None:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def _rows(cfg: TaskConfig, train_per_class: int, eval_per_class: int) -> tuple[list[Example], list[Example]]:
    rows = [Example(**r) for r in creditmix.generate(cfg.data.demo.n_rows, seed=cfg.data.demo.seed)]
    return balanced_split(rows, cfg.labels, train_per_class, eval_per_class, seed=0)


def _train(cfg: TaskConfig, rows: list[Example], folder: Path) -> tuple[Path, dict]:
    """One training run from a cold GPU: its adapter folder and figures."""
    _free()
    start = time.perf_counter()
    adapter, stats = train_sft(cfg, ModelSettings(), rows, folder / "ckpt", folder / "adapter", progress=False)
    return adapter, {
        "quantization": cfg.model.quantization,
        "steps": stats.steps,
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "tokens_per_s": round(stats.tokens_per_s, 1),
        "train_s": round(stats.train_runtime_s, 2),
        "wall_s_with_load": round(time.perf_counter() - start, 2),
        "final_loss": None if stats.final_loss is None else round(stats.final_loss, 4),
    }


def _score(cfg: TaskConfig, adapter: Path, rows: list[Example]) -> dict:
    _free()
    model, tokenizer = load_model(cfg.model, ModelSettings())
    decoder = classification_decoder(cfg, load_adapter(model, adapter), tokenizer, str(adapter))
    decoder.batch_size = 16
    decoder.prior()
    start = time.perf_counter()
    predicted = [p.label for p in decoder.predict([r.text for r in rows])]
    seconds = time.perf_counter() - start
    f1 = classification_metrics([r.label for r in rows], predicted, cfg.labels)["macro_f1"]
    return {"macro_f1": round(f1, 4), "eval_rows": len(rows), "requests_per_s_batch16": round(len(rows) / seconds, 1)}


def _both(cfg: TaskConfig, rows: list[Example], tmp: Path, eval_rows: list[Example] | None) -> dict:
    """The same training with the base in bf16 and in NF4; the two students scored when `eval_rows` are given."""
    sides = {}
    for name, quantization in (("lora_bf16", "none"), ("qlora_nf4", "nf4")):
        side_cfg = cfg.model_copy(deep=True)
        side_cfg.model.quantization = quantization
        adapter, sides[name] = _train(side_cfg, rows, tmp / name)
        if eval_rows:
            sides[name] |= _score(side_cfg, adapter, eval_rows)
    lora, qlora = sides["lora_bf16"], sides["qlora_nf4"]
    sides["memory_ratio_qlora_over_lora"] = round(qlora["peak_gpu_mib"] / lora["peak_gpu_mib"], 3)
    sides["speed_ratio_qlora_over_lora"] = round(qlora["tokens_per_s"] / lora["tokens_per_s"], 3)
    if eval_rows:
        sides["macro_f1_qlora_minus_lora"] = round(qlora["macro_f1"] - lora["macro_f1"], 4)
    return sides


def _larger_base(folder: Path) -> tuple[Path, int]:
    """SmolLM2-1.7B's shape with random weights (bf16) and the embedded tokenizer, saved as a local model folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    embedded, _ = resolve_base_model("embedded", ModelSettings())
    config = AutoConfig.from_pretrained(embedded)
    for key, value in LARGER_SHAPE.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(embedded).save_pretrained(folder)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    return folder, parameters


def decode(documents: int) -> dict:
    """The embedded model in bf16 on the GPU: constrained extraction, one document at a time and 8 at once."""
    _free()
    rows = invoices.generate(documents, seed=9)
    texts, gold = [r["document"] for r in rows], [r["target"] for r in rows]
    model, tokenizer = load_model(ModelConfig(precision="bf16"), ModelSettings())
    schema = TaskSchema.from_dict(invoices.SCHEMA)
    figures = {}
    for batch in (1, 8):
        decoder = SchemaDecoder(model, tokenizer, schema, invoices.INSTRUCTION, max_new_tokens=320, batch_size=batch)
        decoder.extract(texts[:batch])  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        results = decoder.extract(texts)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        metrics = extraction_metrics(gold, [r.output for r in results], [r.valid for r in results])
        tokens = sum(r.completion_tokens for r in results)
        figures[f"batch{batch}"] = {
            "documents": len(texts),
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            "field_f1": round(metrics["field_f1"], 4),
            "schema_valid_rate": round(metrics["schema_valid_rate"], 4),
        }
    figures["ratio_batch8_over_batch1"] = round(figures["batch8"]["tokens_per_s"] / figures["batch1"]["tokens_per_s"], 2)
    figures["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return figures


def run(quick: bool = False, out: Path | None = None) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine: `distill-slm bench gpu` measures QLoRA and decode on a GPU"}
    figures: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "vllm": "not run by this benchmark: docs/serving.md says why and how",
    }

    def part(name: str, measure) -> None:
        start = time.perf_counter()
        try:
            figures[name] = measure() | {"part_s": round(time.perf_counter() - start, 1)}
        except Exception as exc:  # one part failing must not lose the others' figures
            figures[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        if out is not None:
            atomic_write_text(out, json.dumps(figures, indent=2))  # a run cut short keeps what it measured

    cfg = TaskConfig()
    cfg.model.precision = "bf16"
    cfg.training.max_steps = 10 if quick else 150
    cfg.training.save_steps = 10_000
    train, held_out = _rows(cfg, 60, 10 if quick else 40)
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        part("embedded_base", lambda: {"train_rows": len(train), **_both(cfg, train, tmp / "embedded", held_out)})

        def larger() -> dict:
            big = cfg.model_copy(deep=True)
            folder, parameters = _larger_base(tmp / "larger-base")
            big.model.base_model = str(folder)
            big.training.max_steps = 5 if quick else 30
            return {"shape": "SmolLM2-1.7B (random weights)", "parameters": parameters, **_both(big, train, tmp / "larger", None)}

        part("larger_base", larger)
    part("decode", lambda: decode(8 if quick else 24))
    return figures
