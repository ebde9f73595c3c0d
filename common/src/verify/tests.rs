//! Tests of the checks and of the pipeline over every token type.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use super::*;
use crate::claims::{AccessClaims, ActionClaims, AnyClaims, ServiceClaims};
use crate::ids::KeyId;
use crate::jwk::Jwk;
use crate::keys::{Algorithm, KeySchedule};
use crate::revocation::RevocationEntry;

/// Claims of a token of `token_type` issued at 1,000 s, living 900 s, in tenant `t1`.
fn claims_of(token_type: TokenType) -> Value {
    let mut claims = json!({
        "iss": "tessera", "sub": "u1", "aud": "api", "iat": 1_000, "exp": 1_900,
        "nbf": 1_000, "jti": "j1", "iat_ms": 1_000_000, "tenant_id": "t1",
        "token_type": token_type.as_str(),
    });
    let extra = match token_type.key_set() {
        KeySetName::Action => json!({
            "action": "approve", "resource_id": "r1", "user_id": "u1", "single_use": true,
            "params": {"amount": "12"}, "confirmation_required": false,
        }),
        _ if token_type == TokenType::Service => json!({"scopes": ["a"]}),
        _ => json!({"role": "viewer", "permissions": ["a"], "session_id": "s1"}),
    };
    for (name, value) in extra.as_object().unwrap() {
        claims[name] = value.clone();
    }
    claims
}

fn access_claims() -> Value {
    claims_of(TokenType::Access)
}

/// The registered claims of `claims` (an access token's shape unless it says otherwise).
fn decoded(claims: &Value) -> AnyClaims {
    let token_type = claims["token_type"]
        .as_str()
        .and_then(|name| name.parse().ok())
        .unwrap_or(TokenType::Access);
    AnyClaims::decode(&serde_json::to_vec(claims).unwrap(), token_type).unwrap()
}

/// An Ed25519 key pair and the schedule of its public key in `key_set`, active from
/// `activates_at` until `deactivates_at`.
fn key_pair(
    key_set: KeySetName,
    activates_at: UnixMillis,
    deactivates_at: Option<UnixMillis>,
) -> (Ed25519KeyPair, KeySchedule) {
    let pair = Ed25519KeyPair::generate().unwrap();
    let schedule = KeySchedule {
        kid: KeyId::new("k1").unwrap(),
        key_set,
        algorithm: Algorithm::EdDsa,
        created_at: UnixMillis(0),
        activates_at,
        deactivates_at,
        verify_until: deactivates_at.map(|at| at.plus(Duration::from_secs(86_400))),
        revoked_at: None,
        public_jwk: Jwk {
            kty: "OKP".into(),
            kid: "k1".into(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
            n: None,
            e: None,
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())),
            y: None,
        },
    };
    (pair, schedule)
}

fn verifying(schedule: &KeySchedule) -> VerifyingKey {
    VerifyingKey::from_schedule(schedule).unwrap()
}

fn access_key() -> VerifyingKey {
    verifying(&key_pair(KeySetName::Access, UnixMillis(0), None).1)
}

fn policy() -> ValidationPolicy {
    ValidationPolicy::new(
        "tessera".into(),
        vec![],
        Duration::from_secs(30),
        Duration::from_secs(900),
    )
}

fn rules<'a>(
    policy: &'a ValidationPolicy,
    token_type: TokenType,
    accepted: &'a [String],
    required: Option<&'a str>,
) -> ClaimRules<'a> {
    ClaimRules {
        audiences: Audiences::from_list(accepted),
        required_audience: required,
        ..ClaimRules::new(policy, token_type)
    }
}

/// Runs the claim checks on `claims` under `key`, asking for the type the claims name
/// (with a matching `typ`).
fn check(claims: &Value, key: &VerifyingKey, now: UnixMillis) -> Result<(), Rejection> {
    let claims = decoded(claims);
    let policy = policy();
    let token_type: TokenType = claims.registered().token_type.parse().unwrap();
    check_claims(
        token_type,
        claims.registered(),
        key,
        &rules(&policy, token_type, &[], None),
        now,
    )
}

