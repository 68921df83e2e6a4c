"""A paho 2.x ``Client`` with faster hot paths, for the sim's publishers and the tiers'
subscribers (:func:`citybrain.mqtt.make_client`).

Stock paho spends most of a busy client's time in a few places (measured on the 2-core CI
machine: ~110 µs of CPU per message for a QoS 1 publisher, ~100 µs for a subscriber):

* ``_packet_write`` makes one ``send()`` system call per packet; on TCP loopback each one also
  runs the receiver's TCP stack, so coalescing the queued packets into one ``send()`` of up to
  64 KiB cuts the write cost several-fold (a publisher's PUBLISHes, a subscriber's PUBACKs);
* ``_packet_read`` reads a packet with at least three ``recv()`` calls (command byte, length
  byte(s), body) through a general state machine, and ``loop_read`` of a subscriber reads one
  packet per ``select()`` (paho reads as many packets as it has messages outstanding, which
  for a subscriber is none). Here ``_sock_recv`` reads up to 64 KiB at once and serves
  paho's small reads from that buffer, ``loop_read`` keeps reading while the buffer holds
  data, and ``_packet_read`` completes whole 3.1.1 PUBACKs and QoS 0/1 PUBLISHes found in the
  buffer directly (``reconnect`` discards the buffer);
* an inbound message's ``MQTTMessage`` builds an ``MQTTMessageInfo`` (a ``threading.Condition``)
  that nothing reads for a received message: here it is built only if asked for;
* each inbound message then goes through ``_handle_on_message``: a topic-filter trie walk
  (``message_callback_add``), two locks and the ``on_message`` call, for every message. A
  client that sets :meth:`FastClient.set_batch_handler` instead gets every whole QoS 0/1
  PUBLISH found together in the read buffer as one list of plain tuples, one call per read
  (and a PUBLISH cut by the end of a read waits in the buffer for the rest of its bytes,
  instead of going through paho's state machine);
* ``ack`` of a manually acknowledged message queues its PUBACK and wakes the network thread
  through its socket pair, one system call per message: :meth:`FastClient.ack_many` queues a
  whole commit's PUBACKs as one write and wakes the thread once;
* ``_handle_pubackcomp`` builds a fresh ``ReasonCode`` and ``Properties`` for every PUBACK,
  although an MQTT 3.1.1 PUBACK carries nothing but the message id;
* ``_update_inflight`` scans every outstanding message after every PUBACK, looking for one
  queued behind the in-flight limit: O(window) per acknowledgement.

:class:`FastClient` overrides exactly those private methods; each override falls back to
paho's own code whenever its shortcut does not apply (QoS 2, DISCONNECT, MQTT 5, a packet not
yet whole in the buffer, a message that could be queued). Behaviour on the wire is unchanged:
the same bytes, in the same order. It relies on paho 2.x internals (pinned ``<3`` in
pyproject); :data:`SUPPORTED` is false on any other paho, and callers then use the stock
client.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.client import DISCONNECT, PUBLISH, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

#: Largest single ``send()`` of coalesced packets, bytes.
MAX_COALESCED_BYTES = 64 * 1024
#: Bytes asked of one ``recv()``.
RECV_CHUNK = 64 * 1024

SUPPORTED = (paho.mqtt.__version__.startswith("2.")
             and all(hasattr(mqtt.Client, name) for name in (
                 "_packet_write", "_handle_pubackcomp", "_update_inflight", "_do_on_publish",
                 "_sock_send", "_sock_recv", "_packet_read", "_handle_on_message",
                 "_packet_queue", "ack")))

# One shared, never-mutated success code and empty property set for every 3.1.1 PUBACK.
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_PUBACK_NO_PROPERTIES = Properties(PacketTypes.PUBACK)
_MID = struct.Struct("!H")
_PUBACK = struct.Struct("!BBH")

#: One inbound message as a batch handler gets it: ``(mid, qos, topic, payload, dup)``;
#: ``mid`` is 0 at QoS 0 (the retain flag is not passed on).
RawMessage = tuple[int, int, str, bytes, bool]
BatchHandler = Callable[[list[RawMessage]], None]


def _needs_paho(packet: Any) -> bool:
    """True for packets whose completion paho must see (QoS 0 PUBLISH, DISCONNECT)."""
    command = packet["command"] & 0xF0
    return command == DISCONNECT or (command == PUBLISH and packet["qos"] == 0)


def _remaining_length(buf: bytes, pos: int) -> tuple[int, int]:
    """MQTT's variable-length "remaining length" at ``buf[pos:]``: (value, bytes used), or
    (-1, 0) if it is not whole in ``buf`` or longer than the protocol's 4 bytes (paho's
    state machine then reads or rejects it)."""
    value, mult = 0, 1
    for n in range(4):
        if pos + n >= len(buf):
            return -1, 0
        byte = buf[pos + n]
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            return value, n + 1
        mult *= 128
    return -1, 0


class _InboundMessage(mqtt.MQTTMessage):
    """An ``MQTTMessage`` whose ``info`` (a ``threading.Condition`` inside, useless for a
    received message) is built only if someone asks for it."""

    __slots__ = ()

    @property
    def info(self) -> mqtt.MQTTMessageInfo:
        try:
            return _INFO_SLOT.__get__(self)
        except AttributeError:
            info = mqtt.MQTTMessageInfo(self.mid)
            _INFO_SLOT.__set__(self, info)
            return info

    @info.setter
    def info(self, value: mqtt.MQTTMessageInfo) -> None:
        _INFO_SLOT.__set__(self, value)


_INFO_SLOT: Any = mqtt.MQTTMessage.__dict__["info"]  # the base class's slot descriptor


class FastClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with coalesced writes, buffered reads, a direct path for
    whole 3.1.1 PUBLISH and PUBACK packets, and batched manual acknowledgements."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._batch_handler: BatchHandler | None = None
        self._rtail = False  # the buffer ends in part of a packet and the socket had no more

    def set_batch_handler(self, handler: BatchHandler | None) -> None:
        """Deliver inbound messages in batches: ``handler(batch)`` (network thread) gets, in
        arrival order, every whole MQTT 3.1.1 QoS 0/1 PUBLISH that lies together in the read
        buffer (up to ``RECV_CHUNK`` bytes of them) as ``RawMessage`` tuples, in place of one
        ``on_message`` call each. Anything else — QoS 2, MQTT 5, a packet not yet whole, a
        topic that is not UTF-8, and every message while a ``message_callback_add`` filter
        is registered — still goes to paho and ``on_message``. After the handler returns,
        a QoS 1 message is acknowledged as paho would (at once, unless manual
        acknowledgement is on). ``None`` turns batches off."""
        self._batch_handler = handler

    # -- reading ---------------------------------------------------------------------------
    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            # raises BlockingIOError if nothing is there
            buf = super()._sock_recv(max(bufsize, RECV_CHUNK))
            pos = 0
            self._rbuf = buf
        end = min(pos + bufsize, len(buf))
        self._rpos = end
        return buf[pos:end]

    def _packet_read(self) -> MQTTErrorCode:
        # A whole MQTT 3.1.1 PUBACK or QoS 0/1 PUBLISH waiting in the buffer, and no packet
        # half read: handle it as paho would (refresh the keepalive clock, complete the
        # message / deliver it) without paho's byte-by-byte state machine. Anything else —
        # MQTT 5, QoS 2, a packet not yet whole — goes to paho.
        if self._in_packet["command"] == 0 and self._protocol != mqtt.MQTTv5:
            if (self._batch_handler is not None
                    and not self._on_message_filtered._root._children):
                rc = self._read_batch()
                if rc is not None:
                    return rc
            buf, pos = self._rbuf, self._rpos
            if len(buf) - pos >= 4:
                head = buf[pos]
                if head == 0x40 and buf[pos + 1] == 0x02:
                    self._rpos = pos + 4
                    mid = (buf[pos + 2] << 8) | buf[pos + 3]
                    with self._msgtime_mutex:
                        self._last_bytes_received = mqtt.time_func()
                    with self._out_message_mutex:
                        if mid in self._out_messages:
                            return self._do_on_publish(mid, _PUBACK_SUCCESS,
                                                       _PUBACK_NO_PROPERTIES)
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                if head & 0xF0 == PUBLISH and head & 0x06 in (0x00, 0x02):
                    length, n = _remaining_length(buf, pos + 1)
                    if length >= 0 and len(buf) - pos - 1 - n >= length:
                        message = self._whole_publish(head, buf, pos + 1 + n, length)
                        if message is not None:
                            return self._deliver(message)
        return super()._packet_read()

    def _whole_publish(self, head: int, buf: bytes, start: int, length: int
                       ) -> mqtt.MQTTMessage | None:
        """Decode the 3.1.1 PUBLISH body ``buf[start:start + length]`` and consume it, or
        return None (nothing consumed) if it is malformed: paho then reads it again and
        reports the protocol error as it always does."""
        end = start + length
        if length < 2:
            return None
        qos = (head >> 1) & 0x03
        topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
        body = topic_end + (2 if qos else 0)
        if topic_end == start + 2 or body > end:  # empty topic, or lengths that overrun
            return None
        self._rpos = end
        message = _InboundMessage.__new__(_InboundMessage)
        message.mid = (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0
        message._topic = buf[start + 2:topic_end]
        message.payload = buf[body:end]
        message.qos = qos
        message.dup = bool(head & 0x08)
        message.retain = bool(head & 0x01)
        message.state = mqtt.mqtt_ms_invalid
        message.properties = None
        now = mqtt.time_func()
        message.timestamp = now
        with self._msgtime_mutex:
            self._last_bytes_received = now
        return message

    def _read_batch(self) -> MQTTErrorCode | None:
        """Batch mode's read: deliver the run of whole QoS 0/1 PUBLISH packets at the read
        position (refilling an empty buffer first, so that the first packet of a read is
        not left to paho's state machine either). None: nothing for the batch path here
        (another packet type, a malformed packet, an error or the end of the stream),
        paho's own read handles it; ``MQTT_ERR_AGAIN``: the socket has no (more) bytes."""
        if self._rpos >= len(self._rbuf):
            try:
                data = mqtt.Client._sock_recv(self, RECV_CHUNK)
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError:  # a lost connection: paho's own read meets it and reports it
                return None
            if not data:  # the end of the stream: likewise
                return None
            self._rbuf, self._rpos = data, 0
        buf, pos = self._rbuf, self._rpos
        head = buf[pos]
        if head & 0xF0 != PUBLISH or head & 0x06 not in (0x00, 0x02):
            return None
        batch = self._whole_publishes()
        if not batch:
            # The PUBLISH at the head may be cut by the end of the last read: add what the
            # socket holds now, or wait for it (instead of paho reading the rest of that
            # one message through its state machine).
            more = self._top_up()
            if more is None:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            if more:
                batch = self._whole_publishes()
        if batch:
            return self._deliver_batch(batch)
        return None

    def _whole_publishes(self) -> list[RawMessage]:
        """Decode and consume the run of whole 3.1.1 QoS 0/1 PUBLISH packets at the read
        position, with the same checks as ``_whole_publish``; stops (consuming nothing of
        it) at the first packet that is anything else, not whole, malformed or has a topic
        that is not UTF-8: paho reads that one as it always does."""
        buf, pos = self._rbuf, self._rpos
        size = len(buf)
        out: list[RawMessage] = []
        append = out.append
        while size - pos >= 4:
            head = buf[pos]
            if head & 0xF0 != PUBLISH or head & 0x06 not in (0x00, 0x02):
                break
            # Remaining length: one or two bytes for any message under 16 KiB.
            b1 = buf[pos + 1]
            if b1 < 0x80:
                length, start = b1, pos + 2
            elif buf[pos + 2] < 0x80:
                length, start = (b1 & 0x7F) | (buf[pos + 2] << 7), pos + 3
            else:
                length, n = _remaining_length(buf, pos + 1)
                if length < 0:
                    break
                start = pos + 1 + n
            end = start + length
            if end > size or length < 2:
                break
            topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
            qos = 1 if head & 0x06 else 0
            body = topic_end + 2 * qos
            if topic_end == start + 2 or body > end:  # empty topic, or lengths that overrun
                break
            mid = (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0
            try:
                topic = buf[start + 2:topic_end].decode("utf-8")
            except UnicodeDecodeError:
                break
            append((mid, qos, topic, buf[body:end], bool(head & 0x08)))
            pos = end
        if out:
            self._rpos = pos
            with self._msgtime_mutex:
                self._last_bytes_received = mqtt.time_func()
        return out

    def _top_up(self) -> bool | None:
        """When the packet at the read position is not whole in the buffer, append what
        the socket has to the rest of the buffer. True: bytes were added; None: the socket
        has none yet (``_rtail`` set: ``loop_read`` then waits for the socket instead of
        handing the partial packet to paho); False: nothing to do here (the packet is
        whole or malformed, or the read failed or met the end of the stream: paho's own
        read then meets the same condition and reports it)."""
        buf, pos = self._rbuf, self._rpos
        length, n = _remaining_length(buf, pos + 1)
        if length >= 0:
            if len(buf) - pos - 1 - n >= length:
                return False  # whole: not ours to wait for
        elif len(buf) - pos >= 5:
            return False  # a remaining length over four bytes: malformed, paho says so
        try:
            more = mqtt.Client._sock_recv(self, RECV_CHUNK)
        except BlockingIOError:
            self._rtail = True
            return None
        except OSError:  # a lost connection: paho's own read meets it too and reports it
            return False
        if not more:
            return False
        self._rbuf = buf[pos:] + more
        self._rpos = 0
        self._rtail = False
        return True

    def _deliver_batch(self, batch: list[RawMessage]) -> MQTTErrorCode:
        """Hand ``batch`` to the batch handler (as paho calls ``on_message``: holding the
        in-callback lock, an exception logged and re-raised unless suppressed), then
        acknowledge its QoS 1 messages unless acknowledgement is manual."""
        handler = self._batch_handler
        if handler is not None:
            with self._in_callback_mutex:
                try:
                    handler(batch)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR,
                                   "Caught exception in batch handler: %s", err)
                    if not self.suppress_exceptions:
                        raise
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if not self._manual_ack:
            for mid, qos, _topic, _payload, _dup in batch:
                if qos == 1:
                    rc = self._send_puback(mid)
        return rc

    def _deliver(self, message: mqtt.MQTTMessage) -> MQTTErrorCode:
        """What paho's ``_handle_publish`` does with a QoS 0 or 1 message."""
        self._handle_on_message(message)
        if message.qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        self._rtail = False
        rc = super().loop_read(max_packets)
        while (rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None
               and self._rpos < len(self._rbuf) and not self._rtail):
            rc = super().loop_read(max_packets)
        return rc

    def reconnect(self) -> MQTTErrorCode:
        self._rbuf = b""  # bytes of the previous connection are meaningless now
        self._rpos = 0
        self._rtail = False
        return super().reconnect()

    # -- writing ---------------------------------------------------------------------------
    def ack_many(self, acks: list[tuple[int, int]]) -> MQTTErrorCode:
        """``ack(mid, qos)`` for every pair, in order, as one queued write (manual
        acknowledgement mode; QoS 0 pairs are skipped, QoS 2 go through ``ack``)."""
        if not self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        pubacks = bytearray()
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        for mid, qos in acks:
            if qos == 1:
                pubacks += _PUBACK.pack(0x40, 2, mid)
            elif qos == 2:
                if pubacks:
                    self._packet_queue(0x40, bytes(pubacks), 0, 1)
                    pubacks = bytearray()
                rc = self.ack(mid, qos)
        if pubacks:
            rc = self._packet_queue(0x40, bytes(pubacks), 0, 1)
        return rc

    def _packet_write(self) -> MQTTErrorCode:
        out = self._out_packet
        while out:
            if _needs_paho(out[0]):
                return super()._packet_write()
            run: list[Any] = []
            size = 0
            while out and size < MAX_COALESCED_BYTES and not _needs_paho(out[0]):
                p = out.popleft()
                run.append(p)
                size += p["to_process"]
            buf = b"".join(p["packet"][p["pos"]:] if p["pos"] else p["packet"] for p in run)
            try:
                written = self._sock_send(buf)
            except BlockingIOError:
                out.extendleft(reversed(run))
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except (AttributeError, ValueError):
                out.extendleft(reversed(run))
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except OSError:
                out.extendleft(reversed(run))
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            with self._msgtime_mutex:
                self._last_msg_out = mqtt.time_func()
            if written < len(buf):
                # Partial write: drop the packets sent whole, keep the rest in order.
                i = 0
                while written >= run[i]["to_process"]:
                    written -= run[i]["to_process"]
                    i += 1
                run[i]["to_process"] -= written
                run[i]["pos"] += written
                out.extendleft(reversed(run[i:]))
                return MQTTErrorCode.MQTT_ERR_AGAIN
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    # -- acknowledgements of our publishes ---------------------------------------------------
    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol == mqtt.MQTTv5 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        (mid,) = _MID.unpack(packet)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _PUBACK_SUCCESS, _PUBACK_NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _update_inflight(self) -> MQTTErrorCode:
        # A message can only be waiting behind the in-flight limit if there are more
        # outstanding messages than the limit; otherwise paho's scan would find nothing.
        if len(self._out_messages) <= self._max_inflight_messages:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._update_inflight()


def ack_all(client: mqtt.Client, acks: list[tuple[int, int]]) -> None:
    """Acknowledge ``(mid, qos)`` pairs on any paho client: one write on a
    :class:`FastClient`, one ``ack`` each on the stock client."""
    if isinstance(client, FastClient):
        client.ack_many(acks)
        return
    for mid, qos in acks:
        client.ack(mid, qos)
