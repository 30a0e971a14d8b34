"""bench teacher-throughput, whole and quick: an LLM-like endpoint on loopback, the openai backend at concurrency 1 and 8
(the ratio is the measurement; here only that both sides ran over every input and the ratio is theirs)."""

import openai

from bench.teacher_throughput import llm_like_server, run
from service.main import serve_app_in_thread


def test_both_sides_answer_every_input_and_the_ratio_is_theirs():
    figures = run(quick=True, latency_s=0.01)
    one, eight = figures["concurrency_1"], figures["concurrency_8"]
    assert one["traces"] == eight["traces"] == figures["requests"] == 16 and one["failed"] == eight["failed"] == 0
    assert figures["throughput_ratio_8_vs_1"] == round(eight["traces_per_s"] / one["traces_per_s"], 2)


def test_the_endpoint_answers_the_official_client_with_a_label_and_its_alternatives():
    server, url = serve_app_in_thread(llm_like_server(0.0))
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="remote-teacher", messages=[{"role": "user", "content": "x"}], logprobs=True, top_logprobs=3
        )
        assert reply.choices[0].message.content == "Good"
        assert [t.token for t in reply.choices[0].logprobs.content[0].top_logprobs] == ["Good", "Standard", "Bad"]
    finally:
        server.should_exit = True
