"""The ``xds`` command: serve the actors, write a configuration, run the benchmarks.

``xds serve --host H --port P --data-dir D`` runs the registry at ``POST /registry`` on the
embedded default (SQLite and files in D); ``xds serve --config FILE`` for everything else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from xds import config as config_mod
from xds.console import TerminalProgress, network_failure
from xds.service_log import configure_logging, startup_warnings

DESCRIPTION = "IHE XDS.b document registry, repositories and XCA gateways, with Norway's national profile"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from xds.server import CONFIG_ENV, build_app

    cfg = config_mod.load(args.config)
    s, r = cfg.server, cfg.registry
    if args.host is not None:
        s.host = args.host
    if args.port is not None:
        s.port = args.port
    if args.data_dir is not None:
        s.data_dir = args.data_dir
    if args.workers is not None:
        s.workers = args.workers
    if args.database_url is not None:
        r.database_url = args.database_url
    if args.mllp_port is not None:
        r.mllp_port = args.mllp_port
    if args.profile is not None:
        r.profile = args.profile
    for name in ("tls_cert", "tls_key", "tls_ca"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    configure_logging(s)
    for warning in startup_warnings(cfg):
        logging.getLogger("xds").warning(warning)

    from xds.operations import prepare_multiprocess
    from xds.operations.health import startup_problems

    errors, warnings = startup_problems(cfg)
    for line in warnings:
        print(f"xds: warning: {line}", file=sys.stderr, flush=True)
    if errors:
        for line in errors:
            print(f"xds: cannot serve: {line}", file=sys.stderr, flush=True)
        return 1
    prepare_multiprocess(s.data_dir)  # before prometheus_client is imported, here or in a worker
    # Create or upgrade the schema once, before any worker starts.
    app = build_app(cfg, prepare=True)
    print(
        f"xds: registry at http://{s.host}:{s.port}/registry (data in {Path(s.data_dir).resolve()})",
        flush=True,
    )
    for repo in app.state.repositories.values():
        print(
            f"xds: repository {repo.name} ({repo.unique_id}) at http://{s.host}:{s.port}/repository/{repo.name}",
            flush=True,
        )
    if r.mllp_port:
        print(f"xds: ITI-8 patient identity feed at mllp://{r.mllp_host or s.host}:{r.mllp_port}", flush=True)
    if s.workers <= 1:
        uvicorn.run(
            app,
            host=s.host,
            port=s.port,
            log_level=s.log_level,
            access_log=False,
            log_config=None,  # uvicorn's loggers go through configure_logging's handler
            limit_concurrency=s.max_connections,
            timeout_graceful_shutdown=s.drain_s,
            **s.uvicorn_protocol(),  # type: ignore[arg-type]
        )
    else:
        os.environ[CONFIG_ENV] = json.dumps(cfg.to_dict())
        uvicorn.run(
            "xds.server:app_from_environment",
            factory=True,
            host=s.host,
            port=s.port,
            workers=s.workers,
            log_level=s.log_level,
            access_log=False,
            log_config=None,  # uvicorn's loggers go through configure_logging's handler
            limit_concurrency=s.max_connections,
            timeout_graceful_shutdown=s.drain_s,
            **s.uvicorn_protocol(),  # type: ignore[arg-type]
        )
    return 0


def _backup_or_restore(args: argparse.Namespace) -> int:
    """``xds backup DIR`` / ``xds restore DIR`` (xds.operations.backup)."""
    from xds.operations import backup

    cfg = config_mod.load(args.config)
    if args.data_dir is not None:
        cfg.server.data_dir = args.data_dir
    if args.database_url is not None:
        cfg.registry.database_url = args.database_url
    run = backup.backup if args.command == "backup" else backup.restore
    try:
        summary = run(cfg, Path(args.dir))
    except backup.BackupError as exc:
        print(f"xds: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    print(f"xds: {args.command} {args.dir}: {summary.line()}")
    return 0


def _init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"xds: {path} exists (use --force to overwrite)", file=sys.stderr)
        return 1
    path.write_text(config_mod.default_toml())
    print(f"xds: wrote {path}")
    return 0


def _signing_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that make a client command sign (WS-Security + XUA, ITI TF-2 §3.40) and check answers."""
    g = parser.add_argument_group("signing (WS-Security with a XUA assertion; default: unsigned)")
    g.add_argument("--config", help="take sign_cert, sign_key and ca_file from this file's [trust]")
    g.add_argument("--sign-cert", help="this institution's certificate (PEM): sign the request")
    g.add_argument("--sign-key", help="its private key (PEM file)")
    g.add_argument("--ca-file", help="anchors the answer's signer must chain to: answers are verified")
    g.add_argument("--assertion", help="a signed XUA assertion (XML file) from the identity provider")
    g.add_argument("--idp-cert", help="or make one: the identity provider's certificate (PEM)")
    g.add_argument("--idp-key", help="... and its private key (development keys from xds keys init)")
    g.add_argument(
        "--issuer", default="https://idp.xds.invalid", help="the assertion's Issuer (default %(default)s)"
    )
    g.add_argument("--audience", help="the assertion's audience (default: scheme://host[:port] of --url)")
    g.add_argument("--subject-id", help="who asks (subject-id), e.g. a name or HPR-qualified id")
    g.add_argument("--hpr", default="", help="HPR number of the health professional")
    g.add_argument("--role", default="", help="role code (Volven 9060)")
    g.add_argument("--organisation", default="", help="organisation name")
    g.add_argument("--organisation-id", default="", help="organisasjonsnummer")
    g.add_argument("--purpose", default="TREAT", help="purpose of use (default %(default)s)")
    g.add_argument("--care", default="", help="care relationship: the healthcare service")


