"""The ITI-8 Patient Identity Feed, HL7 v2.5 side: parse an ADT message, update the directory, ACK.

IHE ITI TF-2 §3.8 (Patient Identity Feed) as received by a Document Registry:

* ADT^A01, A04, A05 and A08 (§3.8.4.1) register the patient identifiers of PID-3 that carry an ISO
  assigning authority (CX.4.2 an OID, CX.4.3 ``ISO``), with the demographics of PID-5, PID-7 and PID-8;
* ADT^A40 (§3.8.4.2) merges each identifier of MRG-1 (prior patient identifier list) into the one
  of PID-3 under the same assigning authority.

Messages are HL7 v2.5 ER7 (HL7 v2.5 §2.5–2.7: segments, delimiters from MSH-1/MSH-2, escape
sequences §2.7). Every message gets an original-mode acknowledgment (HL7 v2.5 §2.9.2, ACK with MSA
§2.15.8 and ERR §2.15.5 using error codes of HL7 table 0357): AA when it was applied, AE when its
content is wrong (nothing of it is stored), AR when it cannot be read or is not a message we take.
The deployment profile decides which identifiers are national ones; a malformed national
identifier is an error (ITI TF-2 §3.8.4.1.3 leaves identifier checks to the affinity domain).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from xds.database.faults import BUSY, UNAVAILABLE, classify
from xds.metadata.hl7v2 import is_oid
from xds.profiles import Profile
from xds.registry.patients import MergeRefused, PatientDirectory, canonical_cx

log = logging.getLogger("xds.feed")

REGISTER_TRIGGERS = frozenset({"A01", "A04", "A05", "A08"})
MERGE_TRIGGER = "A40"

# HL7 v2.5 table 0357 (message error condition codes), the ones this feed reports.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_VERSION_ID = "203"
APPLICATION_RECORD_LOCKED = "206"
APPLICATION_INTERNAL_ERROR = "207"
_ERROR_NAMES = {
    APPLICATION_RECORD_LOCKED: "Application record locked",
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}

_MAX_PID = 256  # patients.pid
_MAX_NAME = 200  # patients.family_name / given_name
_MAX_SEX = 8  # patients.sex
_MAX_MSA_TEXT = 80  # MSA-3 length (HL7 v2.5 §2.15.8.3)


# --- ER7 encoding (HL7 v2.5 §2.5.4 delimiters, §2.7 escape sequences) ----------------------------------
@dataclass(frozen=True)
class Delimiters:
    """The message delimiters: field (MSH-1), component, repetition, escape, subcomponent (MSH-2)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


STANDARD = Delimiters()


def _split(text: str, sep: str) -> list[str]:
    return text.split(sep) if sep else [text]


def unescape(text: str, d: Delimiters) -> str:
    """``text`` with the escape sequences of HL7 v2.5 §2.7 replaced by what they stand for.

    ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` give the delimiters, ``\\Xhh..\\`` the bytes in hex; formatting
    and character-set sequences (``\\H\\``, ``\\.br\\``, ``\\Cxxyy\\``...) are dropped.
    """
    esc = d.escape
    if not esc or esc not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = text.find(esc, i + 1)
        if end < 0:  # a lone escape character stands for itself
            out.append(text[i:])
            break
        seq = text[i + 1 : end]
        i = end + 1
        named = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": esc}
        if seq in named:
            out.append(named[seq])
        elif seq[:1] == "X" and len(seq) > 1:
            try:
                data = bytes.fromhex(seq[1:])
            except ValueError:
                continue
            try:
                out.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(data.decode("latin-1"))
    return "".join(out)


def escape(text: str) -> str:
    """``text`` made safe as a leaf value under the standard delimiters ``|^~\\&`` (HL7 v2.5 §2.7.1).

    Line breaks, which would end the segment, become spaces.
    """
    table = {
        "\\": "\\E\\",
        "|": "\\F\\",
        "^": "\\S\\",
        "&": "\\T\\",
        "~": "\\R\\",
        "\r": " ",
        "\n": " ",
    }
    return "".join(table.get(ch, ch) for ch in text)


