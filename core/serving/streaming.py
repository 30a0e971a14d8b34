"""An answer's text as it is decoded: one `TokenStream` per streamed request, fed by the decode loop, read by the route.

The decode loop (`core.model.fast_decode.greedy_decode`) hands each row's new token to its stream (`feed`) on the model
thread; the stream detokenizes incrementally (a character split over tokens waits for its last byte), holds back a tail
that could still become one of the request's `stop` strings, and keeps the text not yet read. The reader (the route's
server-sent events) takes what has come (`take`) when woken by `notify`. `feed` answers False when the row should stop
decoding: its reader has gone (`cancel`, a client that disconnected) or a stop string has come. So a client that goes
away stops its own decode at the next step, and the text read is exactly the answer the same request gets unstreamed.

Memory is bounded by the answer itself: the stream keeps one answer's ids and text (at most the task's token budget),
never a queue of events.

    stream = TokenStream(tokenizer, stop=["\\n\\n"], notify=lambda: loop.call_soon_threadsafe(wake.set))
    runtime.chat(model, text, stream=stream)     # on a worker thread: the decode feeds it
    text, finished = stream.take()               # the reader, each time it is woken
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from transformers import PreTrainedTokenizerBase


class TokenStream:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str] = (), notify: Callable[[], None] | None = None) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.notify = notify
        self.cancelled = threading.Event()
        self.stopped = False  # a stop string came: the text ends before it
        self._ids: list[int] = []
        self._emitted = 0  # characters of the decoded text made readable so far
        self._unread: list[str] = []
        self._finished = False
        self._lock = threading.Lock()

    @property
    def fed(self) -> int:
        """Tokens fed so far (a batch retried row by row must not feed a stream twice)."""
        return len(self._ids)

    def feed(self, token_id: int) -> bool:
        """One decoded token of this row (model thread). False: stop decoding the row (its reader is gone, or a stop
        string has come)."""
        if self.cancelled.is_set() or self.stopped:
            return False
        self._ids.append(token_id)
        text = self.tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a character whose bytes span tokens: wait for the rest of it
            return True
        end = len(text)
        for stop in self.stop:
            at = text.find(stop, max(0, self._emitted - len(stop) + 1))
            if at != -1 and at < end:
                end, self.stopped = at, True
        if not self.stopped:
            end -= _partial_stop(text, self.stop)
        self._emit(text[self._emitted : end])
        self._emitted = max(self._emitted, end)
        return not self.stopped

    def finish(self) -> None:
        """The decode is over (answered, failed or cancelled): the reader's last `take` says so."""
        with self._lock:
            self._finished = True
        if self.notify:
            self.notify()

    def cancel(self) -> None:
        """The reader has gone: the decode stops at its next step."""
        self.cancelled.set()

    def take(self) -> tuple[str, bool]:
        """The text decoded since the last take, and whether the decode is over."""
        with self._lock:
            text, self._unread = "".join(self._unread), []
            return text, self._finished

    def _emit(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._unread.append(text)
        if self.notify:
            self.notify()


def _partial_stop(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string (held back until the next token)."""
    held = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:n]):
                held = n
                break
    return held


def feeder(streams: Sequence[TokenStream | None] | None) -> Callable[[int, int], bool] | None:
    """The decode loop's `on_token(row, token) -> keep decoding the row` for a batch's streams (None: nothing streamed)."""
    if not streams or all(s is None for s in streams):
        return None
    return lambda row, token: streams[row] is None or streams[row].feed(token)
