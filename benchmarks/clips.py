"""The benchmark clip: real footage kept in the repository for the tests (see tests/testdata.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from testdata import REAL_CLIPS  # noqa: E402  (needs the path above)

# 768x432, 10 fps, 1394 frames: people walk into a room one at a time (tests/data/real/README.md)
WALKING_CLIP = REAL_CLIPS / "one-by-one-person-detection.mp4"
