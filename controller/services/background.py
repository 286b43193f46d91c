"""The background threads of each `cloudx serve` process (scheduler, webhook sender, pruner): one shape for all."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("cloudx")


class Periodic:
    """A daemon thread that calls tick() every interval() seconds (the first after first_wait()) until shutdown().

    A tick that fails is logged and the next one tries again: a locked or unreachable database passes, and each
    tick leaves nothing half-done (its work is claimed and committed in transactions of its own).
    """

    name = "background"

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def interval(self) -> float:
        raise NotImplementedError

    def first_wait(self) -> float:
        return self.interval()

    def tick(self) -> Any:
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        wait = self.first_wait()
        while not self._stopping.wait(wait):
            try:
                self.tick()
            except Exception:
                log.exception("%s: a tick failed; the next one tries again", self.name)
            wait = self.interval()
