"""What each audited transaction is called in an audit message.

The "Audit Record Considerations" section of each transaction gives the EventID, EventActionCode
and EventTypeCode on each side: ITI-8 ITI TF-2a §3.8.5.1, ITI-18 §3.18.5.1, ITI-41 ITI TF-2b
§3.41.5.1, ITI-42 §3.42.5.1, ITI-43 §3.43.6.1, ITI-51 §3.51.5.1, ITI-86 ITI TF-2b §3.86.5.1;
XCA: ITI-38 §3.38.5.1 (the Responding Gateway audits as a Document Registry does ITI-18, the
Initiating Gateway as a Document Consumer, with EventTypeCode ITI-38), ITI-39 §3.39.5.1 (the
Responding Gateway as a Document Repository does ITI-43: Export, "R"; the Initiating Gateway as a
Document Consumer: Import, "C"); the lifecycle transactions: ITI-57 Update Document Set §3.57.5
(Document Registry Import, Document Administrator Export, both "U" Update), ITI-62 Remove Metadata
§3.62.5 (Patient Record, "D" Delete on both sides; named "Delete Document Set" before the XDS
Metadata Update supplement entered the TF), ITI-92 Restricted Update Document Set (RMU
supplement §3.92.5: Update Responder Import, Update Initiator Export, both "U"). A transaction
that arrives later plugs in with one :func:`register` call naming its SOAP action and the
:class:`Transaction`; :func:`by_action` is how events find it.
"""

from __future__ import annotations

from dataclasses import dataclass

from xds.audit.message import Code

IHE = "IHE Transactions"
QUERY = Code("110112", "DCM", "Query")
IMPORT = Code("110107", "DCM", "Import")
EXPORT = Code("110106", "DCM", "Export")
PATIENT_RECORD = Code("110110", "DCM", "Patient Record")
DELETED = Code("110105", "DCM", "DICOM Study Deleted")  # its name in DICOM PS3.16 CID 400
# a refused or failed security check (DICOM PS3.16 CID 400/401)
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")
LOGIN = Code("110122", "DCM", "Login")
EMERGENCY_OVERRIDE = Code("110127", "DCM", "Emergency Override Started")


@dataclass(frozen=True)
class Transaction:
    """How one transaction is audited, seen from the side named ``side``.

    ``kind`` says what the objects are read from: ``query`` (AdhocQueryRequest: the query and its
    patients), ``submission`` (a SubmissionSet and its patient), ``documents`` (DocumentRequests).
    """

    number: str  # "ITI-18"
    name: str
    event_id: Code
    responder_action: str  # EventActionCode on the responding side
    requester_action: str  # ... and on the requesting side
    kind: str

    @property
    def type_code(self) -> Code:
        return Code(self.number, IHE, self.name)

    def event_for(self, responder: bool) -> Code:
        """The EventID on one side: what one side exports the other imports (e.g. ITI-41 is
        Export at the Document Source, Import at the Repository; ITI-43 the other way round)."""
        if responder:
            return self.event_id
        return {IMPORT: EXPORT, EXPORT: IMPORT}.get(self.event_id, self.event_id)


ITI_8 = Transaction("ITI-8", "Patient Identity Feed", PATIENT_RECORD, "C", "C", "feed")
ITI_18 = Transaction("ITI-18", "Registry Stored Query", QUERY, "E", "E", "query")
ITI_38 = Transaction("ITI-38", "Cross Gateway Query", QUERY, "E", "E", "query")
ITI_39 = Transaction("ITI-39", "Cross Gateway Retrieve", EXPORT, "R", "C", "documents")
ITI_41 = Transaction("ITI-41", "Provide and Register Document Set-b", IMPORT, "C", "R", "submission")
ITI_42 = Transaction("ITI-42", "Register Document Set-b", IMPORT, "C", "R", "submission")
ITI_43 = Transaction("ITI-43", "Retrieve Document Set", EXPORT, "R", "C", "documents")
ITI_51 = Transaction("ITI-51", "Multi-Patient Stored Query", QUERY, "E", "E", "query")
ITI_57 = Transaction("ITI-57", "Update Document Set", IMPORT, "U", "U", "submission")
ITI_62 = Transaction("ITI-62", "Remove Metadata", PATIENT_RECORD, "D", "D", "references")
ITI_86 = Transaction("ITI-86", "Remove Documents", DELETED, "D", "D", "documents")
ITI_92 = Transaction("ITI-92", "Restricted Update Document Set", IMPORT, "U", "U", "submission")

_BY_ACTION: dict[str, Transaction] = {
    "urn:ihe:iti:2007:RegistryStoredQuery": ITI_18,
    "urn:ihe:iti:2009:MultiPatientStoredQuery": ITI_51,
    "urn:ihe:iti:2007:RegisterDocumentSet-b": ITI_42,
    "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b": ITI_41,
    "urn:ihe:iti:2007:RetrieveDocumentSet": ITI_43,
    "urn:ihe:iti:2017:RemoveDocuments": ITI_86,
    "urn:ihe:iti:2007:CrossGatewayQuery": ITI_38,
    "urn:ihe:iti:2007:CrossGatewayRetrieve": ITI_39,
    "urn:ihe:iti:2010:UpdateDocumentSet": ITI_57,
    "urn:ihe:iti:2010:DeleteDocumentSet": ITI_62,
    "urn:ihe:iti:2018:RestrictedUpdateDocumentSet": ITI_92,
}


def register(action: str, transaction: Transaction) -> None:
    """Audit the SOAP ``action`` as ``transaction`` (a later transaction plugs in here)."""
    _BY_ACTION[action] = transaction


def by_action(action: str) -> Transaction | None:
    return _BY_ACTION.get(action)
