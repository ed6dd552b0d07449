"""The XDS vocabulary: every namespace, UUID, object type, association type, status and error code.

One place for the constants of IHE ITI TF-3 §4.2.5 (classification schemes, external identifiers,
object types), ITI TF-3 §4.2.2 (association types), ITI TF-3 §4.2.4 (error codes, Table 4.2.4.1-2)
and ITI TF-2 §3.18.4.1.2.3.7 (stored query ids). Nothing else in the code base spells these out.
"""

from __future__ import annotations

from typing import Final

# --- namespaces (OASIS ebXML RegRep 3.0, IHE, SOAP 1.2, WS-Addressing) ---------------------------
NS_RIM: Final = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
NS_RS: Final = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
NS_LCM: Final = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
NS_QUERY: Final = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
NS_XDSB: Final = "urn:ihe:iti:xds-b:2007"
NS_RMD: Final = "urn:ihe:iti:rmd:2017"
NS_SOAP12: Final = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA: Final = "http://www.w3.org/2005/08/addressing"
NS_XOP: Final = "http://www.w3.org/2004/08/xop/include"
NS_XML: Final = "http://www.w3.org/XML/1998/namespace"

# ebRIM 2.1 (the NIST test kit's older messages)
NS_RIM21: Final = "urn:oasis:names:tc:ebxml-regrep:rim:xsd:2.1"
NS_RS21: Final = "urn:oasis:names:tc:ebxml-regrep:registry:xsd:2.1"

NSMAP: Final = {"rim": NS_RIM, "rs": NS_RS, "lcm": NS_LCM, "query": NS_QUERY, "xdsb": NS_XDSB}

# --- object types (ITI TF-3 §4.2.5) ---------------------------------------------------------------
DOC_ENTRY_STABLE: Final = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
DOC_ENTRY_ON_DEMAND: Final = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
DOC_ENTRY_TYPES: Final = frozenset({DOC_ENTRY_STABLE, DOC_ENTRY_ON_DEMAND})
SUBMISSION_SET_NODE: Final = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
FOLDER_NODE: Final = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"
ASSOCIATION_DOCUMENTATION: Final = "urn:uuid:abd807a3-4432-4053-87b4-fd82c643d1f3"

OT_REGISTRY_PACKAGE: Final = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"
OT_ASSOCIATION: Final = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"
OT_CLASSIFICATION: Final = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
OT_EXTERNAL_IDENTIFIER: Final = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"

# limitedMetadata is flagged by a classification node (ITI TF-3 §4.1.14, Metadata-Limited Document Source)
LIMITED_METADATA_DOC_ENTRY: Final = "urn:uuid:ab9b591b-83ab-4d03-8f5d-f93b1fb92e85"
LIMITED_METADATA_SUBMISSION_SET: Final = "urn:uuid:5003a9db-8d8d-49e6-bf0c-990e34ac7707"
LIMITED_METADATA_FOLDER: Final = "urn:uuid:2c144a76-29a9-4b7c-af54-b25409fe7d03"

# --- classification schemes (ITI TF-3 Table 4.2.5.2-1 etc.) --------------------------------------
DE_AUTHOR: Final = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS_CODE: Final = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY_CODE: Final = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_EVENT_CODE: Final = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
DE_FORMAT_CODE: Final = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_HEALTHCARE_FACILITY_TYPE_CODE: Final = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE_SETTING_CODE: Final = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE_CODE: Final = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
SS_AUTHOR: Final = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE_CODE: Final = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
FOLDER_CODE_LIST: Final = "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5"

# --- external identifier schemes -------------------------------------------------------------------
DE_PATIENT_ID: Final = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID: Final = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_PATIENT_ID: Final = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID: Final = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID: Final = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
FOLDER_PATIENT_ID: Final = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a"
FOLDER_UNIQUE_ID: Final = "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a"

EXTERNAL_ID_NAMES: Final = {
    DE_PATIENT_ID: "XDSDocumentEntry.patientId",
    DE_UNIQUE_ID: "XDSDocumentEntry.uniqueId",
    SS_PATIENT_ID: "XDSSubmissionSet.patientId",
    SS_SOURCE_ID: "XDSSubmissionSet.sourceId",
    SS_UNIQUE_ID: "XDSSubmissionSet.uniqueId",
    FOLDER_PATIENT_ID: "XDSFolder.patientId",
    FOLDER_UNIQUE_ID: "XDSFolder.uniqueId",
}

