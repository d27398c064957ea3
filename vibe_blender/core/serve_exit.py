"""Exit statuses of ``vibe-mocap serve`` that the program launching it acts on (the add-on's own
server, ``local_server.py``). A status, not words: the system writes its errors in the user's
language (a German Windows' "address in use" holds none of the English words)."""

# another program holds the port: a start on another port may work (sysexits.h's EX_TEMPFAIL)
PORT_TAKEN_EXIT_STATUS = 75
