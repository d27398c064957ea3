"""The one error class of VIBE Mocap: its message is a sentence a user can act on."""


class VibeError(Exception):
    """A problem the user can fix (bad file, missing model data, server down, wrong parameter).

    The message says what happened and what to do. Operators report it, the CLI prints it,
    the server turns it into a 4xx JSON reason.
    """
