"""Where the test material kept in the repository lives (``tests/data/``, see the README.md in real/ and fixtures/).

One definition for the Python suite (tests/conftest.py puts this folder on ``sys.path``), the
Blender suite (tests/blender/conftest.py, which runs without tests/conftest.py) and the benchmarks.
Only the standard library: it is imported inside Blender's Python too.
"""

from pathlib import Path

TEST_DATA = Path(__file__).resolve().parent / "data"
REAL_CLIPS = TEST_DATA / "real"  # four CC BY 4.0 clips: three of people, one without anyone
FIXTURES = TEST_DATA / "fixtures"  # made with the official VIBE code
OFFICIAL_PKL = FIXTURES / "official_vibe_output.pkl"
UNIT_REFERENCE = FIXTURES / "vibe_unit_reference.npz"
HOG_DETECTIONS = FIXTURES / "hog_detections.npz"  # OpenCV HOG on every frame of the REAL_CLIPS
SAMPLE = TEST_DATA.parents[1] / "samples" / "one-person-walk.mp4"  # the clip the Quick start runs on
