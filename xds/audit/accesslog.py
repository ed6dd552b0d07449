"""The citizen's access log as a person reads it: who (person, HPR number, organisation), when,
why (purpose of use), what (the transaction, the documents), and whether it was break-the-glass
(BTG: emergency access without the usual grounds, flagged for follow-up)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WHAT = {
    "ITI-18": "searched the record",
    "ITI-51": "searched the record",
    "ITI-38": "searched the record (another community)",
    "ITI-43": "read documents",
    "ITI-39": "read documents (another community)",
    "ITI-41": "added documents",
    "ITI-42": "registered documents",
    "ITI-57": "changed document metadata",
    "ITI-92": "changed document metadata",
    "ITI-62": "deleted document entries",
    "ITI-86": "removed documents",
    "ITI-8": "patient identity feed",
}
COLUMNS = ("time", "who", "HPR", "organisation", "purpose", "what", "documents", "outcome")


def describe(row: dict[str, Any]) -> list[str]:
    outcome = {"0": "ok", "4": "partly failed", "8": "refused/failed", "12": "failed"}.get(
        row["outcome"], row["outcome"]
    )
    purpose = row["purpose_of_use"] + (" BREAK-THE-GLASS" if row["break_the_glass"] else "")
    return [
        row["time"].replace("T", " ").rstrip("Z")[:19],
        row["who"] or "-",
        row["hpr_number"] or "-",
        row["organisation"] or "-",
        purpose.strip() or "-",
        f"{row['transaction']} {WHAT.get(row['transaction'], row['event'])}".strip(),
        ", ".join(row["documents"]) or "-",
        outcome,
    ]


def table(patient: str, rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table, newest first, with a line naming the break-the-glass accesses."""
    if not rows:
        return f"no recorded access to the record of {patient}"
    cells = [list(COLUMNS)] + [describe(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for c in cells]
    btg = sum(1 for r in rows if r["break_the_glass"])
    lines.append("")
    lines.append(f"{len(rows)} accesses to the record of {patient}")
    if btg:
        lines.append(f"{btg} break-the-glass accesses: flagged for follow-up")
    return "\n".join(lines)