fn sign(pair: &Ed25519KeyPair, header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = pair.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn typed_header(token_type: TokenType) -> Value {
    json!({"alg": "EdDSA", "kid": "k1", "typ": token_type.jws_typ()})
}

#[test]
fn a_required_audience_must_match_and_be_accepted() {
    let key = access_key();
    let accepted = vec!["api".to_owned(), "billing".to_owned()];
    let policy = policy();
    let now = UnixMillis::from_secs(1_500);
    let at = |aud: &str, required, now| {
        let mut claims = access_claims();
        claims["aud"] = json!(aud);
        let claims = decoded(&claims);
        let rules = rules(&policy, TokenType::Access, &accepted, required);
        check_claims(TokenType::Access, claims.registered(), &key, &rules, now)
    };
    assert_eq!(at("api", None, now), Ok(()));
    assert_eq!(at("api", Some("api"), now), Ok(()));
    let wrong = Err(Rejection::WrongAudience);
    assert_eq!(at("api", Some("billing"), now), wrong);
    assert_eq!(at("other", Some("other"), now), wrong);
    assert_eq!(at("other", None, now), wrong);
    // Leeway: 30 s past exp still passes, 30 s more does not.
    assert_eq!(at("api", None, UnixMillis::from_secs(1_929)), Ok(()));
    assert_eq!(
        at("api", None, UnixMillis::from_secs(1_930)),
        Err(Rejection::Expired)
    );
    // No audience at all: refused whatever the token says.
    let none = ClaimRules {
        audiences: Audiences::None,
        ..ClaimRules::new(&policy, TokenType::Access)
    };
    let claims = decoded(&access_claims());
    assert_eq!(
        check_claims(TokenType::Access, claims.registered(), &key, &none, now),
        wrong
    );
}

#[test]
fn a_token_issued_in_the_future_is_not_yet_valid() {
    let key = access_key();
    let now = UnixMillis::from_secs(1_000);
    let issued_at = |iat_ms: i64| {
        let mut claims = access_claims();
        claims["iat"] = json!(iat_ms.div_euclid(1000));
        claims["iat_ms"] = json!(iat_ms);
        claims["nbf"] = json!(0);
        claims["exp"] = json!(iat_ms / 1000 + 600);
        claims
    };
    // Within the leeway (30 s of skew): accepted.
    assert_eq!(check(&issued_at(1_030_000), &key, now), Ok(()));
    // One millisecond beyond: refused, although nbf is in the past.
    assert_eq!(
        check(&issued_at(1_030_001), &key, now),
        Err(Rejection::NotYetValid)
    );
    assert_eq!(
        check(&issued_at(9_000_000), &key, now),
        Err(Rejection::NotYetValid)
    );
}

#[test]
fn iat_and_iat_ms_must_name_the_same_instant() {
    let key = access_key();
    let now = UnixMillis::from_secs(1_500);
    let with_iat_ms = |iat_ms: i64| {
        let mut claims = access_claims();
        claims["iat_ms"] = json!(iat_ms);
        check(&claims, &key, now)
    };
    assert_eq!(with_iat_ms(1_000_999), Ok(()));
    // An old iat (escaping nothing) with a recent iat_ms, and the reverse.
    assert_eq!(with_iat_ms(1_001_000), Err(Rejection::Malformed));
    assert_eq!(with_iat_ms(999_999), Err(Rejection::Malformed));
}

#[test]
fn a_lifetime_beyond_the_token_types_bound_is_refused() {
    let access = access_key();
    let action = verifying(&key_pair(KeySetName::Action, UnixMillis(0), None).1);
    let now = UnixMillis::from_secs(1_500);
    let lasting = |token_type: TokenType, seconds: i64| {
        let mut claims = claims_of(token_type);
        claims["exp"] = json!(1_000 + seconds);
        claims
    };
    let too_long = Err(Rejection::LifetimeTooLong);
    assert_eq!(
        check(&lasting(TokenType::Access, 900), &access, now),
        Ok(())
    );
    assert_eq!(
        check(&lasting(TokenType::Access, 901), &access, now),
        too_long
    );
    let decade = 10 * 365 * 86_400;
    assert_eq!(
        check(&lasting(TokenType::Access, decade), &access, now),
        too_long
    );
    // Each type has its own bound, not its key set's longest: 24 h for email
    // verification and service tokens, 1 h for password reset, seven days for action links.
    for (token_type, key, bound) in [
        (TokenType::Verification, &action, 86_400),
        (TokenType::Action, &action, 7 * 86_400),
        (TokenType::Reset, &action, 3_600),
        (TokenType::Service, &access, 86_400),
    ] {
        assert_eq!(
            check(&lasting(token_type, bound), key, now),
            Ok(()),
            "{token_type}"
        );
        assert_eq!(
            check(&lasting(token_type, bound + 1), key, now),
            too_long,
            "{token_type}"
        );
    }
}

#[test]
fn an_action_key_token_never_passes_as_an_access_token() {
    let action = verifying(&key_pair(KeySetName::Action, UnixMillis(0), None).1);
    let now = UnixMillis::from_secs(1_500);
    assert_eq!(
        check(&access_claims(), &action, now),
        Err(Rejection::WrongTokenType)
    );
    // And an access key does not sign action tokens.
    let reset = claims_of(TokenType::Reset);
    assert_eq!(
        check(&reset, &access_key(), now),
        Err(Rejection::WrongTokenType)
    );
    assert_eq!(check(&reset, &action, now), Ok(()));
    assert!(key_set_signs(KeySetName::Access, TokenType::Access));
    assert!(key_set_signs(KeySetName::Access, TokenType::Service));
    assert!(!key_set_signs(KeySetName::Access, TokenType::Action));
    assert!(!key_set_signs(KeySetName::Action, TokenType::Access));
}

#[test]
fn a_pending_keys_tokens_are_refused_beyond_the_leeway() {
    // The key activates at 1,100 s; tokens are issued at 1,000 s and checked at 1,050 s.
    let schedule = key_pair(KeySetName::Access, UnixMillis::from_secs(1_100), None).1;
    let pending = verifying(&schedule);
    assert_eq!(
        check(&access_claims(), &pending, UnixMillis::from_secs(1_050)),
        Err(Rejection::KeyNotActive)
    );
    // Once the key is active, a token issued before its activation is still refused.
    assert_eq!(
        check(&access_claims(), &pending, UnixMillis::from_secs(1_200)),
        Err(Rejection::KeyNotActive)
    );
    // Within the leeway of activation (clock skew): accepted.
    let mut skewed = access_claims();
    skewed["iat"] = json!(1_070);
    skewed["iat_ms"] = json!(1_070_000);
    assert_eq!(
        check(&skewed, &pending, UnixMillis::from_secs(1_075)),
        Ok(())
    );
}

#[test]
fn a_retiring_key_verifies_only_tokens_issued_before_it_stopped_signing() {
    let deactivates_at = Some(UnixMillis::from_secs(1_000));
    let retiring = verifying(&key_pair(KeySetName::Access, UnixMillis(0), deactivates_at).1);
    let issued_at = |seconds: i64| {
        let mut claims = access_claims();
        claims["iat"] = json!(seconds);
        claims["iat_ms"] = json!(seconds * 1000);
        claims["nbf"] = json!(seconds);
        claims["exp"] = json!(seconds + 900);
        claims
    };
    let now = UnixMillis::from_secs(1_100);
    assert_eq!(check(&issued_at(999), &retiring, now), Ok(()));
    assert_eq!(
        check(&issued_at(1_030), &retiring, now),
        Ok(()),
        "within the leeway"
    );
    assert_eq!(
        check(&issued_at(1_031), &retiring, now),
        Err(Rejection::KeyNotActive)
    );
}

#[test]
fn a_token_of_another_tenant_is_refused_when_a_tenant_is_required() {
    assert_eq!(check_tenant("t1", TenantRule::Any), Ok(()));
    assert_eq!(check_tenant("t1", TenantRule::Exactly("t1")), Ok(()));
    assert_eq!(
        check_tenant("t1", TenantRule::Exactly("t2")),
        Err(Rejection::WrongTenant)
    );
    let only_t2 = |tenant: &str| tenant == "t2";
    assert_eq!(
        check_tenant("t1", TenantRule::Admitted(&only_t2)),
        Err(Rejection::WrongTenant)
    );
}

/// A verifier holding one key of `key_set`, and the pair that signs for it.
fn verifier(key_set: KeySetName) -> (Ed25519KeyPair, Verifier) {
    let (pair, schedule) = key_pair(key_set, UnixMillis(0), None);
    let keys = BTreeMap::from([(schedule.kid.clone(), schedule)]);
    (pair, Verifier::build(&keys, None))
}

fn pipeline_rules(policy: &ValidationPolicy, token_type: TokenType) -> Rules<'_> {
    Rules {
        claims: ClaimRules::new(policy, token_type),
        tenant: TenantRule::Any,
        required_permissions: &[],
        required_role: None,
    }
}

