//! Which conversation a protocol's own id names. The AI SDK's chat `id`, the
//! n8n widget's `sessionId` and AG-UI's `threadId` are all one of two things:
//! a conversation's id (a back end that opened it with `POST /chat/sessions`)
//! or a client-chosen id of a webchat conversation, opened on first use and
//! shared with `/api/webchat/...`, the widget and the console. A widget
//! always means the second: its id is the visitor's only credential.

use tertulia_actors::Error as RuntimeError;
use tertulia_actors::Runtime;
use tertulia_actors::model::SessionId;

use crate::auth::{Creator, WebchatCaller};
use crate::http::error::ApiError;

/// The conversation `id` names for this caller; a webchat id never seen
/// opens one. Another tenant's or client's conversation is not found.
pub async fn conversation(
    runtime: &Runtime,
    creator: &Creator,
    id: &str,
) -> Result<SessionId, ApiError> {
    let scope = &creator.scope;
    if creator.widget_origin.is_none() {
        if let Ok(session) = id.parse::<SessionId>() {
            match runtime.visible_session(scope, session).await {
                Ok(record) => return Ok(record.id),
                Err(RuntimeError::SessionNotFound { .. }) if scope.client.is_none() => {}
                Err(error) => return Err(error.into()),
            }
        }
        // An end user's token speaks only for conversations opened for them.
        if scope.client.is_some() {
            return Err(ApiError::UnknownSession);
        }
    }
    let caller = WebchatCaller {
        tenant: scope.tenant.clone(),
        widget_origin: creator.widget_origin.clone(),
        client_ip: None,
    };
    caller.check_session_id(id)?;
    let record = runtime
        .webchat_conversation(&scope.tenant, id, true)
        .await?;
    Ok(record.id)
}
