//! The OpenAPI 3 document of the HTTP API, generated from the request types
//! (their JSON Schemas come from the same structs the handlers decode) and
//! the route table below, which a test keeps in step with `api::router`.

use super::*;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// What an operation answers when it succeeds.
#[derive(Clone, Copy)]
enum Answer {
    JsonOf(u16, &'static str),
    Text(&'static str),
    Html(&'static str),
    EventStream,
    Metrics,
}

struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    /// `None`: public.
    needs: Option<Permission>,
    body: Option<SchemaFn>,
    /// Raw bytes of this media type instead of JSON.
    bytes: Option<&'static str>,
    query: Option<SchemaFn>,
    answer: Answer,
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    needs: Permission,
    answer: Answer,
) -> Op {
    Op {
        method,
        path,
        summary,
        needs: Some(needs),
        body: None,
        bytes: None,
        query: None,
        answer,
    }
}

use Answer::*;
use Permission::{Administer, Approve, Deploy, Read};

fn operations() -> Vec<Op> {
    vec![
        op(
            "get",
            "/api/v1/releases",
            "Registered releases, oldest version first",
            Read,
            JsonOf(200, "releases"),
        ),
        op(
            "post",
            "/api/v1/releases/verify",
            "Re-hash every stored artifact",
            Deploy,
            JsonOf(200, "one result per release"),
        ),
        Op {
            bytes: Some("application/octet-stream"),
            ..op(
                "put",
                "/api/v1/releases/{version}",
                "Register an artifact as a release (headers x-gantry-git-sha, x-gantry-signature)",
                Deploy,
                JsonOf(
                    201,
                    "the release (200 if it already existed with the same content)",
                ),
            )
        },
        op(
            "get",
            "/api/v1/releases/{version}",
            "One release",
            Read,
            JsonOf(200, "the release"),
        ),
        Op {
            body: Some(schema::<DeployRequest>),
            ..op(
                "post",
                "/api/v1/deployments",
                "Deploy a release to an environment",
                Deploy,
                JsonOf(201, "the new deployment"),
            )
        },
        Op {
            query: Some(schema::<ListQuery>),
            ..op(
                "get",
                "/api/v1/deployments",
                "Deployments, newest first",
                Read,
                JsonOf(200, "deployments"),
            )
        },
        op(
            "get",
            "/api/v1/deployments/{id}",
            "One deployment with its verdicts",
            Read,
            JsonOf(200, "the deployment"),
        ),
        op(
            "get",
            "/api/v1/deployments/{id}/log",
            "A deployment and its log",
            Read,
            JsonOf(200, "deployment and log"),
        ),
        op(
            "post",
            "/api/v1/deployments/{id}/{action}",
            "abort, promote, pause or resume a running deployment",
            Deploy,
            JsonOf(202, "what was asked"),
        ),
        Op {
            body: Some(schema::<VerdictRequest>),
            ..op(
                "post",
                "/api/v1/deployments/{id}/approve",
                "Approve a deployment (never your own)",
                Approve,
                JsonOf(202, "the verdict"),
            )
        },
        Op {
            body: Some(schema::<VerdictRequest>),
            ..op(
                "post",
                "/api/v1/deployments/{id}/reject",
                "Reject a deployment",
                Approve,
                JsonOf(202, "the verdict"),
            )
        },
        Op {
            body: Some(schema::<RollbackRequest>),
            ..op(
                "post",
                "/api/v1/rollbacks",
                "Return an environment to its last good release",
                Deploy,
                JsonOf(201, "the rollback deployment"),
            )
        },
        op(
            "get",
            "/api/v1/status",
            "What runs where",
            Read,
            JsonOf(200, "environments"),
        ),
        Op {
            query: Some(schema::<TrafficQuery>),
            ..op(
                "get",
                "/api/v1/traffic",
                "What each release pool of an environment served",
                Read,
                JsonOf(200, "pool statistics"),
            )
        },
        Op {
            query: Some(schema::<LogQuery>),
            ..op(
                "get",
                "/api/v1/instances/{id}/log",
                "The output of one instance",
                Read,
                Text("the log's tail"),
            )
        },
        Op {
            body: Some(schema::<ShutdownRequest>),
            ..op(
                "post",
                "/api/v1/shutdown",
                "Stop the controller (and its workloads)",
                Administer,
                JsonOf(200, "stopping"),
            )
        },
        Op {
            query: Some(schema::<AuditQuery>),
            ..op(
                "get",
                "/api/v1/audit",
                "Audit records after a sequence number",
                Read,
                JsonOf(200, "anchor and records"),
            )
        },
        op(
            "get",
            "/api/v1/audit/verify",
            "Verify the hash chain, its head and the newest signed checkpoint; names the first bad record",
            Read,
            JsonOf(200, "the verdict"),
        ),
        op(
            "get",
            "/api/v1/audit/checkpoint",
            "A signed checkpoint of the chain's head now, for an auditor to keep",
            Read,
            JsonOf(200, "the checkpoint"),
        ),
        op(
            "get",
            "/api/v1/audit/public-key",
            "The Ed25519 public key that signs audit checkpoints",
            Read,
            JsonOf(200, "the public key"),
        ),
        op(
            "get",
            "/api/v1/whoami",
            "The caller's identity and roles",
            Read,
            JsonOf(200, "identity"),
        ),
        op(
            "get",
            "/api/v1/users",
            "Users and their roles",
            Administer,
            JsonOf(200, "users"),
        ),
        Op {
            body: Some(schema::<NewUser>),
            ..op(
                "post",
                "/api/v1/users",
                "Add a user",
                Administer,
                JsonOf(201, "the user"),
            )
        },
        Op {
            query: Some(schema::<TokenQuery>),
            ..op(
                "get",
                "/api/v1/tokens",
                "API tokens (never their secrets)",
                Administer,
                JsonOf(200, "tokens"),
            )
        },
        Op {
            body: Some(schema::<NewToken>),
            ..op(
                "post",
                "/api/v1/tokens",
                "Issue a token for oneself (anyone) or for another user (admins only; such a token may not give verdicts); its secret is in this answer only",
                Read,
                JsonOf(201, "the token"),
            )
        },
        op(
            "post",
            "/api/v1/tokens/{id}/revoke",
            "Revoke a token",
            Administer,
            JsonOf(200, "the revoked token"),
        ),
        op(
            "get",
            "/api/v1/approvals",
            "Deployments awaiting approval and emergency changes owed it",
            Read,
            JsonOf(200, "pending approvals"),
        ),
        op(
            "get",
            "/api/v1/releases/{version}/evidence",
            "Evidence attached to a release",
            Read,
            JsonOf(200, "evidence"),
        ),
        Op {
            bytes: Some("application/octet-stream"),
            query: Some(schema::<EvidenceQuery>),
            ..op(
                "put",
                "/api/v1/releases/{version}/evidence/{kind}",
                "Attach a JUnit, SARIF, Cobertura or LCOV report",
                Deploy,
                JsonOf(201, "the parsed evidence"),
            )
        },
        Op {
            query: Some(schema::<GatesQuery>),
            ..op(
                "get",
                "/api/v1/gates",
                "Each gate of a release for an environment",
                Read,
                JsonOf(200, "gates"),
            )
        },
        Op {
            body: Some(schema::<RehearsalRequest>),
            ..op(
                "post",
                "/api/v1/rehearsals",
                "Start a rollback rehearsal (deploy, roll back, redeploy)",
                Deploy,
                JsonOf(202, "started"),
            )
        },
        Op {
            query: Some(schema::<GatesQuery>),
            ..op(
                "get",
                "/api/v1/plans",
                "The deployment plan of a release for an environment",
                Read,
                JsonOf(200, "the plan in Markdown"),
            )
        },
        Op {
            body: Some(schema::<PlanApproval>),
            ..op(
                "post",
                "/api/v1/plans/approve",
                "Approve a deployment plan; it is attached as evidence",
                Approve,
                JsonOf(201, "the approval"),
            )
        },
        Op {
            query: Some(schema::<DeliveryQuery>),
            ..op(
                "get",
                "/api/v1/notifications",
                "Notification deliveries, newest first",
                Read,
                JsonOf(200, "deliveries"),
            )
        },
        op(
            "get",
            "/api/v1/events",
            "Server-sent events: every deployment step and notice",
            Read,
            EventStream,
        ),
        op(
            "get",
            "/metrics",
            "Gantry's metrics in the Prometheus text format",
            Read,
            Metrics,
        ),
        Op {
            needs: None,
            ..op("get", "/healthz", "Liveness", Read, Text("ok"))
        },
        Op {
            needs: None,
            ..op(
                "get",
                "/status",
                "The public status page",
                Read,
                Html("status page"),
            )
        },
        Op {
            needs: None,
            ..op(
                "get",
                "/status.json",
                "The public status page as JSON",
                Read,
                JsonOf(200, "status"),
            )
        },
        Op {
            needs: None,
            ..op(
                "get",
                "/",
                "The dashboard (signs in with a token)",
                Read,
                Html("dashboard"),
            )
        },
        Op {
            needs: None,
            ..op(
                "get",
                "/openapi.json",
                "This document",
                Read,
                JsonOf(200, "OpenAPI 3.0"),
            )
        },
    ]
}

/// The schema of each JSON answer: the types the handlers serialize.
fn reply_schema(method: &str, path: &str) -> Option<SchemaFn> {
    use crate::governance::{Identity, IssuedToken, PendingApproval};
    use gantry_core::Deployment;
    use gantry_store::{Delivery, EvidenceRecord, ReleaseRecord, TokenRecord, User};
    Some(match (method, path) {
        ("get", "/api/v1/releases") => schema::<Vec<ReleaseRecord>>,
        ("post", "/api/v1/releases/verify") => schema::<Vec<crate::controller::VerifyResult>>,
        ("put" | "get", "/api/v1/releases/{version}") => schema::<ReleaseRecord>,
        ("post", "/api/v1/deployments" | "/api/v1/rollbacks") => schema::<Deployment>,
        ("get", "/api/v1/deployments") => schema::<Vec<Deployment>>,
        ("get", "/api/v1/deployments/{id}") => schema::<DeploymentView>,
        ("get", "/api/v1/deployments/{id}/log") => schema::<DeploymentLog>,
        ("post", "/api/v1/deployments/{id}/{action}") => ids_by_word,
        ("post", "/api/v1/deployments/{id}/approve" | "/api/v1/deployments/{id}/reject") => {
            verdict_answer
        }
        ("get", "/api/v1/status") => schema::<StatusView>,
        ("get", "/api/v1/traffic") => schema::<Vec<gantry_router::PoolStats>>,
        ("post", "/api/v1/shutdown") => schema::<ShutdownAnswer>,
        ("get", "/api/v1/audit") => schema::<AuditPage>,
        ("get", "/api/v1/audit/verify") => schema::<AuditVerdict>,
        ("get", "/api/v1/audit/checkpoint") => schema::<gantry_core::audit::Checkpoint>,
        ("get", "/api/v1/audit/public-key") => schema::<AuditPublicKey>,
        ("get", "/api/v1/whoami") => schema::<Identity>,
        ("get", "/api/v1/users") => schema::<Vec<User>>,
        ("post", "/api/v1/users") => schema::<User>,
        ("get", "/api/v1/tokens") => schema::<Vec<TokenRecord>>,
        ("post", "/api/v1/tokens") => schema::<IssuedToken>,
        ("post", "/api/v1/tokens/{id}/revoke") => schema::<TokenRecord>,
        ("get", "/api/v1/approvals") => schema::<Vec<PendingApproval>>,
        ("get", "/api/v1/releases/{version}/evidence") => schema::<Vec<EvidenceRecord>>,
        ("put", "/api/v1/releases/{version}/evidence/{kind}") => schema::<EvidenceRecord>,
        ("get", "/api/v1/gates") => schema::<GatesView>,
        ("post", "/api/v1/rehearsals") => schema::<RehearsalAnswer>,
        ("get", "/api/v1/plans") => schema::<crate::plan::Plan>,
        ("post", "/api/v1/plans/approve") => schema::<PlanApproved>,
        ("get", "/api/v1/notifications") => schema::<Vec<Delivery>>,
        ("get", "/status.json") => schema::<crate::observe::StatusPage>,
        _ => return None,
    })
}

/// `{"aborting": 12}`: the word for what was asked, and the deployment.
fn ids_by_word(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"type": "object", "additionalProperties": {"type": "integer", "format": "int64"}, "minProperties": 1, "maxProperties": 1})
}

