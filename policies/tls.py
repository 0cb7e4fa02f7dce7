"""TLS: the ALB's listener policies, CloudFront's viewer and origin protocols, PostgreSQL
forcing TLS, and clients that verify the database's certificate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from policies._shared import (
    as_list,
    as_map,
    is_prod,
    resource_policy,
    strings,
    tags_of,
    task_containers,
)

PLAIN_HTTP_TAG = "prodstack:plain-http"

# The ALB security policies an HTTPS listener may use: TLS 1.3 on and nothing below TLS 1.2.
# The policy keeps its own list rather than trusting the component it polices. AWS names
# them `ELBSecurityPolicy-TLS13-1-X-...`, "TLS 1.3 down to TLS 1.X": only 1-2 and 1-3 are
# here; TLS13-1-0 and TLS13-1-1 (TLS 1.0 / 1.1 still on) and the API's default
# ELBSecurityPolicy-2016-08 (no TLS 1.3) are not. botocore's elbv2 model types SslPolicy as
# a free string, so the names come from AWS's documentation alone.
# Source: docs.aws.amazon.com/elasticloadbalancing/latest/application/describe-ssl-policies.html
# (tables "TLS 1.3 security policies", "FIPS security policies", "Post-quantum security
# policies", column "Protocols").
ALB_TLS_POLICIES = (
    "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-Res-FIPS-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
)

# CloudFront viewer floors at or above TLSv1.2_2021 (botocore MinimumProtocolVersion).
CLOUDFRONT_MIN_TLS = ("TLSv1.2_2021", "TLSv1.2_2025", "TLSv1.3_2025")


# ---- TLS policies -----------------------------------------------------------------------

@resource_policy(
    "alb-listener-tls",
    "HTTPS listeners use TLS 1.3 policies; HTTP only redirects.",
    types="aws:lb/listener:Listener",
)
def alb_tls(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    protocol = props.get("protocol")
    if protocol == "HTTPS":
        policy = props.get("sslPolicy") or ""
        if policy not in ALB_TLS_POLICIES:
            yield (f"HTTPS listeners must use a TLS 1.3 policy with no protocol below TLS 1.2 "
                   f"(policies.tls.ALB_TLS_POLICIES), not {policy or 'the default'!r}.")
        return
    if protocol != "HTTP":
        return
    actions = [as_map(a) for a in as_list(props.get("defaultActions"))]
    redirects = bool(actions) and all(
        a.get("type") == "redirect" and as_map(a.get("redirect")).get("protocol") == "HTTPS"
        for a in actions
    )
    if redirects:
        return
    if tags_of(props).get(PLAIN_HTTP_TAG) and not is_prod(props):
        return  # the named, dev-only exception for a stack without a domain
    yield "HTTP listeners must redirect to HTTPS (plain HTTP only outside prod, tagged)."


@resource_policy(
    "cloudfront-tls",
    "CloudFront: TLSv1.2_2021 floor, HTTPS viewers, HTTPS origin (prod).",
    types="aws:cloudfront/distribution:Distribution",
)
def cloudfront_tls(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    cert = as_map(props.get("viewerCertificate"))
    if cert.get("cloudfrontDefaultCertificate"):
        if is_prod(props):
            yield "Prod CloudFront needs its own certificate (default cert allows TLSv1)."
    elif cert.get("minimumProtocolVersion") not in CLOUDFRONT_MIN_TLS:
        yield (f"CloudFront minimum TLS must be one of {CLOUDFRONT_MIN_TLS}, "
               f"not {cert.get('minimumProtocolVersion')!r}.")
    behaviours = [
        as_map(props.get("defaultCacheBehavior")), *map(as_map, as_list(props.get(
            "orderedCacheBehaviors")))
    ]
    for behaviour in behaviours:
        if behaviour.get("viewerProtocolPolicy") not in ("redirect-to-https", "https-only"):
            yield "CloudFront behaviours must redirect viewers to HTTPS."
    for origin in map(as_map, as_list(props.get("origins"))):
        config = as_map(origin.get("customOriginConfig"))
        policy = config.get("originProtocolPolicy")
        if policy and policy != "https-only" and is_prod(props):
            yield "Prod CloudFront must reach its origin over HTTPS only."
        weak = set(strings(config.get("originSslProtocols"))) - {"TLSv1.2"}
        if weak:
            yield f"CloudFront must not offer {sorted(weak)} to its origin (TLSv1.2 only)."


@resource_policy(
    "rds-force-ssl",
    "PostgreSQL parameter groups force TLS (rds.force_ssl=1).",
    types="aws:rds/parameterGroup:ParameterGroup",
)
def rds_force_ssl(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if not str(props.get("family", "")).startswith("postgres"):
        return
    values = {
        p.get("name"): str(p.get("value")) for p in map(as_map, as_list(props.get("parameters")))
    }
    if values.get("rds.force_ssl") != "1":
        yield "PostgreSQL parameter groups must set rds.force_ssl=1."


@resource_policy(
    "db-client-verifies-server",
    "Every container that connects to PostgreSQL verifies the server's certificate and "
    "name (DB_SSLMODE=verify-full with a DB_SSLROOTCERT bundle).",
    types="aws:ecs/taskDefinition:TaskDefinition",
)
def db_client_verifies_server(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    # rds.force_ssl makes the server insist on TLS; only the client can insist that the
    # server is the real one: `require` and `verify-ca` accept any (or any RDS) host.
    for container in task_containers(props) or []:
        env = {str(e.get("name")): e.get("value")
               for e in map(as_map, as_list(container.get("environment")))}  # fmt: skip
        if "DB_HOST" not in env:
            continue
        name = container.get("name")
        if env.get("DB_SSLMODE") != "verify-full":
            yield (f"Container {name!r} must connect to PostgreSQL with "
                   f"DB_SSLMODE=verify-full, not {env.get('DB_SSLMODE')!r}.")
        if not env.get("DB_SSLROOTCERT"):
            yield f"Container {name!r} must name the CA bundle it verifies with (DB_SSLROOTCERT)."

