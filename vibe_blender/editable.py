"""The one check of whether an object may be changed here for good, which every operator that
writes keys, replaces an action or deletes a character makes before it changes anything."""

from __future__ import annotations

from .core.errors import VibeError


def linked_without_override(obj) -> bool:
    """True for an object linked from another file that is not a library override: the file keeps
    only the link, so whatever changes on it (an action assigned, keys rewritten) is lost when the
    file is saved."""
    return obj.library is not None


def check_editable(obj) -> None:
    """VibeError, before anything changes, for an object whose animation cannot be changed here:
    one linked from another file (no library override), or one with an NLA strip open for tweaking
    (its action is the strip's and cannot be replaced)."""
    if linked_without_override(obj):
        raise VibeError(
            f"'{obj.name}' is linked from '{obj.library.filepath}', so a change to it here would be lost when the "
            "file is saved; make a library override first (Object > Library Override > Make) and use the override."
        )
    if obj.animation_data is not None and obj.animation_data.use_tweak_mode:
        raise VibeError(
            f"'{obj.name}' has an NLA strip open for tweaking, so its action cannot be replaced or rewritten; leave "
            "tweak mode (Tab in the NLA editor), then try again."
        )
