"""What the server tells its clients (remote ones too, on a ``--host 0.0.0.0`` server) names none of
its own folders: the model data folder is named in words (the job store's folders: see
``JobManager.client_text``). The server's log keeps the paths."""

from __future__ import annotations

from pathlib import Path

DATA_FOLDER_WORDS = "the server's model data folder"


def without_data_folder(text: str, data_dir: str | Path | None) -> str:
    """``text`` with the model data folder ``data_dir`` (None: none) in words. Only an absolute
    folder is replaced: a relative one says little, and its name may be a common word ('data')."""
    if data_dir is None or not Path(data_dir).is_absolute():
        return text
    return text.replace(str(data_dir), DATA_FOLDER_WORDS)