def _channel(args: argparse.Namespace, patient: str):  # type: ignore[no-untyped-def]
    """The SecureChannel the signing flags describe, or None when they ask for no signing."""
    from urllib.parse import urlsplit

    sign_cert, sign_key, ca_file = args.sign_cert, args.sign_key, args.ca_file
    if args.config:
        tc = config_mod.load(args.config).trust
        sign_cert, sign_key = sign_cert or tc.sign_cert, sign_key or tc.sign_key
        ca_file = ca_file or tc.ca_file
    if not (sign_cert and sign_key):
        if args.assertion or args.idp_key:
            raise ValueError("signing needs --sign-cert and --sign-key (or [trust] sign_cert/sign_key)")
        return None
    from xds.safexml import parse
    from xds.trust.assertion import TrustAttributes
    from xds.trust.keys import TrustAnchors
    from xds.trust.wssecurity import MessageSigner, SecureChannel

    cert, key = Path(sign_cert).read_bytes(), Path(sign_key).read_bytes()
    if args.assertion:
        signer = MessageSigner(key, cert, assertion=parse(Path(args.assertion).read_bytes()))
    elif args.idp_key and args.idp_cert and args.subject_id:
        attributes = TrustAttributes(
            subject_id=args.subject_id,
            hpr_number=args.hpr,
            role=args.role,
            organisation=args.organisation,
            organisation_id=args.organisation_id,
            purpose_of_use=args.purpose,
            healthcare_service=args.care,
            resource_id=patient,
        )
        url = urlsplit(args.url)
        signer = MessageSigner.with_attributes(
            key,
            cert,
            attributes,
            idp_key_pem=Path(args.idp_key).read_bytes(),
            idp_cert_pem=Path(args.idp_cert).read_bytes(),
            issuer=args.issuer,
            audience=args.audience or f"{url.scheme}://{url.netloc}",
        )
    else:
        raise ValueError("signing needs --assertion FILE, or --idp-cert, --idp-key and --subject-id")
    return SecureChannel(signer, TrustAnchors([ca_file]) if ca_file else None)


def _patient_cx(args: argparse.Namespace) -> str:
    return args.patient if "^" in args.patient else f"{args.patient}^^^&{args.patient_oid}&ISO"


