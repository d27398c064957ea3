"""Text that came from outside (a server's answer, a file's names and notes), made safe to show in a
message or Blender's UI: printable characters only, and a bounded length."""

from __future__ import annotations

MAX_TEXT_CHARS = 1000  # server messages shown in the UI


def display_text(value, limit: int = MAX_TEXT_CHARS) -> str:
    """``value`` as text of printable characters only, at most ``limit`` long."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"
