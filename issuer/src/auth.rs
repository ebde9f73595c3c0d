//! Caller authentication and scopes. Every RPC names the scope it needs; a caller proves
//! itself with `authorization: Bearer <tbc_ credential>` (an API client created by an
//! admin, stored as an HMAC hash and compared in constant time; see `credentials.rs`).
//! Clients created before caller credentials had their own prefix hold a `tbk_` one,
//! the prefix DESIGN §4 gives tenant API keys; their records say so and keep accepting
//! exactly that prefix, while every new client gets `tbc_`. Clients may be confined
//! to tenants; confinement holds whatever the scopes (a confined `admin` administers its
//! tenants, never the platform), and no caller may grant more than it holds.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::credential::{Credential, CredentialKind, PepperVersion};
use tessera_common::ids::ClientId;
use tessera_common::revocation::RevocationEntry;
use tessera_common::{Clock, UnixMillis};
use tonic::metadata::MetadataMap;

use crate::abuse::AbuseGuard;
use crate::credentials::{CredentialRecord, Credentials};
use crate::store::{AuditEntry, ClientRecord, Store, StoreError};

/// The prefixes a caller credential may carry: its own, and the legacy one that only
/// clients created before it existed answer to.
const CALLER_KINDS: [CredentialKind; 2] = [CredentialKind::IssuerCaller, CredentialKind::ApiKey];

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything, including key and client administration.
    Admin,
    /// Issue tokens (for the client's tenants).
    Issue,
    /// Introspect tokens (of the client's tenants).
    Introspect,
    /// Subscribe to the trust bundle.
    BundleRead,
    /// `secrets:read:<name>` or `secrets:read:<prefix>*`: read the values of the secrets
    /// it covers (issue 12). `admin` does not imply it: an operator credential leaked to
    /// a log must not dump every password.
    SecretRead(SecretReadScope),
    /// Holds at least one [`Scope::SecretRead`]: what ReadSecret authorizes before it
    /// checks the one secret asked for ([`Caller::may_read_secret`]). Never parsed.
    SecretReader,
}

/// Most distinct secret-read scopes interned per process. Scopes come from client
/// records and configuration written by admins, so a few dozen is typical; past the cap
/// new ones are ignored (the credential lacks them) rather than growing memory.
const MAX_SECRET_READ_SCOPES: usize = 4096;

/// The text of a `secrets:read:` scope, interned so [`Scope`] stays `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SecretReadScope(&'static str);

impl SecretReadScope {
    const PREFIX: &'static str = "secrets:read:";

    /// Parses `secrets:read:<name>` or `secrets:read:<prefix>*` (a non-empty prefix of
    /// name characters).
    pub fn parse(text: &str) -> Option<SecretReadScope> {
        let pattern = text.strip_prefix(Self::PREFIX)?;
        let valid = match pattern.strip_suffix('*') {
            Some(prefix) => {
                !prefix.is_empty()
                    && prefix.len() < crate::secrets::MAX_NAME_BYTES
                    && prefix.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'/' | b'-')
                    })
                    && !prefix.split('/').any(|segment| segment == "..")
            }
            None => crate::secrets::check_name(pattern).is_ok(),
        };
        if !valid {
            return None;
        }
        static INTERNED: std::sync::OnceLock<
            std::sync::Mutex<std::collections::HashSet<&'static str>>,
        > = std::sync::OnceLock::new();
        let mut interned = INTERNED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = interned.get(text) {
            return Some(SecretReadScope(known));
        }
        if interned.len() >= MAX_SECRET_READ_SCOPES {
            tracing::warn!("too many distinct secrets:read scopes; ignoring a new one");
            return None;
        }
        let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
        interned.insert(leaked);
        Some(SecretReadScope(leaked))
    }

    /// Returns true when this scope lets its holder read `name`.
    pub fn covers(self, name: &str) -> bool {
        let pattern = &self.0[Self::PREFIX.len()..];
        match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        }
    }
}