#[test]
fn the_pipeline_verifies_each_type_into_its_own_claims_struct() {
    let policy = policy();
    let now = UnixMillis::from_secs(1_500);
    let none = RevocationSet::default();
    let (access_pair, access) = verifier(KeySetName::Access);
    let (action_pair, action) = verifier(KeySetName::Action);
    let token = |pair, token_type| sign(pair, &typed_header(token_type), &claims_of(token_type));

    let verified: Verified<AccessClaims> = access
        .verify(
            &token(&access_pair, TokenType::Access),
            &pipeline_rules(&policy, TokenType::Access),
            &none,
            now,
        )
        .unwrap();
    assert_eq!(verified.claims.role, "viewer");
    let verified: Verified<ServiceClaims> = access
        .verify(
            &token(&access_pair, TokenType::Service),
            &pipeline_rules(&policy, TokenType::Service),
            &none,
            now,
        )
        .unwrap();
    assert_eq!(verified.claims.scopes, ["a"]);
    for token_type in [TokenType::Action, TokenType::Reset, TokenType::Verification] {
        let verified: Verified<ActionClaims> = action
            .verify(
                &token(&action_pair, token_type),
                &pipeline_rules(&policy, token_type),
                &none,
                now,
            )
            .unwrap();
        assert_eq!(verified.claims.params["amount"], "12", "{token_type}");
        assert_eq!(verified.token_type, token_type);
        // Type-erased, as the sidecar holds it.
        let any: Verified<AnyClaims> = action
            .verify(
                &token(&action_pair, token_type),
                &pipeline_rules(&policy, token_type),
                &none,
                now,
            )
            .unwrap();
        assert!(matches!(any.claims, AnyClaims::Action(_)), "{token_type}");
    }
}