@dataclass
class _Message:
    """A parsed ER7 message: per segment its fields, so that ``seg[n]`` is field n (MSH too)."""

    delims: Delimiters
    segments: list[list[str]]
    trigger: str = ""
    message_type: str = ""

    @property
    def msh(self) -> list[str]:
        return self.segments[0]

    def raw(self, seg: list[str], n: int) -> str:
        return seg[n] if n < len(seg) else ""

    def repetitions(self, raw: str) -> list[str]:
        return _split(raw, self.delims.repetition)

    def components(self, raw: str) -> list[str]:
        return _split(raw, self.delims.component)

    def subcomponents(self, raw: str) -> list[str]:
        return _split(raw, self.delims.subcomponent)

    def text(self, raw: str) -> str:
        return unescape(raw, self.delims)

    def value(self, seg: list[str], n: int, component: int = 1, subcomponent: int = 1) -> str:
        """The unescaped leaf of field n (first repetition) at component / subcomponent (1-based)."""
        comps = self.components(self.repetitions(self.raw(seg, n))[0])
        if component > len(comps):
            return ""
        subs = self.subcomponents(comps[component - 1])
        return self.text(subs[subcomponent - 1]) if subcomponent <= len(subs) else ""

    def reencode(self, raw: str) -> str:
        """A field of this message re-encoded with the standard delimiters, for echoing in the ACK."""
        d = self.delims
        return STANDARD.repetition.join(
            STANDARD.component.join(
                STANDARD.subcomponent.join(escape(unescape(s, d)) for s in self.subcomponents(c))
                for c in self.components(r)
            )
            for r in self.repetitions(raw)
        )


class _Reject(Exception):
    """A message we answer with AE or AR: its HL7 table 0357 code, error location and text."""

    def __init__(self, ack_code: str, error_code: str, location: str, text: str) -> None:
        super().__init__(text)
        self.ack_code = ack_code
        self.error_code = error_code
        self.location = location
        self.text = text


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _parse(text: str) -> _Message:
    """Split an ER7 message into segments and fields (HL7 v2.5 §2.5, §2.6)."""
    lines = [line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line.strip()]
    if lines:
        lines[0] = lines[0].lstrip("\ufeff \t")
    if not lines or not lines[0].startswith("MSH"):
        raise _Reject("AR", SEGMENT_SEQUENCE_ERROR, "MSH", "the message does not begin with an MSH segment")
    header = lines[0]
    if len(header) < 5:
        raise _Reject("AR", REQUIRED_FIELD_MISSING, "MSH^1^2", "MSH has no encoding characters")
    fs = header[3]
    encoding = header[4:].split(fs, 1)[0]
    chars = [fs, *encoding]
    if (
        fs.isalnum()
        or fs.isspace()
        or not 1 <= len(encoding) <= 5
        or len(set(chars)) != len(chars)
        or any(c.isalnum() or c.isspace() for c in encoding)
    ):
        raise _Reject("AR", DATA_TYPE_ERROR, "MSH^1^2", "MSH-1/MSH-2 do not give usable delimiters")
    padded = encoding[:4].ljust(4, "\0")
    delims = Delimiters(
        field=fs,
        component=padded[0].strip("\0"),
        repetition=padded[1].strip("\0"),
        escape=padded[2].strip("\0"),
        subcomponent=padded[3].strip("\0"),
    )
    segments: list[list[str]] = []
    for i, line in enumerate(lines):
        parts = line.split(fs)
        if i == 0:
            parts = ["MSH", fs, *parts[1:]]  # so that seg[n] is MSH-n
        segments.append(parts)
    return _Message(delims, segments)


