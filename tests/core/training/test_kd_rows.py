"""KD rows for generation tasks: the tokenizer check that decides whether the teacher's top-k tokens are used."""

from core.model.loading import load_model
from core.settings import ModelSettings
from core.training.kd_rows import shared_tokenizer


def test_shared_tokenizer_is_checked(tiny_cfg):
    _, tok = load_model(tiny_cfg.model, ModelSettings())
    answer = "Standard"
    ids = tok(answer, add_special_tokens=False).input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert shared_tokenizer([[[t, -0.1], ["Good", -3.0]] for t in tokens], answer, tok) is None
    assert "not in the student's vocabulary" in shared_tokenizer([[["\u2581Standard_of_another_vocab", -0.1]]], answer, tok)
    assert "splits the teacher's answer differently" in shared_tokenizer([[["Good", -0.1]]], answer, tok)
