"""The local member registry: a real Django + Django REST framework app shaped like Ekklesia's.

``seed`` generates members (and planted bad rows) in the sync's row shape; ``standin`` serves them
from Django models over HTTP (``/api/members/eligible/``, Ekklesia's ``/felagar/api/full/``).
A dev/test dependency only (``.[dev]``): production code never imports this package.
"""

from .seed import (  # the names the single-module simulator had, for existing imports
    DEFAULT_TOKEN,
    FIRST,
    LAST,
    WEIGHTS,
    RegistryData,
    RegistryTruth,
    _person,
    check_digit,
    generate_registry,
    make_kennitala,
)
from .standin import DjangoRegistrySimulator

__all__ = [
    "DEFAULT_TOKEN",
    "FIRST",
    "LAST",
    "WEIGHTS",
    "_person",
    "DjangoRegistrySimulator",
    "RegistryData",
    "RegistryTruth",
    "check_digit",
    "generate_registry",
    "make_kennitala",
]
