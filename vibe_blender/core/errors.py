"""The one error class of VIBE Mocap: its message is a sentence a user can act on."""


class VibeError(Exception):
    """A problem the user can fix (bad file, missing model data, server down, wrong parameter).

    The message says what happened and what to do. Operators report it, the CLI prints it,
    the server turns it into a 4xx JSON reason.
    """


def failure_words(err: BaseException) -> str:
    """Why a file could not be parsed, in words: a parser's own exception ("EOFError: ", "KeyError: 101")
    tells a user nothing."""
    if isinstance(err, EOFError):
        return "it ends too early: cut short, e.g. by an interrupted download"
    text = str(err).strip()
    if isinstance(err, (KeyError, IndexError, AttributeError, TypeError)) or not text:
        return "its content is not laid out as expected"
    return text[:200]
