"""Login throttling: exponential back-off per user name and per address, then a lock.

After a failed login the same user name, and separately the same client address, may try again
only after a delay that doubles with every failure (:attr:`ThrottleSettings.base_seconds`,
2×, 4×, … up to :attr:`ThrottleSettings.max_delay_seconds`). After
:attr:`ThrottleSettings.lock_after` failures in a row the name or address is locked for
:attr:`ThrottleSettings.lock_seconds`. An attempt during a delay or lock is refused without
checking the password, so a flood of guesses costs the server next to nothing. A successful
login clears the user name's record; an address's record is forgotten once its lock or delay has
long passed. The records live in memory and are bounded in number.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Most user names and addresses remembered at once (the oldest are forgotten first).
MAX_RECORDS = 10_000


@dataclass(frozen=True)
class ThrottleSettings:
    """How quickly failed logins slow down further attempts."""

    base_seconds: float = 1.0
    max_delay_seconds: float = 60.0
    lock_after: int = 10
    lock_seconds: float = 15 * 60.0


@dataclass
class _Record:
    failures: int = 0
    last_failure: float = float("-inf")
    locked_until: float = float("-inf")


class LoginThrottle:
    """Failed-login records by user name and by address. Thread-safe."""

    def __init__(
        self, settings: ThrottleSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or ThrottleSettings()
        self.clock = clock
        self._lock = threading.Lock()
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()

    def _keys(self, user: str, address: str) -> tuple[tuple[str, str], ...]:
        return (("user", user), ("address", address))

    def _delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        exponent = min(failures - 1, 62)
        return min(self.settings.base_seconds * 2.0**exponent, self.settings.max_delay_seconds)

    def wait_seconds(self, user: str, address: str) -> float:
        """Seconds until ``user`` from ``address`` may try again (0: now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(user, address):
                record = self._records.get(key)
                if record is None:
                    continue
                until = max(record.locked_until, record.last_failure + self._delay(record.failures))
                wait = max(wait, until - now)
        return wait

    def locked(self, user: str, address: str) -> bool:
        """True while the user name or the address is locked."""
        now = self.clock()
        with self._lock:
            return any(
                (record := self._records.get(key)) is not None and record.locked_until > now
                for key in self._keys(user, address)
            )

    def failure(self, user: str, address: str) -> bool:
        """Record a failed login; True when it locked the user name or the address just now."""
        now = self.clock()
        locked_now = False
        with self._lock:
            for key in self._keys(user, address):
                record = self._records.pop(key, None) or _Record()
                if record.locked_until <= now - self.settings.lock_seconds >= record.last_failure:
                    record = _Record()  # quiet for a lock's length: start afresh
                record.failures += 1
                record.last_failure = now
                if record.failures >= self.settings.lock_after and record.locked_until <= now:
                    record.locked_until = now + self.settings.lock_seconds
                    record.failures = 0
                    locked_now = True
                self._records[key] = record
            while len(self._records) > MAX_RECORDS:
                self._records.popitem(last=False)
        return locked_now

    def success(self, user: str) -> None:
        """A successful login of ``user``: their name's record is cleared."""
        with self._lock:
            self._records.pop(("user", user), None)
