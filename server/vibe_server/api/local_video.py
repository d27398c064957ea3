"""A video a loopback client names by its path on the server's disk (a job's local path, a live
session's file): one answer whether it is missing, unreadable or not a video, so that a client
learns nothing about files it could not read itself (the server's log says which)."""

from __future__ import annotations

from fastapi import HTTPException


def unreadable_local_video(label: str, what_to_do: str, headers: dict[str, str] | None = None) -> HTTPException:
    """415 for the path the client sent as ``label`` (already shortened: ``json_body.shown``)."""
    return HTTPException(415, f"'{label}' is not a readable video file on this machine; {what_to_do}.", headers=headers)
