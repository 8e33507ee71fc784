"""Private support code of tlkit (atomic writes, checksummed downloads, safe reading of downloads).

Not part of the course's public surface: lessons and notebooks use tlkit.checkpoint, tlkit.export, tlkit.features
and the data loaders, which call this. The old import paths tlkit.download and tlkit.safeio re-export what they had.
"""
