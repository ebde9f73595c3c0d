//! What every scenario signs, sends and verifies: one freshly generated key per
//! algorithm, and the same access-token request (and hence the same claims) everywhere,
//! so the raw rates and the RPC rates measure the same token.

use std::time::Duration;

use anyhow::Context;
use tessera_common::UnixMillis;
use tessera_common::claims::AccessClaims;
use tessera_common::ids::{KeyId, Subject, TenantId};
use tessera_common::jwk::Jwk;
use tessera_common::keys::{Algorithm, KeySchedule, KeySetName};
use tessera_common::verify::VerifyingKey;
use tessera_issuer::keys::material;
use tessera_issuer::keys::signer::Signer;
use tessera_issuer::tokens::{self, AccessTokenRequest, TokenPolicy};
use tessera_proto::v1 as pb;

/// Subject, tenant, role and permissions of every benchmark token.
const SUBJECT: &str = "user-1";
const TENANT: &str = "acme";
const ROLE: &str = "staff";
const PERMISSIONS: [&str; 2] = ["invoices:read", "invoices:write"];

/// A generated key: its parsed signer, PKCS#8 private key and public schedule.
pub struct BenchKey {
    pub signer: Signer,
    pub pkcs8: Vec<u8>,
    pub public_jwk: Jwk,
    pub algorithm: Algorithm,
}

impl BenchKey {
    /// Generates a key for `algorithm` exactly as the issuer does.
    pub fn generate(algorithm: Algorithm) -> anyhow::Result<Self> {
        let kid = "access-bench";
        let generated = material::generate(algorithm, kid)?;
        let signer = Signer::from_pkcs8(KeyId::new(kid)?, algorithm, &generated.private_key)?;
        Ok(BenchKey {
            signer,
            pkcs8: generated.private_key.to_vec(),
            public_jwk: generated.public_jwk.clone(),
            algorithm,
        })
    }

    /// Returns the parsed public key, as a verifier holds it.
    pub fn verifying_key(&self) -> anyhow::Result<VerifyingKey> {
        let schedule = KeySchedule {
            kid: self.signer.kid().clone(),
            key_set: KeySetName::Access,
            algorithm: self.algorithm,
            created_at: UnixMillis(0),
            activates_at: UnixMillis(0),
            deactivates_at: None,
            verify_until: None,
            revoked_at: None,
            public_jwk: self.public_jwk.clone(),
        };
        VerifyingKey::from_schedule(&schedule).context("importing the benchmark public key")
    }
}

/// The gRPC request every issuance call sends.
pub fn issue_request() -> pb::IssueAccessTokenRequest {
    pb::IssueAccessTokenRequest {
        subject: SUBJECT.into(),
        tenant_id: TENANT.into(),
        role: ROLE.into(),
        permissions: PERMISSIONS.iter().map(|p| (*p).to_owned()).collect(),
        mfa_verified: true,
        ..Default::default()
    }
}

/// The same request as the issuer sees it past its gRPC edge.
pub fn access_token_request() -> anyhow::Result<AccessTokenRequest> {
    Ok(AccessTokenRequest {
        subject: Subject::new(SUBJECT)?,
        tenant_id: TenantId::new(TENANT)?,
        role: ROLE.into(),
        permissions: PERMISSIONS.iter().map(|p| (*p).to_owned()).collect(),
        session_id: None,
        audience: None,
        ttl: Some(Duration::from_secs(900)),
        mfa_verified: true,
        features: Vec::new(),
        device_fingerprint: None,
        ip_address: None,
        last_password_change: 0,
        family_id: None,
    })
}

/// The claims the issuer would build for [`issue_request`] at `now`.
pub fn claims(now: UnixMillis) -> anyhow::Result<AccessClaims> {
    let jti = "0197a3c0-0000-7000-8000-000000000000".to_owned();
    Ok(tokens::build_claims(
        &access_token_request()?,
        &TokenPolicy::default(),
        now,
        jti,
    )?)
}

/// Returns the current wall-clock time.
pub fn now() -> UnixMillis {
    use tessera_common::Clock as _;
    tessera_common::SystemClock.now()
}
