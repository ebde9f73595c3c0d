//! EmergencyRevoke at the gRPC edge: builds the domain's [`Emergency`] from the
//! application state and converts its outcome and errors. The orchestration (one
//! transaction per incident, idempotency, scoping) lives in `crate::emergency`.

use tessera_proto::v1 as pb;
use tonic::Status;

use super::status::from_emergency;
use crate::app::App;
use crate::audit::Actor;
use crate::emergency::{Emergency, EmergencyOutcome, EmergencyScope, IncidentId};

/// Carries out `incident` over `scope` (the caller's confinement already checked).
pub async fn revoke(
    app: &App,
    incident: &IncidentId,
    scope: &EmergencyScope,
    actor: &Actor,
) -> Result<pb::EmergencyRevokeResponse, Status> {
    let emergency = Emergency {
        store: app.store.as_ref(),
        sessions: app.session_store.as_ref(),
        keys: &app.keys,
        clock: app.clock.as_ref(),
        revocation_horizon: app.sessions.revocation_horizon(),
        challenges: Some(&app.challenges),
    };
    let outcome = emergency
        .revoke(incident, scope, actor)
        .await
        .map_err(from_emergency)?;
    Ok(match outcome {
        EmergencyOutcome::Applied(applied) => pb::EmergencyRevokeResponse {
            revision: applied.revision.0,
            n_sessions_revoked: applied.n_sessions,
            new_kids: applied.new_kids.iter().map(ToString::to_string).collect(),
            replayed: false,
            revoked_kids: applied
                .revoked_kids
                .iter()
                .map(ToString::to_string)
                .collect(),
        },
        EmergencyOutcome::Replayed => pb::EmergencyRevokeResponse {
            revision: app.hub.revision().0,
            n_sessions_revoked: 0,
            new_kids: Vec::new(),
            replayed: true,
            revoked_kids: Vec::new(),
        },
    })
}
