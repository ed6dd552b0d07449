"""Configuration: one TOML file, environment variables override, sensible embedded defaults.

With no file at all ``xds serve`` runs a registry on SQLite in ``./data`` with the Norwegian
profile. Secrets are file paths, never inline values.

The dataclasses below are the one place where settings, their defaults and their meaning are
written: ``xds init`` writes the file from them (:func:`default_toml`) and the README's settings
table is held to them by tests/test_config.py. Environment variables ``XDS_<SECTION>_<KEY>``
override the file (e.g. ``XDS_REGISTRY_DATABASE_URL``).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xds.trust.policy import AccessPolicy


def setting(default: Any, doc: str) -> Any:
    """A setting with its default and one line saying what it does (written by ``xds init``)."""
    return field(default=default, metadata={"doc": doc})


@dataclass
class ServerConfig:
    """The HTTP server: where it listens, its workers, the bounds on one request, TLS."""

    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8080, "HTTP(S) port")
    data_dir: str = setting("./data", "the SQLite database, repositories' documents and lock files")
    workers: int = setting(1, "uvicorn worker processes")
    max_body_mb: int = setting(64, "largest SOAP envelope (metadata, queries)")
    max_document_mb: int = setting(
        16384, "largest sum of the documents of one ITI-41 message or one community's ITI-39 answer"
    )
    read_timeout_s: int = setting(60, "a request body that pauses longer is given up")
    max_connections: int = setting(
        1000, "per worker; past it requests get HTTP 503 (uvicorn limit_concurrency)"
    )
    log_level: str = setting("info", "debug | info | warning | error")
    log_format: str = setting("text", "text (key=value) or json (one object per line), for every log line")
    request_log: bool = setting(
        True, "one line per request: peer, TLS subject, action, outcome, codes, ms, bytes"
    )
    min_free_mb: int = setting(
        64, "/ready fails and start-up warns below this much free space in a data directory"
    )
    operations_clients: str = setting(
        "127.0.0.0/8,::1/128",
        "networks (CIDR, comma-separated; * for any) that may read /metrics and /ready's checks; "
        "others get /ready's status alone and 403 from /metrics",
    )
    drain_s: int = setting(
        30, "on SIGTERM, requests in flight get this long to finish before the process exits"
    )
    database_threads: bool = setting(
        False, "database work in worker threads instead of inline (distant databases)"
    )
    bench_floor: bool = setting(False, "mount /_bench/floor (parse + serialise only) for `xds bench`")
    tls_cert: str = setting("", "server certificate (PEM); with it, HTTPS")
    tls_key: str = setting("", "its private key (PEM file, never inline)")
    tls_ca: str = setting("", "trust anchors for client certificates; with it, mutual TLS (ATNA secure node)")
    public_url: str = setting(
        "",
        'the address clients use (https://host[:port]); wsa:To must be it + the path; "" = the Host header',
    )

    def uvicorn_protocol(self) -> dict[str, object]:
        """uvicorn's settings for the HTTP protocol: a bounded request head (xds.http_head), and
        HTTPS with a certificate, client certificates required with a CA."""
        import ssl

        from xds.http_head import BoundedHttpToolsProtocol
        from xds.tls_scope import TlsHttpToolsProtocol

        if not self.tls_cert:
            return {"http": BoundedHttpToolsProtocol}
        options: dict[str, object] = {
            "ssl_certfile": self.tls_cert,
            "ssl_keyfile": self.tls_key or None,
            # each request's scope carries the connection's client certificate (ASGI TLS extension):
            # [trust] bind_tls compares it with the message signer's, the request log names it
            "http": TlsHttpToolsProtocol,
        }
        if self.tls_ca:
            options.update(ssl_ca_certs=self.tls_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        return options


@dataclass
class RegistryConfig:
    """The Document Registry (ITI-42, ITI-18/51, ITI-8 feed) and its database."""

    database_url: str = setting(
        "", 'SQLAlchemy URL, e.g. postgresql+psycopg://xds@db/xds; "" = SQLite in data_dir'
    )
    profile: str = setting("norway", "national profile: norway | none")
    home_community_id: str = setting(
        "", 'this community\'s urn:oid:… (homeCommunityId in answers); "" = none'
    )
    mllp_host: str = setting("", 'address of the ITI-8 MLLP listener; "" = [server] host')
    mllp_port: int = setting(0, "ITI-8 patient identity feed (HL7 v2 over MLLP) port; 0 = off")
    pool_size: int = setting(8, "database connections per worker (and as many again on demand)")
    max_query_results: int = setting(10_000, "ITI-18: more objects than this is XDSTooManyResults")
    query_time_limit_s: float = setting(10.0, "ITI-18 on SQLite: a query still running is stopped (0: never)")
    lock_wait_s: float = setting(
        10.0,
        "a write waits this long for a lock another process or session holds, then is refused busy",
    )

    def url(self, data_dir: str) -> str:
        from xds.database import sqlite_url

        return self.database_url or sqlite_url(data_dir)


@dataclass
class RepositoryConfig:
    """One Document Repository (one per institution), served at `/repository/<name>`."""

    name: str = setting("default", "served at `/repository/<name>`")
    unique_id: str = setting("", 'repositoryUniqueId (OID); "" = made once and kept in the store')
    registry_url: str = setting("", 'ITI-42 endpoint of a remote registry; "" = the registry in this process')
    registry_timeout_s: float = setting(
        60.0,
        "a remote registry's ITI-42 answer is waited for this long (XDSRegistryNotAvailable after it;"
        " the documents are kept only if the registry registered them)",
    )
    store_dir: str = setting("", 'folder of its documents; "" = `<data_dir>/repositories/<name>`')
    owner: str = setting("", "organisation number of the institution owning it (may remove its documents)")

    def store(self, data_dir: str) -> str:
        return self.store_dir or str(Path(data_dir) / "repositories" / self.name)


@dataclass
class TrustConfig:
    """The policy enforcement point in front of every SOAP endpoint (ITI TF-2 §3.40 XUA)."""

    mode: str = setting("off", "off | optional | required, for every endpoint unless overridden below")
    registry_mode: str = setting("", 'mode for /registry only; "" = mode')
    repository_mode: str = setting("", 'mode for the repositories only; "" = mode')
    ca_file: str = setting(
        "", "PEM trust anchors for institutions' message signatures (not issuers, not TLS)"
    )
    crl_files: str = setting("", "comma-separated CRL files (PEM or DER), re-read when they change")
    bind_tls: bool = setting(False, "the TLS client certificate must be the message signer's")
    audience: str = setting("", 'audiences an assertion may name (comma-separated); "" = [server] public_url')
    clock_skew_s: int = setting(60, "tolerated clock difference for timestamps and assertions")
    max_timestamp_lifetime_s: int = setting(600, "longest wsu:Timestamp (Created to Expires) accepted")
    max_assertion_lifetime_s: int = setting(28800, "longest assertion (NotBefore to NotOnOrAfter) accepted")
    sign_cert: str = setting("", "this institution's certificate (PEM); with sign_key, answers are signed")
    sign_key: str = setting("", "its private key (PEM file, never inline)")
    citizen_purposes: str = setting(
        "PATRQT", "purposes of use that make the requester a citizen (comma-separated)"
    )

    def crl_list(self) -> list[str]:
        return [f.strip() for f in self.crl_files.split(",") if f.strip()]

    def audiences(self, public_url: str) -> tuple[str, ...]:
        """The audiences of this deployment: as configured, else its public address."""
        named = tuple(a.strip() for a in self.audience.split(",") if a.strip())
        return named or ((public_url.rstrip("/"),) if public_url else ())


@dataclass
class IssuerConfig:
    """An allowed assertion issuer (identity provider), pinned to its signing certificate(s)."""

    name: str = setting("", "the Issuer its assertions name, e.g. https://helseid-xdssaml.test.nhn.no")
    cert: str = setting("", "PEM file of its signing certificate(s); only these may sign its assertions")


def codes(doc: str) -> Any:
    """A setting holding a list of codes (default: none)."""
    return field(default_factory=list, metadata={"doc": doc})


@dataclass
class RuleConfig:
    """One rule of the access policy (README, "Access policy"); without any, the built-in table."""

    name: str = setting("", "named in every refusal the rule makes")
    purposes: list[str] = codes("purposes of use the rule covers; [] = every")
    actions: list[str] = codes("actions it covers: read, write, update, remove; [] = every")
    citizen: bool = setting(
        False, "a rule for citizens (citizen_purposes); requires: the subject is the patient (national id)"
    )
    roles: list[str] = codes("requires: the subject's role is one of these Volven 9060 codes")
    requires_hpr: bool = setting(False, "requires: an HPR number (health-personnel authorisation)")
    requires_care_relationship: bool = setting(
        False, "requires: a care relationship (healthcare service or decision reference)"
    )
    requires_owner: bool = setting(
        False, "requires: the requester's organisation submitted it or owns the repository"
    )
    classes: list[str] = codes("requires of documents: the classCode is one of these")
    confidentiality: list[str] = codes("requires of documents: every confidentialityCode is one of these")
    refuse_confidentiality: list[str] = codes("documents with one of these confidentialityCodes are refused")
    mark: str = setting("", "allowed decisions are logged with this mark (break the glass)")


@dataclass
class CommunityConfig:
    """A community this deployment knows (XCA, ITI TF-2 §3.38): its id, endpoints and trust anchors."""

    home_community_id: str = setting("", "its urn:oid:…")
    name: str = setting("", "a name for people")
    registry_url: str = setting("", "its ITI-18 / ITI-38 endpoint")
    repository_url: str = setting("", "its ITI-43 / ITI-39 endpoint")
    ca_file: str = setting(
        "", "PEM trust anchors for the institutions of that community (message signatures)"
    )
    timeout_s: float = setting(
        10.0, "the initiating gateway waits this long for its answer, then XDSUnavailableCommunity"
    )


@dataclass
class GatewayConfig:
    """XCA gateways: responding at /xca/query and /xca/retrieve when [registry] home_community_id is set."""

    documents_only: bool = setting(
        False, "national rule: no associations, folders or submission sets returned across the gateway"
    )


@dataclass
class AuditConfig:
    """The ATNA audit trail (ITI TF-2a §3.20): every transaction and every refusal, to its sinks."""

    database: bool = setting(True, "records in the database: the citizen's access log (`xds audit`)")
    syslog: str = setting("", '"udp://HOST:PORT" or "tls://HOST:PORT" (RFC 5426 / 5425), comma-separated')
    syslog_ca_file: str = setting("", "trust anchors for tls:// collectors (default: the system's)")
    syslog_cert_file: str = setting("", "client certificate (PEM) for tls:// collectors")
    syslog_key_file: str = setting("", "its private key (PEM file)")
    spool_dir: str = setting("", 'where events wait for their sinks; "" = <data_dir>/audit-spool')
    retention_days: int = setting(3650, "`xds audit --purge` removes older records")
    source_id: str = setting("", 'AuditSourceID; "" = xds@HOSTNAME')
    enterprise_site_id: str = setting("", "AuditEnterpriseSiteID (e.g. the organisation number)")
    auditor_role: str = setting("auditor", "assertion role that may read any patient's access log")

    def enabled(self) -> bool:
        return self.database or bool(self.syslog.strip())

    def spool(self, data_dir: str) -> str:
        return self.spool_dir or str(Path(data_dir) / "audit-spool")


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    repositories: list[RepositoryConfig] = field(default_factory=lambda: [RepositoryConfig()])
    communities: list[CommunityConfig] = field(default_factory=list)
    issuers: list[IssuerConfig] = field(default_factory=list)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    rules: list[RuleConfig] = field(default_factory=list)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def access_policy(self) -> AccessPolicy:
        """The access policy: ``[[trust.rule]]`` tables, or the built-in table when there are none."""
        from xds.trust.policy import DEFAULT_RULES, AccessPolicy

        tc = self.trust
        purposes = frozenset(p.strip() for p in tc.citizen_purposes.split(",") if p.strip())
        if not self.rules:
            return AccessPolicy(DEFAULT_RULES, purposes)
        return AccessPolicy.from_table([asdict(r) for r in self.rules], purposes)

    def trust_anchor_files(self) -> list[str]:
        """Every trust-anchor file: the deployment's own and each known community's."""
        files = [self.trust.ca_file] if self.trust.ca_file else []
        return files + [c.ca_file for c in self.communities if c.ca_file and c.ca_file not in files]

    def to_dict(self) -> dict[str, Any]:
        """The configuration as the TOML file spells it (``[[repository]]`` tables)."""
        data = asdict(self)
        data["repository"] = data.pop("repositories")
        data["community"] = data.pop("communities")
        data["trust"]["issuer"] = data.pop("issuers")
        data["trust"]["rule"] = data.pop("rules")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        cfg = cls()
        unknown = set(data) - set(TABLES) - set(ARRAYS)
        if unknown:
            raise ValueError(f"unknown section(s) {sorted(unknown)}")
        nested = {name for name in ARRAYS if "." in name}
        for name in TABLES:
            values = dict(data.get(name) or {})
            for key in [n.split(".", 1)[1] for n in nested if n.startswith(name + ".")]:
                values.pop(key, None)
            _fill(getattr(cfg, name), values, f"[{name}]")
        for name, (attribute, item_cls) in ARRAYS.items():
            table, _, key = name.rpartition(".")
            source = (data.get(table) or {}) if table else data
            if key in source:
                items = [item_cls() for _ in source[key] or []]
                for i, (item, values) in enumerate(zip(items, source[key] or [], strict=True)):
                    _fill(item, values, f"[[{name}]] #{i + 1}")
                setattr(cfg, attribute, items)
        names = [r.name for r in cfg.repositories]
        if len(set(names)) != len(names):
            raise ValueError(f"repository names must differ: {names}")
        for i, community in enumerate(cfg.communities):
            if not community.home_community_id.startswith("urn:oid:"):
                raise ValueError(f"community[{i}]: home_community_id must be urn:oid:…")
        _check_networks(cfg.server.operations_clients, "[server] operations_clients")
        return cfg


def _check_networks(spec: str, name: str) -> None:
    import ipaddress

    for part in (p.strip() for p in spec.split(",")):
        if part and part != "*":
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(
                    f"{name}: {part!r} is not a network (CIDR such as 10.0.0.0/8) or *"
                ) from None


def _fill(section: object, values: dict[str, Any], where: str) -> None:
    """Set ``values`` on a section dataclass, each coerced to its setting's type."""
    known = {f.name for f in fields(section)}  # type: ignore[arg-type]
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"unknown setting {where} {key}")
        setattr(section, key, _coerce(getattr(section, key), value, f"{where} {key}"))


