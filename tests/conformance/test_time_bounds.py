"""A query bounded by ``$now$`` finds what was stored a moment before, every time.

The registry stamps a new Folder's lastUpdateTime with the current second, and a query's upper
time bound is exclusive; ``$now$`` cut to the second would leave out a folder stored in the same
second as the query (most runs). The plan below stores a folder and at once asks for the folders
updated up to ``$now$``: it passes on every run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from support import kit_session

from xds.conformance import report

QUERY = """<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
    xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
  <query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/>
  <AdhocQuery id="urn:uuid:958f3006-baad-4929-a4de-ff1114824431">
    <Slot name="$XDSFolderPatientId"><ValueList><Value>'$patient_id$'</Value></ValueList></Slot>
    <Slot name="$XDSFolderStatus"><ValueList>
      <Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</Value></ValueList></Slot>
    <Slot name="$XDSFolderLastUpdateTimeFrom"><ValueList><Value>$lastyear$</Value></ValueList></Slot>
    <Slot name="$XDSFolderLastUpdateTimeTo"><ValueList><Value>$now$</Value></ValueList></Slot>
  </AdhocQuery>
</query:AdhocQueryRequest>"""

SUBMIT = """<TestPlan><Test>timebound/submit</Test><TestStep id="submit">
  <ExpectedStatus>Success</ExpectedStatus>
  <RegisterTransaction><XDSb/><NewPatientId/><MetadataFile>metadata.xml</MetadataFile></RegisterTransaction>
</TestStep></TestPlan>"""

FIND = """<TestPlan><Test>timebound/query</Test><TestStep id="find">
  <ExpectedStatus>Success</ExpectedStatus>
  <StoredQueryTransaction><XDSb/><MetadataFile>query.xml</MetadataFile>
    <UseId testdir="../submit" id="x" symbol="$patient_id$" step="submit" section="AssignedPatientId"/>
    <ExpectedContents><Folders count="1"/></ExpectedContents>
  </StoredQueryTransaction>
</TestStep></TestPlan>"""


def test_folder_stored_this_second_is_within_now(testkit: Path, tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    shutil.copytree(testkit / "tests" / "15817", kit / "tests" / "15817")
    test = kit / "tests" / "timebound"
    (test / "submit").mkdir(parents=True)
    (test / "query").mkdir()
    shutil.copy(testkit / "tests" / "12323" / "has_time" / "metadata.xml", test / "submit" / "metadata.xml")
    (test / "submit" / "testplan.xml").write_text(SUBMIT)
    (test / "query" / "testplan.xml").write_text(FIND)
    (test / "query" / "query.xml").write_text(QUERY)
    (test / "index.idx").write_text("submit\nquery\n")
    with kit_session(tmp_path / "run") as session:
        session.testkit = kit
        outcomes = [report.run_test(session, "timebound") for _ in range(5)]
    assert [r.outcome for r in outcomes] == ["passed"] * 5, [r.reason for r in outcomes]
