//! Finding the controller and the token the CLI acts with. The calls
//! themselves are `gantry_api::client::Client`'s typed methods.

use anyhow::{Context, Result};
pub use gantry_api::client::Client;
use std::path::Path;

/// Where the controller is and how to authenticate, from flags, the
/// environment or the data directory (in that order).
pub fn connect(data_dir: &Path, server: Option<&str>) -> Result<Client> {
    let base = match server {
        Some(s) => s.to_owned(),
        None => {
            let path = data_dir.join(gantry_server::SERVER_FILE);
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "no controller found: {} is missing (start one with `gantry server --data-dir {}`, or pass --server URL)",
                    path.display(),
                    data_dir.display()
                )
            })?;
            let info: gantry_api::ServerInfo = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid", path.display()))?;
            info.url
        }
    };
    let token = match std::env::var("GANTRY_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => {
            let path = data_dir.join(gantry_server::TOKEN_FILE);
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
    Ok(Client::new(&base, token)?)
}
