"""Configuration: one TOML file, environment variables override, sensible embedded defaults.

With no file at all ``xds serve`` runs a registry on SQLite in ``./data`` with the Norwegian
profile. Secrets are file paths, never inline values.

Example::

    [server]
    host = "127.0.0.1"
    port = 8080
    data_dir = "/var/lib/xds"
    workers = 2
    max_body_mb = 64
    max_document_mb = 16384

    [registry]
    database_url = "postgresql+psycopg://xds@db/xds"   # default: SQLite in data_dir
    profile = "norway"                                  # or "none"
    home_community_id = "urn:oid:2.16.578.1.12.4.1.7.1.1"
    mllp_port = 2575                                    # ITI-8 patient identity feed; 0 = off
    max_query_results = 10000                           # ITI-18 answers larger: XDSTooManyResults

    [[repository]]                                      # one per institution; default: one "default"
    name = "ahus"                                       # served at /repository/ahus
    unique_id = "2.16.578.1.12.4.5.100.1"               # repositoryUniqueId
    registry_url = ""                                   # remote ITI-42 endpoint; "" = this process
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xds.trust.policy import AccessPolicy


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./data"
    workers: int = 1
    max_body_mb: int = 64  # a SOAP envelope (metadata, queries)
    max_document_mb: int = 16384  # all documents of one ITI-41 MTOM message together
    read_timeout_s: int = 60  # a request body that pauses longer is given up
    max_connections: int = 1000  # per worker; past it requests get HTTP 503 (uvicorn limit_concurrency)
    log_level: str = "info"
    database_threads: bool = False  # database work in worker threads instead of inline (distant databases)
    bench_floor: bool = False  # mount /_bench/floor (parse + serialise only) for `xds bench`
    tls_cert: str = ""  # server certificate (PEM); with it, HTTPS
    tls_key: str = ""  # its private key (PEM file, never inline)
    tls_ca: str = ""  # trust anchors for client certificates; with it, mutual TLS (ATNA secure node)

    def uvicorn_tls(self) -> dict[str, object]:
        """uvicorn's TLS settings: HTTPS with a certificate, client certificates required with a CA."""
        import ssl

        if not self.tls_cert:
            return {}
        options: dict[str, object] = {"ssl_certfile": self.tls_cert, "ssl_keyfile": self.tls_key or None}
        if self.tls_ca:
            options.update(ssl_ca_certs=self.tls_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        return options


@dataclass
class RegistryConfig:
    database_url: str = ""
    profile: str = "norway"
    home_community_id: str = ""
    mllp_host: str = ""
    mllp_port: int = 0
    pool_size: int = 8
    max_query_results: int = 10_000  # ITI-18: more objects than this is XDSTooManyResults
    query_time_limit_s: float = 10.0  # ITI-18 on SQLite: a query still running is stopped (0: never)

    def url(self, data_dir: str) -> str:
        from xds.database import sqlite_url

        return self.database_url or sqlite_url(data_dir)


@dataclass
class RepositoryConfig:
    """One Document Repository (one per institution), served at ``/repository/<name>``."""

    name: str = "default"
    unique_id: str = ""  # repositoryUniqueId (OID); default: made once and kept in the store
    registry_url: str = ""  # ITI-42 endpoint of a remote registry; default: this process's registry
    store_dir: str = ""  # default: <data_dir>/repositories/<name>

    def store(self, data_dir: str) -> str:
        return self.store_dir or str(Path(data_dir) / "repositories" / self.name)


@dataclass
class TrustConfig:
    """The policy enforcement point in front of every SOAP endpoint (ITI TF-2 §3.40 XUA)."""

    mode: str = "off"  # off | optional | required, for every endpoint unless overridden below
    registry_mode: str = ""  # for /registry only ("" = mode)
    repository_mode: str = ""  # for the repositories only ("" = mode)
    ca_file: str = ""  # PEM trust anchors for assertion issuers and institution signatures
    issuers: str = ""  # comma-separated allow-list of assertion issuers
    audience: str = "nhn:dokumentdeling-saml"
    clock_skew_s: int = 60
    sign_cert: str = ""  # this institution's certificate (PEM); with sign_key, answers are signed
    sign_key: str = ""  # its private key (PEM file, never inline)
    # access policy (comma-separated codes): which classCodes care may read, for which purposes,
    # which confidentiality codes never leave, which a citizen does not see in their own record
    readable_classes: str = "C00-1,E00-1"
    purposes: str = "TREAT,ETREAT,COC,BTG"
    never_released: str = "NORS"
    hidden_from_citizen: str = "NORU"

    def access_policy(self) -> AccessPolicy:
        from xds.trust.policy import AccessPolicy

        def codes(text: str) -> frozenset[str]:
            return frozenset(c.strip() for c in text.split(",") if c.strip())

        return AccessPolicy(
            readable_classes=codes(self.readable_classes),
            purposes=codes(self.purposes),
            never_released=codes(self.never_released),
            hidden_from_citizen=codes(self.hidden_from_citizen),
        )

    def issuer_list(self) -> list[str]:
        return [i.strip() for i in self.issuers.split(",") if i.strip()]


@dataclass
class CommunityConfig:
    """A community this deployment knows (XCA, ITI TF-2 §3.38): its id, endpoints and trust anchors."""

    home_community_id: str = ""  # urn:oid:...
    name: str = ""
    registry_url: str = ""  # its ITI-18 / ITI-38 endpoint
    repository_url: str = ""  # its ITI-43 / ITI-39 endpoint
    ca_file: str = ""  # PEM trust anchors for the institutions and identity providers of that community


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    repositories: list[RepositoryConfig] = field(default_factory=lambda: [RepositoryConfig()])
    communities: list[CommunityConfig] = field(default_factory=list)

    def trust_anchor_files(self) -> list[str]:
        """Every trust-anchor file: the deployment's own and each known community's."""
        files = [self.trust.ca_file] if self.trust.ca_file else []
        return files + [c.ca_file for c in self.communities if c.ca_file and c.ca_file not in files]

    def to_dict(self) -> dict[str, Any]:
        """The configuration as the TOML file spells it (``[[repository]]`` tables)."""
        data = asdict(self)
        data["repository"] = data.pop("repositories")
        data["community"] = data.pop("communities")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        cfg = cls()
        for section_name in ("server", "registry", "trust"):
            section = getattr(cfg, section_name)
            values = data.get(section_name, {}) or {}
            known = {f.name: f for f in fields(section)}
            for key, value in values.items():
                if key not in known:
                    raise ValueError(f"unknown setting [{section_name}] {key}")
                setattr(section, key, _coerce(getattr(section, key), value, f"{section_name}.{key}"))
        if "repository" in data:
            cfg.repositories = []
            for i, values in enumerate(data["repository"] or []):
                repo = RepositoryConfig()
                known_repo = {f.name for f in fields(repo)}
                for key, value in values.items():
                    if key not in known_repo:
                        raise ValueError(f"unknown setting [[repository]] {key}")
                    setattr(repo, key, _coerce(getattr(repo, key), value, f"repository[{i}].{key}"))
                cfg.repositories.append(repo)
            names = [r.name for r in cfg.repositories]
            if len(set(names)) != len(names):
                raise ValueError(f"repository names must differ: {names}")
        for i, values in enumerate(data.get("community") or []):
            community = CommunityConfig()
            known_community = {f.name for f in fields(community)}
            for key, value in values.items():
                if key not in known_community:
                    raise ValueError(f"unknown setting [[community]] {key}")
                setattr(community, key, _coerce(getattr(community, key), value, f"community[{i}].{key}"))
            if not community.home_community_id.startswith("urn:oid:"):
                raise ValueError(f"community[{i}]: home_community_id must be urn:oid:…")
            cfg.communities.append(community)
        return cfg


def _coerce(current: object, value: object, name: str) -> object:
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
    for section_name in ("server", "registry", "trust"):
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
    return cfg


DEFAULT_TOML = """# xds configuration (see xds/config.py for every setting)
[server]
host = "127.0.0.1"
port = 8080
data_dir = "./data"
workers = 1
max_body_mb = 64
max_document_mb = 16384
read_timeout_s = 60           # a request body that pauses longer is given up
max_connections = 1000        # per worker; past it requests are answered HTTP 503
database_threads = false      # true: database work in worker threads (for a distant PostgreSQL)

[registry]
# database_url = "postgresql+psycopg://user@host/db"   # default: SQLite in data_dir
profile = "norway"
home_community_id = ""
mllp_port = 0
max_query_results = 10000     # a stored query selecting more objects answers XDSTooManyResults
query_time_limit_s = 10.0     # SQLite: a stored query still running is stopped (PostgreSQL: statement_timeout)

[trust]                     # XUA + WS-Security on every SOAP endpoint
mode = "off"                # off | optional | required
# registry_mode = ""        # per endpoint: overrides mode for /registry
# repository_mode = ""      # ... and for /repository/<name>
# ca_file = "keys/ca.pem"   # trust anchors (xds keys init makes a development CA)
# issuers = "https://helseid-xdssaml.test.nhn.no"
audience = "nhn:dokumentdeling-saml"
clock_skew_s = 60
readable_classes = "C00-1,E00-1"     # lab results, radiology
purposes = "TREAT,ETREAT,COC,BTG"     # BTG is allowed and logged
never_released = "NORS"
hidden_from_citizen = "NORU"

# [[community]]             # communities this one trusts (directory: id, endpoints, anchors)
# home_community_id = "urn:oid:2.16.578.1.12.4.1.7.1.1"
# name = "Nasjonal dokumentdeling"
# registry_url = "https://…/registry"
# ca_file = "anchors/national.pem"

# [[repository]]            # one per institution; without any, one repository named "default"
# name = "default"
# unique_id = ""            # repositoryUniqueId OID; default: made once and kept in the store
# registry_url = ""         # remote ITI-42 endpoint; default: the registry in this process
"""
