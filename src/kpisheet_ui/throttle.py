"""Login throttling: exponential back-off per user name and per address, then a lock.

After :attr:`ThrottleSettings.free_failures` failed logins (typing mistakes) the same user name,
and separately the same client address, may try again only after a delay that doubles with every
further failure (:attr:`ThrottleSettings.base_seconds`, 2×, 4×, … up to
:attr:`ThrottleSettings.max_delay_seconds`). After
:attr:`ThrottleSettings.lock_after` failures in a row the name or address is locked for
:attr:`ThrottleSettings.lock_seconds`. An attempt during a delay or lock is refused without
checking the password, and so is an attempt while another one for the same name or address is
being checked: a flood of guesses costs the server next to nothing, however many run at once. A successful
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
    free_failures: int = 2
    max_delay_seconds: float = 60.0
    lock_after: int = 10
    lock_seconds: float = 15 * 60.0


@dataclass
class _Record:
    failures: int = 0
    checking: bool = False
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
        if failures <= self.settings.free_failures:
            return 0.0
        exponent = min(failures - self.settings.free_failures - 1, 62)
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

    def begin(self, user: str, address: str) -> bool:
        """Start checking a password: False (and nothing reserved) when the attempt must wait,
        else the name and address are busy until :meth:`failure` or :meth:`success`."""
        if self.wait_seconds(user, address) > 0:
            return False
        with self._lock:
            records = [self._records.get(key) for key in self._keys(user, address)]
            if any(record is not None and record.checking for record in records):
                return False
            for key in self._keys(user, address):
                record = self._records.pop(key, None) or _Record()
                record.checking = True
                self._records[key] = record
            self._trim()
        return True

    def _trim(self) -> None:
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)

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
                record.checking = False
                record.failures += 1
                record.last_failure = now
                if record.failures >= self.settings.lock_after and record.locked_until <= now:
                    record.locked_until = now + self.settings.lock_seconds
                    record.failures = 0
                    locked_now = True
                self._records[key] = record
            self._trim()
        return locked_now

    def success(self, user: str, address: str) -> None:
        """A successful login of ``user``: their name's record is cleared, the address is free."""
        with self._lock:
            self._records.pop(("user", user), None)
            record = self._records.get(("address", address))
            if record is not None:
                record.checking = False