#[test]
fn a_token_of_one_type_never_passes_as_another() {
    let policy = policy();
    let now = UnixMillis::from_secs(1_500);
    let none = RevocationSet::default();
    let (pair, access) = verifier(KeySetName::Access);
    let (action_pair, action) = verifier(KeySetName::Action);
    let service = sign(
        &pair,
        &typed_header(TokenType::Service),
        &claims_of(TokenType::Service),
    );
    let as_type = |verifier: &Verifier, token: &str, token_type| {
        verifier
            .verify::<AnyClaims>(token, &pipeline_rules(&policy, token_type), &none, now)
            .map(|_| ())
    };
    let wrong = Err(Rejection::WrongTokenType);
    // Asked for as another type, or its claims struct cannot hold it.
    assert_eq!(as_type(&access, &service, TokenType::Access), wrong);
    let as_access = access.verify::<AccessClaims>(
        &service,
        &pipeline_rules(&policy, TokenType::Service),
        &none,
        now,
    );
    assert_eq!(as_access.unwrap_err(), Rejection::WrongTokenType);
    // The header and the claim disagree, either way round.
    let mislabelled = sign(
        &pair,
        &typed_header(TokenType::Service),
        &claims_of(TokenType::Access),
    );
    assert_eq!(as_type(&access, &mislabelled, TokenType::Service), wrong);
    assert_eq!(as_type(&access, &mislabelled, TokenType::Access), wrong);
    // No typ, or one Tessera does not sign.
    for typ in [json!(null), json!("JWT"), json!("application/at+jwt")] {
        let header = json!({"alg": "EdDSA", "kid": "k1", "typ": typ});
        let token = sign(&pair, &header, &access_claims());
        assert_eq!(as_type(&access, &token, TokenType::Access), wrong, "{typ}");
    }
    // An action link asked for as a password-reset token.
    let link = sign(
        &action_pair,
        &typed_header(TokenType::Action),
        &claims_of(TokenType::Action),
    );
    assert_eq!(as_type(&action, &link, TokenType::Action), Ok(()));
    assert_eq!(as_type(&action, &link, TokenType::Reset), wrong);
}