# --- association types (ITI TF-3 §4.2.2) -----------------------------------------------------------
HAS_MEMBER: Final = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC: Final = "urn:ihe:iti:2007:AssociationType:RPLC"
XFRM: Final = "urn:ihe:iti:2007:AssociationType:XFRM"
APND: Final = "urn:ihe:iti:2007:AssociationType:APND"
XFRM_RPLC: Final = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC"
SIGNS: Final = "urn:ihe:iti:2007:AssociationType:signs"
IS_SNAPSHOT_OF: Final = "urn:ihe:iti:2010:AssociationType:IsSnapshotOf"
RELATIONSHIP_TYPES: Final = frozenset({RPLC, XFRM, APND, XFRM_RPLC, SIGNS, IS_SNAPSHOT_OF})
REPLACING_TYPES: Final = frozenset({RPLC, XFRM_RPLC})
ASSOCIATION_TYPES: Final = RELATIONSHIP_TYPES | {HAS_MEMBER}
# Metadata Update (ITI TF-2b §3.57.4.1.3.3): a status change, carried by an association that is
# acted on and never stored
UPDATE_AVAILABILITY_STATUS: Final = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"

# ebRIM 2.1 short association names -> 3.0 (used by the ebRIM 2.1 converter)
ASSOCIATION_TYPES_21: Final = {
    "HasMember": HAS_MEMBER,
    "RPLC": RPLC,
    "XFRM": XFRM,
    "APND": APND,
    "XFRM_RPLC": XFRM_RPLC,
    "signs": SIGNS,
}

# --- statuses --------------------------------------------------------------------------------------
STATUS_APPROVED: Final = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
STATUS_DEPRECATED: Final = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
STATUS_SUBMITTED: Final = "urn:oasis:names:tc:ebxml-regrep:StatusType:Submitted"
STATUSES: Final = frozenset({STATUS_APPROVED, STATUS_DEPRECATED, STATUS_SUBMITTED})

RESPONSE_SUCCESS: Final = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
RESPONSE_FAILURE: Final = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
RESPONSE_PARTIAL_SUCCESS: Final = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"

SEVERITY_ERROR: Final = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
SEVERITY_WARNING: Final = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"

# --- SOAP actions (ITI TF-2 per transaction) --------------------------------------------------------
ACTION_REGISTER: Final = "urn:ihe:iti:2007:RegisterDocumentSet-b"
ACTION_REGISTER_RESPONSE: Final = "urn:ihe:iti:2007:RegisterDocumentSet-bResponse"
ACTION_STORED_QUERY: Final = "urn:ihe:iti:2007:RegistryStoredQuery"
ACTION_STORED_QUERY_RESPONSE: Final = "urn:ihe:iti:2007:RegistryStoredQueryResponse"
ACTION_MULTI_PATIENT_QUERY: Final = "urn:ihe:iti:2009:MultiPatientStoredQuery"  # ITI-51
ACTION_MULTI_PATIENT_QUERY_RESPONSE: Final = "urn:ihe:iti:2009:MultiPatientStoredQueryResponse"
ACTION_PROVIDE_AND_REGISTER: Final = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_PROVIDE_AND_REGISTER_RESPONSE: Final = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
ACTION_RETRIEVE: Final = "urn:ihe:iti:2007:RetrieveDocumentSet"
ACTION_RETRIEVE_RESPONSE: Final = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
ACTION_REMOVE_DOCUMENTS: Final = "urn:ihe:iti:2017:RemoveDocuments"  # ITI-86
ACTION_REMOVE_DOCUMENTS_RESPONSE: Final = "urn:ihe:iti:2017:RemoveDocumentsResponse"
ACTION_UPDATE_DOCUMENT_SET: Final = "urn:ihe:iti:2010:UpdateDocumentSet"  # ITI-57
ACTION_UPDATE_DOCUMENT_SET_RESPONSE: Final = "urn:ihe:iti:2010:UpdateDocumentSetResponse"
ACTION_DELETE_DOCUMENT_SET: Final = "urn:ihe:iti:2010:DeleteDocumentSet"  # ITI-62
ACTION_DELETE_DOCUMENT_SET_RESPONSE: Final = "urn:ihe:iti:2010:DeleteDocumentSetResponse"
ACTION_RESTRICTED_UPDATE: Final = "urn:ihe:iti:2018:RestrictedUpdateDocumentSet"  # ITI-92
ACTION_RESTRICTED_UPDATE_RESPONSE: Final = "urn:ihe:iti:2018:RestrictedUpdateDocumentSetResponse"
ACTION_XCA_QUERY: Final = "urn:ihe:iti:2007:CrossGatewayQuery"  # ITI-38
ACTION_XCA_QUERY_RESPONSE: Final = "urn:ihe:iti:2007:CrossGatewayQueryResponse"
ACTION_XCA_RETRIEVE: Final = "urn:ihe:iti:2007:CrossGatewayRetrieve"  # ITI-39
ACTION_XCA_RETRIEVE_RESPONSE: Final = "urn:ihe:iti:2007:CrossGatewayRetrieveResponse"

