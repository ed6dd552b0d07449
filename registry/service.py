"""The Document Registry actor as an ASGI service: ITI-42 and ITI-18/51 at ``POST /registry``, ITI-8 over MLLP.

ITI TF-2 §3.42 (Register Document Set-b), §3.18 (Registry Stored Query), §3.51 (Multi-Patient
Stored Query) and §3.8 (Patient Identity Feed); the SOAP binding is ITI TF-2 Appendix V. Database work runs in worker threads so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from sqlalchemy import Engine

from xds.audit.events import submission_ids
from xds.config import Config
from xds.database import migrate, open_engine, run_blocking
from xds.database.faults import REGISTRY, Answer, FailureAnswers
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsException
from xds.metadata.registry_response import registry_response
from xds.profiles import get_profile
from xds.registry.access import RegistryAccess
from xds.registry.patients import PatientDirectory
from xds.registry.register import Registrar
from xds.registry.remove_metadata import Remover, patients_of, read_remove_request
from xds.registry.stored_query import StoredQueryEngine, query_response
from xds.registry.update import Updater
from xds.soap.endpoint import SoapEndpoint
from xds.soap.envelope import SoapRequest, SoapResponse
from xds.trust.policy import REMOVE

log = logging.getLogger("xds.registry")


class RegistryService:
    """One registry: its database, patient directory, profile and SOAP handlers."""

    def __init__(self, config: Config, *, engine: Engine | None = None) -> None:
        self.config = config
        rc = config.registry
        self.engine = engine or open_engine(rc.url(config.server.data_dir), pool_size=rc.pool_size)
        self.profile = get_profile(rc.profile)
        self.patients = PatientDirectory(self.engine)
        self.registrar = Registrar(self.engine, self.patients, self.profile)
        self.updater = Updater(self.registrar)
        self.remover = Remover(self.registrar)
        self.queries = StoredQueryEngine(
            self.engine,
            self.patients,
            home_community_id=rc.home_community_id,
            max_results=rc.max_query_results,
            time_limit=rc.query_time_limit_s,
        )
        self.access = RegistryAccess(self.engine, self.patients, config.access_policy())
        self._mllp: asyncio.AbstractServer | None = None
        # told of each ITI-8 message and its acknowledgement (the audit trail)
        self.feed_observer: Callable[[bytes, str], None] | None = None

    def prepare(self) -> None:
        """Create or upgrade the schema (run once before serving)."""
        migrate(self.engine)

    # --- ITI-42 -----------------------------------------------------------------------------------
    async def register(self, request: SoapRequest) -> SoapResponse:
        """ITI-42 Register Document Set-b (ITI TF-2 §3.42.4.1)."""
        answer = await self.register_body(request.body, request.security, request.facts)
        return SoapResponse(v.ACTION_REGISTER_RESPONSE, answer)

    async def register_body(
        self, body: object, security: object = None, facts: dict[str, object] | None = None
    ) -> bytes:
        """The RegistryResponse for an ITI-42 body; a verified requester (``security``) must be
        allowed to write every object (the access policy, ``xds.registry.access``). ``facts``: the
        request's, told the submission's patient and SubmissionSet for the audit."""
        try:
            sub = ebrim.parse_submit_objects_request(body)  # type: ignore[arg-type]
            if facts is not None:
                facts["submission"] = submission_ids(sub)  # (read once: the audit needs them too)
            who = self.access.requester(security)
            if who is not None:
                refused = await run_blocking(self.access.check_submission, who, sub)
                if refused:
                    return registry_response(refused)
            await self.registrar.register_together(sub, self.access.recording(who, sub))
        except XdsException as exc:
            return registry_response(exc.errors)
        except Exception as exc:  # the database or the disk failed: the profile's error for it
            return registry_response(REGISTRY.errors(exc, wrote=True))
        return registry_response()

    # --- ITI-57 / ITI-92 ---------------------------------------------------------------------------
    async def update(self, request: SoapRequest) -> SoapResponse:
        """ITI-57 Update Document Set (ITI TF-2b §3.57.4.1) and ITI-92 Restricted Update Document
        Set (ITI TF-2 §3.92.4.1), by action."""
        restricted = request.action == v.ACTION_RESTRICTED_UPDATE
        action = v.ACTION_RESTRICTED_UPDATE_RESPONSE if restricted else v.ACTION_UPDATE_DOCUMENT_SET_RESPONSE
        try:
            sub = ebrim.parse_submit_objects_request(request.body)  # type: ignore[arg-type]
            request.facts["submission"] = submission_ids(sub)  # for the audit
            who = self.access.requester(request.security)
            if who is not None:
                refused = await run_blocking(self.access.check_update, who, sub)
                if refused:
                    return SoapResponse(action, registry_response(refused))
            await self.updater.update(
                sub, restricted=restricted, recording=lambda stored: self.access.recording(who, stored)
            )
        except XdsException as exc:
            return SoapResponse(action, registry_response(exc.errors))
        except Exception as exc:  # the database or the disk failed: the profile's error for it
            return SoapResponse(action, registry_response(REGISTRY.errors(exc, wrote=True)))
        return SoapResponse(action, registry_response())

    # --- ITI-62 -----------------------------------------------------------------------------------
    async def remove_metadata(self, request: SoapRequest) -> SoapResponse:
        """ITI-62 Remove Metadata (ITI TF-2b §3.62.4.1): all the objects named, or none."""
        action = v.ACTION_DELETE_DOCUMENT_SET_RESPONSE
        try:
            ids = read_remove_request(request.body)  # type: ignore[arg-type]
            request.facts["patients"] = await run_blocking(self._patients_of, ids)  # for the audit
            who = self.access.requester(request.security)
            if who is not None:
                refused = await run_blocking(self.access.check_change, who, ids, REMOVE)
                if refused:
                    return SoapResponse(action, registry_response(refused))
            await self.remover.remove(ids)
        except XdsException as exc:
            return SoapResponse(action, registry_response(exc.errors))
        except Exception as exc:
            return SoapResponse(action, registry_response(REGISTRY.errors(exc, wrote=True)))
        return SoapResponse(action, registry_response())

    def _patients_of(self, ids: list[str]) -> list[str]:
        with self.engine.connect() as conn:
            return patients_of(conn, ids)

    # --- ITI-18 / ITI-51 ----------------------------------------------------------------------------
    async def stored_query(self, request: SoapRequest) -> SoapResponse:
        """ITI-18 Registry Stored Query (ITI TF-2 §3.18.4.1) and ITI-51 (§3.51.4.1), by action."""
        action = (
            v.ACTION_MULTI_PATIENT_QUERY_RESPONSE
            if request.action == v.ACTION_MULTI_PATIENT_QUERY
            else v.ACTION_STORED_QUERY_RESPONSE
        )
        return SoapResponse(action, await self.query_body(request.body, request.security))

    async def query_body(self, body: object, security: object = None) -> bytes:
        """The AdhocQueryResponse for an AdhocQueryRequest; the database work runs in a worker thread.

        For a verified requester (``security``) the answer holds only the selected objects the
        access policy releases to it (:meth:`xds.registry.access.RegistryAccess.release`)."""
        who = self.access.requester(security)
        release = None if who is None else functools.partial(self.access.release, who)
        try:
            return await run_blocking(self.queries.answer, body, release)
        except Exception as exc:
            return query_response(REGISTRY.errors(exc))

    def endpoint(self) -> SoapEndpoint:
        max_body = self.config.server.max_body_mb * 1024 * 1024
        return SoapEndpoint(
            {
                v.ACTION_REGISTER: self.register,
                v.ACTION_STORED_QUERY: self.stored_query,
                v.ACTION_MULTI_PATIENT_QUERY: self.stored_query,
                v.ACTION_UPDATE_DOCUMENT_SET: self.update,
                v.ACTION_RESTRICTED_UPDATE: self.update,
                v.ACTION_DELETE_DOCUMENT_SET: self.remove_metadata,
            },
            max_body_bytes=max_body,
            read_timeout=self.config.server.read_timeout_s,
            failure=FailureAnswers(
                REGISTRY,
                {
                    v.ACTION_STORED_QUERY: Answer(
                        REGISTRY, v.ACTION_STORED_QUERY_RESPONSE, query_response, False
                    ),
                    v.ACTION_MULTI_PATIENT_QUERY: Answer(
                        REGISTRY, v.ACTION_MULTI_PATIENT_QUERY_RESPONSE, query_response, False
                    ),
                },
            ),
        )

    # --- ITI-8 ------------------------------------------------------------------------------------
    async def start_feed(self) -> None:
        rc = self.config.registry
        if not rc.mllp_port:
            return
        from xds.registry.mllp import serve_mllp
        from xds.registry.pix_feed import handle_message

        self.patients.write_on(asyncio.get_running_loop())  # the handler runs in a thread

        def handler(raw: bytes) -> str:
            ack = handle_message(raw, self.patients, self.profile)
            if self.feed_observer is not None:
                self.feed_observer(raw, ack)
            return ack

        host = rc.mllp_host or self.config.server.host
        self._mllp = await serve_mllp(host, rc.mllp_port, handler)
        log.info("ITI-8 patient identity feed listening on mllp://%s:%s", host, rc.mllp_port)

    async def stop_feed(self) -> None:
        if self._mllp is not None:
            self._mllp.close()
            await self._mllp.wait_closed()
            self._mllp = None