/// `{"approved": 12, "by": "bob"}` or `{"rejected": 12, "by": "bob"}`.
fn verdict_answer(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"type": "object", "required": ["by"], "properties": {"approved": {"type": "integer", "format": "int64"}, "rejected": {"type": "integer", "format": "int64"}, "by": {"type": "string"}}})
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = match (name, path.starts_with("/api/v1/deployments")) {
                ("id", true) => json!({"type": "integer", "format": "int64", "minimum": 1}),
                ("action", _) => json!({"type": "string", "enum": ["abort", "promote", "pause", "resume"]}),
                ("kind", _) => json!({"type": "string", "enum": ["unit", "integration", "security", "coverage"]}),
                _ => json!({"type": "string"}),
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect()
}

/// Query parameters from the properties of a query struct's schema.
fn query_parameters(g: &mut SchemaGenerator, f: SchemaFn) -> Vec<Value> {
    let s = f(g);
    let resolved = match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default().to_owned();
            g.definitions().get(&name).cloned().unwrap_or(Value::Null)
        }
        None => s.to_value(),
    };
    let required: Vec<String> = resolved
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    resolved
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(name, schema)| {
                    json!({"name": name, "in": "query", "required": required.contains(name), "schema": schema})
                })
                .collect()
        })
        .unwrap_or_default()
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The whole document.
pub fn document() -> Value {
    // Requests are what the handlers accept; answers what they write.
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut replies = SchemaSettings::openapi3()
        .with(|s| s.contract = schemars::generate::Contract::Serialize)
        .into_generator();
    let mut paths = Map::new();
    for op in operations() {
        let mut parameters = path_parameters(op.path);
        if let Some(q) = op.query {
            parameters.extend(query_parameters(&mut g, q));
        }
        let mut responses = Map::new();
        let ok = match op.answer {
            JsonOf(code, d) => {
                let schema = match reply_schema(op.method, op.path) {
                    Some(f) => f(&mut replies).to_value(),
                    None => json!({}),
                };
                (
                    code,
                    json!({"description": d, "content": {"application/json": {"schema": schema}}}),
                )
            }
            Text(d) => (
                200,
                json!({"description": d, "content": {"text/plain": {"schema": {"type": "string"}}}}),
            ),
            Html(d) => (
                200,
                json!({"description": d, "content": {"text/html": {"schema": {"type": "string"}}}}),
            ),
            EventStream => (
                200,
                json!({"description": "a stream of `step`, `notice` and `lagged` events", "content": {"text/event-stream": {"schema": {"type": "string"}}}}),
            ),
            Metrics => (
                200,
                json!({"description": "Prometheus text exposition", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}),
            ),
        };
        responses.insert(ok.0.to_string(), ok.1);
        if let JsonOf(201, _) = op.answer {
            if op.path == "/api/v1/releases/{version}" {
                responses.insert("200".into(), json!({"description": "already registered with the same content", "content": {"application/json": {"schema": {}}}}));
            }
        }
        let has_input =
            op.body.is_some() || op.bytes.is_some() || op.query.is_some() || op.path.contains('{');
        if op.needs.is_some() {
            responses.insert(
                "401".into(),
                error_response("missing, unknown, revoked or expired token"),
            );
            responses.insert(
                "403".into(),
                error_response("the caller's roles do not allow it"),
            );
            responses.insert(
                "404".into(),
                error_response("no such environment, release, deployment, user or token"),
            );
            responses.insert(
                "409".into(),
                error_response("the request conflicts with the current state"),
            );
            responses.insert(
                "500".into(),
                error_response(
                    "an internal error: the store failed, also while checking the token (which may be good)",
                ),
            );
        }
        if has_input {
            responses.insert("400".into(), error_response("a parameter is invalid"));
        }
        if op.body.is_some() || op.bytes.is_some() {
            responses.insert("413".into(), error_response("the body is too large"));
            responses.insert("415".into(), error_response("the body is not JSON"));
            responses.insert(
                "422".into(),
                error_response("the body does not match its schema"),
            );
        }
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(body) = op.body {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": body(&mut g)}}});
        }
        if let Some(media) = op.bytes {
            operation["requestBody"] = json!({"required": true, "content": {media: {"schema": {"type": "string", "format": "binary"}}}});
        }
        match op.needs {
            Some(p) => {
                operation["security"] = json!([{"bearer": []}]);
                operation["x-gantry-permission"] = json!(p.as_str());
            }
            None => operation["security"] = json!([]),
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    let mut schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    for (name, schema) in replies.take_definitions(true) {
        let taken = schemas.insert(name.clone(), schema.clone());
        assert!(
            taken.is_none_or(|t| t == schema),
            "{name} is both a request and an answer, with different schemas"
        );
    }
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Gantry API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every CLI operation is one of these calls. Errors are JSON: {\"error\": {\"code\", \"message\"}}. Each operation's x-gantry-permission names what the caller's roles must grant."
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": paths,
    })
}

/// The document as checked in under `docs/openapi.json`.
pub fn document_text() -> String {
    serde_json::to_string_pretty(&document()).expect("a document always serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let source = include_str!("../api.rs");
        let flat: String = source.split_whitespace().collect::<Vec<_>>().join(" ");
        // The routes nested under /api/v1 come before the top-level ones.
        let (nested_src, top_src) = flat
            .split_once("let metrics")
            .expect("api::router's layout");
        let mut routed = Vec::new();
        let parts = nested_src
            .split(".route(")
            .skip(1)
            .map(|p| (true, p))
            .chain(top_src.split(".route(").skip(1).map(|p| (false, p)));
        for (nested, part) in parts {
            let part = part.trim_start();
            let Some(path) = part.strip_prefix('"').and_then(|p| p.split('"').next()) else {
                continue;
            };
            let end = [
                ";",
                ".route_layer(",
                ".with_state(",
                ".merge(",
                ".fallback(",
            ]
            .iter()
            .filter_map(|stop| part.find(stop))
            .min()
            .unwrap_or(part.len());
            let router = &part[path.len() + 2..end];
            let full = if nested {
                format!("/api/v1{path}")
            } else {
                path.to_owned()
            };
            for method in ["get", "post", "put"] {
                let called = [" ", ".", "("]
                    .iter()
                    .any(|before| router.contains(&format!("{before}{method}(")));
                if called {
                    routed.push((method.to_owned(), full.clone()));
                }
            }
        }
        let documented: std::collections::BTreeSet<(String, String)> = operations()
            .iter()
            .map(|o| (o.method.to_owned(), o.path.to_owned()))
            .collect();
        let routed: std::collections::BTreeSet<(String, String)> = routed.into_iter().collect();
        assert_eq!(routed, documented);
    }

    #[test]
    fn every_json_answer_has_a_schema() {
        for op in operations() {
            if let JsonOf(..) = op.answer {
                assert!(
                    op.path == "/openapi.json" || reply_schema(op.method, op.path).is_some(),
                    "{} {} has no answer schema",
                    op.method,
                    op.path
                );
            }
        }
    }

    #[test]
    fn checked_in_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == document_text(),
            "docs/openapi.json is stale; run `cargo run -- openapi > docs/openapi.json`"
        );
    }
}