# --- the ACK (HL7 v2.5 §2.9.2 original acknowledgment; MSA §2.15.8; ERR §2.15.5) ---------------------
def _ack(msg: _Message | None, code: str, reject: _Reject | None = None) -> str:
    def echo(n: int) -> str:
        return msg.reencode(msg.raw(msg.msh, n)) if msg is not None else ""

    trigger = escape(msg.trigger) if msg is not None else ""
    message_type = f"ACK^{trigger}^ACK" if trigger else "ACK"
    processing = echo(11) or "P"
    version = echo(12) or "2.5"
    now = datetime.now().strftime("%Y%m%d%H%M%S")
    control = uuid.uuid4().hex[:20]
    msh = f"MSH|^~\\&|{echo(5)}|{echo(6)}|{echo(3)}|{echo(4)}|{now}||{message_type}|{control}|{processing}|{version}"
    msa = f"MSA|{code}|{echo(10)}"
    segments = [msh]
    if reject is None:
        segments.append(msa)
    else:
        segments.append(f"{msa}|{escape(reject.text[:_MAX_MSA_TEXT])}")
        error = f"{reject.error_code}^{_ERROR_NAMES.get(reject.error_code, '')}^HL70357"
        segments.append(f"ERR||{reject.location}|{error}|E||||{escape(reject.text)}")
    return "\r".join(segments)


def _fallback_ack() -> str:
    """The answer when even building an ACK failed: no echoed content at all."""
    now = datetime.now().strftime("%Y%m%d%H%M%S")
    return "\r".join(
        [
            f"MSH|^~\\&|||||{now}||ACK|{uuid.uuid4().hex[:20]}|P|2.5",
            "MSA|AE||internal error",
            f"ERR|||{APPLICATION_INTERNAL_ERROR}^Application internal error^HL70357|E||||internal error",
        ]
    )


# --- the header -------------------------------------------------------------------------------------
def _check_header(msg: _Message) -> None:
    """Message type ADT with a trigger event this registry takes (MSH-9, or EVN-1); a control id."""
    msg.message_type = msg.value(msg.msh, 9, 1)
    msg.trigger = msg.value(msg.msh, 9, 2)
    if not msg.trigger:
        evn = next((s for s in msg.segments if s[0] == "EVN"), None)
        if evn is not None:
            msg.trigger = msg.value(evn, 1)
    if not msg.value(msg.msh, 10):
        raise _Reject("AR", REQUIRED_FIELD_MISSING, "MSH^1^10", "MSH-10 (message control id) is empty")
    if not msg.message_type:
        raise _Reject("AR", REQUIRED_FIELD_MISSING, "MSH^1^9", "MSH-9 (message type) is empty")
    if msg.message_type != "ADT":
        raise _Reject(
            "AR",
            UNSUPPORTED_MESSAGE_TYPE,
            "MSH^1^9",
            f"message type {msg.message_type!r} is not supported (only ADT)",
        )
    if any(seg[0] == "MSH" for seg in msg.segments[1:]):
        # one frame, one message (HL7 v2.5 Appendix C §C.4.2): a second would go unanswered
        raise _Reject("AR", SEGMENT_SEQUENCE_ERROR, "MSH^2", "a second MSH segment: one message per frame")
    version = msg.value(msg.msh, 12, 1)
    if not version.startswith("2."):
        raise _Reject(
            "AR",
            UNSUPPORTED_VERSION_ID,
            "MSH^1^12",
            f"HL7 version {version!r} is not supported (ITI-8 is HL7 v2.3.1 to 2.x)",
        )
    if not msg.trigger:
        raise _Reject("AR", REQUIRED_FIELD_MISSING, "MSH^1^9^1^2", "no trigger event in MSH-9.2 or EVN-1")
    if msg.trigger not in REGISTER_TRIGGERS and msg.trigger != MERGE_TRIGGER:
        raise _Reject(
            "AR",
            UNSUPPORTED_EVENT_CODE,
            "MSH^1^9^1^2",
            f"trigger event {msg.trigger!r} is not supported (only A01, A04, A05, A08, A40)",
        )