def _coerce(current: object, value: object, name: str) -> object:
    if isinstance(current, list):  # a list of codes
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError(f"setting {name} must be a list of strings")
        return list(items)
    if isinstance(current, bool):
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(current, int):
        try:
            return int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"setting {name} must be a whole number, not {value!r}") from None
    if isinstance(current, float):
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"setting {name} must be a number, not {value!r}") from None
    return str(value)


# Environment variables that override the file: XDS_<SECTION>_<KEY>, e.g. XDS_REGISTRY_DATABASE_URL.
def _apply_environment(cfg: Config, environ: dict[str, str]) -> None:
    for section_name in TABLES:
        section = getattr(cfg, section_name)
        for f in fields(section):
            key = f"XDS_{section_name.upper()}_{f.name.upper()}"
            if key in environ:
                setattr(section, f.name, _coerce(getattr(section, f.name), environ[key], key))


def load(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """The configuration from ``path`` (optional), then the environment."""
    data: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    cfg = Config.from_dict(data)
    _apply_environment(cfg, dict(os.environ if environ is None else environ))
    _check_networks(cfg.server.operations_clients, "[server] operations_clients")
    return cfg


# The file's sections: each [name] table is the Config attribute of that name; each [[name]] array of
# tables is a list of Config (attribute, dataclass); arrays not in the defaults are written commented out.
TABLES = ("server", "registry", "trust", "gateway", "audit")
ARRAYS: dict[str, tuple[str, type]] = {
    "repository": ("repositories", RepositoryConfig),
    "community": ("communities", CommunityConfig),
    "trust.issuer": ("issuers", IssuerConfig),
    "trust.rule": ("rules", RuleConfig),
}


def _toml_value(value: object) -> str:
    if isinstance(value, list):  # a JSON array of strings is a TOML array
        return json.dumps([str(v) for v in value], ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def _default(f: Field[Any]) -> object:
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]


def _section_lines(cls: type, header: str, commented: bool) -> list[str]:
    mark = "# " if commented else ""
    lines = [f"# {(cls.__doc__ or '').strip().splitlines()[0]}", f"{mark}{header}"]
    for f in fields(cls):
        lines += [f"# {f.metadata['doc']}", f"{mark}{f.name} = {_toml_value(_default(f))}"]
    return lines + [""]


def default_toml() -> str:
    """The configuration file ``xds init`` writes: every setting at its default, each with its meaning."""
    defaults = Config()
    lines = [
        "# xds configuration: every setting at its default (written by `xds init`).",
        "# Environment variables XDS_<SECTION>_<KEY> override it, e.g. XDS_REGISTRY_DATABASE_URL.",
        "",
    ]
    for name in TABLES:
        lines += _section_lines(type(getattr(defaults, name)), f"[{name}]", commented=False)
    for name, (attribute, cls) in ARRAYS.items():
        lines += _section_lines(cls, f"[[{name}]]", commented=not getattr(defaults, attribute))
    return "\n".join(lines)


def settings_table() -> str:
    """The README's settings table (Markdown), one row per setting."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    sections = [(f"[{n}]", type(getattr(Config(), n))) for n in TABLES]
    sections += [(f"[[{n}]]", cls) for n, (_, cls) in ARRAYS.items()]
    for header, cls in sections:
        for f in fields(cls):
            doc = str(f.metadata["doc"]).replace("|", "\\|")
            rows.append(f"| `{header} {f.name}` | `{_toml_value(_default(f))}` | {doc} |")
    return "\n".join(rows)
