"""bench scale's pieces: the teacher endpoint that counts how often each input was asked (what "asked twice" is read
from), and the loss curve read back from a checkpoint's trainer state."""

import json
import multiprocessing
import time

import httpx

from bench.scale import _endpoint, _loss_curve
from core.common.ports import free_port


def test_the_endpoint_counts_requests_inputs_and_inputs_asked_twice():
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=_endpoint, args=(port, 0.0), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/v1/models").raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the endpoint did not start"
                time.sleep(0.2)
        for text in ("a", "b", "a"):
            answer = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": text}]}).json()
            assert answer["choices"][0]["message"]["content"] == "Good"
        assert httpx.get(url + "/asked").json() == {"requests": 3, "inputs": 2, "asked_twice": 1}
    finally:
        server.kill()


def test_the_loss_curve_comes_from_the_newest_checkpoint(tmp_path):
    for step, history in (
        (5, [{"step": 5, "loss": 3.0}]),
        (10, [{"step": 5, "loss": 3.0}, {"step": 10, "loss": 1.23456}, {"step": 10, "eval": 1}]),
    ):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    (tmp_path / "checkpoint-9").mkdir()  # sorted by number, not by name: 10 is newer than 9
    (tmp_path / "checkpoint-9" / "trainer_state.json").write_text(json.dumps({"log_history": []}))
    assert _loss_curve(tmp_path) == [[5, 3.0], [10, 1.2346]]
