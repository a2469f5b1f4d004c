//! The one route table. Each entry says, once, what a route is: its method
//! and path, the permission it needs, what it is for, the schemas of what
//! it takes and answers, and its handler. `api::router`, the permission
//! check in `authenticate` and the OpenAPI document (`openapi.rs`) are all
//! built from it, so they cannot disagree.

use super::*;
use axum::routing::MethodRouter;
use gantry_api::*;
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// Makes the JSON Schema of a request or answer type.
pub(super) type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// What an operation answers when it succeeds.
#[derive(Clone, Copy)]
pub(super) enum Answer {
    /// JSON with this status, description and schema.
    Json(u16, &'static str, SchemaFn),
    Text(&'static str),
    Html(&'static str),
    /// A file's bytes, as stored.
    Bytes(&'static str),
    EventStream,
    Metrics,
}

/// One operation: a method on a path.
pub(super) struct Route {
    /// Lower-case, as OpenAPI spells it: "get", "post", "put".
    pub method: &'static str,
    /// The full path, `/api/v1/…` included.
    pub path: &'static str,
    pub summary: &'static str,
    /// `None`: public, no token asked.
    pub needs: Option<Permission>,
    pub body: Option<SchemaFn>,
    /// Raw bytes of this media type instead of a JSON body.
    pub bytes: Option<&'static str>,
    pub query: Option<SchemaFn>,
    pub answer: Answer,
    /// Acted on by the leader only: a follower forwards it (`forward.rs`).
    /// Every method but GET is, unless marked `here`.
    pub at_leader: bool,
    /// The handler, registered for `method` (with any layer of its own).
    pub handler: fn() -> MethodRouter<AppState>,
}

pub(super) fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// An answer of any JSON shape.
fn any_json(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({})
}

fn route(
    method: &'static str,
    path: &'static str,
    needs: Option<Permission>,
    summary: &'static str,
    answer: Answer,
    handler: fn() -> MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        summary,
        needs,
        body: None,
        bytes: None,
        query: None,
        answer,
        at_leader: method != "get",
        handler,
    }
}

impl Route {
    fn body<T: JsonSchema>(self) -> Route {
        Route {
            body: Some(schema::<T>),
            ..self
        }
    }
    fn query<T: JsonSchema>(self) -> Route {
        Route {
            query: Some(schema::<T>),
            ..self
        }
    }
    /// Acted on by whichever controller receives it.
    fn here(self) -> Route {
        Route {
            at_leader: false,
            ..self
        }
    }
    /// Read from the leader (what only its running tasks know).
    fn at_leader(self) -> Route {
        Route {
            at_leader: true,
            ..self
        }
    }
    fn bytes(self, media: &'static str) -> Route {
        Route {
            bytes: Some(media),
            ..self
        }
    }
}

/// Every route Gantry serves, in the order the document lists them.
pub(super) fn routes() -> Vec<Route> {
    use crate::governance::{IssuedToken, PendingApproval};
    use gantry_core::Deployment;
    use gantry_store::{Delivery, EvidenceRecord, ReleaseRecord, TokenRecord, User};
    use Answer::*;
    use Permission::{Administer, Approve, Deploy, Read};
    let (read, deploy, approve, administer, public) = (
        Some(Read),
        Some(Deploy),
        Some(Approve),
        Some(Administer),
        None,
    );
    vec![
        route(
            "get",
            "/api/v1/releases",
            read,
            "Registered releases, oldest version first",
            Json(200, "releases", schema::<Vec<ReleaseRecord>>),
            || get(list_releases),
        ),
        route(
            "post",
            "/api/v1/releases/verify",
            deploy,
            "Re-hash every stored artifact",
            Json(
                200,
                "one result per release",
                schema::<Vec<crate::controller::VerifyResult>>,
            ),
            || post(verify_releases),
        ),
        route(
            "put",
            "/api/v1/releases/{version}",
            deploy,
            "Register an artifact as a release (headers x-gantry-git-sha, x-gantry-signature)",
            Json(
                201,
                "the release (200 if it already existed with the same content)",
                schema::<ReleaseRecord>,
            ),
            // The artifact is streamed to disk, bounded there, not buffered.
            || put(create_release),
        )
        .bytes("application/octet-stream"),
        route(
            "get",
            "/api/v1/releases/{version}",
            read,
            "One release",
            Json(200, "the release", schema::<ReleaseRecord>),
            || get(show_release),
        ),
        route(
            "post",
            "/api/v1/deployments",
            deploy,
            "Deploy a release to an environment",
            Json(201, "the new deployment", schema::<Deployment>),
            || post(create_deployment),
        )
        .body::<DeployRequest>(),
        route(
            "get",
            "/api/v1/deployments",
            read,
            "Deployments, newest first",
            Json(200, "deployments", schema::<Vec<Deployment>>),
            || get(list_deployments),
        )
        .query::<ListQuery>(),
        route(
            "get",
            "/api/v1/deployments/{id}",
            read,
            "One deployment with its verdicts",
            Json(200, "the deployment", schema::<DeploymentView>),
            || get(show_deployment),
        ),
        route(
            "get",
            "/api/v1/deployments/{id}/log",
            read,
            "A deployment and its log",
            Json(200, "deployment and log", schema::<DeploymentLog>),
            || get(deployment_log),
        ),
        route(
            "post",
            "/api/v1/deployments/{id}/evidence",
            deploy,
            "Upload a validation file (a screenshot, a log) for a finished deployment's close-out",
            Json(201, "the file as kept", schema::<EvidenceFile>),
            || post(add_deployment_evidence).layer(DefaultBodyLimit::max(crate::controller::MAX_CLOSE_EVIDENCE_BYTES)),
        )
        .bytes("application/octet-stream")
        .query::<EvidenceUpload>(),
        route(
            "get",
            "/api/v1/deployments/{id}/evidence/{digest}",
            read,
            "A file of a deployment's close-out",
            Bytes("the file"),
            || get(deployment_evidence),
        ),
        route(
            "post",
            "/api/v1/deployments/{id}/close",
            deploy,
            "Close a finished deployment's change record with a summary and its evidence",
            Json(201, "the closed record", schema::<DeploymentClosure>),
            || post(close_deployment),
        )
        .body::<CloseDeployment>(),
        route(
            "post",
            "/api/v1/deployments/{id}/{action}",
            deploy,
            "abort, promote, pause or resume a running deployment",
            Json(202, "what was asked", schema::<ActionTaken>),
            || post(act_on_deployment),
        ),
        route(
            "post",
            "/api/v1/deployments/{id}/approve",
            approve,
            "Approve a deployment (never your own)",
            Json(202, "the verdict", schema::<VerdictGiven>),
            || post(approve_deployment),
        )
        .body::<VerdictRequest>(),
        route(
            "post",
            "/api/v1/deployments/{id}/reject",
            approve,
            "Reject a deployment",
            Json(202, "the verdict", schema::<VerdictGiven>),
            || post(reject_deployment),
        )
        .body::<VerdictRequest>(),
        route(
            "get",
            "/api/v1/migrations",
            read,
            "The database migrations applied in an environment and not backed out, oldest first",
            Json(200, "applied migrations", schema::<Vec<AppliedMigration>>),
            || get(list_migrations),
        )
        .query::<MigrationsQuery>(),
        route(
            "get",
            "/api/v1/incidents",
            read,
            "Incidents (one per rollback), newest first",
            Json(200, "incidents", schema::<Vec<IncidentRecord>>),
            || get(list_incidents),
        )
        .query::<IncidentQuery>(),
        route(
            "get",
            "/api/v1/drift",
            read,
            "What runs against what the store and config say should (instances, routers, release files, config)",
            Json(200, "the findings", schema::<DriftReport>),
            || get(drift),
        ),
        route(
            "post",
            "/api/v1/converge",
            deploy,
            "Repair what drift finds repairable (restart, re-route, re-unpack, stop strays), each repair audited",
            Json(200, "what was repaired and what remains", schema::<ConvergeReport>),
            || post(converge),
        ),
        route(
            "get",
            "/api/v1/dora",
            read,
            "DORA figures of an environment over a period, from Gantry's records",
            Json(200, "the figures", schema::<Dora>),
            || get(dora),
        )
        .query::<DoraQuery>(),
        route(
            "get",
            "/api/v1/incidents/{id}",
            read,
            "One incident",
            Json(200, "the incident", schema::<IncidentRecord>),
            || get(show_incident),
        ),
        route(
            "post",
            "/api/v1/incidents/{id}/close",
            approve,
            "Close a restored incident with its summary and follow-up (approver role)",
            Json(200, "the closed incident", schema::<IncidentRecord>),
            || post(close_incident),
        )
        .body::<CloseIncident>(),
        route(
            "post",
            "/api/v1/rollbacks",
            deploy,
            "Return an environment to its last good release",
            Json(201, "the rollback deployment", schema::<Deployment>),
            || post(create_rollback),
        )
        .body::<RollbackRequest>(),
        route(
            "get",
            "/api/v1/status",
            read,
            "What runs where",
            Json(200, "environments", schema::<StatusView>),
            || get(status),
        ),
        route(
            "get",
            "/api/v1/cluster",
            read,
            "The controllers sharing the store, the leader, its epoch and lease",
            Json(200, "the cluster", schema::<ClusterView>),
            || get(cluster),
        ),
        route(
            "get",
            "/api/v1/hosts",
            read,
            "The fleet's hosts: reachable, last seen, releases, instances and their health, routers",
            Json(200, "hosts", schema::<gantry_api::HostsView>),
            || get(hosts),
        ),
        route(
            "get",
            "/api/v1/traffic",
            read,
            "What each release pool of an environment served",
            Json(
                200,
                "pool statistics",
                schema::<Vec<gantry_router::PoolStats>>,
            ),
            || get(traffic),
        )
        .query::<TrafficQuery>(),
        route(
            "get",
            "/api/v1/logs",
            read,
            "Instance output or an environment's access log, filtered by release and time, from a cursor",
            Json(200, "a page of lines and the cursor after it", schema::<LogPage>),
            || get(logs),
        )
        .query::<LogsQuery>(),
        route(
            "get",
            "/api/v1/instances/{id}/log",
            read,
            "The output of one instance",
            Text("the log's tail"),
            || get(instance_log),
        )
        .query::<LogQuery>(),
        route(
            "post",
            "/api/v1/shutdown",
            administer,
            "Stop the controller (and its workloads)",
            Json(200, "stopping", schema::<ShutdownAnswer>),
            || post(shutdown),
        )
        .body::<ShutdownRequest>()
        // Stops the controller that receives it (a follower's workloads
        // are the leader's: it refuses to stop them).
        .here(),
        route(
            "get",
            "/api/v1/audit",
            read,
            "Audit records after a sequence number",
            Json(200, "anchor and records", schema::<AuditPage>),
            || get(list_audit),
        )
        .query::<AuditQuery>(),
        route(
            "get",
            "/api/v1/audit/verify",
            read,
            "Verify the hash chain, its head and the newest signed checkpoint; names the first bad record",
            Json(200, "the verdict", schema::<AuditVerdict>),
            || get(verify_audit),
        ),
        route(
            "get",
            "/api/v1/audit/checkpoint",
            read,
            "A signed checkpoint of the chain's head now, for an auditor to keep",
            Json(200, "the checkpoint", schema::<gantry_core::audit::Checkpoint>),
            || get(audit_checkpoint),
        ),
        route(
            "get",
            "/api/v1/audit/public-key",
            read,
            "The Ed25519 public key that signs audit checkpoints",
            Json(200, "the public key", schema::<AuditPublicKey>),
            || get(audit_public_key),
        ),
        route(
            "get",
            "/api/v1/whoami",
            read,
            "The caller's identity and roles",
            Json(200, "identity", schema::<Identity>),
            || get(whoami),
        ),
        route(
            "get",
            "/api/v1/users",
            administer,
            "Users and their roles",
            Json(200, "users", schema::<Vec<User>>),
            || get(list_users),
        ),
        route(
            "post",
            "/api/v1/users",
            administer,
            "Add a user",
            Json(201, "the user", schema::<User>),
            || post(create_user),
        )
        .body::<NewUser>(),
        route(
            "get",
            "/api/v1/tokens",
            administer,
            "API tokens (never their secrets)",
            Json(200, "tokens", schema::<Vec<TokenRecord>>),
            || get(list_tokens),
        )
        .query::<TokenQuery>(),
        // Anyone may mint a token for themself; `create_token` holds minting
        // for another user to admins.
        route(
            "post",
            "/api/v1/tokens",
            read,
            "Issue a token for oneself (anyone) or for another user (admins only; such a token may not give verdicts); its secret is in this answer only",
            Json(201, "the token", schema::<IssuedToken>),
            || post(create_token),
        )
        .body::<NewToken>(),
        route(
            "post",
            "/api/v1/tokens/{id}/revoke",
            administer,
            "Revoke a token",
            Json(200, "the revoked token", schema::<TokenRecord>),
            || post(revoke_token),
        ),
        route(
            "get",
            "/api/v1/approvals",
            read,
            "Deployments awaiting approval and emergency changes owed it",
            Json(200, "pending approvals", schema::<Vec<PendingApproval>>),
            || get(pending_approvals),
        ),
        route(
            "get",
            "/api/v1/releases/{version}/evidence",
            read,
            "Evidence attached to a release",
            Json(200, "evidence", schema::<Vec<EvidenceRecord>>),
            || get(list_evidence),
        ),
        route(
            "put",
            "/api/v1/releases/{version}/evidence/{kind}",
            deploy,
            "Attach a JUnit, SARIF, Cobertura or LCOV report",
            Json(201, "the parsed evidence", schema::<EvidenceRecord>),
            || put(add_evidence).layer(DefaultBodyLimit::max(MAX_EVIDENCE_BYTES)),
        )
        .bytes("application/octet-stream")
        .query::<EvidenceQuery>(),
        route(
            "get",
            "/api/v1/gates",
            read,
            "Each gate of a release for an environment",
            Json(200, "gates", schema::<GatesView>),
            || get(gates),
        )
        .query::<GatesQuery>(),
        route(
            "post",
            "/api/v1/rehearsals",
            deploy,
            "Start a rollback rehearsal (deploy, roll back, redeploy)",
            Json(202, "started", schema::<RehearsalAnswer>),
            || post(start_rehearsal),
        )
        .body::<RehearsalRequest>(),
        route(
            "get",
            "/api/v1/plans",
            read,
            "The deployment plan of a release for an environment",
            Json(200, "the plan in Markdown", schema::<crate::plan::Plan>),
            || get(show_plan),
        )
        .query::<GatesQuery>(),
        route(
            "post",
            "/api/v1/plans/approve",
            approve,
            "Approve a deployment plan; it is attached as evidence",
            Json(201, "the approval", schema::<PlanApproved>),
            || post(approve_plan),
        )
        .body::<PlanApproval>(),
        route(
            "get",
            "/api/v1/notifications",
            read,
            "Notification deliveries, newest first",
            Json(200, "deliveries", schema::<Vec<Delivery>>),
            || get(list_deliveries),
        )
        .query::<DeliveryQuery>(),
        route(
            "get",
            "/api/v1/events",
            read,
            "Server-sent events: every deployment step and notice",
            EventStream,
            || get(live_events),
        )
        // The leader's drive loops send them: a follower passes its stream on.
        .at_leader(),
        route(
            "get",
            "/metrics",
            read,
            "Gantry's metrics in the Prometheus text format",
            Metrics,
            || get(metrics),
        ),
        route("get", "/healthz", public, "Liveness", Text("ok"), || {
            get(|| async { "ok\n" })
        }),
        route(
            "get",
            "/status",
            public,
            "The public status page",
            Html("status page"),
            || get(status_html),
        ),
        route(
            "get",
            "/status.json",
            public,
            "The public status page as JSON",
            Json(200, "status", schema::<crate::observe::StatusPage>),
            || get(status_json),
        ),
        route(
            "get",
            "/",
            public,
            "The dashboard (signs in with a token)",
            Html("dashboard"),
            || get(dashboard),
        ),
        route(
            "get",
            "/openapi.json",
            public,
            "This document",
            Json(200, "OpenAPI 3.0", any_json),
            || get(|| async { axum::Json(openapi::document()) }),
        ),
    ]
}

/// The handlers of each path, each behind the permission check its route
/// names: (full path, its method router), in table order.
pub(super) fn method_routers(state: &AppState) -> Vec<(&'static str, MethodRouter<AppState>)> {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for r in routes() {
        let mut handler = (r.handler)();
        if r.at_leader {
            // Inside the permission check: a follower forwards only what
            // the caller may do.
            handler = handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                forward::to_leader,
            ));
        }
        if let Some(needs) = r.needs {
            let guard = Guard {
                state: state.clone(),
                needs,
            };
            handler = handler.route_layer(middleware::from_fn_with_state(guard, authenticate));
        }
        match by_path.iter_mut().find(|(p, _)| *p == r.path) {
            Some((_, existing)) => {
                let merged = std::mem::take(existing).merge(handler);
                *existing = merged;
            }
            None => by_path.push((r.path, handler)),
        }
    }
    by_path
}

