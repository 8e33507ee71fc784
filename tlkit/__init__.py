"""tlkit: the small helper library of the transfer-learning course.

Import the module you need (``from tlkit import freeze``); nothing heavy happens at import time.
Modules, one per concern: settings, device, freeze (with splitters), train (with loop, metrics, lr_finder, progress),
checkpoint, features, baseline, advisor, explain, export, plots, audio, distributed, exercises, doctor,
data (splits, the course datasets, your own folders), models (the course backbones, one registry).
Support code the lessons do not teach (downloads, safe I/O, atomic writes) is private, in tlkit._support.
"""

__version__ = "0.1.0"