@contextlib.contextmanager
def _client_auditor() -> Iterator[object]:
    """The requesting side's audit trail for one command (ITI TF-2a §3.20): the syslog collectors
    of ``[audit] syslog`` / ``XDS_AUDIT_SYSLOG``, spooled under the data directory; None without."""
    cfg = config_mod.load(None)
    if not cfg.audit.syslog.strip():
        yield None
        return
    from xds.audit.observer import ClientAuditor, default_source
    from xds.audit.syslog import SyslogSink, parse_targets
    from xds.audit.trail import AuditTrail

    ac = cfg.audit
    sinks = [
        SyslogSink(t, ca_file=ac.syslog_ca_file, cert_file=ac.syslog_cert_file, key_file=ac.syslog_key_file)
        for t in parse_targets(ac.syslog)
    ]
    trail = AuditTrail(ac.spool(cfg.server.data_dir), sinks)
    try:
        yield ClientAuditor(trail, default_source(ac.source_id, ac.enterprise_site_id))
    finally:
        trail.stop(timeout=5)  # what a collector did not take waits in the spool


def _submit(args: argparse.Namespace) -> int:
    """ITI-41: describe ordinary files and provide them to a repository over MTOM."""
    from xds.client import RepositoryClient, describe_files

    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            raise OSError(f"{f} is not a file")
    patient = _patient_cx(args)
    submission, documents = describe_files(
        files,
        patient,
        class_code=args.class_code,
        type_code=args.type_code,
        confidentiality=args.confidentiality,
        title=args.title,
    )
    progress = TerminalProgress("sent")
    with (
        _client_auditor() as auditor,
        RepositoryClient(
            args.url,
            timeout=args.timeout,
            security=_channel(args, patient),
            auditor=auditor,  # type: ignore[arg-type]
        ) as client,
    ):
        try:
            outcome = client.provide_and_register(submission, documents, progress=progress)
        finally:
            progress.close()
    for err in outcome.errors:
        print(f"xds: {err.code}: {err.context}", file=sys.stderr)
    print(f"xds: {outcome.status.rsplit(':', 1)[-1]}", file=sys.stderr)
    if not outcome.ok:
        return 1
    # stdout: only what was stored, as ITI-43 will need it
    print(f"repositoryUniqueId\t{outcome.repository_unique_id or '(not named by the repository)'}")
    for doc in submission.documents:
        path, mime = documents[doc.id]
        print(f"{doc.unique_id}\t{path}\t{mime}")
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    """ITI-43: fetch one document into a file."""
    import tempfile

    from xds.client import RepositoryClient

    target = Path(args.output)
    with tempfile.TemporaryDirectory(dir=target.parent if str(target.parent) else ".") as tmp:
        if args.patient is None and (args.sign_cert or args.config):
            raise ValueError("a signed retrieve needs --patient (the assertion's resource-id)")
        security = _channel(args, _patient_cx(args)) if args.patient else None
        progress = TerminalProgress("received")
        with (
            _client_auditor() as auditor,
            RepositoryClient(args.url, timeout=args.timeout, security=security, auditor=auditor) as client,  # type: ignore[arg-type]
        ):
            try:
                outcome, found = client.retrieve(
                    args.repository, [args.unique_id], Path(tmp), progress=progress
                )
            finally:
                progress.close()
        for err in outcome.errors:
            print(f"xds: {err.code}: {err.context}", file=sys.stderr)
        if not found:
            return 1
        os.replace(found[0].path, target)
        print(f"xds: {found[0].unique_id} ({found[0].mime_type}) -> {target}", file=sys.stderr)
    return 0


