"""Token ids -> the text a client sees, as the tokens arrive, cut at stop strings.

Decoding token by token is wrong for byte-level tokenizers (one character can span tokens, and a
piece decoded alone may differ from the same piece in context), so ``TextStream`` decodes a short
window of recent tokens and emits only what the new tokens add, holding back a trailing partial
character ("\\ufffd"). Stop strings can straddle chunks, so the last ``len(longest stop) - 1``
characters are held back until more text shows whether a stop string starts there.

An engine without a tokenizer has no text: each chunk's text is its token ids joined by commas
(with a leading comma after the first chunk), so the chunks of a stream concatenate to the
non-streaming text.
"""
from __future__ import annotations

PARTIAL = "\ufffd"


class TextStream:
    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tok, self.stop = tokenizer, list(stop or [])
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.prefix = self.read = 0            # window start, and the end of what was decoded
        self.text = ""                          # all decoded text
        self.sent = 0                           # characters of ``text`` already emitted
        self.stopped = False
        self.first = True

    def feed(self, ids: list[int]) -> str:
        """Text to emit for these new tokens ("" when it is held back); sets ``stopped`` at a stop string."""
        if self.stopped:
            return ""
        self.ids += ids
        if self.tok is None:
            return self._ids_text(ids)
        self._decode()
        start = max(self.sent - self.hold, 0)
        hits = [at for at in (self.text.find(s, start) for s in self.stop) if at >= 0]
        if hits:
            self.stopped = True
            return self._emit(min(hits))
        return self._emit(max(len(self.text) - self.hold, self.sent))

    def flush(self) -> str:
        """The held-back rest, at the end of the sequence (a trailing partial character included)."""
        if self.stopped or self.tok is None:
            return ""
        tail = self.tok.decode(self.ids[self.prefix:])
        before = self.tok.decode(self.ids[self.prefix:self.read])
        self.text += tail[len(before):]
        self.read = len(self.ids)
        return self._emit(len(self.text))

    def _decode(self) -> None:
        before = self.tok.decode(self.ids[self.prefix:self.read])
        now = self.tok.decode(self.ids[self.prefix:])
        if len(now) > len(before) and not now.endswith(PARTIAL):
            self.text += now[len(before):]
            self.prefix, self.read = self.read, len(self.ids)

    def _emit(self, upto: int) -> str:
        out = self.text[self.sent:upto]
        self.sent = max(self.sent, upto)
        return out

    def _ids_text(self, ids: list[int]) -> str:
        if not ids:
            return ""
        out = ("" if self.first else ",") + ",".join(map(str, ids))
        self.first = False
        return out
