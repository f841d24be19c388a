"""Command-line programs, run as `python -m tools.<name>` (absl flags; flagfiles in configs/)."""
