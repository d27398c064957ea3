"""How long a VIBE Mocap server takes to stop, at most: ``vibe-mocap serve`` keeps to these times,
and the add-on gives a server it asks to stop that long before it kills it.

Once asked to stop (Ctrl-C, SIGTERM, ``POST /shutdown``, the end of standard input) the server records
its running jobs as queued at once, so that a kill from then on leaves them to run after the restart;
then requests still running get ``REQUEST_GRACE_S``, and the job workers ``JOB_STOP_S``."""

REQUEST_GRACE_S = 15.0
JOB_STOP_S = 10.0
# the longest graceful stop, with a margin for the rest of it (live sessions released, the last line)
GRACEFUL_STOP_S = REQUEST_GRACE_S + JOB_STOP_S + 5.0
