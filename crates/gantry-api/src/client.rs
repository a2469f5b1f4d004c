//! A typed client for the controller's API: one method per operation, each
//! taking the request type and returning the answer type of this crate, so
//! a renamed field fails to compile instead of failing at run time.

use crate::access::{Identity, IssuedToken, NewToken, NewUser, TokenQuery};
use crate::audit::{AuditPage, AuditPublicKey, AuditQuery, AuditVerdict};
use crate::deployments::{
    Action, ActionTaken, DeployRequest, DeploymentLog, DeploymentView, ListQuery, RollbackRequest,
    VerdictGiven, VerdictRequest,
};
use crate::error::ErrorBody;
use crate::governance::{
    DeliveryQuery, EvidenceQuery, GatesQuery, GatesView, PendingApproval, Plan, PlanApproval,
    PlanApproved, RehearsalAnswer, RehearsalRequest,
};
use crate::hosts::HostsView;
use crate::records::{Delivery, EvidenceRecord, ReleaseRecord, TokenRecord, User};
use crate::releases::{headers, VerifyResult};
use crate::status::{
    LogQuery, ShutdownAnswer, ShutdownRequest, StatusPage, StatusView, TrafficQuery,
};
use crate::traffic::PoolStats;
use gantry_core::audit::Checkpoint;
use gantry_core::{Deployment, DeploymentId};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the controller at {base}; is `gantry server` running? ({source})")]
    Unreachable {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    /// The controller answered with an error: its code and message.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// An answer that is not what this operation answers.
    #[error("unexpected answer from {path}: {detail}")]
    Unexpected { path: String, detail: String },
    #[error("invalid controller address {0:?}: expected a URL such as http://127.0.0.1:7400")]
    BadBase(String),
}

impl ClientError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// The error answer's stable code (`not_found`, `forbidden`…).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How long a pooled connection is kept: under the controller's 10 s.
const IDLE_BEFORE_THE_SERVER_CLOSES: std::time::Duration = std::time::Duration::from_secs(5);

