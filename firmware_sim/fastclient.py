"""A paho 2.x ``Client`` with faster hot paths for a publisher that runs its own event loop.

Stock paho spends most of a QoS 1 publisher's time in four places (measured on the 2-core
CI machine, ~110 µs of CPU per message in all):

* ``_packet_write`` makes one ``send()`` system call per packet; on TCP loopback each one also
  runs the receiver's TCP stack, so coalescing the queued packets into one ``send()`` of up to
  64 KiB cuts the write cost several-fold;
* ``_handle_pubackcomp`` builds a fresh ``ReasonCode`` and ``Properties`` for every PUBACK,
  although an MQTT 3.1.1 PUBACK carries nothing but the message id;
* ``_update_inflight`` scans every outstanding message after every PUBACK, looking for one
  queued behind the in-flight limit: O(window) per acknowledgement;
* ``_packet_read`` reads a 4-byte PUBACK with three ``recv()`` calls (command byte, length
  byte, body) through a general state machine, so ``_sock_recv`` here reads up to 64 KiB at
  once and serves paho's small reads from that buffer, and ``_packet_read`` completes whole
  3.1.1 PUBACKs found in the buffer directly. ``loop_read`` keeps reading while the buffer
  holds data (paho stops after as many packets as it has messages outstanding, which would
  strand e.g. a PINGRESP behind the PUBACKs until more data arrived), and ``reconnect``
  discards it.

:class:`FastPublisherClient` overrides exactly those private methods (and wraps ``loop_read``
and ``reconnect``); each override falls back to paho's own code whenever its shortcut does not
apply (QoS 0 or DISCONNECT packets, MQTT 5, a message that could be queued). Behaviour on the
wire is unchanged: the same bytes, in the same order. It relies on paho 2.x internals (pinned
``<3`` in pyproject); :data:`SUPPORTED` is false on any other paho, and the runner then uses
the stock client.
"""

from __future__ import annotations

import struct
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
                 "_sock_send", "_sock_recv", "_packet_read")))

# One shared, never-mutated success code and empty property set for every 3.1.1 PUBACK.
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_PUBACK_NO_PROPERTIES = Properties(PacketTypes.PUBACK)
_MID = struct.Struct("!H")


def _needs_paho(packet: Any) -> bool:
    """True for packets whose completion paho must see (QoS 0 PUBLISH, DISCONNECT)."""
    command = packet["command"] & 0xF0
    return command == DISCONNECT or (command == PUBLISH and packet["qos"] == 0)


class FastPublisherClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with coalesced writes, buffered reads, cheap PUBACKs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            buf = super()._sock_recv(RECV_CHUNK)  # raises BlockingIOError if nothing is there
            pos = 0
            self._rbuf = buf
        end = min(pos + bufsize, len(buf))
        self._rpos = end
        return buf[pos:end]

    def _packet_read(self) -> MQTTErrorCode:
        # A whole MQTT 3.1.1 PUBACK (0x40 0x02 mid) waiting in the buffer, and no packet half
        # read: handle it as paho would (refresh the keepalive clock, complete the message)
        # without paho's byte-by-byte state machine. Anything else goes to paho.
        if self._in_packet["command"] == 0 and self._protocol != mqtt.MQTTv5:
            buf, pos = self._rbuf, self._rpos
            if len(buf) - pos >= 4 and buf[pos] == 0x40 and buf[pos + 1] == 0x02:
                self._rpos = pos + 4
                mid = (buf[pos + 2] << 8) | buf[pos + 3]
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()
                with self._out_message_mutex:
                    if mid in self._out_messages:
                        return self._do_on_publish(mid, _PUBACK_SUCCESS, _PUBACK_NO_PROPERTIES)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while (rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None
               and self._rpos < len(self._rbuf)):
            rc = super().loop_read(max_packets)
        return rc

    def reconnect(self) -> MQTTErrorCode:
        self._rbuf = b""  # bytes of the previous connection are meaningless now
        self._rpos = 0
        return super().reconnect()

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
