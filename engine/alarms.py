"""Alarms: conditions an operator must know about, raised and cleared by the engine's stages.

An alarm is keyed by ``(kind, subject)`` (``("detector_fault", "L:a_0:stop")``,
``("ingest_overload", "ingest")``). Raising an active alarm again only updates its detail;
clearing an inactive one does nothing, so stages can report their state every tick and only
changes reach the operator. Every change is kept in a bounded history and queued for the
feed's ``alarms`` topic; :meth:`AlarmBoard.take_changes` hands the queue over once.
"""

from __future__ import annotations

from collections import deque

import msgspec

SEVERITIES = ("info", "warning", "critical")


class Alarm(msgspec.Struct, frozen=True):
    """One change of an alarm: raised (``active``) or cleared."""

    id: int  # the alarm's number, shared by its raise and its clear
    kind: str
    subject: str
    severity: str
    active: bool
    ts_ns: int
    detail: str = ""


class AlarmBoard:
    """The active alarms, their history and the changes not yet published."""

    def __init__(self, history: int = 10_000, pending: int = 100_000):
        self._active: dict[tuple[str, str], Alarm] = {}
        self.history: deque[Alarm] = deque(maxlen=history)
        self._pending: deque[Alarm] = deque(maxlen=pending)
        self._next_id = 1
        self.raised_total = 0

    def raise_(self, kind: str, subject: str, now_ns: int, detail: str = "", severity: str = "warning") -> bool:
        """Raise (or refresh) an alarm; True if it was not active before."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r} is not one of {SEVERITIES}")
        key = (kind, subject)
        old = self._active.get(key)
        if old is not None:
            if old.detail != detail or old.severity != severity:
                self._active[key] = msgspec.structs.replace(old, detail=detail, severity=severity)
            return False
        alarm = Alarm(self._next_id, kind, subject, severity, True, now_ns, detail)
        self._next_id += 1
        self.raised_total += 1
        self._active[key] = alarm
        self._record(alarm)
        return True

    def clear(self, kind: str, subject: str, now_ns: int, detail: str = "") -> bool:
        """Clear an alarm; True if it was active."""
        old = self._active.pop((kind, subject), None)
        if old is None:
            return False
        self._record(msgspec.structs.replace(old, active=False, ts_ns=now_ns, detail=detail or old.detail))
        return True

    def set(self, kind: str, subject: str, on: bool, now_ns: int, detail: str = "", severity: str = "warning") -> bool:
        """Raise or clear according to ``on``; True if that changed anything."""
        return self.raise_(kind, subject, now_ns, detail, severity) if on else self.clear(kind, subject, now_ns, detail)

    def is_active(self, kind: str, subject: str) -> bool:
        return (kind, subject) in self._active

    def active(self) -> list[Alarm]:
        return sorted(self._active.values(), key=lambda a: a.id)

    def take_changes(self) -> list[Alarm]:
        out = list(self._pending)
        self._pending.clear()
        return out

    def _record(self, alarm: Alarm) -> None:
        self.history.append(alarm)
        self._pending.append(alarm)
