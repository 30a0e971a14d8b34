"""The KD method: traces in, an adapter out (classification: with the student's label prior; extraction: with the
teacher's top-k tokens where its tokenizer is the student's)."""

import numpy as np
import pytest

from core.common.config import TaskConfig
from core.methods import kd
from core.model.loading import load_model
from core.settings import ModelSettings


def test_train_kd_saves_an_adapter(tiny_cfg, tmp_path):
    tiny_cfg.training.max_steps = 2
    traces = [
        {"id": f"t{i}", "prompt": f"Interest_Rate: {i}", "output": "Bad", "label_probs": {"Good": 0.2, "Standard": 0.1, "Bad": 0.7}}
        for i in range(6)
    ]
    adapter, stats = kd.train(tiny_cfg, ModelSettings(), traces, tmp_path / "ck", tmp_path / "adapter", progress=False)[:2]
    assert (adapter / "adapter_config.json").exists() and stats.steps == 2
    # The student's label prior on the pool travels with it, and its decoder divides that prior out.
    from core.model.calibrated import load_label_prior
    from core.model.decoders import classification_decoder

    prior = load_label_prior(adapter, tiny_cfg.labels)
    assert prior.shape == (3,) and prior.sum() == pytest.approx(1.0) and (prior > 0).all()
    model, tokenizer = load_model(tiny_cfg.model, ModelSettings())
    decoder = classification_decoder(tiny_cfg, model, tokenizer, adapter=adapter)
    assert decoder.calibrate and np.allclose(decoder.prior(), prior)
    assert not classification_decoder(tiny_cfg, model, tokenizer, adapter=tmp_path / "ck").calibrate  # an adapter without a prior


def test_extraction_kd_traces_carry_topk_and_train_with_the_token_kl(tiny_cfg, tmp_path):
    """idp: an `hf` teacher held to the schema writes traces with per-token top-k; KD uses them (same tokenizer)."""
    from transformers import AutoTokenizer

    from core.common.rows import Example
    from core.kinds import make_teacher
    from core.teachers.traces import TraceStore, generate_traces
    from core.training.kd_rows import generation_kd_rows
    from demos.invoices import generate

    cfg = TaskConfig(type="idp", model=tiny_cfg.model, runs_dir=tiny_cfg.runs_dir, work_dir=tiny_cfg.work_dir, max_new_tokens=200)
    cfg.teacher.backend, cfg.teacher.model, cfg.teacher.top_logprobs = "hf", tiny_cfg.model.base_model, 3
    cfg.training.batch_size, cfg.training.max_steps, cfg.training.save_steps = 2, 2, 2
    rows = [Example(r["id"], r["document"]) for r in generate(4, seed=9)]
    store = TraceStore(tmp_path / "traces.jsonl")
    summary = generate_traces(rows, store, lambda: make_teacher(cfg, ModelSettings()), progress=False)
    assert summary["usable"] == 4 and summary["failed"] == 0  # constrained: every answer validates
    traces = store.usable()
    assert all(len(t["top_logprobs"]) == t["completion_tokens"] and len(t["top_logprobs"][0]) <= 3 for t in traces)
    kd_rows, counts = generation_kd_rows(traces, cfg, AutoTokenizer.from_pretrained(tiny_cfg.model.base_model))
    assert counts["with_token_kl"] + counts["sequence_only"] == 4
    # A random model's constrained tokens are rarely the canonical split of its text: caught, never assumed.
    tokenizer = AutoTokenizer.from_pretrained(tiny_cfg.model.base_model)
    canonical = tokenizer.convert_ids_to_tokens(tokenizer(traces[0]["output"], add_special_tokens=False).input_ids)
    agreed = [dict(traces[0], top_logprobs=[[[tok, -0.1], ["{", -2.5]] for tok in canonical])]
    foreign = [dict(traces[0], top_logprobs=[[["<not-a-token>", -0.1]]])]
    [row], counts = generation_kd_rows(agreed, cfg, tokenizer)
    assert counts["with_token_kl"] == 1 and len(row["teacher_topk_ids"]) == len(canonical)
    assert generation_kd_rows(foreign, cfg, tokenizer)[1]["sequence_only"] == 1
    adapter, stats = kd.train(cfg, ModelSettings(), traces, tmp_path / "ckpt", tmp_path / "adapter", progress=False)[:2]
    assert stats.steps == 2 and (adapter / "adapter_model.safetensors").exists()


def test_kd_never_reuses_a_student_trained_on_another_teacher_or_other_answers(tiny_cfg):
    traces = [{"input_sha256": "a", "output": "Good", "label_probs": {"Good": 0.9, "Bad": 0.1}, "teacher": "openai:big"}]
    fingerprint = {"train_sha256": "rows"}
    first = kd.run_folder(tiny_cfg, traces, fingerprint)
    assert kd.run_folder(tiny_cfg, [dict(traces[0])], fingerprint) == first  # the same teacher and answers: resumed
    other_teacher = tiny_cfg.model_copy(update={"teacher": tiny_cfg.teacher.model_copy(update={"model": "another-model"})})
    assert kd.run_folder(other_teacher, traces, fingerprint) != first
    other_answers = [traces[0] | {"label_probs": {"Good": 0.4, "Bad": 0.6}}]  # same inputs, the teacher now thinks otherwise
    assert kd.run_folder(tiny_cfg, other_answers, fingerprint) != first
