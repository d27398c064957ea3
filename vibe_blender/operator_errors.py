"""The one way an operator of the add-on reports a user error: decorate its ``execute`` with
:func:`reports_errors` and raise :class:`VibeError`; the message becomes one ERROR report and the
operator is cancelled (nothing half-done is kept by Blender's undo step)."""

from __future__ import annotations

import functools

from .core.errors import VibeError


def reports_errors(execute):
    """Wrap an operator's ``execute(self, context)``: a VibeError -> ``self.report({'ERROR'}, msg)``
    and ``{'CANCELLED'}``. Other exceptions are bugs and propagate unchanged."""

    @functools.wraps(execute)
    def wrapper(self, context):  # two named arguments: Blender checks execute's signature
        try:
            return execute(self, context)
        except VibeError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}

    return wrapper
