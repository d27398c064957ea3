"""How long a VIBE Mocap server takes to stop, at most: ``vibe-mocap serve`` keeps to these times,
and the add-on gives a server it asks to stop that long before it kills it.

Once asked to stop (Ctrl-C, SIGTERM, ``POST /shutdown``, the end of standard input) the server records
its running jobs as queued at once, so that a kill from then on leaves them to run after the restart;
then requests still running get ``REQUEST_GRACE_S``, and the job workers ``JOB_STOP_S``."""

REQUEST_GRACE_S = 15.0
JOB_STOP_S = 10.0
# A live source's read returns within 10 s (a stream's read timeout, OpenCV's V4L2 select on a camera):
# stopping a source waits this long for its reader, so that the camera is released when it returns.
READER_STOP_S = 12.0
# a live session asked to stop, then its source released (server/vibe_server/api/live.py)
LIVE_SESSION_STOP_S = 5.0
SOURCE_RELEASE_S = READER_STOP_S + 1.0
LIVE_STOP_S = LIVE_SESSION_STOP_S + SOURCE_RELEASE_S
# the longest graceful stop, with a margin for the rest of it (the last line)
GRACEFUL_STOP_S = REQUEST_GRACE_S + JOB_STOP_S + LIVE_STOP_S + 2.0
