"""The decoder factory: which prior a variant divides out, and the settings every caller of a variant shares."""

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.model.calibrated import save_label_prior
from core.model.decoders import classification_decoder, extraction_decoder
from core.model.schema import TaskSchema


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_base_calibrates_an_adapter_only_with_its_own_prior_or_when_asked(tiny, tiny_cfg, tmp_path):
    model, tokenizer = tiny
    assert classification_decoder(tiny_cfg, model, tokenizer).calibrate  # the base: its content-free prior
    bare = tmp_path / "bare"
    bare.mkdir()
    assert not classification_decoder(tiny_cfg, model, tokenizer, adapter=bare).calibrate  # trained balanced: no prior
    measured = tmp_path / "kd"
    measured.mkdir()
    save_label_prior(measured, list(reversed(tiny_cfg.labels)), np.array([0.2, 0.3, 0.5]), inputs=300, source="pool")
    with_prior = classification_decoder(tiny_cfg, model, tokenizer, adapter=measured)
    # the stored prior is read back in the task's label order, whatever order it was written in
    assert with_prior.calibrate and with_prior._prior.tolist() == [0.5, 0.3, 0.2]
    tiny_cfg.calibration.adapters = True
    assert classification_decoder(tiny_cfg, model, tokenizer, adapter=bare).calibrate
    tiny_cfg.calibration.enabled = False
    assert not classification_decoder(tiny_cfg, model, tokenizer, adapter=measured).calibrate


def test_the_task_configs_settings_reach_the_decoders(tiny, tiny_cfg):
    model, tokenizer = tiny
    tiny_cfg.eval_batch_size, tiny_cfg.calibration.label_bias = 3, {tiny_cfg.labels[1]: 0.7}
    decoder = classification_decoder(tiny_cfg, model, tokenizer)
    assert decoder.batch_size == 3 and decoder.bias.tolist() == [0.0, 0.7, 0.0] and decoder.instruction == tiny_cfg.instruction
    schema = TaskSchema.from_dict({"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]})
    tiny_cfg.max_new_tokens = 40
    extraction = extraction_decoder(tiny_cfg, model, tokenizer, schema, constrained=False)
    assert (extraction.max_new_tokens, extraction.batch_size, extraction.constrained) == (40, 3, False)
