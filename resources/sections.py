"""A platform.yaml section as a resource's config, its one shape the section's dataclass.

Dagster's resource config holds plain values, not dataclasses: a resource keeps a section as
the dict of its dataclass's fields (`as_config`) and reads it back into that dataclass
(`section`), which validates it as parsing platform.yaml does. The UI shows those values; their
names, types and defaults are the dataclass's alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def as_config(section: Any) -> dict[str, Any]:
    """A section dataclass as resource config: its fields, tuples as lists. A field that is
    None by default and now is left out (Dagster's config maps hold no None): `section` gives
    it its default again."""
    values = {f.name: getattr(section, f.name) for f in fields(section)}
    unset = {f.name for f in fields(section) if f.default is None and values[f.name] is None}
    return {name: _plain(value) for name, value in values.items() if name not in unset}


def section(cls: type[T], config: Mapping[str, Any]) -> T:
    """The section dataclass again (its sequences are tuples); it validates its values."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