# --- identifiers and demographics ------------------------------------------------------------------
def _identifiers(msg: _Message, seg: list[str], n: int, seq: int, profile: Profile) -> list[tuple[str, str]]:
    """The (canonical CX, authority OID) of every repetition of field n with an ISO OID authority.

    Raises AE when none qualifies or when one is a malformed national identifier.
    """
    name = seg[0]
    found: list[tuple[str, str]] = []
    for rep_no, rep in enumerate(msg.repetitions(msg.raw(seg, n)), 1):
        comps = msg.components(rep)
        ident = msg.text(comps[0]).strip()
        hd = msg.subcomponents(comps[3]) if len(comps) > 3 else []
        oid = msg.text(hd[1]).strip() if len(hd) > 1 else ""
        kind = msg.text(hd[2]).strip() if len(hd) > 2 else ""
        if not ident or kind != "ISO" or not is_oid(oid):
            continue
        location = f"{name}^{seq}^{n}^{rep_no}"
        if any(c in ident for c in "^~\\&|") or any(c.isspace() or not c.isprintable() for c in ident):
            raise _Reject(
                "AE",
                DATA_TYPE_ERROR,
                location,
                f"identifier {ident!r} contains delimiters, spaces or controls",
            )
        status = profile.patient_id_status(ident, oid)
        if status == "malformed":
            raise _Reject(
                "AE",
                DATA_TYPE_ERROR,
                location,
                f"{ident} is not a valid national identity number under {oid}; nothing was stored",
            )
        canonical = canonical_cx(f"{ident}^^^&{oid}&ISO")
        if len(canonical) > _MAX_PID:
            raise _Reject("AE", DATA_TYPE_ERROR, location, "patient identifier is too long")
        if (canonical, oid) not in found:
            found.append((canonical, oid))
    if not found:
        raise _Reject(
            "AE",
            REQUIRED_FIELD_MISSING,
            f"{name}^{seq}^{n}",
            f"{name}-{n} has no identifier with an ISO OID assigning authority (CX.4.2, CX.4.3); "
            "nothing was stored",
        )
    return found


def _optional(value: str, limit: int) -> str | None:
    """An HL7 field value for storage: None when empty (no change), '' for the HL7 null ``""``;
    control characters (NUL, or a line end sent as an escape) are dropped."""
    if not value:
        return None
    if value == '""':
        return ""
    return "".join(c for c in value if c.isprintable())[:limit]


def _register(msg: _Message, directory: PatientDirectory, profile: Profile) -> None:
    """ADT^A01/A04/A05/A08: register every PID-3 identifier with its demographics (ITI TF-2 §3.8.4.1)."""
    pid = next((s for s in msg.segments if s[0] == "PID"), None)
    if pid is None:
        raise _Reject(
            "AE", SEGMENT_SEQUENCE_ERROR, "PID", "the message has no PID segment; nothing was stored"
        )
    identifiers = _identifiers(msg, pid, 3, 1, profile)
    family = _optional(msg.value(pid, 5, 1, 1), _MAX_NAME)
    given = _optional(msg.value(pid, 5, 2), _MAX_NAME)
    birth = _optional(msg.value(pid, 7, 1)[:8], 8)
    sex = _optional(msg.value(pid, 8, 1), _MAX_SEX)
    directory.register_all(
        [canonical for canonical, _ in identifiers],
        family_name=family,
        given_name=given,
        birth_date=birth,
        sex=sex,
    )