impl Scope {
    /// Returns the wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Issue => "issue",
            Scope::Introspect => "introspect",
            Scope::BundleRead => "bundle:read",
            Scope::SecretRead(scope) => scope.0,
            Scope::SecretReader => "secrets:read:<name>",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "admin" => Some(Scope::Admin),
            "issue" => Some(Scope::Issue),
            "introspect" => Some(Scope::Introspect),
            "bundle:read" => Some(Scope::BundleRead),
            _ => SecretReadScope::parse(text).map(Scope::SecretRead),
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub client_id: ClientId,
    pub scopes: Vec<Scope>,
    /// Tenants it may act on; empty means every tenant.
    pub tenants: Vec<String>,
}

impl Caller {
    /// Returns true when the caller holds `scope` (admin holds every scope but the
    /// secret-read ones).
    pub fn has(&self, scope: Scope) -> bool {
        match scope {
            Scope::SecretRead(_) => self.scopes.contains(&scope),
            Scope::SecretReader => self
                .scopes
                .iter()
                .any(|held| matches!(held, Scope::SecretRead(_))),
            _ => self
                .scopes
                .iter()
                .any(|held| *held == scope || *held == Scope::Admin),
        }
    }

    /// Returns true when one of the caller's `secrets:read:` scopes covers `name`.
    pub fn may_read_secret(&self, name: &str) -> bool {
        self.scopes.iter().any(|held| match held {
            Scope::SecretRead(scope) => scope.covers(name),
            _ => false,
        })
    }

    /// Returns true when the caller may act on `tenant_id`.
    pub fn may_act_on(&self, tenant_id: &str) -> bool {
        !self.is_confined() || self.tenants.iter().any(|tenant| tenant == tenant_id)
    }

    /// Returns true when the caller is confined to a list of tenants. Confinement holds
    /// whatever the scopes: a confined `admin` is an administrator of its tenants only,
    /// never of the platform.
    pub fn is_confined(&self) -> bool {
        !self.tenants.is_empty()
    }

    /// Returns true when the caller may see `entry`: a tenant-less entry (`all`, `key`, or
    /// a platform-wide one) concerns every tenant's tokens, so everyone sees it; a tenant's
    /// entry only callers that may act on that tenant.
    pub fn may_see(&self, entry: &RevocationEntry) -> bool {
        entry
            .tenant_id
            .as_deref()
            .is_none_or(|tenant_id| self.may_act_on(tenant_id))
    }

    /// Returns true when `tenants` (a client's confinement, empty for none) lies within the
    /// caller's: an unconfined caller covers anything, a confined one only a non-empty
    /// list of its own tenants.
    pub fn covers_tenants(&self, tenants: &[String]) -> bool {
        if !self.is_confined() {
            return true;
        }
        !tenants.is_empty() && tenants.iter().all(|tenant| self.may_act_on(tenant))
    }

    /// Returns true when the caller may create a credential holding `scopes` on
    /// `tenants`: no scope it lacks (admin implies the others) and no tenant outside its
    /// own, so a credential can never be used to mint a stronger one.
    pub fn may_grant(&self, scopes: &[Scope], tenants: &[String]) -> bool {
        // A secret-read scope is granted by an unconfined admin (who provisions the
        // sidecars reading secrets) or by a holder of the same scope.
        let may_grant = |scope: &Scope| match scope {
            Scope::SecretRead(_) => {
                self.has(*scope) || (self.has(Scope::Admin) && !self.is_confined())
            }
            _ => self.has(*scope),
        };
        scopes.iter().all(may_grant) && self.covers_tenants(tenants)
    }
}

/// Why a caller could not be authenticated. Refusals of an authenticated caller (a
/// missing scope, a tenant outside its confinement) are decided on the [`Caller`] and
/// audited by `App::authorize`, `check_tenant` and `require_unconfined`, not here.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing or malformed credential")]
    Unauthenticated,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long an unknown client id is remembered as unknown. Client ids are random, so a
/// real client created meanwhile on another replica is refused for at most this long only
/// if someone presented its id before it existed.
const UNKNOWN_ID_TTL: Duration = Duration::from_secs(30);
/// How long a client id found in the store counts as known (see `StoreAccess`).
const KNOWN_ID_TTL: Duration = Duration::from_secs(600);
/// Most ids in each id cache; they hold no secret and only short strings.
const MAX_CACHED_IDS: u64 = 100_000;

