"""The stand-in's state file: channels, their users and chats kept across restarts (`--state-file`).

Written after every request that may have changed something, atomically (a temporary file in the same
folder, flushed, then os.replace), so that a crash or Ctrl-C mid-write leaves the previous file whole.
It holds channel secrets and access tokens: mode 600, like the demo's channels file. Tests run the
stand-in without one, in memory."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path

from .state import StandinState

logger = logging.getLogger(__name__)


class StateFileUnreadable(Exception):
    pass


class StateFile:
    """Loads a StandinState from `path` and saves it back."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        # Held from the snapshot to the rename: files land in the order their snapshots were taken.
        self._write_lock = threading.Lock()
        self._last_written: str | None = None

    def load(self, state: StandinState) -> bool:
        """Restore `state` from the file; False when there is no file yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        try:
            state.restore(json.loads(text))
        except (ValueError, KeyError, TypeError) as error:
            raise StateFileUnreadable(
                f"The stand-in's state file {self.path} cannot be read ({error}): delete it to start afresh."
            ) from error
        self._last_written = text
        logger.info("Stand-in: state restored from %s (%d channel(s))", self.path, len(state.channels))
        return True

    def save(self, state: StandinState) -> None:
        """Write the state's snapshot, unless it is what the file holds already."""
        with self._write_lock:
            text = json.dumps(state.snapshot(), ensure_ascii=False, separators=(",", ":"))
            if text == self._last_written:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                    file.write(text)
                    file.flush()
                    os.fsync(file.fileno())
                os.chmod(temporary, 0o600)
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            self._last_written = text
