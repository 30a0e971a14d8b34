from collections import Counter

import numpy as np
import pytest
import torch

from core.common.config import ModelConfig
from core.common.prompts import render_prompt
from core.model.calibrated import CalibratedDecoder, label_sequences
from core.model.loading import load_model
from core.settings import ModelSettings
from demos import creditmix

INSTRUCTION = "Classify the text."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(ModelConfig(base_model=str(tiny_model_dir)), ModelSettings())


def brute_force(model, tokenizer, text, labels):
    """Log-likelihood of each label's sequence: one full forward per (prompt + label), no cache tricks."""
    prompt_ids = tokenizer(render_prompt(tokenizer, INSTRUCTION, text), add_special_tokens=False).input_ids
    scores = []
    for label_ids in label_sequences(tokenizer, labels):
        ids = torch.tensor([prompt_ids + label_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        picked = [logp[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(label_ids)]
        scores.append(sum(picked))
    return np.array(scores)


def test_multi_token_labels_on_shared_cache_match_brute_force(tiny):
    model, tokenizer = tiny
    labels = ["Approve", "Manual review", "Deny outright please", "Manual"]  # 1, 2, 4 and 1 tokens; "Manual" begins another
    assert len({len(tokenizer(x, add_special_tokens=False).input_ids) for x in labels}) > 1
    assert all(len(ids) >= 2 and ids[-1] == label_sequences(tokenizer, labels)[0][-1] for ids in label_sequences(tokenizer, labels))
    texts = ["short", "a much longer input text with many more tokens in it than the first"]
    decoder = CalibratedDecoder(model, tokenizer, labels, INSTRUCTION, batch_size=2)
    batched = decoder.label_log_likelihoods(texts)  # left-padded batch of two prompts
    for row, text in zip(batched, texts):
        np.testing.assert_allclose(row, brute_force(model, tokenizer, text, labels), atol=2e-4)


def test_single_token_labels_on_shared_prefix_match_brute_force(tiny):
    model, tokenizer = tiny
    texts = [r["text"] for r in creditmix.generate(3, seed=2)] + ["x"]
    decoder = CalibratedDecoder(model, tokenizer, creditmix.LABELS, INSTRUCTION, batch_size=4)
    assert len(decoder._shared_prefix()[0]) > 5  # the system message is scored once, not per request
    for row, text in zip(decoder.label_log_likelihoods(texts), texts):
        np.testing.assert_allclose(row, brute_force(model, tokenizer, text, creditmix.LABELS), atol=2e-4)


def test_batch_and_single_requests_agree(tiny):
    model, tokenizer = tiny
    texts = [r["text"] for r in creditmix.generate(5, seed=1)] + ["x"]
    decoder = CalibratedDecoder(model, tokenizer, creditmix.LABELS, INSTRUCTION, batch_size=16)
    single = CalibratedDecoder(model, tokenizer, creditmix.LABELS, INSTRUCTION, batch_size=1)
    np.testing.assert_allclose(
        [list(p.probs.values()) for p in decoder.predict(texts)],
        [list(p.probs.values()) for p in single.predict(texts)],
        atol=1e-4,
    )


def test_a_long_input_scored_in_chunks_gets_the_scores_of_one_forward(tiny):
    """Chunked prefill (the service's path for long inputs) carries the KV cache: same scores, one step per chunk."""
    model, tokenizer = tiny
    labels = ["Approve", "Manual review", "Deny outright please"]
    text = " ".join(r["text"] for r in creditmix.generate(4, seed=3))
    decoder = CalibratedDecoder(model, tokenizer, labels, INSTRUCTION)
    steps = list(decoder.chunked_log_likelihoods(text, chunk_tokens=32))
    n_tokens = len(decoder._encode([render_prompt(tokenizer, INSTRUCTION, text)])[1][0])
    assert len(steps) == -(-n_tokens // 32) > 3 and all(step is None for step in steps[:-1])
    np.testing.assert_allclose(steps[-1], decoder.label_log_likelihoods([text]), atol=2e-4)
    [short] = list(decoder.chunked_log_likelihoods("x", chunk_tokens=32))  # one step when it fits
    np.testing.assert_allclose(short, decoder.label_log_likelihoods(["x"]), atol=2e-4)


def test_calibration_divides_out_the_content_free_prior(tiny):
    model, tokenizer = tiny
    decoder = CalibratedDecoder(model, tokenizer, creditmix.LABELS, INSTRUCTION)
    prior = decoder.prior()
    assert prior.shape == (3,) and abs(prior.sum() - 1) < 1e-6
    # A content-free input, calibrated, comes out close to uniform: its own bias is removed.
    [pred] = decoder.predict(["N/A"])
    raw = np.array(list(pred.raw_probs.values()))
    expected = raw / prior / (raw / prior).sum()
    np.testing.assert_allclose(list(pred.probs.values()), expected, atol=1e-6)
    assert pred.margin == pytest.approx(sorted(pred.probs.values())[-1] - sorted(pred.probs.values())[-2])
    assert pred.confidence == max(pred.probs.values()) and pred.label == max(pred.probs, key=pred.probs.get)


def test_a_given_prior_is_divided_out_instead_of_the_content_free_one(tiny, tmp_path):
    """Batch calibration: a prior measured on real inputs, stored with an adapter, replaces the content-free one."""
    from core.model.calibrated import load_label_prior, save_label_prior

    model, tokenizer = tiny
    texts = [r["text"] for r in creditmix.generate(8)]
    measured = CalibratedDecoder(model, tokenizer, creditmix.LABELS, INSTRUCTION, calibrate=False).label_distribution(texts).mean(0)
    save_label_prior(tmp_path, list(reversed(creditmix.LABELS)), measured[::-1], len(texts), "test")
    loaded = load_label_prior(tmp_path, creditmix.LABELS)
    np.testing.assert_allclose(loaded, measured)  # stored in another label order, read back in the task's
    decoder = CalibratedDecoder(model, tokenizer, creditmix.LABELS, INSTRUCTION, prior=loaded)
    preds = decoder.predict(texts)
    raw = np.array([list(p.raw_probs.values()) for p in preds])
    np.testing.assert_allclose(
        [list(p.probs.values()) for p in preds], (raw / measured) / (raw / measured).sum(1, keepdims=True), atol=1e-6
    )
    with pytest.raises(ValueError, match="labels"):
        load_label_prior(tmp_path, ["yes", "no", "maybe"])


def test_label_bias_moves_probability_in_calibrated_space(tiny):
    model, tokenizer = tiny
    plain = CalibratedDecoder(model, tokenizer, creditmix.LABELS, INSTRUCTION)
    biased = CalibratedDecoder(model, tokenizer, creditmix.LABELS, INSTRUCTION, label_bias={"Bad": 5.0})
    text = creditmix.generate(1)[0]["text"]
    [p], [q] = plain.predict([text]), biased.predict([text])
    assert q.probs["Bad"] > p.probs["Bad"] and q.label == "Bad"
    ratio = (q.probs["Bad"] / q.probs["Good"]) / (p.probs["Bad"] / p.probs["Good"])
    assert ratio == pytest.approx(np.exp(5.0), rel=1e-3)


def test_embedded_model_calibration_changes_the_label_distribution(embedded_dir):
    """On the real SmolLM2 and demo rows: uncalibrated, one label wins nearly everything."""
    model, tokenizer = load_model(ModelConfig(), ModelSettings())
    rows = creditmix.generate(24, seed=11)
    decoder = CalibratedDecoder(model, tokenizer, creditmix.LABELS, "Classify the customer's credit mix as Good, Standard or Bad.")
    preds = decoder.predict([r["text"] for r in rows])
    uncalibrated = Counter(max(p.raw_probs, key=p.raw_probs.get) for p in preds)
    calibrated = Counter(p.label for p in preds)
    assert uncalibrated != calibrated
    assert uncalibrated.most_common(1)[0][1] >= 20  # the prior, not the input, decides
    assert all(0.0 <= p.margin <= 1.0 and abs(sum(p.probs.values()) - 1) < 1e-6 for p in preds)