/// One controller, reached as the holder of one token.
#[derive(Clone)]
pub struct Client {
    base: Url,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    // The token stays out of every debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the controller at `base` (e.g. `http://127.0.0.1:7400`).
    pub fn new(base: &str, token: impl Into<String>) -> Result<Client> {
        let trimmed = base.trim_end_matches('/');
        let base = Url::parse(trimmed)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| ClientError::BadBase(base.to_owned()))?;
        // The controller closes a connection idle for 10 s (its header
        // timeout covers the wait for the next request); a pooled one kept
        // longer may be reused just as it closes, and the request is lost.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(IDLE_BEFORE_THE_SERVER_CLOSES)
            .build()
            .map_err(|e| ClientError::Unreachable {
                base: trimmed.to_owned(),
                source: e,
            })?;
        Ok(Client {
            base,
            token: token.into(),
            http,
        })
    }

    /// The same controller, acting as the holder of `token`.
    pub fn as_holder_of(&self, token: impl Into<String>) -> Client {
        Client {
            base: self.base.clone(),
            token: token.into(),
            http: self.http.clone(),
        }
    }

    /// The controller's address, as given.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `/api/v1/` followed by `segments`, each percent-encoded: a version
    /// or an id can never add a path segment or a query of its own.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    fn public_url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    /// Sends and reads the answer body, turning an error answer into [`ClientError::Api`].
    async fn send_raw(&self, req: RequestBuilder) -> Result<(String, String)> {
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            base: self.base().to_owned(),
            source: e,
        })?;
        let status = resp.status();
        let path = resp.url().path().to_owned();
        let text = resp.text().await.map_err(|e| ClientError::Unexpected {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if status.is_success() {
            return Ok((path, text));
        }
        Err(api_error(status, &text))
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let (path, text) = self.send_raw(req).await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Unexpected {
            path,
            detail: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &impl Serialize,
    ) -> Result<T> {
        self.send(self.request(Method::GET, self.url(segments)).query(query))
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T> {
        self.send(self.request(Method::POST, self.url(segments)).json(body))
            .await
    }

    // Releases

    pub async fn releases(&self) -> Result<Vec<ReleaseRecord>> {
        self.get(&["releases"], &()).await
    }

    pub async fn release(&self, version: &str) -> Result<ReleaseRecord> {
        self.get(&["releases", version], &()).await
    }

    /// Registers an artifact (streamed from `body`). Registering the same
    /// content again is not an error: the answer is the existing record.
    pub async fn put_release(
        &self,
        version: &str,
        body: impl Into<reqwest::Body>,
        git_sha: Option<&str>,
        signature_b64: Option<&str>,
        commit_time: Option<&str>,
    ) -> Result<ReleaseRecord> {
        let mut req = self
            .request(Method::PUT, self.url(&["releases", version]))
            .body(body);
        if let Some(sha) = git_sha {
            req = req.header(headers::GIT_SHA, sha);
        }
        if let Some(at) = commit_time {
            req = req.header(headers::COMMIT_TIME, at);
        }
        if let Some(sig) = signature_b64 {
            req = req.header(headers::SIGNATURE, sig);
        }
        self.send(req).await
    }

    pub async fn verify_releases(&self) -> Result<Vec<VerifyResult>> {
        self.post(&["releases", "verify"], &serde_json::json!({}))
            .await
    }

    // Deployments

    pub async fn deploy(&self, request: &DeployRequest) -> Result<Deployment> {
        self.post(&["deployments"], request).await
    }

    pub async fn rollback(&self, request: &RollbackRequest) -> Result<Deployment> {
        self.post(&["rollbacks"], request).await
    }

    /// Newest first.
    pub async fn deployments(&self, query: &ListQuery) -> Result<Vec<Deployment>> {
        self.get(&["deployments"], query).await
    }

    pub async fn deployment(&self, id: DeploymentId) -> Result<DeploymentView> {
        self.get(&["deployments", &id.to_string()], &()).await
    }

    pub async fn deployment_log(&self, id: DeploymentId) -> Result<DeploymentLog> {
        self.get(&["deployments", &id.to_string(), "log"], &())
            .await
    }

    /// Abort, promote, pause or resume a running deployment.
    pub async fn act(&self, id: DeploymentId, action: Action) -> Result<ActionTaken> {
        self.post(
            &["deployments", &id.to_string(), action.as_str()],
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn approve(
        &self,
        id: DeploymentId,
        verdict: &VerdictRequest,
    ) -> Result<VerdictGiven> {
        self.post(&["deployments", &id.to_string(), "approve"], verdict)
            .await
    }

    pub async fn reject(&self, id: DeploymentId, verdict: &VerdictRequest) -> Result<VerdictGiven> {
        self.post(&["deployments", &id.to_string(), "reject"], verdict)
            .await
    }

    // Environments and the controller

    pub async fn status(&self) -> Result<StatusView> {
        self.get(&["status"], &()).await
    }

    /// The controllers sharing the store, the leader, its epoch and lease.
    pub async fn cluster(&self) -> Result<crate::cluster::ClusterView> {
        self.get(&["cluster"], &()).await
    }

    /// The fleet's hosts as the controller sees them now.
    pub async fn hosts(&self) -> Result<HostsView> {
        self.get(&["hosts"], &()).await
    }

    pub async fn traffic(&self, query: &TrafficQuery) -> Result<Vec<PoolStats>> {
        self.get(&["traffic"], query).await
    }

    /// The end of an instance's output, as text.
    pub async fn instance_log(&self, id: &str, query: &LogQuery) -> Result<String> {
        let url = self.url(&["instances", id, "log"]);
        Ok(self
            .send_raw(self.request(Method::GET, url).query(query))
            .await?
            .1)
    }

    /// Instance output or an access log, from `query.cursor` on.
    pub async fn logs(&self, query: &crate::LogsQuery) -> Result<crate::LogPage> {
        let url = self.url(&["logs"]);
        self.send(self.request(Method::GET, url).query(query)).await
    }

    pub async fn shutdown(&self, request: &ShutdownRequest) -> Result<ShutdownAnswer> {
        self.post(&["shutdown"], request).await
    }

    /// The public status page's data (no token needed).
    pub async fn status_page(&self) -> Result<StatusPage> {
        let url = self.public_url(&["status.json"]);
        self.send(self.http.get(url)).await
    }

    // Audit

    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditPage> {
        self.get(&["audit"], query).await
    }

    pub async fn audit_verify(&self) -> Result<AuditVerdict> {
        self.get(&["audit", "verify"], &()).await
    }

    pub async fn audit_checkpoint(&self) -> Result<Checkpoint> {
        self.get(&["audit", "checkpoint"], &()).await
    }

    pub async fn audit_public_key(&self) -> Result<AuditPublicKey> {
        self.get(&["audit", "public-key"], &()).await
    }

    // Users and tokens

    pub async fn whoami(&self) -> Result<Identity> {
        self.get(&["whoami"], &()).await
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        self.get(&["users"], &()).await
    }

    pub async fn create_user(&self, user: &NewUser) -> Result<User> {
        self.post(&["users"], user).await
    }

    pub async fn tokens(&self, query: &TokenQuery) -> Result<Vec<TokenRecord>> {
        self.get(&["tokens"], query).await
    }

    pub async fn create_token(&self, token: &NewToken) -> Result<IssuedToken> {
        self.post(&["tokens"], token).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenRecord> {
        self.post(&["tokens", id, "revoke"], &serde_json::json!({}))
            .await
    }

    // Governance

    /// Newest first.
    pub async fn incidents(
        &self,
        query: &crate::IncidentQuery,
    ) -> Result<Vec<crate::IncidentRecord>> {
        self.get(&["incidents"], query).await
    }

    pub async fn drift(&self) -> Result<crate::DriftReport> {
        self.get(&["drift"], &()).await
    }

    pub async fn converge(&self) -> Result<crate::ConvergeReport> {
        self.post(&["converge"], &serde_json::json!({})).await
    }

    pub async fn dora(&self, query: &crate::DoraQuery) -> Result<crate::Dora> {
        self.get(&["dora"], query).await
    }

    pub async fn incident(&self, id: i64) -> Result<crate::IncidentRecord> {
        self.get(&["incidents", &id.to_string()], &()).await
    }

    pub async fn close_incident(
        &self,
        id: i64,
        body: &crate::CloseIncident,
    ) -> Result<crate::IncidentRecord> {
        self.post(&["incidents", &id.to_string(), "close"], body)
            .await
    }

    pub async fn approvals(&self) -> Result<Vec<PendingApproval>> {
        self.get(&["approvals"], &()).await
    }

    pub async fn evidence(&self, version: &str) -> Result<Vec<EvidenceRecord>> {
        self.get(&["releases", version, "evidence"], &()).await
    }

    /// Attaches a report (`kind`: unit, integration, security, coverage).
    pub async fn put_evidence(
        &self,
        version: &str,
        kind: &str,
        query: &EvidenceQuery,
        body: impl Into<reqwest::Body>,
    ) -> Result<EvidenceRecord> {
        let url = self.url(&["releases", version, "evidence", kind]);
        self.send(self.request(Method::PUT, url).query(query).body(body))
            .await
    }

    /// Uploads a validation file for deployment `id`'s close-out.
    pub async fn add_deployment_evidence(
        &self,
        id: i64,
        name: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<crate::EvidenceFile> {
        let url = self.url(&["deployments", &id.to_string(), "evidence"]);
        let query = crate::EvidenceUpload {
            name: name.to_owned(),
        };
        self.send(self.request(Method::POST, url).query(&query).body(body))
            .await
    }

    /// Closes deployment `id`'s change record.
    pub async fn close_deployment(
        &self,
        id: i64,
        request: &crate::CloseDeployment,
    ) -> Result<crate::DeploymentClosure> {
        self.post(&["deployments", &id.to_string(), "close"], request)
            .await
    }

    pub async fn gates(&self, query: &GatesQuery) -> Result<GatesView> {
        self.get(&["gates"], query).await
    }

    pub async fn rehearse(&self, request: &RehearsalRequest) -> Result<RehearsalAnswer> {
        self.post(&["rehearsals"], request).await
    }

    pub async fn plan(&self, query: &GatesQuery) -> Result<Plan> {
        self.get(&["plans"], query).await
    }

    pub async fn approve_plan(&self, approval: &PlanApproval) -> Result<PlanApproved> {
        self.post(&["plans", "approve"], approval).await
    }

    pub async fn notifications(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>> {
        self.get(&["notifications"], query).await
    }
}

/// An error answer as [`ClientError::Api`]; a body that is not the API's
/// error shape (a proxy's page, say) becomes the message, shortened.
fn api_error(status: StatusCode, text: &str) -> ClientError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => {
            let mut message: String = text.trim().chars().take(300).collect();
            if message.is_empty() {
                message = format!("HTTP {status}");
            }
            ClientError::Api {
                status: status.as_u16(),
                code: String::new(),
                message,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_so_a_value_cannot_change_the_route() {
        let c = Client::new("http://127.0.0.1:7400/", "t").unwrap();
        assert_eq!(
            c.url(&["releases", "1.0.0"]).as_str(),
            "http://127.0.0.1:7400/api/v1/releases/1.0.0"
        );
        assert_eq!(
            c.url(&["releases", "../tokens?x=1"]).as_str(),
            "http://127.0.0.1:7400/api/v1/releases/..%2Ftokens%3Fx=1"
        );
    }

    #[test]
    fn a_bad_base_is_refused_with_what_was_expected() {
        let e = Client::new("127.0.0.1:7400", "t").unwrap_err();
        assert!(e.to_string().contains("expected a URL"), "{e}");
    }

    #[test]
    fn error_answers_keep_code_and_message() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            r#"{"error":{"code":"not_found","message":"no such release"}}"#,
        );
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.code(), Some("not_found"));
        assert_eq!(e.to_string(), "no such release");
        let e = api_error(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>");
        assert_eq!(e.to_string(), "<html>bad gateway</html>");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let c = Client::new("http://127.0.0.1:7400", "s3cret-token").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