def _merge(msg: _Message, directory: PatientDirectory, profile: Profile) -> None:
    """ADT^A40: merge each MRG-1 identifier into the PID-3 one of its authority (ITI TF-2 §3.8.4.2).

    The message may repeat the PID/MRG group; an MRG-1 identifier whose assigning authority has no
    identifier in PID-3 is merged into the first PID-3 identifier.
    """
    pairs: list[tuple[str, str]] = []
    where: list[str] = []  # the MRG-1 field of each pair, for the ERR segment
    surviving: list[tuple[str, str]] | None = None
    pid_seq = mrg_seq = 0
    awaiting_mrg = False
    for seg in msg.segments:
        if seg[0] == "PID":
            if awaiting_mrg:
                raise _Reject(
                    "AE", SEGMENT_SEQUENCE_ERROR, f"PID^{pid_seq}", "a PID segment has no MRG segment"
                )
            pid_seq += 1
            surviving = _identifiers(msg, seg, 3, pid_seq, profile)
            awaiting_mrg = True
        elif seg[0] == "MRG":
            mrg_seq += 1
            if surviving is None or not awaiting_mrg:
                raise _Reject(
                    "AE", SEGMENT_SEQUENCE_ERROR, f"MRG^{mrg_seq}", "an MRG segment has no PID before it"
                )
            by_authority = {oid: cx for cx, oid in reversed(surviving)}
            for old, oid in _identifiers(msg, seg, 1, mrg_seq, profile):
                pairs.append((old, by_authority.get(oid, surviving[0][0])))
                where.append(f"MRG^{mrg_seq}^1")
            awaiting_mrg = False
    if pid_seq == 0:
        raise _Reject(
            "AE", SEGMENT_SEQUENCE_ERROR, "PID", "the message has no PID segment; nothing was stored"
        )
    if awaiting_mrg:
        raise _Reject(
            "AE", SEGMENT_SEQUENCE_ERROR, "MRG", "the message has no MRG segment; nothing was stored"
        )
    # every pair in one transaction, each judged after the ones before it: all applied or none
    try:
        directory.merge_all(pairs)
    except MergeRefused as refused:
        raise _Reject(
            "AE", APPLICATION_INTERNAL_ERROR, where[refused.index], f"{refused}; nothing was stored"
        ) from refused


def _failure(exc: Exception) -> _Reject:
    """The AE for a message the registry could not apply: a database locked past ``[registry]
    lock_wait_s`` is 206 (application record locked), to be sent again; anything else 207."""
    kind = classify(exc)
    if kind == BUSY:
        log.warning("ITI-8: the registry's database is locked (%s); the message was refused", exc)
        text = "the registry's database is locked by another process; nothing was stored; send it again"
        return _Reject("AE", APPLICATION_RECORD_LOCKED, "", text)
    log.exception("ITI-8: the patient identity feed message could not be applied")
    what = "its database is not available" if kind == UNAVAILABLE else "internal error"
    return _Reject("AE", APPLICATION_INTERNAL_ERROR, "", f"the registry could not apply the message ({what})")


# --- entry point ------------------------------------------------------------------------------------
def handle_message(raw: bytes, directory: PatientDirectory, profile: Profile) -> str:
    """Apply one ITI-8 message (ITI TF-2 §3.8) and return its HL7 v2.5 ACK, segments ending in ``\\r``.

    Never raises: an unexpected failure is logged and answered with AE (HL7 table 0357 code 207).
    """
    msg: _Message | None = None
    try:
        msg = _parse(_decode(raw))
        _check_header(msg)
        if msg.trigger == MERGE_TRIGGER:
            _merge(msg, directory, profile)
        else:
            _register(msg, directory, profile)
        return _ack(msg, "AA")
    except _Reject as reject:
        try:
            return _ack(msg, reject.ack_code, reject)
        except Exception:
            log.exception("ITI-8: could not build the acknowledgment")
            return _fallback_ack()
    except Exception as exc:
        generic = _failure(exc)
        try:
            return _ack(msg, "AE", generic)
        except Exception:
            log.exception("ITI-8: could not build the acknowledgment")
            return _fallback_ack()
