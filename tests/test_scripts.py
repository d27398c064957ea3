"""The setup and test scripts' disk-space check: too little room stops them with one message that
says what needs the space and what to do, before pip or a test fails deep inside on a full disk."""

import subprocess
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def need_free_space(mib: int, folder: Path) -> subprocess.CompletedProcess:
    script = f'source scripts/free_space.sh && need_free_space {mib} "{folder}" "the thing" && echo fits'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPOSITORY, timeout=60)


def test_too_little_space_stops_with_one_message(tmp_path):
    done = need_free_space(10**12, tmp_path)  # a million TiB
    assert done.returncode == 1 and done.stdout == ""
    message = done.stderr.strip()
    assert message.startswith(f"Not enough disk space for the thing: it needs about {10**12} MiB in {tmp_path}")
    assert "MiB free. Free some space" in message and len(message.splitlines()) == 1


def test_enough_space_goes_on_silently(tmp_path):
    done = need_free_space(1, tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "fits\n", "")
