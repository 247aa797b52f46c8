//! `GET /admin/backup`: the whole database as SurrealQL, taken while the
//! server serves (SurrealDB's export reads in one transaction: a consistent
//! snapshot). Writes queued before the request are committed first, so
//! every message acknowledged before it is in the backup. `tertulia backup`
//! saves it; `tertulia restore` loads it into a new data directory.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::Response;

use super::webhooks::AdminOnly;
use crate::app::AppState;
use crate::http::error::ApiError;

pub fn routes(app: AppState, admin: AdminOnly) -> BoxedFilter<(warp::reply::Response,)> {
    // GET /admin/backup
    warp::path!("admin" / "backup")
        .and(admin)
        .and(warp::get())
        .and(app.filter())
        .then(backup)
        .boxed()
}

async fn backup(app: AppState) -> warp::reply::Response {
    use warp::Reply;
    match app.runtime.export_database().await {
        Ok(dump) => Response::builder()
            .header("content-type", "application/sql; charset=utf-8")
            .header(
                "content-disposition",
                "attachment; filename=\"tertulia-backup.surql\"",
            )
            .body(dump.into())
            .expect("static headers"),
        Err(error) => ApiError::from(error).into_response(),
    }
}
