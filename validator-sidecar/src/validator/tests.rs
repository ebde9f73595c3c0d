//! The cache seen through the validator: a hit vouches only for the very token it
//! verified, and every hit runs the checks after the signature (revocation included).

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tessera_common::SystemClock;
use tessera_common::bundle::{TrustBundle, ValidationPolicy};
use tessera_common::claims::TokenClaims;
use tessera_common::ids::KeyId;
use tessera_common::jwk::Jwk;
use tessera_common::keys::{Algorithm, KeySchedule, KeySetName};
use tessera_common::revocation::{RevocationEntry, RevocationKind};

use super::*;

struct Fixture {
    key_pair: Ed25519KeyPair,
    state: Arc<BundleState>,
    validator: Validator,
}

impl Fixture {
    /// A validator over a bundle with one Ed25519 access key `k1`, its cache putting
    /// every token in the same slot.
    fn colliding() -> Fixture {
        let key_pair = Ed25519KeyPair::generate().unwrap();
        let x = URL_SAFE_NO_PAD.encode(key_pair.public_key().as_ref());
        let kid = KeyId::new("k1").unwrap();
        let schedule = KeySchedule {
            kid: kid.clone(),
            key_set: KeySetName::Access,
            algorithm: Algorithm::EdDsa,
            created_at: UnixMillis(0),
            activates_at: UnixMillis(0),
            deactivates_at: None,
            verify_until: None,
            revoked_at: None,
            public_jwk: Jwk {
                kty: "OKP".into(),
                kid: "k1".into(),
                alg: "EdDSA".into(),
                use_: "sig".into(),
                n: None,
                e: None,
                crv: Some("Ed25519".into()),
                x: Some(x),
                y: None,
            },
        };
        let policy = ValidationPolicy::new(
            "tessera".into(),
            vec!["tessera-api".into()],
            Duration::from_secs(30),
            Duration::from_secs(900),
        );
        let mut bundle = TrustBundle::empty(policy);
        bundle.keys.insert(kid, schedule);
        let state = Arc::new(BundleState::new(Vec::new()));
        state.replace(bundle);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        state.touch(clock.now());
        let config = ValidationConfig {
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            max_staleness: Duration::from_secs(3_600),
            stale_policy: StalePolicy::FailClosed,
            cache_capacity: 100,
        };
        let validator = Validator::with_colliding_cache(state.clone(), config, clock);
        Fixture {
            key_pair,
            state,
            validator,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key_pair.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    fn query<'a>(&self, token: &'a str) -> TokenQuery<'a> {
        TokenQuery {
            token,
            audience: None,
            required_permissions: &[],
            required_role: None,
            token_type: TokenType::Access,
            tenant_id: None,
        }
    }

    async fn validate(&self, token: &str) -> Verdict {
        self.validator.validate(&self.query(token)).await
    }

    fn validate_cheap(&self, token: &str) -> Option<Verdict> {
        self.validator.validate_cheap(&self.query(token))
    }
}

fn claims(sub: &str) -> Value {
    let now = SystemClock.now();
    json!({
        "iss": "tessera", "sub": sub, "aud": "tessera-api",
        "iat": now.as_secs(), "exp": now.as_secs() + 600, "nbf": now.as_secs(),
        "jti": format!("jti-{sub}"), "iat_ms": now.as_secs() * 1000, "tenant_id": "acme",
        "role": "member", "permissions": [], "session_id": format!("session-{sub}"),
        "token_type": "access",
    })
}

fn subject(verdict: &Verdict) -> &str {
    let token = verdict.as_ref().unwrap();
    token.verified.claims.registered().sub
}

/// Replaces one signature character in the middle (never the last one, whose spare bits
/// strict base64url refuses to vary): the same length, a signature that does not verify.
fn tamper_signature(token: &str) -> String {
    let at = token.len() - 10;
    let replacement = if &token[at..=at] == "A" { "B" } else { "A" };
    format!("{}{replacement}{}", &token[..at], &token[at + 1..])
}

#[tokio::test]
async fn tokens_in_one_cache_slot_are_each_verified_for_themselves() {
    let fixture = Fixture::colliding();
    let alice = fixture.sign(&claims("alice"));
    assert_eq!(subject(&fixture.validate(&alice).await), "alice");
    // Cached: the cheap path answers from the entry.
    let hit = fixture.validate_cheap(&alice).expect("a cache hit");
    assert_eq!(subject(&hit), "alice");

    // Same slot, one character of the signature changed: not alice's answer, and the full
    // path finds the bad signature.
    let forged = tamper_signature(&alice);
    assert_eq!(forged.len(), alice.len());
    assert!(fixture.validate_cheap(&forged).is_none());
    assert_eq!(
        fixture.validate(&forged).await.unwrap_err(),
        Rejection::BadSignature
    );
    // Alice's token with a byte more or less: never alice's answer either.
    for other in [format!("{alice}A"), alice[..alice.len() - 1].to_owned()] {
        assert!(fixture.validate_cheap(&other).is_none());
        assert!(fixture.validate(&other).await.is_err());
    }

    // Another valid token in the same slot gets its own claims, and takes the slot.
    let bob = fixture.sign(&claims("bob"));
    assert!(fixture.validate_cheap(&bob).is_none());
    assert_eq!(subject(&fixture.validate(&bob).await), "bob");
    assert_eq!(subject(&fixture.validate_cheap(&bob).unwrap()), "bob");
    assert!(fixture.validate_cheap(&alice).is_none());
    assert_eq!(subject(&fixture.validate(&alice).await), "alice");
}

#[tokio::test]
async fn a_revoked_token_is_rejected_on_a_cache_hit() {
    let fixture = Fixture::colliding();
    let carol = fixture.sign(&claims("carol"));
    assert!(fixture.validate(&carol).await.is_ok());
    assert!(matches!(fixture.validate_cheap(&carol), Some(Ok(_))));

    let now = SystemClock.now();
    fixture.state.update(|bundle| {
        bundle.revocations.insert(RevocationEntry {
            kind: RevocationKind::Jti,
            value: "jti-carol".into(),
            tenant_id: None,
            revoked_at: now,
            drop_after: UnixMillis(i64::MAX),
        });
        true
    });
    // Still cached (the key did not change), and refused on the hit itself.
    assert_eq!(fixture.validator.cached_tokens(), 1);
    assert_eq!(
        fixture.validate_cheap(&carol).unwrap().unwrap_err(),
        Rejection::Revoked
    );
    assert_eq!(
        fixture.validate(&carol).await.unwrap_err(),
        Rejection::Revoked
    );
}