# --- stored queries (ITI TF-2 §3.18.4.1.2.3.7; multi-patient: ITI TF-2 §3.51.4.1.2) --------------------
SQ_FIND_DOCUMENTS: Final = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
SQ_FIND_DOCUMENTS_BY_REFERENCE_ID: Final = "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492"
SQ_FIND_SUBMISSION_SETS: Final = "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9"
SQ_FIND_FOLDERS: Final = "urn:uuid:958f3006-baad-4929-a4de-ff1114824431"
SQ_GET_ALL: Final = "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3"
SQ_GET_DOCUMENTS: Final = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
SQ_GET_FOLDERS: Final = "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4"
SQ_GET_ASSOCIATIONS: Final = "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155"
SQ_GET_DOCUMENTS_AND_ASSOCIATIONS: Final = "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a"
SQ_GET_SUBMISSION_SETS: Final = "urn:uuid:51224314-5390-4169-9b91-b1980040715a"
SQ_GET_SUBMISSION_SET_AND_CONTENTS: Final = "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83"
SQ_GET_FOLDER_AND_CONTENTS: Final = "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7"
SQ_GET_FOLDERS_FOR_DOCUMENT: Final = "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578"
SQ_GET_RELATED_DOCUMENTS: Final = "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6"
SQ_FIND_DOCUMENTS_MPQ: Final = "urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f"
SQ_FIND_FOLDERS_MPQ: Final = "urn:uuid:50d3f5ac-39a2-11de-a1ca-b366239e58df"
SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ: Final = "urn:uuid:1191642d-86c4-42d8-b784-f95445f9f0d5"

STORED_QUERY_NAMES: Final = {
    SQ_FIND_DOCUMENTS: "FindDocuments",
    SQ_FIND_DOCUMENTS_BY_REFERENCE_ID: "FindDocumentsByReferenceId",
    SQ_FIND_SUBMISSION_SETS: "FindSubmissionSets",
    SQ_FIND_FOLDERS: "FindFolders",
    SQ_GET_ALL: "GetAll",
    SQ_GET_DOCUMENTS: "GetDocuments",
    SQ_GET_FOLDERS: "GetFolders",
    SQ_GET_ASSOCIATIONS: "GetAssociations",
    SQ_GET_DOCUMENTS_AND_ASSOCIATIONS: "GetDocumentsAndAssociations",
    SQ_GET_SUBMISSION_SETS: "GetSubmissionSets",
    SQ_GET_SUBMISSION_SET_AND_CONTENTS: "GetSubmissionSetAndContents",
    SQ_GET_FOLDER_AND_CONTENTS: "GetFolderAndContents",
    SQ_GET_FOLDERS_FOR_DOCUMENT: "GetFoldersForDocument",
    SQ_GET_RELATED_DOCUMENTS: "GetRelatedDocuments",
    SQ_FIND_DOCUMENTS_MPQ: "FindDocumentsForMultiplePatients",
    SQ_FIND_FOLDERS_MPQ: "FindFoldersForMultiplePatients",
    SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ: "FindDocumentsByReferenceIdForMultiplePatients",
}

# ebRS 3.0 §6.3 ResponseOption returnType values XDS uses (ITI TF-2 §3.18.4.1.2.1)
RETURN_LEAF_CLASS: Final = "LeafClass"
RETURN_OBJECT_REF: Final = "ObjectRef"

