//! Emergency revocation (DESIGN §5): one tenant (tenant entry, all its sessions and
//! refresh families) or everything (emergency rotation of every key set plus an `all`
//! entry). Idempotent per incident id: the first call claims the id in the store; a
//! repeat changes nothing and says so.
//!
//! A claim whose work failed is released (a `…:released` marker beside it) and the next
//! call takes the following attempt's claim, so a retry after a failure does the work
//! instead of answering `replayed` with nothing revoked. A claim whose holder died
//! mid-work stays taken: the operator retries with a new incident id.

use tessera_common::ids::TenantId;
use tessera_common::keys::KeySetName;
use tessera_proto::v1 as pb;
use tonic::Status;

use super::status::{from_key, from_session, from_store};
use crate::app::App;
use crate::keys::manager::ChangeContext;
use crate::keys::rotation::Trigger;
use crate::sessions::service::{Actor, RevocationTarget};

/// Failed attempts at one incident id before it is refused: each leaves two metadata
/// rows, so a persistently failing incident cannot grow the table without bound.
const MAX_INCIDENT_ATTEMPTS: u32 = 16;

/// The outcome of claiming an incident id.
enum Claim {
    /// This call does the work; on failure it releases `name`.
    Mine { name: String },
    /// Another call did (or is doing) the work.
    Replayed,
}

/// Claims `incident_id`: the first attempt whose claim was not released.
async fn claim(app: &App, incident_id: &str, actor: &Actor) -> Result<Claim, Status> {
    // Unique per call (a client may repeat its request id), so "the stored value is mine"
    // really means this call won.
    let mine = format!(
        "{} {} {}",
        actor.request_id,
        app.now().0,
        uuid::Uuid::new_v4()
    )
    .into_bytes();
    for attempt in 0..MAX_INCIDENT_ATTEMPTS {
        let name = claim_name(incident_id, attempt);
        let stored = app
            .store
            .put_meta_if_absent(&name, mine.clone())
            .await
            .map_err(from_store)?;
        if stored == mine {
            return Ok(Claim::Mine { name });
        }
        let released = app
            .store
            .meta(&released_name(&name))
            .await
            .map_err(from_store)?;
        if released.is_none() {
            return Ok(Claim::Replayed);
        }
    }
    Err(Status::resource_exhausted(
        "incident_id: too many failed attempts; use a new incident id",
    ))
}

/// Releases a claim whose work failed, so a retry with the same incident id does the work.
async fn release(app: &App, name: &str) {
    let marker = released_name(name);
    if let Err(error) = app
        .store
        .put_meta_if_absent(&marker, b"released".to_vec())
        .await
    {
        // The claim stays taken: a retry answers `replayed`, and the operator needs a new
        // incident id. Loud, because the revocation they asked for is not in force.
        tracing::error!(claim = %name, error = %error, "cannot release a failed incident claim");
    }
}

/// `incident:<id>` for the first attempt (the name earlier versions used), then
/// `incident:<id>#<n>`.
fn claim_name(incident_id: &str, attempt: u32) -> String {
    match attempt {
        0 => format!("incident:{incident_id}"),
        n => format!("incident:{incident_id}#{n}"),
    }
}

fn released_name(claim_name: &str) -> String {
    format!("{claim_name}:released")
}

/// Runs `work` under a claim of `incident_id`: replayed when another call holds it,
/// released when `work` fails.
async fn once_per_incident<F>(
    app: &App,
    incident_id: &str,
    actor: &Actor,
    work: F,
) -> Result<pb::EmergencyRevokeResponse, Status>
where
    F: Future<Output = Result<pb::EmergencyRevokeResponse, Status>>,
{
    let name = match claim(app, incident_id, actor).await? {
        Claim::Replayed => return Ok(replayed(app)),
        Claim::Mine { name } => name,
    };
    let outcome = work.await;
    if outcome.is_err() {
        release(app, &name).await;
    }
    outcome
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
    let work = revoke_tenant_now(app, incident_id, tenant, actor);
    once_per_incident(app, incident_id, actor, work).await
}

async fn revoke_tenant_now(
    app: &App,
    incident_id: &str,
    tenant: TenantId,
    actor: &Actor,
) -> Result<pb::EmergencyRevokeResponse, Status> {
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
    let work = revoke_everything_now(app, incident_id, actor);
    once_per_incident(app, incident_id, actor, work).await
}

/// The work of [`revoke_everything`]. A failure part-way (one set rotated, the next not)
/// is safe to redo: a second emergency rotation only revokes the first one's successor.
async fn revoke_everything_now(
    app: &App,
    incident_id: &str,
    actor: &Actor,
) -> Result<pb::EmergencyRevokeResponse, Status> {
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
