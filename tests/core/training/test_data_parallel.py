"""Which rank a process is, from the variables accelerate launch and torchrun set."""

from core.training.data_parallel import data_parallel, main_process


def test_alone_is_rank_zero_of_one(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert data_parallel() == (0, 1) and main_process()


def test_rank_one_of_two_writes_nothing(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert data_parallel() == (1, 2) and not main_process()
