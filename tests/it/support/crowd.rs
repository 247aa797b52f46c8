//! Tests that start a cluster (a SurrealDB server and several tertulia
//! processes) crowd this machine's two cores. A test whose outcome depends
//! on its clients keeping up (readers that must never fall behind their
//! bounded queues) runs while no cluster does: clusters share the machine
//! with each other, that test with none of them.

use std::sync::{Arc, LazyLock};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

static CROWD: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// Held while a cluster runs.
pub async fn crowding() -> OwnedRwLockReadGuard<()> {
    CROWD.clone().read_owned().await
}

/// Held by a test that must not share the machine with a cluster.
pub async fn uncrowded() -> OwnedRwLockWriteGuard<()> {
    CROWD.clone().write_owned().await
}
