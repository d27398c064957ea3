"""Long messages as labels wrapped to a sidebar's width (Blender's labels do not wrap)."""


def _wrap(text: str, width: int = 48) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def label_lines(layout, text: str, icon: str = "INFO") -> None:
    """``text`` as labels wrapped to the sidebar's width, ``icon`` on the first only."""
    for line in _wrap(text):
        layout.label(text=line, icon=icon)
        icon = "BLANK1"  # the lines after the first stay aligned with it