/// What `authenticate` needs for one route: the state and the permission
/// the route's table entry names.
#[derive(Clone)]
pub(super) struct Guard {
    pub state: AppState,
    pub needs: Permission,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn each_method_and_path_is_in_the_table_once() {
        let mut seen = BTreeSet::new();
        for r in routes() {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            assert!(["get", "post", "put"].contains(&r.method), "{}", r.method);
        }
    }

    #[test]
    fn what_a_follower_forwards_is_under_the_api_and_a_write_unless_said_otherwise() {
        for r in routes() {
            if r.at_leader {
                // forward.rs puts the prefix back that nesting took off.
                assert!(r.path.starts_with("/api/v1/"), "{} {}", r.method, r.path);
            }
            let said_otherwise = [("post", "/api/v1/shutdown"), ("get", "/api/v1/events")];
            if !said_otherwise.contains(&(r.method, r.path)) {
                assert_eq!(r.at_leader, r.method != "get", "{} {}", r.method, r.path);
            }
        }
    }

    #[test]
    fn every_api_route_needs_a_permission() {
        for r in routes() {
            if r.path.starts_with("/api/v1/") || r.path == "/metrics" {
                assert!(r.needs.is_some(), "{} {} is public", r.method, r.path);
            }
        }
    }

    /// Spot checks of who may do what, as the roles document says.
    #[test]
    fn the_table_grants_what_each_role_may_do() {
        let needs = |method: &str, path: &str| {
            routes()
                .into_iter()
                .find(|r| r.method == method && r.path == path)
                .and_then(|r| r.needs)
        };
        use Permission::*;
        assert_eq!(needs("post", "/api/v1/tokens"), Some(Read));
        assert_eq!(needs("get", "/api/v1/tokens"), Some(Administer));
        assert_eq!(needs("post", "/api/v1/shutdown"), Some(Administer));
        assert_eq!(needs("post", "/api/v1/users"), Some(Administer));
        assert_eq!(
            needs("post", "/api/v1/deployments/{id}/approve"),
            Some(Approve)
        );
        assert_eq!(needs("post", "/api/v1/plans/approve"), Some(Approve));
        assert_eq!(
            needs("post", "/api/v1/deployments/{id}/{action}"),
            Some(Deploy)
        );
        assert_eq!(needs("get", "/api/v1/deployments"), Some(Read));
        assert_eq!(needs("get", "/healthz"), None);
    }
}
