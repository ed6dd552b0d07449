"""rs:RegistryResponse and rs:RegistryErrorList (ebRS 3.0 §2.1.6; ITI TF-3 §4.2.4)."""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError

_RS = "{" + v.NS_RS + "}"
_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;"})


def response_status(errors: Iterable[XdsError], *, partial: bool = False) -> str:
    """Success when no error has Error severity; otherwise Failure, or PartialSuccess if asked."""
    if any(e.is_error for e in errors):
        return v.RESPONSE_PARTIAL_SUCCESS if partial else v.RESPONSE_FAILURE
    return v.RESPONSE_SUCCESS


def error_list_xml(errors: list[XdsError], prefix: str = "rs") -> str:
    """The rs:RegistryErrorList element as text ('' when there are no errors)."""
    if not errors:
        return ""
    highest = v.SEVERITY_ERROR if any(e.is_error for e in errors) else v.SEVERITY_WARNING
    out = [f'<{prefix}:RegistryErrorList highestSeverity="{highest}">']
    for e in errors:
        location = f' location="{e.location.translate(_ESC)}"' if e.location else ""
        out.append(
            f'<{prefix}:RegistryError codeContext="{e.context.translate(_ESC)}"'
            f' errorCode="{e.code.translate(_ESC)}"{location} severity="{e.severity}"/>'
        )
    out.append(f"</{prefix}:RegistryErrorList>")
    return "".join(out)


def registry_response(
    errors: list[XdsError] | None = None, *, status: str | None = None, slots: dict[str, str] | None = None
) -> bytes:
    """A complete rs:RegistryResponse (the answer to ITI-42 and ITI-41); ``slots`` become its
    rs:ResponseSlotList (ebRS 3.0 RegistryResponseType, before the error list)."""
    errors = errors or []
    status = status or response_status(errors)
    slot_list = ""
    if slots:
        slot_list = (
            f'<rs:ResponseSlotList xmlns:rim="{v.NS_RIM}">'
            + "".join(
                f'<rim:Slot name="{name.translate(_ESC)}"><rim:ValueList><rim:Value>{value.translate(_ESC)}'
                "</rim:Value></rim:ValueList></rim:Slot>"
                for name, value in slots.items()
            )
            + "</rs:ResponseSlotList>"
        )
    return (
        f'<rs:RegistryResponse xmlns:rs="{v.NS_RS}" status="{status}">'
        f"{slot_list}{error_list_xml(errors)}</rs:RegistryResponse>"
    ).encode()


def response_slots(el: etree._Element) -> dict[str, list[str]]:
    """The rs:ResponseSlotList of a RegistryResponse by slot name (empty when it has none)."""
    rim = "{" + v.NS_RIM + "}"
    slot_list = el.find(_RS + "ResponseSlotList")
    if slot_list is None:
        return {}
    return {
        slot.get("name", ""): [value.text or "" for value in slot.iter(rim + "Value")]
        for slot in slot_list.findall(rim + "Slot")
    }


def parse_registry_response(el: etree._Element) -> tuple[str, list[XdsError]]:
    """Status and errors of a RegistryResponse (or any response carrying a RegistryErrorList)."""
    status = el.get("status", "")
    errors = [
        XdsError(
            code=e.get("errorCode", ""),
            context=e.get("codeContext", ""),
            location=e.get("location", ""),
            severity=e.get("severity", v.SEVERITY_ERROR),
        )
        for e in el.iter(_RS + "RegistryError")
    ]
    return status, errors
