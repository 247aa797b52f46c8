//! Restoring a backup: a SurrealQL dump made by [`Runtime::export_database`]
//! (SurrealDB's export, read in one transaction, so a consistent snapshot
//! even while the server writes) goes into a new data directory. Offline:
//! no server may hold the directory.

use std::path::Path;

use crate::config::StorageConfig;
use crate::error::{Error, Result};
use crate::store::Database;

/// Restores `backup` into `data_dir`, which must not exist or be empty.
/// The namespace and database are the ones `storage` names (the server's).
pub async fn restore(backup: &Path, data_dir: &Path, storage: &StorageConfig) -> Result<()> {
    if !backup.is_file() {
        return Err(Error::Startup(format!(
            "no backup file at {}",
            backup.display()
        )));
    }
    let occupied = std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(Error::Startup(format!(
            "{} is not empty: restore into a new data directory",
            data_dir.display()
        )));
    }
    let endpoint = crate::store::surrealkv_endpoint(data_dir)?;
    let db = Database::open_unmigrated(&endpoint, &storage.namespace, &storage.database).await?;
    // A backup from an older version brings its own migration records; the
    // first start on the directory applies the ones it lacks.
    db.import_file(backup).await
}
