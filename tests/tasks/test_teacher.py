"""Stored completions (answers already paid for) into the trace cache: the teacher is then asked only about the rest."""

import json

from core.common.openai_files import read_stored_completions
from core.common.rows import Example
from core.teachers.base import Teacher, TeacherAnswer
from core.teachers.traces import TraceStore, generate_traces
from tasks.teacher import import_stored_traces, traces_path


def _completion(ident: str, answer: str, tags: dict, user: str | None = None) -> dict:
    completion = {
        "object": "chat.completion",
        "id": ident,
        "model": "gpt-4o-mini-2024-07-18",
        "metadata": tags,
        "usage": {"prompt_tokens": 31, "completion_tokens": 2, "total_tokens": 33},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
    }
    if user is not None:
        completion["messages"] = [{"role": "system", "content": "Rate the credit mix."}, {"role": "user", "content": user}]
    return completion


def test_stored_completions_fill_the_cache_and_the_teacher_is_asked_only_the_rest(tiny_cfg, tmp_path):
    listing = {
        "object": "list",
        "data": [
            _completion("chatcmpl-a", "Good", {"task": "creditmix"}, "Num_Bank_Accounts: 1"),
            _completion("chatcmpl-b", "Bad", {"task": "creditmix"}),  # its input is in the /messages listing below
            _completion("chatcmpl-c", "Standard", {"task": "other"}, "Num_Bank_Accounts: 9"),  # another task's traffic
            _completion("chatcmpl-d", "Excellent!", {"task": "creditmix"}, "Num_Bank_Accounts: 4"),  # not a label
            _completion("chatcmpl-e", "Good", {"task": "creditmix"}),  # no input anywhere
        ],
        "has_more": False,
    }
    messages = {"object": "list", "data": [{"id": "chatcmpl-b-0", "role": "user", "content": "Num_Bank_Accounts: 7"}]}
    (tmp_path / "listing.json").write_text(json.dumps(listing))
    (tmp_path / "messages.json").write_text(json.dumps(messages))
    found, bad = read_stored_completions([tmp_path / "listing.json", tmp_path / "messages.json"], {"task": "creditmix"})
    assert [c["id"] for c in found] == ["chatcmpl-a", "chatcmpl-b", "chatcmpl-d"] and found[1]["input"] == "Num_Bank_Accounts: 7"
    assert bad == ["completion chatcmpl-e: no user message (include its /messages listing)"]
    summary = import_stored_traces(tiny_cfg, found)
    assert summary["imported"] == 2 and summary["outside_labels"] == 1
    assert import_stored_traces(tiny_cfg, found)["already_cached"] == 3  # a second import adds nothing

    store = TraceStore(traces_path(tiny_cfg, "unlabeled"))
    asked = []

    class Counting(Teacher):  # stands in for the large model: it records what it is asked
        name = "counting"

        def answer(self, texts: list[str]) -> list[TeacherAnswer]:
            asked.extend(texts)
            return [TeacherAnswer("Standard") for _ in texts]

    rows = [
        Example(id=str(i), text=t)
        for i, t in enumerate(("Num_Bank_Accounts: 1", "Num_Bank_Accounts: 7", "Num_Bank_Accounts: 4", "Num_Bank_Accounts: 2"))
    ]
    try:
        totals = generate_traces(rows, store, lambda: Counting(), progress=False)
    finally:
        store.close()
    assert asked == ["Num_Bank_Accounts: 2"] and totals["cached"] == 3
    traces = TraceStore.read(traces_path(tiny_cfg, "unlabeled")).traces.values()
    stored = {t["prompt"]: t for t in traces}
    assert (
        stored["Num_Bank_Accounts: 7"]["output"] == "Bad" and stored["Num_Bank_Accounts: 7"]["teacher"] == "stored:gpt-4o-mini-2024-07-18"
    )
    assert stored["Num_Bank_Accounts: 7"]["completion_tokens"] == 2 and "outside the label set" in stored["Num_Bank_Accounts: 4"]["error"]
