"""`edge.core`: plumbing every other package may use; it imports nothing of edge outside itself.

errors.py    EdgeError (one line, exit 2), signal handling
io.py        atomic files and folders, hashes, YAML
fields.py    dataclass-driven config parsing: types, ranges and enums from the fields
cli.py       the entry points' prologue, flags generated from config fields, error-to-exit-code epilogue
progress.py  stage timer and progress on stderr
machine.py   CPU name, peak RSS, library versions
quiet.py     dependency noise kept off the user's screen
memory.py    heap trimming, copy-and-release of mapped tensors
"""
