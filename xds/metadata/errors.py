"""XDS errors: one exception carries an IHE error code, its context and location.

The SOAP layer turns a list of these into a ``rs:RegistryErrorList`` (ITI TF-3 §4.2.4); envelope-level
problems become SOAP faults instead (see ``xds.soap.fault``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xds.metadata import vocabulary as v


@dataclass(frozen=True, slots=True)
class XdsError:
    """One entry of a RegistryErrorList (ITI TF-3 §4.2.4)."""

    code: str
    context: str
    location: str = ""
    severity: str = v.SEVERITY_ERROR

    @property
    def is_error(self) -> bool:
        return self.severity == v.SEVERITY_ERROR


class XdsException(Exception):
    """Raised to abandon a transaction with one or more XDS errors (all or nothing)."""

    def __init__(self, errors: XdsError | Iterable[XdsError]) -> None:
        self.errors: list[XdsError] = [errors] if isinstance(errors, XdsError) else list(errors)
        super().__init__("; ".join(f"{e.code}: {e.context}" for e in self.errors))

    @classmethod
    def of(cls, code: str, context: str, location: str = "") -> XdsException:
        return cls(XdsError(code, context, location))
