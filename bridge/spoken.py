"""What the agent has said, item by item, on its way down to the playout. Sans-I/O.

Owns, for the latest assistant audio items: each item's downlink transcoder (PCM16 24 kHz
from the model -> the leg's format; one per item, so filter state lives for a whole
utterance and is never reset mid-word; none when the model speaks the leg's μ-law), how
much audio the model has sent of it
(``model_ms``, the most a truncate may claim), and where a barge-in cuts it. When the
model session ends, :meth:`Spoken.retire` ends what is still streaming and marks every
item as belonging to the old session (never truncated).

It pushes leg audio into the ``Playout`` and leaves to it which items are dropped. It must
not touch the model protocol, responses or the barge-in policy (``bridge.call``), the
release rules (``bridge.playout``), sockets or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.audio.formats import MODEL_BYTES_PER_MS, ModelAudio, speaks_pcmu
from bridge.audio.transcode import Codec, Downlink
from bridge.playout import Heard, Playout
from bridge.recent import Recent

__all__ = ["Cut", "Spoken"]


@dataclass
class _Item:
    """An assistant audio item, as far as the model has sent it."""

    content_index: int
    model_ms: float = 0.0
    downlink: Downlink | _Same | None = None  # None once the model finished the item
    old: bool = False  # from a model session that has ended: never truncated on a new one


class _Same:
    """μ-law from the model to a μ-law leg (pass-through): nothing to convert."""

    def encode(self, audio: bytes) -> bytes:
        return audio

    def flush(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class Cut:
    """Where a barge-in cut an item: the caller heard ``audio_end_ms`` of it."""

    audio_end_ms: int
    truncate: bool  # the model must be told (not when nothing, or all it sent, was heard)
    sent_ms: int = 0  # how much audio of the item the model had sent by then


class Spoken:
    """The latest assistant audio items: downlink transcoding and what the model sent."""

    def __init__(
        self, codec: Codec, rate: int, playout: Playout, model_audio: ModelAudio = "pcm16"
    ) -> None:
        self.codec = codec
        self.rate = rate
        self.playout = playout
        self.passthrough = speaks_pcmu(model_audio)  # the leg is μ-law 8 kHz too (UplinkPath)
        self._model_bytes_per_ms = 8.0 if self.passthrough else MODEL_BYTES_PER_MS
        self._items: Recent[str, _Item] = Recent()

    def __len__(self) -> int:
        return len(self._items)

    def audio(self, item_id: str, content_index: int, audio: bytes) -> None:
        """Model audio of an item: transcode it (unless passed through), queue it for playout."""
        item = self._items.get(item_id)
        if item is None:
            item = _Item(content_index)
            self._items.put(item_id, item)
        if item.downlink is None:
            item.downlink = _Same() if self.passthrough else Downlink(self.codec, self.rate)
        item.model_ms += len(audio) / self._model_bytes_per_ms
        self.playout.push(item_id, content_index, item.downlink.encode(audio), item.model_ms)

    def done(self, item_id: str) -> bool:
        """The model finished the item: flush its transcoder. False if there was nothing to end."""
        item = self._items.get(item_id)
        if item is None or item.downlink is None or item_id in self.playout.dropped:
            return False
        tail = item.downlink.flush()
        item.downlink = None
        if tail:
            self.playout.push(item_id, item.content_index, tail, item.model_ms)
        self.playout.end_item(item_id)
        return True

    def drop(self, item_id: str) -> None:
        """Nothing more of this item is played, including audio the model sends later."""
        item = self._items.get(item_id)
        if item is not None:
            item.downlink = None
        self.playout.drop_item(item_id)

    def retire(self) -> None:
        """The model session ended: end every item still streaming with what it sent (so
        nothing half-item waits in the playout), and never truncate any of them again (the
        next session does not know their ids)."""
        for item_id in self._items:
            item = self._items.get(item_id)
            assert item is not None
            item.old = True
            if item.downlink is not None and item_id not in self.playout.dropped:
                tail = item.downlink.flush()
                if tail:
                    self.playout.push(item_id, item.content_index, tail, item.model_ms)
                self.playout.end_item(item_id)
            item.downlink = None

    def cut(self, heard: Heard) -> Cut | None:
        """A barge-in while ``heard`` was playing: where to truncate the item, then drop it.

        None if the item is not one of the latest. The model rejects a truncate past the
        audio it sent; an item it finished and the caller heard to the end needs none.
        """
        item = self._items.get(heard.item_id)
        if item is None:
            return None
        sent = int(item.model_ms)
        audio_end_ms = min(heard.ms, sent)
        finished = item.downlink is None
        truncate = audio_end_ms > 0 and not (finished and audio_end_ms >= sent) and not item.old
        cut = Cut(audio_end_ms, truncate, sent)
        self.drop(heard.item_id)
        return cut
