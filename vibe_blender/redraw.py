"""Panel redraws for state that changes outside an operator (a worker thread's capture, live session
or server start): Blender redraws an area only when something tags it."""

from __future__ import annotations

import bpy


def redraw_panels(area_types: tuple[str, ...] = ("VIEW_3D",)) -> None:
    """Tag every area of these types, in every window, for a redraw (none where the context has no
    window manager)."""
    window_manager = getattr(bpy.context, "window_manager", None)
    for window in getattr(window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in area_types:
                area.tag_redraw()