#[test]
fn the_pipeline_checks_the_tenant_before_the_tokens_state() {
    let policy = policy();
    let (pair, verifier) = verifier(KeySetName::Action);
    let token = sign(
        &pair,
        &typed_header(TokenType::Verification),
        &claims_of(TokenType::Verification),
    );
    let mut revocations = RevocationSet::default();
    revocations.insert(RevocationEntry {
        kind: crate::revocation::RevocationKind::User,
        value: "u1".into(),
        tenant_id: None,
        revoked_at: UnixMillis::from_secs(1_200),
        drop_after: UnixMillis(i64::MAX),
    });
    let only_t2 = |tenant: &str| tenant == "t2";
    let for_tenant = |tenant| Rules {
        tenant,
        ..pipeline_rules(&policy, TokenType::Verification)
    };
    let verify = |rules: &Rules<'_>, now| {
        verifier
            .verify::<ActionClaims>(&token, rules, &revocations, now)
            .map(|_| ())
    };
    let live = UnixMillis::from_secs(1_500);
    let expired = UnixMillis::from_secs(100_000);
    // The owner learns the token is revoked, then expired; nobody else learns either.
    assert_eq!(
        verify(&for_tenant(TenantRule::Any), live),
        Err(Rejection::Revoked)
    );
    assert_eq!(
        verify(&for_tenant(TenantRule::Any), expired),
        Err(Rejection::Expired)
    );
    for now in [live, expired] {
        assert_eq!(
            verify(&for_tenant(TenantRule::Admitted(&only_t2)), now),
            Err(Rejection::WrongTenant)
        );
    }
}

#[test]
fn the_verifier_parses_each_key_once_across_revisions() {
    let (_, first) = key_pair(KeySetName::Access, UnixMillis(0), None);
    let (_, second) = key_pair(KeySetName::Access, UnixMillis(0), None);
    let second = KeySchedule {
        kid: KeyId::new("k2").unwrap(),
        ..second
    };
    let mut keys = BTreeMap::from([(first.kid.clone(), first.clone())]);
    let before = Verifier::build(&keys, None);
    keys.insert(second.kid.clone(), second);
    let after = Verifier::build(&keys, Some(&before));
    let parsed =
        |verifier: &Verifier, kid| verifier.key(kid).unwrap().verifying_key.clone().unwrap();
    assert!(Arc::ptr_eq(&parsed(&before, "k1"), &parsed(&after, "k1")));
    // A changed schedule (here: revoked) is parsed afresh, with its new state.
    keys.insert(
        first.kid.clone(),
        KeySchedule {
            revoked_at: Some(UnixMillis(5)),
            ..first
        },
    );
    let revoked = Verifier::build(&keys, Some(&after));
    assert!(!Arc::ptr_eq(&parsed(&after, "k1"), &parsed(&revoked, "k1")));
    assert!(parsed(&revoked, "k1").revoked_at.is_some());
}

