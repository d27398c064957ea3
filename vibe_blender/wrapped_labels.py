"""Long messages as labels wrapped to a sidebar's width (Blender's labels do not wrap)."""

import textwrap


def label_lines(layout, text: str, icon: str = "INFO", width: int = 48) -> None:
    """``text`` as labels of at most ``width`` characters, broken between words only (a longer word,
    such as a path, keeps a line of its own), ``icon`` on the first only."""
    lines = textwrap.wrap(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)
    for line in lines:
        layout.label(text=line, icon=icon)
        icon = "BLANK1"  # the lines after the first stay aligned with it
