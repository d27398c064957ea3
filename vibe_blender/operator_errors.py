"""The one way an operator of the add-on reports a user error: decorate its ``execute`` with
:func:`reports_errors` and raise :class:`VibeError`; the message becomes one ERROR report and the
operator is cancelled.

Cancelling rolls nothing back: Blender pushes no undo step for a cancelled operator, and whatever
it changed before the error stays in the scene. So an operator checks (and reads) everything it
needs before it changes anything, and one working on several characters either works out all of
them first or says which ones it changed."""

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