#[test]
fn a_crit_header_is_refused_whatever_it_holds() {
    let (pair, _) = key_pair(KeySetName::Access, UnixMillis(0), None);
    for crit in [json!(["exp"]), json!([]), json!(null), json!("b64")] {
        let header = json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt", "crit": crit});
        assert_eq!(
            parse_compact(&sign(&pair, &header, &access_claims())).unwrap_err(),
            Rejection::Malformed,
            "{crit}"
        );
    }
    let duplicated_alg = format!(
        "{}.{}.AA",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","alg":"none","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode("{}")
    );
    assert_eq!(
        parse_compact(&duplicated_alg).unwrap_err(),
        Rejection::Malformed
    );
}

#[test]
fn embedded_keys_in_the_header_are_never_used() {
    // The attacker signs with their own key and embeds it (jwk) or points at it (jku,
    // x5u, x5c); the token names the real kid. Only the bundle's key is tried.
    let real = access_key();
    let (attacker, _) = key_pair(KeySetName::Access, UnixMillis(0), None);
    let attacker_x = URL_SAFE_NO_PAD.encode(attacker.public_key().as_ref());
    let embedded = [
        (
            "jwk",
            json!({"kty": "OKP", "crv": "Ed25519", "x": attacker_x, "kid": "k1"}),
        ),
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("x5c", json!(["MIIBattacker"])),
    ];
    for (member, value) in embedded {
        let mut header = typed_header(TokenType::Access);
        header[member] = value;
        let token = sign(&attacker, &header, &access_claims());
        let jws = parse_compact(&token).unwrap();
        let expected = JwsHeader {
            alg: "EdDSA".into(),
            kid: Some("k1".into()),
            typ: Some("at+jwt".into()),
        };
        assert_eq!(jws.header, expected, "{member}");
        assert_eq!(
            check_signature(&jws, &real),
            Err(Rejection::BadSignature),
            "{member}"
        );
    }
}

#[test]
fn encoding_tricks_are_malformed() {
    let (pair, schedule) = key_pair(KeySetName::Access, UnixMillis(0), None);
    let key = verifying(&schedule);
    let token = sign(&pair, &typed_header(TokenType::Access), &access_claims());
    assert!(check_signature(&parse_compact(&token).unwrap(), &key).is_ok());
    let (header, rest) = token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let standard_alphabet = |segment: &str| segment.replace('-', "+").replace('_', "/");
    let full = |token: &str| -> Result<(), Rejection> {
        let jws = parse_compact(token)?;
        check_signature(&jws, &key)?;
        decode_claims::<AccessClaims>(&jws).map(|_| ())
    };
    let tricks = [
        format!("{header}=.{payload}.{signature}"),
        format!("{header}.{payload}.{signature}="),
        format!("{header} .{payload}.{signature}"),
        format!("{header}.{payload}.{signature}\n"),
        format!("{header}.{payload}.{signature}.{signature}"),
        // The standard alphabet: '+' leads, since a random signature may hold no '-'
        // or '_' for the translation to change.
        format!("{header}.{payload}.+{}", standard_alphabet(&signature[1..])),
    ];
    for trick in tricks {
        assert_ne!(trick, token);
        assert_eq!(full(&trick), Err(Rejection::Malformed), "{trick}");
    }
    // A padded payload changes the signed bytes; signed as such, it still does not
    // decode.
    assert_eq!(
        full(&format!("{header}.{payload}==.{signature}")),
        Err(Rejection::BadSignature)
    );
    let padded_input = format!("{header}.{payload}==");
    let padded = format!(
        "{padded_input}.{}",
        URL_SAFE_NO_PAD.encode(pair.sign(padded_input.as_bytes()))
    );
    assert_eq!(full(&padded), Err(Rejection::Malformed));
}

#[test]
fn parse_compact_rejects_oversize_and_garbage() {
    assert_eq!(
        parse_compact(&"a".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err(),
        Rejection::TooLarge
    );
    for token in ["", "a.b", "a.b.c.d", "!!.e30.AA", "e30.e30.!!"] {
        assert!(parse_compact(token).is_err(), "{token}");
    }
}
