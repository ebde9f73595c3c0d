//! Emergency revocation (DESIGN §5): one tenant (tenant entry, all its sessions and
//! refresh families) or everything (emergency rotation of every key set plus an `all`
//! entry). Idempotent per incident id: the first call claims the id in the store; a
//! repeat changes nothing and says so.

use tessera_common::ids::TenantId;
use tessera_common::keys::KeySetName;
use tessera_proto::v1 as pb;
use tonic::Status;

use super::status::{from_key, from_session, from_store};
use crate::app::App;
use crate::keys::manager::ChangeContext;
use crate::keys::rotation::Trigger;
use crate::sessions::service::{Actor, RevocationTarget};

/// Claims `incident_id`; returns false when it was already claimed.
async fn claim(app: &App, incident_id: &str, actor: &Actor) -> Result<bool, Status> {
    let name = format!("incident:{incident_id}");
    let mine = format!("{} {}", actor.request_id, app.now().0).into_bytes();
    let stored = app
        .store
        .put_meta_if_absent(&name, mine.clone())
        .await
        .map_err(from_store)?;
    Ok(stored == mine)
}

fn replayed(app: &App) -> pb::EmergencyRevokeResponse {
    pb::EmergencyRevokeResponse {
        revision: app.hub.revision().0,
        n_sessions_revoked: 0,
        new_kids: Vec::new(),
        replayed: true,
        revoked_kids: Vec::new(),
    }
}

/// Revokes every token and session of `tenant`.
pub async fn revoke_tenant(
    app: &App,
    incident_id: &str,
    tenant: TenantId,
    actor: &Actor,
) -> Result<pb::EmergencyRevokeResponse, Status> {
    if !claim(app, incident_id, actor).await? {
        return Ok(replayed(app));
    }
    let actor = Actor {
        reason: format!("emergency {incident_id}: {}", actor.reason),
        ..actor.clone()
    };
    let revoked = app
        .sessions
        .revoke(
            RevocationTarget::Tenant(tenant.clone()),
            Some(tenant),
            &actor,
        )
        .await
        .map_err(from_session)?;
    Ok(pb::EmergencyRevokeResponse {
        revision: revoked.revision.0,
        n_sessions_revoked: revoked.n_sessions,
        new_kids: Vec::new(),
        replayed: false,
        revoked_kids: Vec::new(),
    })
}

/// Rotates every key set in emergency mode and revokes every token and session.
pub async fn revoke_everything(
    app: &App,
    incident_id: &str,
    actor: &Actor,
) -> Result<pb::EmergencyRevokeResponse, Status> {
    if !claim(app, incident_id, actor).await? {
        return Ok(replayed(app));
    }
    let context = ChangeContext {
        actor: actor.actor.clone(),
        request_id: actor.request_id.clone(),
        reason: format!("emergency {incident_id}: {}", actor.reason),
    };
    let mut new_kids = Vec::new();
    let mut revoked_kids = Vec::new();
    for key_set in KeySetName::ALL {
        let outcome = app
            .keys
            .rotate(key_set, Trigger::Emergency, &context)
            .await
            .map_err(from_key)?;
        new_kids.extend(outcome.new_kid.map(|kid| kid.to_string()));
        revoked_kids.extend(outcome.revoked_kids.iter().map(ToString::to_string));
    }
    let actor = Actor {
        reason: context.reason.clone(),
        ..actor.clone()
    };
    let revoked = app
        .sessions
        .revoke(RevocationTarget::All, None, &actor)
        .await
        .map_err(from_session)?;
    Ok(pb::EmergencyRevokeResponse {
        revision: revoked.revision.0,
        n_sessions_revoked: revoked.n_sessions,
        new_kids,
        replayed: false,
        revoked_kids,
    })
}