/// Which credentials may cost a store lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreAccess {
    /// Any well-formed credential whose id is not known to be unknown.
    Any,
    /// Only credentials of a client this replica found in the store recently: for peers
    /// over their failure budget, whose guesses must cost no query.
    KnownClientsOnly,
}

/// Verifies credentials against the store, with a short-lived cache of client records so
/// a busy client costs one HMAC per call, not one query, and a cache of ids the store does
/// not hold so a flood of invented ids costs no query either.
pub struct Authenticator {
    store: Arc<dyn Store>,
    /// Callers identified by a verified client certificate, by SHA-256 of its DER.
    certificate_callers: std::collections::HashMap<[u8; 32], Caller>,
    clock: Arc<dyn Clock>,
    credentials: Arc<Credentials>,
    cache: moka::future::Cache<String, Arc<ClientRecord>>,
    /// Client ids the store did not hold (negative cache).
    unknown_ids: moka::future::Cache<String, ()>,
    /// Client ids the store held recently, disabled or not.
    known_ids: moka::future::Cache<String, ()>,
    abuse: Arc<AbuseGuard>,
}

impl Authenticator {
    /// Builds an authenticator. A disabled client keeps working for at most `cache_ttl`
    /// on other replicas (immediately on the replica that disabled it).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        credentials: Arc<Credentials>,
        cache_ttl: Duration,
    ) -> Self {
        Authenticator {
            store,
            certificate_callers: std::collections::HashMap::new(),
            clock,
            credentials,
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(cache_ttl)
                .build(),
            unknown_ids: id_cache(UNKNOWN_ID_TTL),
            known_ids: id_cache(KNOWN_ID_TTL),
            abuse: Arc::new(AbuseGuard::default()),
        }
    }

    /// Returns the credential model (and through it the keyring) callers are checked with.
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// Returns the per-peer budgets and burst summaries of refused calls.
    pub fn abuse(&self) -> &Arc<AbuseGuard> {
        &self.abuse
    }

    /// Accepts callers that present a client certificate with one of these fingerprints
    /// (the TLS layer has already verified the chain against the client CA).
    pub fn with_certificate_callers(mut self, callers: Vec<([u8; 32], Caller)>) -> Self {
        self.certificate_callers = callers.into_iter().collect();
        self
    }

    /// Authenticates a request: its bearer credential when present, otherwise its verified
    /// TLS client certificate.
    pub async fn authenticate_request<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Caller, AuthError> {
        self.authenticate_request_with(request, StoreAccess::Any)
            .await
    }

    /// Like [`Authenticator::authenticate_request`], looking up only what `access` allows.
    pub async fn authenticate_request_with<T>(
        &self,
        request: &tonic::Request<T>,
        access: StoreAccess,
    ) -> Result<Caller, AuthError> {
        if request.metadata().contains_key("authorization") || self.certificate_callers.is_empty() {
            return self.authenticate_with(request.metadata(), access).await;
        }
        let certificates = request.peer_certs().ok_or(AuthError::Unauthenticated)?;
        let leaf = certificates.first().ok_or(AuthError::Unauthenticated)?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.as_ref());
        self.certificate_callers
            .get(&fingerprint)
            .cloned()
            .ok_or(AuthError::Unauthenticated)
    }

    /// Authenticates the bearer credential in `metadata`.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, AuthError> {
        self.authenticate_with(metadata, StoreAccess::Any).await
    }

    /// Authenticates the bearer credential in `metadata`, looking up only what `access`
    /// allows.
    pub async fn authenticate_with(
        &self,
        metadata: &MetadataMap,
        access: StoreAccess,
    ) -> Result<Caller, AuthError> {
        let header = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .ok_or(AuthError::Unauthenticated)?;
        let presented = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Unauthenticated)?;
        let credential =
            Credentials::parse(presented, &CALLER_KINDS).ok_or(AuthError::Unauthenticated)?;
        let client_id =
            ClientId::new(credential.id.clone()).map_err(|_| AuthError::Unauthenticated)?;
        let record = self.client_record(&client_id, access).await?;
        if record.disabled_at.is_some_and(|at| at <= self.clock.now()) {
            return Err(AuthError::Unauthenticated);
        }
        if !self.credentials.verify(&credential, record.as_ref()).await {
            return Err(AuthError::Unauthenticated);
        }
        Ok(Caller {
            client_id: record.client_id.clone(),
            scopes: record
                .scopes
                .iter()
                .filter_map(|scope| Scope::parse(scope))
                .collect(),
            tenants: record.tenants.clone(),
        })
    }

    /// Returns the record of `client_id` from the cache, or from the store when `access`
    /// allows and the id is not known to be unknown.
    async fn client_record(
        &self,
        client_id: &ClientId,
        access: StoreAccess,
    ) -> Result<Arc<ClientRecord>, AuthError> {
        if let Some(record) = self.cache.get(client_id.as_str()).await {
            return Ok(record);
        }
        if self.unknown_ids.contains_key(client_id.as_str()) {
            return Err(AuthError::Unauthenticated);
        }
        if access == StoreAccess::KnownClientsOnly
            && !self.known_ids.contains_key(client_id.as_str())
        {
            return Err(AuthError::Unauthenticated);
        }
        let Some(record) = self.store.client(client_id).await? else {
            self.unknown_ids.insert(client_id.to_string(), ()).await;
            return Err(AuthError::Unauthenticated);
        };
        let record = Arc::new(record);
        self.known_ids.insert(client_id.to_string(), ()).await;
        self.cache
            .insert(client_id.to_string(), record.clone())
            .await;
        Ok(record)
    }

    /// Forgets a cached client (after it is disabled on this replica).
    pub async fn forget(&self, client_id: &ClientId) {
        self.cache.invalidate(client_id.as_str()).await;
    }

    /// Creates a client and returns its record and its credential (shown once).
    pub async fn create_client(
        &self,
        name: String,
        scopes: Vec<Scope>,
        tenants: Vec<String>,
        audit: AuditEntry,
    ) -> Result<(ClientRecord, Credential), StoreError> {
        // A sealed keyring is a dependency that is not there yet, like a database that
        // cannot be reached: the caller may retry.
        let (credential, hashed) = self
            .credentials
            .issue(CredentialKind::IssuerCaller)
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        let record = ClientRecord {
            // Generated ids are base62 and 16 characters long: always a valid identifier.
            client_id: ClientId::new(credential.id.clone())
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
            name,
            scopes: scopes
                .iter()
                .map(|scope| scope.as_str().to_owned())
                .collect(),
            tenants,
            credential_kind: credential.kind,
            secret_hash: hashed.hash,
            pepper_version: hashed.pepper_version,
            created_at: self.clock.now(),
            disabled_at: None,
        };
        let audit = AuditEntry {
            target: record.client_id.to_string(),
            ..audit
        };
        self.store.insert_client(record.clone(), audit).await?;
        // The new id is random, but if it was ever presented (and cached as unknown) the
        // new client must work at once on this replica.
        self.unknown_ids.invalidate(record.client_id.as_str()).await;
        self.known_ids
            .insert(record.client_id.to_string(), ())
            .await;
        Ok((record, credential))
    }

    /// Returns the current time (for callers that stamp audit entries).
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }
}

