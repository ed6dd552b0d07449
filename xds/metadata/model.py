"""The XDS object model over ebRIM 3.0 (ITI TF-3 §4.1 and §4.2.3).

A registry object is kept as ebRIM presents it (slots, classifications, external identifiers,
localized strings) so that nothing a submitter sent is lost; the XDS attributes (patientId,
uniqueId, codes, authors, ...) are read through properties that name them as ITI TF-3 §4.2.3 does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from xds.metadata import vocabulary as v


@dataclass(slots=True)
class LocalizedString:
    """rim:LocalizedString: a value with optional xml:lang and charset."""

    value: str
    lang: str | None = None
    charset: str | None = None


@dataclass(slots=True)
class Slot:
    """rim:Slot: a named list of string values (ebRIM 3.0 §4.2.4)."""

    name: str
    values: list[str] = field(default_factory=list)
    slot_type: str | None = None


@dataclass(slots=True)
class Code:
    """A coded value: code, coding scheme and display name (ITI TF-3 §4.2.3.1.2)."""

    code: str
    scheme: str
    display_name: str = ""

    def as_query_value(self) -> str:
        """The ``code^^scheme`` form used by stored-query parameters (ITI TF-2 §3.18.4.1.2.3.7)."""
        return f"{self.code}^^{self.scheme}"


@dataclass(slots=True)
class Author:
    """The author of a DocumentEntry or SubmissionSet (ITI TF-3 §4.2.3.1.4)."""

    person: str = ""
    institutions: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    specialties: list[str] = field(default_factory=list)
    telecoms: list[str] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class RegistryObject:
    """Common part of every ebRIM identifiable object."""

    id: str
    lid: str | None = None
    home: str | None = None
    status: str | None = None
    object_type: str | None = None
    name: list[LocalizedString] = field(default_factory=list)
    description: list[LocalizedString] = field(default_factory=list)
    version_name: str | None = None
    slots: list[Slot] = field(default_factory=list)
    classifications: list[Classification] = field(default_factory=list)
    external_ids: list[ExternalIdentifier] = field(default_factory=list)

    # --- slots ---------------------------------------------------------------------------------
    def slot(self, name: str) -> Slot | None:
        for s in self.slots:
            if s.name == name:
                return s
        return None

    def slot_values(self, name: str) -> list[str]:
        s = self.slot(name)
        return s.values if s is not None else []

    def slot_value(self, name: str) -> str | None:
        values = self.slot_values(name)
        return values[0] if values else None

    def set_slot(self, name: str, values: list[str]) -> None:
        s = self.slot(name)
        if s is None:
            self.slots.append(Slot(name, list(values)))
        else:
            s.values = list(values)

    # --- classifications and identifiers ------------------------------------------------------
    def classifications_of(self, scheme: str) -> list[Classification]:
        return [c for c in self.classifications if c.classification_scheme == scheme]

    def has_node(self, node: str) -> bool:
        return any(c.classification_node == node for c in self.classifications)

    def codes(self, scheme: str) -> list[Code]:
        return [c.as_code() for c in self.classifications_of(scheme)]

    def code(self, scheme: str) -> Code | None:
        found = self.codes(scheme)
        return found[0] if found else None

    def external_id(self, scheme: str) -> str | None:
        for e in self.external_ids:
            if e.identification_scheme == scheme:
                return e.value
        return None

    def set_external_id(self, scheme: str, value: str) -> None:
        for e in self.external_ids:
            if e.identification_scheme == scheme:
                e.value = value

    def authors(self, scheme: str) -> list[Author]:
        out = []
        for c in self.classifications_of(scheme):
            out.append(
                Author(
                    person=c.slot_value("authorPerson") or "",
                    institutions=c.slot_values("authorInstitution"),
                    roles=c.slot_values("authorRole"),
                    specialties=c.slot_values("authorSpecialty"),
                    telecoms=c.slot_values("authorTelecommunication"),
                )
            )
        return out

    @property
    def title(self) -> str | None:
        return self.name[0].value if self.name else None

    @property
    def comments(self) -> str | None:
        return self.description[0].value if self.description else None

    def nested(self) -> Iterator[RegistryObject]:
        """This object followed by its classifications and external identifiers."""
        yield self
        yield from self.classifications
        yield from self.external_ids


@dataclass(slots=True, eq=False)
class Classification(RegistryObject):
    """rim:Classification: external (scheme + nodeRepresentation) or internal (node)."""

    classified_object: str = ""
    classification_scheme: str | None = None
    classification_node: str | None = None
    node_representation: str | None = None

    def as_code(self) -> Code:
        return Code(
            code=self.node_representation or "",
            scheme=self.slot_value("codingScheme") or "",
            display_name=self.title or "",
        )


@dataclass(slots=True, eq=False)
class ExternalIdentifier(RegistryObject):
    """rim:ExternalIdentifier: patientId, uniqueId, sourceId (ITI TF-3 §4.2.3)."""

    registry_object: str = ""
    identification_scheme: str = ""
    value: str = ""


@dataclass(slots=True, eq=False)
class DocumentEntry(RegistryObject):
    """XDSDocumentEntry: a rim:ExtrinsicObject, stable or on-demand (ITI TF-3 §4.2.3.2)."""

    mime_type: str = ""
    is_opaque: bool | None = None

    @property
    def patient_id(self) -> str | None:
        return self.external_id(v.DE_PATIENT_ID)

    @property
    def unique_id(self) -> str | None:
        return self.external_id(v.DE_UNIQUE_ID)

    @property
    def is_on_demand(self) -> bool:
        return self.object_type == v.DOC_ENTRY_ON_DEMAND

    @property
    def hash(self) -> str | None:
        return self.slot_value("hash")

    @property
    def size(self) -> str | None:
        return self.slot_value("size")

    @property
    def repository_unique_id(self) -> str | None:
        return self.slot_value("repositoryUniqueId")

    @property
    def limited_metadata(self) -> bool:
        return self.has_node(v.LIMITED_METADATA_DOC_ENTRY)


@dataclass(slots=True, eq=False)
class RegistryPackage(RegistryObject):
    """rim:RegistryPackage: a SubmissionSet or a Folder, told apart by classification node."""

    @property
    def is_submission_set(self) -> bool:
        return self.has_node(v.SUBMISSION_SET_NODE)

    @property
    def is_folder(self) -> bool:
        return self.has_node(v.FOLDER_NODE)

    @property
    def patient_id(self) -> str | None:
        return self.external_id(v.SS_PATIENT_ID if self.is_submission_set else v.FOLDER_PATIENT_ID)

    @property
    def unique_id(self) -> str | None:
        return self.external_id(v.SS_UNIQUE_ID if self.is_submission_set else v.FOLDER_UNIQUE_ID)


@dataclass(slots=True, eq=False)
class Association(RegistryObject):
    """rim:Association between two registry objects (ITI TF-3 §4.2.2)."""

    association_type: str = ""
    source_object: str = ""
    target_object: str = ""


@dataclass(slots=True)
class ObjectRef:
    """rim:ObjectRef: a reference to an object already in the registry (or a scheme)."""

    id: str
    home: str | None = None


@dataclass(slots=True, eq=False)
class Submission:
    """The content of one lcm:SubmitObjectsRequest, in document order.

    Top-level classifications that classify a package as SubmissionSet or Folder are attached to
    that package by the codec, so ``packages`` already know what they are.
    """

    objects: list[RegistryObject] = field(default_factory=list)
    object_refs: list[ObjectRef] = field(default_factory=list)
    request_slots: list[Slot] = field(default_factory=list)

    @property
    def documents(self) -> list[DocumentEntry]:
        return [o for o in self.objects if isinstance(o, DocumentEntry)]

    @property
    def packages(self) -> list[RegistryPackage]:
        return [o for o in self.objects if isinstance(o, RegistryPackage)]

    @property
    def submission_sets(self) -> list[RegistryPackage]:
        return [p for p in self.packages if p.is_submission_set]

    @property
    def folders(self) -> list[RegistryPackage]:
        return [p for p in self.packages if p.is_folder]

    @property
    def associations(self) -> list[Association]:
        return [o for o in self.objects if isinstance(o, Association)]

    def by_id(self) -> dict[str, RegistryObject]:
        return {o.id: o for o in self.objects}