def _conformance(args: argparse.Namespace) -> int:
    """Replay NIST test-kit tests against a deployment (given, or started here)."""
    import contextlib

    from xds.conformance import report
    from xds.conformance.deployment import local_deployment
    from xds.conformance.runner import Session, Target

    kit = Path(args.testkit)
    if not kit.is_dir():
        raise OSError(f"{kit} is not a test kit folder")
    collections = args.collection or ([] if args.test else ["R.b"])
    with contextlib.ExitStack() as stack:
        if args.target:
            target = Target()
            for url in args.target:
                base = url.rstrip("/")
                if base.endswith("/xca/query"):
                    target.xca_query_url = base
                elif base.endswith("/xca/retrieve"):
                    target.xca_retrieve_url = base
                elif "/registry" in base:
                    target.registry_url = base
                elif "/repository" in base:
                    target.repository_url = base
                else:
                    target.registry_url, target.repository_url = f"{base}/registry", f"{base}/repository"
                    target.xca_query_url, target.xca_retrieve_url = (
                        f"{base}/xca/query",
                        f"{base}/xca/retrieve",
                    )
            target.home = args.home
            if args.feed:
                host, _, port = args.feed.rpartition(":")
                target.feed = (host or "127.0.0.1", int(port))
        else:
            target = stack.enter_context(local_deployment(args.database_url or "", tls=True))
        schemas = _answer_schemas(args.schemas)
        session = Session(kit, target, schemas=schemas)
        results: dict[str, list[report.TestReport]] = {}
        xua_session = None
        for name in collections:
            if name.endswith("_xua") and not args.target:
                # XUA tests: a second deployment, with the trust model required, that trusts the
                # replay's own identity provider (same database when one is given)
                if xua_session is None:
                    xua_session = _xua_session(stack, kit, args.database_url or "", schemas)
                results[name] = report.run_collection(xua_session, name)
            else:
                results[name] = report.run_collection(session, name)
        if args.test:
            try:
                results["tests"] = [report.run_named_test(session, t) for t in args.test]
            except LookupError as exc:
                raise ValueError(str(exc).strip("'\"")) from None
    print(report.text_report(results))
    if args.junit:
        Path(args.junit).write_bytes(report.junit_xml(results))
        print(f"xds: JUnit report in {args.junit}", file=sys.stderr)
    return 1 if any(r.outcome == "failed" for rs in results.values() for r in rs) else 0


def _xua_session(stack, kit: Path, database_url: str, schemas):  # type: ignore[no-untyped-def]
    """A replay session against a deployment started with ``[trust] mode = "required"``."""
    import tempfile

    from xds.conformance.deployment import local_deployment
    from xds.conformance.runner import Session
    from xds.conformance.xua import XuaIdentity

    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xds-xua-")))
    identity = XuaIdentity.make(folder / "keys", kit)
    target = stack.enter_context(local_deployment(database_url, xua=identity, tls=True))
    return Session(kit, target, schemas=schemas, xua=identity)


def _answer_schemas(given: str | None):  # type: ignore[no-untyped-def]
    """The schemas every answer of a replay is validated against: ``--schemas``, else the shipped ones."""
    from xds.conformance.schemas import AnswerSchemas, shipped

    return AnswerSchemas(Path(given)) if given else shipped()


def _keys(args: argparse.Namespace) -> int:
    """``xds keys init``: a development CA, an identity provider and one identity per institution."""
    from xds.trust.keys import DEFAULT_INSTITUTIONS, DEVELOPMENT_ISSUER, init_keys

    made = init_keys(
        args.dir, args.institution or list(DEFAULT_INSTITUTIONS), days=args.days, algorithm=args.algorithm
    )
    print(f"xds: CA {made.ca.cert_path} (trust anchor of the institutions' signatures and TLS)")
    print(f"xds: identity provider {made.idp.cert_path} (its own certificate, pinned as the issuer's)")
    for ident in made.institutions.values():
        print(f"xds: {ident.name}: {ident.cert_path} (private key {ident.key_path}, mode 0600)")
    first = next(iter(made.institutions.values()), None)
    print("# configuration for these keys (xds.toml):")
    print("[server]")
    print(f'tls_ca = "{made.ca.cert_path}"')
    print("[trust]")
    print('mode = "required"')
    print(f'ca_file = "{made.ca.cert_path}"')
    if first is not None:
        print(f'sign_cert = "{first.cert_path}"')
        print(f'sign_key = "{first.key_path}"')
    print("[[trust.issuer]]")
    print(f'name = "{DEVELOPMENT_ISSUER}"')
    print(f'cert = "{made.idp.cert_path}"')
    return 0


