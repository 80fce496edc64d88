"""The terminal itself: lines out (arrivals above the prompt on a terminal) and lines in
(``input`` with readline on a terminal, raw reads of fd 0 on a pipe)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
from typing import Any, TextIO

from yim.client.terminal.render import display_width


class Screen:
    """Output in line mode. On a terminal, what arrives is printed above the prompt and the
    prompt is drawn again with what was typed so far; on a pipe, lines are just printed."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.prompt = "> "
        self.reading = False  # the input thread waits at the prompt
        self._lock = threading.Lock()
        self._readline: Any = None
        if tty:
            with contextlib.suppress(ImportError):
                import readline

                self._readline = readline

    def line(self, text: str) -> None:
        with self._lock:
            if self.tty and self.reading:
                typed = self._readline.get_line_buffer() if self._readline else ""
                self.out.write(f"\r\x1b[K{text}\n{self.prompt}{typed}")
            else:
                self.out.write(text + "\n")
            self.out.flush()

    def erase_typed(self, typed: str) -> None:
        """Remove the line just typed at the prompt (it is printed again once sent)."""
        if not self.tty:
            return
        columns = max(1, shutil.get_terminal_size().columns)
        rows = max(1, math.ceil(display_width(self.prompt + typed) / columns))
        with self._lock:
            self.out.write("\x1b[1A\x1b[2K" * rows)
            self.out.flush()

    def read(self) -> str | None:
        """One line from the user (None at end of input). Runs in the input thread."""
        if self.tty:
            self.reading = True
            try:
                return input(self.prompt)
            except EOFError:
                return None
            finally:
                self.reading = False
        return _read_stdin_line()


_stdin_buffer = bytearray()


def _read_stdin_line() -> str | None:
    """A line from fd 0 with ``os.read`` (no lock of ``sys.stdin`` is held while waiting, so
    the process can exit while this thread still waits)."""
    while True:
        end = _stdin_buffer.find(b"\n")
        if end >= 0:
            line = bytes(_stdin_buffer[:end])
            del _stdin_buffer[: end + 1]
            return line.decode("utf-8", errors="replace").rstrip("\r")
        chunk = os.read(0, 65536)
        if not chunk:
            if _stdin_buffer:
                line = bytes(_stdin_buffer)
                _stdin_buffer.clear()
                return line.decode("utf-8", errors="replace")
            return None
        _stdin_buffer.extend(chunk)
