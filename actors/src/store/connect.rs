//! Reaching SurrealDB: which endpoints are servers, connecting (and
//! signing in to a server), and the embedded store's endpoint under a data
//! directory. `database.rs` opens the handle with these.

use std::path::Path;

use surrealdb::Surreal;
use surrealdb::engine::any::Any;

use crate::config::DbCredentials;
use crate::error::{Error, Result};

/// Whether `endpoint` names a SurrealDB server rather than an embedded engine.
pub fn is_server(endpoint: &str) -> bool {
    ["ws://", "wss://"]
        .iter()
        .any(|scheme| endpoint.starts_with(scheme))
}

/// Connects to `endpoint`, signed in as `credentials` when given. A server
/// that goes away later is reconnected to by the SDK, which signs in again.
pub(super) async fn connect(
    endpoint: &str,
    credentials: Option<&DbCredentials>,
) -> Result<Surreal<Any>> {
    let db = surrealdb::engine::any::connect(endpoint)
        .await
        .map_err(|error| Error::Startup(format!("cannot open database at {endpoint}: {error}")))?;
    if let Some(credentials) = credentials {
        let root = surrealdb::opt::auth::Root {
            username: credentials.user.clone(),
            password: credentials.password.clone(),
        };
        db.signin(root).await.map_err(|error| {
            Error::Startup(format!(
                "the database at {endpoint} refused user `{}` ({}, {}): {error}",
                credentials.user,
                DbCredentials::USER,
                DbCredentials::PASSWORD
            ))
        })?;
    }
    Ok(db)
}

/// The endpoint for an embedded surrealkv store under `data_dir`, syncing
/// every commit to disk, so an acknowledged message survives a crash.
pub fn surrealkv_endpoint(data_dir: &Path) -> Result<String> {
    std::fs::create_dir_all(data_dir).map_err(|error| {
        Error::Startup(format!(
            "cannot create data directory {}: {error}",
            data_dir.display()
        ))
    })?;
    let absolute = std::fs::canonicalize(data_dir).map_err(|error| {
        Error::Startup(format!(
            "cannot resolve data directory {}: {error}",
            data_dir.display()
        ))
    })?;
    Ok(format!(
        "surrealkv://{}/tertulia.db?sync=every",
        absolute.display()
    ))
}