/// A client answers to the one prefix its credential was issued with.
impl CredentialRecord for ClientRecord {
    fn accepts(&self, kind: CredentialKind) -> bool {
        kind == self.credential_kind
    }

    fn pepper_version(&self) -> PepperVersion {
        self.pepper_version
    }

    fn secret_hash(&self) -> &[u8] {
        &self.secret_hash
    }
}

fn id_cache(time_to_live: Duration) -> moka::future::Cache<String, ()> {
    moka::future::Cache::builder()
        .max_capacity(MAX_CACHED_IDS)
        .time_to_live(time_to_live)
        .build()
}

#[cfg(test)]
mod caller_tests {
    use tessera_common::UnixMillis;
    use tessera_common::revocation::RevocationKind;

    use super::*;

    fn caller(scopes: &[Scope], tenants: &[&str]) -> Caller {
        Caller {
            client_id: ClientId::new("c1").unwrap(),
            scopes: scopes.to_vec(),
            tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
        }
    }

    fn tenants(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn entry(tenant_id: Option<&str>) -> RevocationEntry {
        RevocationEntry {
            kind: RevocationKind::User,
            value: "alice".into(),
            tenant_id: tenant_id.map(str::to_owned),
            revoked_at: UnixMillis(1),
            drop_after: UnixMillis(2),
        }
    }

    #[test]
    fn a_confined_admin_is_confined_like_any_other_caller() {
        let admin_of_a = caller(&[Scope::Admin], &["a"]);
        assert!(admin_of_a.is_confined());
        assert!(admin_of_a.may_act_on("a"));
        assert!(!admin_of_a.may_act_on("b"));
        let platform_admin = caller(&[Scope::Admin], &[]);
        assert!(!platform_admin.is_confined());
        assert!(platform_admin.may_act_on("b"));
    }

    #[test]
    fn no_caller_may_grant_more_scopes_or_tenants_than_it_holds() {
        let admin_of_a = caller(&[Scope::Admin], &["a", "c"]);
        assert!(admin_of_a.may_grant(&[Scope::Admin, Scope::Issue], &tenants(&["a"])));
        assert!(admin_of_a.may_grant(&[Scope::BundleRead], &tenants(&["a", "c"])));
        assert!(!admin_of_a.may_grant(&[Scope::Issue], &tenants(&["b"])));
        assert!(!admin_of_a.may_grant(&[Scope::Issue], &tenants(&["a", "b"])));
        // An empty list means every tenant: a confined caller cannot grant it.
        assert!(!admin_of_a.may_grant(&[Scope::Issue], &[]));
        let issue_only = caller(&[Scope::Issue], &[]);
        assert!(!issue_only.may_grant(&[Scope::Admin], &[]));
        assert!(issue_only.may_grant(&[Scope::Issue], &[]));
        let platform_admin = caller(&[Scope::Admin], &[]);
        assert!(platform_admin.may_grant(&[Scope::Admin], &[]));
    }

    #[test]
    fn secret_read_scopes_cover_their_names_only_and_admin_reads_none() {
        let exact = Scope::parse("secrets:read:payments/db").unwrap();
        let prefix = Scope::parse("secrets:read:payments/*").unwrap();
        assert_eq!(exact.as_str(), "secrets:read:payments/db");
        let reader = caller(&[exact], &[]);
        assert!(reader.may_read_secret("payments/db"));
        assert!(!reader.may_read_secret("payments/dbx"));
        assert!(!reader.may_read_secret("billing/db"));
        let prefixed = caller(&[prefix], &[]);
        assert!(prefixed.may_read_secret("payments/redis"));
        assert!(!prefixed.may_read_secret("payment"));
        assert!(prefixed.has(Scope::SecretReader));
        let admin = caller(&[Scope::Admin], &[]);
        assert!(!admin.has(Scope::SecretReader));
        assert!(!admin.may_read_secret("payments/db"));
        assert!(admin.may_grant(&[exact], &[]));
        assert!(!caller(&[Scope::Admin], &["a"]).may_grant(&[exact], &tenants(&["a"])));
        for bad in [
            "secrets:read:",
            "secrets:read:*",
            "secrets:read:../x",
            "secrets:read:A",
            "secrets:read:../*",
            "secrets:read",
        ] {
            assert!(Scope::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_confined_caller_sees_its_tenants_entries_and_tenant_less_ones_only() {
        let reader_of_a = caller(&[Scope::BundleRead], &["a"]);
        assert!(reader_of_a.may_see(&entry(Some("a"))));
        assert!(reader_of_a.may_see(&entry(None)));
        assert!(!reader_of_a.may_see(&entry(Some("b"))));
        assert!(caller(&[Scope::BundleRead], &[]).may_see(&entry(Some("b"))));
    }
}
