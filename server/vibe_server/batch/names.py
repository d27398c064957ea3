"""The names of the files a batch keeps in OUTDIR itself, next to the results."""

MANIFEST_NAME = "manifest.jsonl"
SUMMARY_NAME = "summary.txt"
LOCK_NAME = ".batch.lock"  # one batch per OUTDIR (runner.output_lock)
OWN_FILES = (MANIFEST_NAME, SUMMARY_NAME, LOCK_NAME)
