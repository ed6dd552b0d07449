"""Several repositories in one deployment, one per institution, one registering over HTTP (ITI-42)."""

from __future__ import annotations

from pathlib import Path

from support import RunningServer, make_config

from xds import samples
from xds.client import RepositoryClient, describe_files
from xds.config import RepositoryConfig
from xds.metadata import vocabulary as v


def test_two_institutions(tmp_path: Path, database_url: str) -> None:
    cfg = make_config(tmp_path / "data", database_url)
    registry_url = f"http://127.0.0.1:{cfg.server.port}/registry"
    cfg.repositories = [
        RepositoryConfig(name="ahus", unique_id="2.16.578.1.12.4.5.100.1"),
        RepositoryConfig(name="kommune", unique_id="2.16.578.1.12.4.5.100.2", registry_url=registry_url),
    ]
    doc = tmp_path / "svar.xml"
    doc.write_bytes(b"<Svarrapport>Hb 13.2</Svarrapport>")
    patient = samples.patient_cx("13116900216")
    with RunningServer(cfg) as server:
        found = {}
        for name, repo_id in (("ahus", "2.16.578.1.12.4.5.100.1"), ("kommune", "2.16.578.1.12.4.5.100.2")):
            sub, docs = describe_files([doc], patient)
            with RepositoryClient(f"{server.url}/repository/{name}") as client:
                outcome = client.provide_and_register(sub, docs)
                assert outcome.ok, (name, outcome.errors)
                uid = sub.documents[0].unique_id or ""
                got, files = client.retrieve(repo_id, [uid], tmp_path / name)
                assert got.ok and files[0].path.read_bytes() == doc.read_bytes()
            found[name] = (repo_id, uid)
        # the default path is the first repository; it does not serve the other one's documents
        repo_id, uid = found["kommune"]
        with RepositoryClient(f"{server.url}/repository") as client:
            got, files = client.retrieve(repo_id, [uid], tmp_path / "wrong")
        assert not files and [e.code for e in got.errors] == [v.XDSUnknownRepositoryId]
        # the registry knows each document with its own repository
        from sqlalchemy import select

        from xds.registry import schema as t

        engine = server.app.state.registry.engine
        with engine.connect() as conn:
            rows = dict(
                conn.execute(select(t.documents.c.unique_id, t.documents.c.repository_unique_id)).all()
            )
        assert rows == {found["ahus"][1]: found["ahus"][0], found["kommune"][1]: found["kommune"][0]}

        # after a crash the remote-registering repository asks the registry (ITI-18) about pending rows
        from xds.repository.schema import repository_documents as rd

        kommune = server.app.state.repositories["kommune"]
        with kommune.engine.begin() as conn:
            conn.execute(rd.update().where(rd.c.unique_id == found["kommune"][1]).values(state="pending"))
            sha1 = conn.execute(select(rd.c.sha1).where(rd.c.unique_id == found["kommune"][1])).scalar_one()
            conn.execute(
                rd.insert().values(
                    repository_id=found["kommune"][0],
                    unique_id="2.16.578.1.12.4.5.100.2.404",
                    sha1=sha1,
                    size=1,
                    mime_type="text/xml",
                    state="pending",
                    created="20261122000000",
                )
            )
        counts = kommune.recover()
        assert (counts["confirmed"], counts["discarded"], counts["undecided"]) == (1, 1, 0)