def _query(args: argparse.Namespace) -> int:
    """ITI-18 (or ITI-38 to /xca/query) by stored-query name; a readable table or the raw XML."""
    from xds import consumer
    from xds.metadata import vocabulary as v

    patient = _patient(args.patient, args.patient_oid) if args.patient else ""
    params = consumer.standard_parameters(
        args.query,
        patient=patient,
        uuids=args.uuid,
        unique_ids=args.unique_id,
        statuses=tuple(
            s if ":" in s else f"urn:oasis:names:tc:ebxml-regrep:StatusType:{s}"
            for s in args.status or ["Approved"]
        ),
    )
    for item in args.param or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(
                f"--param {item!r}: write NAME=VALUE, e.g. '$XDSDocumentEntryClassCode=('C00-1^^2.16.578.1.12.4.1.1.9602')'"
            )
        params[name.strip()] = value.strip()
    body = consumer.adhoc_query_request(
        args.query,
        params,
        return_type=v.RETURN_OBJECT_REF if args.object_ref else v.RETURN_LEAF_CLASS,
        home=args.home or "",
    )
    requester = _requester(args, patient)
    answer = consumer.stored_query(args.url, body, requester=requester)
    if args.xml:
        print(consumer.pretty(answer.raw))
    elif answer.objects:
        print(consumer.table(consumer.rows(answer.objects)))
    for err in answer.errors:
        where = f" [{err.location}]" if err.location else ""
        print(f"xds: {err.code}{where}: {err.context}", file=sys.stderr)
    if answer.fault:
        print(f"xds: refused: {answer.fault}", file=sys.stderr)
    print(f"xds: {answer.short_status}, {len(answer.objects)} objects", file=sys.stderr)
    return 0 if answer.short_status in ("Success", "PartialSuccess") else 1


def _patient(value: str, oid: str) -> str:
    return value if "^" in value else f"{value}^^^&{oid}&ISO"


def _requester(args: argparse.Namespace, patient: str):  # type: ignore[no-untyped-def]
    """The signing identity from ``--keys`` / ``--institution`` and the assertion's attributes."""
    from xds import consumer
    from xds.trust.assertion import TrustAttributes

    if not args.keys:
        return None
    if not args.institution:
        raise ValueError("--keys needs --institution NAME (whose <NAME>.pem / <NAME>.key sign the request)")
    resource = _patient(args.for_patient, args.patient_oid) if args.for_patient else patient
    if not resource:
        raise ValueError("a signed request is about one patient: give --patient or --for")
    attributes = TrustAttributes(
        subject_id=args.subject,
        hpr_number=args.hpr or "",
        role=args.role or "",
        organisation=args.organisation or "",
        organisation_id=args.org_id,
        purpose_of_use=args.purpose,
        healthcare_service=args.care or "",
        resource_id=resource,
    )
    return consumer.Requester.from_keys(args.keys, args.institution, attributes, args.issuer)


def _demo(args: argparse.Namespace) -> int:
    from xds import demo

    return demo.main(args.dir, args.port)


def _bench(args: argparse.Namespace) -> int:
    from xds import bench

    return bench.main(args)


class _DefaultsFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, unless it names it itself or has none (a flag,
    or a value taken from the configuration)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default in (None, False, "", argparse.SUPPRESS) or not action.help:
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Every parser and sub-parser (add_subparsers makes them of this class) shows the defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"xds {version('xds-norway')}"
    except PackageNotFoundError:
        return "xds (not installed)"