# DocumentEntry.referenceIdList (ITI TF-3 §4.2.3.2.28): CXi values, a slot with an IHE URN name
SLOT_REFERENCE_ID_LIST: Final = "urn:ihe:iti:xds:2013:referenceIdList"

# documentAvailability (ITI TF-3 §4.2.3.2.28); a DocumentEntry without the attribute is Online
DOCUMENT_AVAILABILITY_ONLINE: Final = "urn:ihe:iti:2010:DocumentAvailability:Online"
DOCUMENT_AVAILABILITY_OFFLINE: Final = "urn:ihe:iti:2010:DocumentAvailability:Offline"

# --- error codes (ITI TF-3 Table 4.2.4.1-2) ---------------------------------------------------------
XDSMissingDocument: Final = "XDSMissingDocument"
XDSMissingDocumentMetadata: Final = "XDSMissingDocumentMetadata"
XDSNonIdenticalHash: Final = "XDSNonIdenticalHash"
XDSNonIdenticalSize: Final = "XDSNonIdenticalSize"
XDSPatientIdDoesNotMatch: Final = "XDSPatientIdDoesNotMatch"
XDSRegistryBusy: Final = "XDSRegistryBusy"
XDSRegistryDeprecatedDocumentError: Final = "XDSRegistryDeprecatedDocumentError"
XDSRegistryDuplicateUniqueIdInMessage: Final = "XDSRegistryDuplicateUniqueIdInMessage"
XDSDuplicateUniqueIdInRegistry: Final = "XDSDuplicateUniqueIdInRegistry"
XDSRegistryError: Final = "XDSRegistryError"
XDSRegistryMetadataError: Final = "XDSRegistryMetadataError"
XDSRegistryNotAvailable: Final = "XDSRegistryNotAvailable"
XDSRegistryOutOfResources: Final = "XDSRegistryOutOfResources"
XDSRepositoryBusy: Final = "XDSRepositoryBusy"
XDSRepositoryDuplicateUniqueIdInMessage: Final = "XDSRepositoryDuplicateUniqueIdInMessage"
XDSRepositoryError: Final = "XDSRepositoryError"
XDSRepositoryMetadataError: Final = "XDSRepositoryMetadataError"
XDSRepositoryNotAvailable: Final = "XDSRepositoryNotAvailable"
XDSRepositoryOutOfResources: Final = "XDSRepositoryOutOfResources"
XDSResultNotSinglePatient: Final = "XDSResultNotSinglePatient"
XDSStoredQueryMissingParam: Final = "XDSStoredQueryMissingParam"
XDSStoredQueryParamNumber: Final = "XDSStoredQueryParamNumber"
XDSTooManyResults: Final = "XDSTooManyResults"
XDSUnknownPatientId: Final = "XDSUnknownPatientId"
XDSUnknownRepositoryId: Final = "XDSUnknownRepositoryId"
XDSUnknownStoredQuery: Final = "XDSUnknownStoredQuery"
XDSDocumentUniqueIdError: Final = "XDSDocumentUniqueIdError"
XDSUnknownCommunity: Final = "XDSUnknownCommunity"
XDSMissingHomeCommunityId: Final = "XDSMissingHomeCommunityId"
XDSUnavailableCommunity: Final = "XDSUnavailableCommunity"
XDSExtraMetadataNotSaved: Final = "XDSExtraMetadataNotSaved"
XDSMetadataUpdateError: Final = "XDSMetadataUpdateError"
XDSReplaceFailed: Final = "XDSReplaceFailed"
UnresolvedReferenceException: Final = "UnresolvedReferenceException"
# Metadata Update (ITI TF-2b §3.57.4.1.3.4), Remove Metadata (§3.62.4.1.3) and Restricted Update
# (ITI TF-2 §3.92.4.1.3)
XDSMetadataVersionError: Final = "XDSMetadataVersionError"
XDSMetadataUpdateOperationError: Final = "XDSMetadataUpdateOperationError"
XDSPatientIDReconciliationError: Final = "XDSPatientIDReconciliationError"
XDSMetadataIdentifierError: Final = "XDSMetadataIdentifierError"
UnmodifiableMetadataError: Final = "UnmodifiableMetadataError"
ReferencesExistException: Final = "ReferencesExistException"
XDSUnreferencedObjectException: Final = "XDSUnreferencedObjectException"
