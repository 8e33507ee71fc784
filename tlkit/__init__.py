"""tlkit: the small helper library of the transfer-learning course.

Import the module you need (``from tlkit import freeze``); nothing heavy happens at import time.
Modules, one per concern: settings, device, freeze, train, checkpoint, features, plots, exercises,
download, safeio, data (splits and the course datasets), models (the course backbones).
"""

__version__ = "0.1.0"