def _audit(args: argparse.Namespace) -> int:
    """The citizen's access log (``--patient``), a FHIR export of it, or the retention purge."""
    from xds.audit import accesslog, fhir
    from xds.database import audit_store, migrate, open_engine

    cfg = config_mod.load(args.config)
    if args.data_dir is not None:
        cfg.server.data_dir = args.data_dir
    if args.database_url is not None:
        cfg.registry.database_url = args.database_url
    if not args.purge and not args.patient:
        raise ValueError("name the patient (--patient ID), or --purge")
    url = cfg.registry.url(cfg.server.data_dir)
    registry_engine = open_engine(url)
    try:
        migrate(registry_engine)
        engine = audit_store.open_audit_engine(url, registry_engine, prepare=True)
        audit_store.move_records(registry_engine, engine)
    except BaseException:
        registry_engine.dispose()
        raise
    try:
        if args.purge:
            days = cfg.audit.retention_days if args.retention_days is None else args.retention_days
            removed = audit_store.purge(engine, days)
            print(f"xds: removed {removed} audit records older than {days} days")
            return 0
        if args.fhir:
            print(
                json.dumps(
                    fhir.bundle(audit_store.messages(engine, args.patient)), ensure_ascii=False, indent=1
                )
            )
            return 0
        rows = audit_store.access_log(engine, args.patient)
        if args.json:
            print(json.dumps({"patient": args.patient, "accesses": rows}, ensure_ascii=False, indent=1))
        else:
            print(accesslog.table(args.patient, rows))
        return 0
    finally:
        engine.dispose()
        registry_engine.dispose()


def _add_serve(sub: argparse._SubParsersAction, defaults: config_mod.Config) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="serve the registry (and other configured actors) over HTTP")
    s, r = defaults.server, defaults.registry
    serve.add_argument(
        "--config", help="TOML configuration file (`xds init` writes one); options override it"
    )
    serve.add_argument("--host", help=f"address to listen on (default: {s.host})")
    serve.add_argument("--port", type=int, help=f"HTTP port (default: {s.port})")
    serve.add_argument(
        "--data-dir",
        help=f"data directory for the embedded SQLite database and files (default: {s.data_dir})",
    )
    serve.add_argument("--database-url", help="registry database URL (default: SQLite in the data directory)")
    serve.add_argument(
        "--mllp-port",
        type=int,
        help=f"ITI-8 patient identity feed MLLP port, 0 = off (default: {r.mllp_port})",
    )
    serve.add_argument(
        "--profile", choices=["norway", "none"], help=f"national profile (default: {r.profile})"
    )
    serve.add_argument("--workers", type=int, help=f"uvicorn worker processes (default: {s.workers})")
    serve.add_argument("--tls-cert", help="server certificate (PEM): serve HTTPS")
    serve.add_argument("--tls-key", help="the server certificate's private key (PEM file)")
    serve.add_argument("--tls-ca", help="trust anchors (PEM): require client certificates (mutual TLS)")
    serve.set_defaults(func=_serve)


