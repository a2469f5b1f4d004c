//! The CLI's HTTP client for the controller's API.

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// Where the controller is and how to authenticate, from flags, the
/// environment or the data directory (in that order).
pub fn connect(data_dir: &Path, server: Option<&str>) -> Result<Client> {
    let base = match server {
        Some(s) => s.trim_end_matches('/').to_owned(),
        None => {
            let path = data_dir.join(gantry_server::SERVER_FILE);
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "no controller found: {} is missing (start one with `gantry server --data-dir {}`, or pass --server URL)",
                    path.display(),
                    data_dir.display()
                )
            })?;
            let info: gantry_server::ServerInfo = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid", path.display()))?;
            info.url
        }
    };
    let token = match std::env::var("GANTRY_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => {
            let path: PathBuf = data_dir.join(gantry_server::TOKEN_FILE);
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "no API token: set GANTRY_TOKEN or make {} readable",
                        path.display()
                    )
                })?
                .trim()
                .to_owned()
        }
    };
    let http = reqwest::Client::builder().no_proxy().build()?;
    Ok(Client { base, token, http })
}

impl Client {
    /// The same controller, acting as the holder of `token`.
    pub fn as_holder_of(&self, token: String) -> Client {
        Client {
            base: self.base.clone(),
            token,
            http: self.http.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = req.bearer_auth(&self.token).send().await.with_context(|| {
            format!(
                "cannot reach the controller at {}; is `gantry server` running?",
                self.base
            )
        })?;
        let status = resp.status();
        let text = resp.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        let msg = body["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        Err(ApiFailure { message: msg }.into())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let v = self.send(self.http.get(self.url(path))).await?;
        serde_json::from_value(v).map_err(|e| anyhow!("unexpected answer from {path}: {e}"))
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn get_text(&self, path: &str) -> Result<String> {
        match self.send(self.http.get(self.url(path))).await? {
            Value::String(s) => Ok(s),
            other => Ok(other.to_string()),
        }
    }

    /// PUTs raw bytes with query parameters.
    pub async fn put_bytes(
        &self,
        path: &str,
        query: &[(&str, &str)],
        bytes: Vec<u8>,
    ) -> Result<Value> {
        self.send(self.http.put(self.url(path)).query(query).body(bytes))
            .await
    }

    pub async fn put_artifact(
        &self,
        version: &str,
        bytes: Vec<u8>,
        git_sha: Option<&str>,
        signature_b64: Option<String>,
    ) -> Result<Value> {
        let mut req = self
            .http
            .put(self.url(&format!("/releases/{version}")))
            .body(bytes);
        if let Some(sha) = git_sha {
            req = req.header("x-gantry-git-sha", sha);
        }
        if let Some(sig) = signature_b64 {
            req = req.header("x-gantry-signature", sig);
        }
        self.send(req).await
    }
}

/// An error answer from the API, kept typed so `main` can choose an exit code.
#[derive(Debug)]
pub struct ApiFailure {
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

pub fn ensure_ok(v: &Value) -> Result<()> {
    if v.is_null() {
        bail!("empty answer from the controller");
    }
    Ok(())
}