def _add_backup_and_restore(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, text in (
        ("backup", "copy registry and repositories, consistently, into the empty DIR (while serving)"),
        ("restore", "bring a backup in DIR back into an empty data directory and database"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("dir", metavar="DIR", help="the backup's directory")
        cmd.add_argument("--config", help="TOML configuration file")
        cmd.add_argument("--data-dir", help="data directory (default ./data)")
        cmd.add_argument(
            "--database-url", help="registry database URL (default: SQLite in the data directory)"
        )
        cmd.set_defaults(func=_backup_or_restore)


def _add_init(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    init = sub.add_parser("init", help="write a configuration file with the defaults")
    init.add_argument("path", nargs="?", default="xds.toml", help="file to write")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=_init)


def _add_submit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    submit = sub.add_parser("submit", help="ITI-41: provide files to a repository with generated metadata")
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.add_argument("--patient", required=True, help="patient id: a national number, or a full CX")
    submit.add_argument("--patient-oid", default="2.16.578.1.12.4.1.4.1", help="assigning authority OID")
    submit.add_argument("--url", default="http://127.0.0.1:8080/repository", help="repository endpoint")
    submit.add_argument("--class-code", default="A00-1", help="classCode (Volven 9602)")
    submit.add_argument("--type-code", default="A03-2", help="typeCode (Volven 9602)")
    submit.add_argument("--confidentiality", default="N", help="confidentialityCode (Volven 9603)")
    submit.add_argument("--title", help="document title (default: the file name)")
    _signing_arguments(submit)
    submit.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server")
    submit.set_defaults(func=_submit)


def _add_retrieve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    retrieve = sub.add_parser("retrieve", help="ITI-43: fetch a document from a repository")
    retrieve.add_argument("unique_id", metavar="UNIQUEID")
    retrieve.add_argument("--repository", required=True, help="repositoryUniqueId (OID)")
    retrieve.add_argument("-o", "--output", required=True, help="file to write")
    retrieve.add_argument("--url", default="http://127.0.0.1:8080/repository", help="repository endpoint")
    retrieve.add_argument(
        "--patient", help="the document's patient (a national number or CX): signed requests"
    )
    retrieve.add_argument("--patient-oid", default="2.16.578.1.12.4.1.4.1", help="assigning authority OID")
    _signing_arguments(retrieve)
    retrieve.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server")
    retrieve.set_defaults(func=_retrieve)


def _add_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser(
        "audit", help="the audit trail: a patient's access log (who, when, why, which documents), purge"
    )
    audit.add_argument("--patient", help="patient id: a national number, or a full CX")
    audit.add_argument("--json", action="store_true", help="JSON instead of a table")
    audit.add_argument("--fhir", action="store_true", help="the patient's events as a FHIR AuditEvent Bundle")
    audit.add_argument(
        "--purge", action="store_true", help="remove records older than [audit] retention_days"
    )
    audit.add_argument("--retention-days", type=int, help="with --purge: instead of [audit] retention_days")
    audit.add_argument("--config", help="TOML configuration file")
    audit.add_argument("--data-dir", help="data directory of the deployment (default ./data)")
    audit.add_argument(
        "--database-url", help="the deployment's database URL (default: SQLite in the data directory)"
    )
    audit.set_defaults(func=_audit)


def _add_keys(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="development keys and certificates for the trust model")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_init = keys_sub.add_parser(
        "init", help="create a development CA, an IdP and institution certificates"
    )
    keys_init.add_argument("--dir", default="./keys", help="folder for the PEM files")
    keys_init.add_argument("--institution", action="append", help="an institution name (repeatable)")
    keys_init.add_argument("--days", type=int, default=365, help="certificate lifetime")
    keys_init.add_argument(
        "--algorithm", choices=["rsa", "ec"], default="rsa", help="RSA-2048 or ECDSA P-256"
    )
    keys_init.set_defaults(func=_keys)


def _add_conformance(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    conf = sub.add_parser("conformance", help="replay the NIST XDS test kit against a deployment")
    conf.add_argument(
        "--testkit", required=True, help="the NIST XDS test kit folder (iheos-toolkit2's toolkitx/testkit)"
    )
    conf.add_argument(
        "--target",
        nargs="+",
        help="deployment base URL, or registry and repository endpoint URLs (default: start one here)",
    )
    conf.add_argument("--feed", help="HOST:PORT of the target's ITI-8 MLLP feed")
    conf.add_argument(
        "--home", help="the target's homeCommunityId (urn:oid:…), for the responding-gateway tests"
    )
    conf.add_argument("--collection", action="append", help="a collection to run (repeatable), e.g. R.b")
    conf.add_argument("--test", nargs="+", help="test ids to run")
    conf.add_argument("--junit", help="write a JUnit XML report here")
    conf.add_argument("--database-url", help="database of the deployment started here (default SQLite)")
    conf.add_argument(
        "--schemas",
        help="IHE schema folder (holding ebRS/ and IHE/) every answer is validated against "
        "(default: the official schemas shipped with xds)",
    )
    conf.set_defaults(func=_conformance)


def _add_query(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    query = sub.add_parser(
        "query",
        help="ITI-18 / ITI-38 stored query by name against a registry or gateway; a table or the XML",
    )
    query.add_argument(
        "query",
        metavar="QUERY",
        help="FindDocuments, GetDocuments, GetSubmissionSets, GetFolders, … (or its urn:uuid)",
    )
    query.add_argument(
        "--url",
        default="http://127.0.0.1:8080/registry",
        help="/registry, an initiating gateway's /ig/registry or a responding gateway's /xca/query",
    )
    query.add_argument("--patient", help="patient id: a national number, or a full CX (Find… and GetAll)")
    query.add_argument("--patient-oid", default="2.16.578.1.12.4.1.4.1", help="assigning authority OID")
    query.add_argument("--uuid", action="append", help="an entryUUID (Get… queries; repeatable)")
    query.add_argument("--unique-id", action="append", help="a uniqueId (Get… queries; repeatable)")
    query.add_argument(
        "--home", help="homeCommunityId the query is about (urn:oid:…; needed by Get… across gateways)"
    )
    query.add_argument(
        "--status", action="append", default=None, help="status to find (default Approved; repeatable)"
    )
    query.add_argument("--param", action="append", help="any other parameter as NAME=VALUE (repeatable)")
    query.add_argument("--object-ref", action="store_true", help="ask for ObjectRefs instead of LeafClass")
    query.add_argument("--xml", action="store_true", help="print the answer's XML instead of a table")
    signing = query.add_argument_group("signed requests (XUA assertion + WS-Security signature)")
    signing.add_argument(
        "--keys", help="folder made by `xds keys init` (ca.pem, idp.pem/.key, <institution>.pem/.key)"
    )
    signing.add_argument("--institution", help="the institution whose key signs the request")
    signing.add_argument("--subject", default="Ukjent bruker", help="who asks (subject-id)")
    signing.add_argument("--hpr", help="their HPR number")
    signing.add_argument("--role", help="their role code")
    signing.add_argument("--organisation", help="their organisation's name")
    signing.add_argument("--org-id", default="000000000", help="their organisation number")
    signing.add_argument("--purpose", default="TREAT", help="purpose of use: TREAT, ETREAT, COC, BTG")
    signing.add_argument("--care", help="care relationship: the healthcare service")
    signing.add_argument(
        "--for", dest="for_patient", help="the patient the assertion is for (default --patient)"
    )
    signing.add_argument("--issuer", default="https://helseid-xdssaml.test.nhn.no", help="assertion issuer")
    query.set_defaults(func=_query)


def _add_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = sub.add_parser(
        "demo", help="three communities on 127.0.0.1 and a doctor reading a hospital's results across them"
    )
    demo.add_argument(
        "--dir",
        help="folder for the communities' data and keys, kept afterwards "
        "(default: a new temporary one, removed when the demo stops)",
    )
    demo.add_argument("--port", type=int, default=8081, help="first of three ports")
    demo.set_defaults(func=_demo)


def _add_bench(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = sub.add_parser("bench", help="measure throughput against a floor measured in the same run")
    from xds import bench as bench_mod

    bench_mod.add_arguments(bench)
    bench.set_defaults(func=_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xds", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = config_mod.Config()
    _add_serve(sub, defaults)
    _add_backup_and_restore(sub)
    _add_init(sub)
    _add_submit(sub)
    _add_retrieve(sub)
    _add_audit(sub)
    _add_keys(sub)
    _add_conformance(sub)
    _add_query(sub)
    _add_demo(sub)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 refused by the other side, 2 bad input or a local
    file problem, 3 a server that could not be reached (connection, timeout, TLS)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (httpx.TransportError, ssl.SSLError) as exc:
        print(f"xds: {network_failure(exc)}", file=sys.stderr)
        return 3
    except (ValueError, OSError) as exc:
        print(f"xds: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xds: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
