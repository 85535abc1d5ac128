//! Cluster PKI: real keys, real certificates, parsed back with x509-parser and verified
//! with rustls' webpki verifier.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use shoal_cluster::pki::{
    self, JoinToken, NodeKey, PkiError, Role, RootCa, cert_der_from_pem, digest_of, identity_of,
    new_node_id,
};
use x509_parser::prelude::{FromDer, X509Certificate};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn issue(ca: &RootCa, node_id: &str, role: Role) -> (NodeKey, CertificateDer<'static>) {
    let key = NodeKey::generate().unwrap();
    let pem = ca
        .sign_csr(
            &key.csr(node_id).unwrap(),
            node_id,
            role,
            "cluster1",
            90 * DAY,
        )
        .unwrap();
    (key, cert_der_from_pem(&pem, "node certificate").unwrap())
}

/// Verifies `leaf` for `name` against `roots` with `intermediates`, as rustls does at the
/// handshake.
fn verify(
    roots: &[&CertificateDer<'static>],
    leaf: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    name: &str,
) -> Result<(), rustls::Error> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

#[test]
fn root_ca_has_swarm_shape_and_round_trips_through_pem() {
    let ca = RootCa::generate("cluster1").unwrap();
    let digest = ca.digest();
    assert_eq!(digest.len(), 50);
    assert!(
        digest
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    );
    assert_eq!(digest, digest_of(ca.cert_der()));

    let (_, x509) = X509Certificate::from_der(ca.cert_der()).unwrap();
    assert!(x509.is_ca());
    let cn: Vec<&str> = x509
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["swarm-ca"]);
    let days = (ca.not_after().unwrap() - Utc::now()).num_days();
    assert!(
        (20 * 365 - 1..=20 * 365).contains(&days),
        "CA valid for {days} days"
    );
    let not_before = x509.validity().not_before.timestamp();
    let backdated = Utc::now().timestamp() - not_before;
    assert!(
        (55..=120).contains(&backdated),
        "not_before backdated by {backdated} s"
    );

    let again = RootCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    assert_eq!(again.digest(), digest);
    assert_eq!(again.cert_der(), ca.cert_der());

    // Another CA's key does not go with this certificate.
    let other = RootCa::generate("cluster1").unwrap();
    assert_ne!(other.digest(), digest);
    assert!(matches!(
        RootCa::from_pem(ca.cert_pem(), other.key_pem()),
        Err(PkiError::KeyMismatch)
    ));
}

#[test]
fn a_node_certificate_is_not_a_ca() {
    let ca = RootCa::generate("cluster1").unwrap();
    let key = NodeKey::generate().unwrap();
    let id = new_node_id().unwrap();
    let pem = ca
        .sign_csr(&key.csr(&id).unwrap(), &id, Role::Manager, "cluster1", DAY)
        .unwrap();
    assert!(matches!(
        RootCa::from_pem(&pem, &key.to_pem()),
        Err(PkiError::NotCa { .. })
    ));
}

#[test]
fn manager_certificate_carries_identity_sans_and_usages() {
    let ca = RootCa::generate("cluster1").unwrap();
    let id = new_node_id().unwrap();
    let key = NodeKey::generate().unwrap();
    // The CSR asks for another name: the CA decides the identity.
    let csr = key.csr("someone-else").unwrap();
    let before = Utc::now();
    let pem = ca
        .sign_csr(&csr, &id, Role::Manager, "cluster1", 90 * DAY)
        .unwrap();
    let der = cert_der_from_pem(&pem, "node certificate").unwrap();

    let identity = identity_of(&der).unwrap();
    assert_eq!(identity.node_id, id);
    assert_eq!(identity.role, Role::Manager);
    assert_eq!(identity.cluster_id, "cluster1");
    let days = (identity.not_after - before).num_hours();
    assert!(
        (90 * 24 - 1..=90 * 24).contains(&days),
        "valid for {days} h"
    );

    let (_, x509) = X509Certificate::from_der(&der).unwrap();
    let ou: Vec<&str> = x509
        .subject()
        .iter_organizational_unit()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(ou, ["swarm-manager"]);
    let o: Vec<&str> = x509
        .subject()
        .iter_organization()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(o, ["cluster1"]);
    let sans: Vec<String> = x509
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        sans,
        [
            format!("DNSName({id})"),
            "DNSName(swarm-manager)".to_owned()
        ]
    );
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = x509.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    assert!(!x509.is_ca());
    let backdated = Utc::now().timestamp() - x509.validity().not_before.timestamp();
    assert!(
        (55..=120).contains(&backdated),
        "not_before backdated by {backdated} s"
    );

    // The certificate verifies against the CA for its node ID and for "any manager".
    verify(&[ca.cert_der()], &der, &[], &id).unwrap();
    verify(&[ca.cert_der()], &der, &[], pki::MANAGER_SERVER_NAME).unwrap();
    assert!(verify(&[ca.cert_der()], &der, &[], "somebody-else").is_err());
}

#[test]
fn worker_certificate_has_worker_role_and_no_manager_name() {
    let ca = RootCa::generate("cluster1").unwrap();
    let id = new_node_id().unwrap();
    let (_, der) = issue(&ca, &id, Role::Worker);
    let identity = identity_of(&der).unwrap();
    assert_eq!(identity.role, Role::Worker);
    assert_eq!(identity.node_id, id);
    verify(&[ca.cert_der()], &der, &[], &id).unwrap();
    assert!(verify(&[ca.cert_der()], &der, &[], pki::MANAGER_SERVER_NAME).is_err());
}

#[test]
fn explicit_validity_window_issues_expired_certificates() {
    let ca = RootCa::generate("cluster1").unwrap();
    let id = new_node_id().unwrap();
    let key = NodeKey::generate().unwrap();
    let now = Utc::now();
    let pem = ca
        .sign_csr_with_validity(
            &key.csr(&id).unwrap(),
            &id,
            Role::Worker,
            "cluster1",
            now - chrono::Duration::days(2),
            now - chrono::Duration::days(1),
        )
        .unwrap();
    let der = cert_der_from_pem(&pem, "node certificate").unwrap();
    assert!(identity_of(&der).unwrap().not_after < now);
    let err = verify(&[ca.cert_der()], &der, &[], &id).unwrap_err();
    assert!(format!("{err:?}").contains("Expired"), "{err:?}");

    // An empty window is refused.
    assert!(matches!(
        ca.sign_csr_with_validity(&key.csr(&id).unwrap(), &id, Role::Worker, "c", now, now),
        Err(PkiError::Validity { .. })
    ));
}

#[test]
fn sign_csr_refuses_bad_input() {
    let ca = RootCa::generate("cluster1").unwrap();
    let key = NodeKey::generate().unwrap();
    let csr = key.csr("x").unwrap();
    assert!(matches!(
        ca.sign_csr(&csr, "Not_A_Node", Role::Worker, "c", DAY),
        Err(PkiError::InvalidNodeId { .. })
    ));
    assert!(matches!(
        ca.sign_csr(&csr, "1234567890", Role::Worker, "c", DAY),
        Err(PkiError::InvalidNodeId { .. })
    ));
    assert!(matches!(
        ca.sign_csr("not a csr", "abc", Role::Worker, "c", DAY),
        Err(PkiError::Parse { .. })
    ));
    // A CSR whose signature does not match its key (tampered) is refused.
    use base64::Engine as _;
    let b64: String = csr.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    assert!(matches!(
        ca.sign_csr(&tampered, "abc", Role::Worker, "c", DAY),
        Err(PkiError::Parse { .. })
    ));
}

#[test]
fn node_key_round_trips_through_pem() {
    let ca = RootCa::generate("cluster1").unwrap();
    let key = NodeKey::generate().unwrap();
    let again = NodeKey::from_pem(&key.to_pem()).unwrap();
    assert_eq!(again.to_pem(), key.to_pem());
    // A certificate issued for the reloaded key's CSR carries the original public key.
    let id = new_node_id().unwrap();
    let a = cert_der_from_pem(
        &ca.sign_csr(&key.csr(&id).unwrap(), &id, Role::Worker, "c", DAY)
            .unwrap(),
        "a",
    )
    .unwrap();
    let b = cert_der_from_pem(
        &ca.sign_csr(&again.csr(&id).unwrap(), &id, Role::Worker, "c", DAY)
            .unwrap(),
        "b",
    )
    .unwrap();
    let spki = |der: &[u8]| {
        X509Certificate::from_der(der)
            .unwrap()
            .1
            .public_key()
            .raw
            .to_vec()
    };
    assert_eq!(spki(&a), spki(&b));
    // Two issues of the same key get distinct serial numbers.
    let serial = |der: &[u8]| {
        X509Certificate::from_der(der)
            .unwrap()
            .1
            .raw_serial()
            .to_vec()
    };
    assert_ne!(serial(&a), serial(&b));
    assert!(NodeKey::from_pem("garbage").is_err());
}

#[test]
fn identity_of_refuses_certificates_that_name_no_node() {
    let ca = RootCa::generate("cluster1").unwrap();
    assert!(matches!(
        identity_of(ca.cert_der()),
        Err(PkiError::MissingField { .. })
    ));
    assert!(matches!(identity_of(b"junk"), Err(PkiError::Parse { .. })));
}

#[test]
fn cross_signed_root_bridges_old_and_new_trust() {
    let old = RootCa::generate("cluster1").unwrap();
    let new = RootCa::generate("cluster1").unwrap();
    let cross_pem = old.cross_sign(&new).unwrap();
    let cross = cert_der_from_pem(&cross_pem, "cross-signed CA").unwrap();

    let (_, c) = X509Certificate::from_der(&cross).unwrap();
    let (_, n) = X509Certificate::from_der(new.cert_der()).unwrap();
    let (_, o) = X509Certificate::from_der(old.cert_der()).unwrap();
    assert!(c.is_ca());
    assert_eq!(c.subject().as_raw(), n.subject().as_raw());
    assert_eq!(c.issuer().as_raw(), o.subject().as_raw());
    assert_eq!(c.public_key().raw, n.public_key().raw);
    assert_eq!(c.validity().not_after, n.validity().not_after);
    assert_ne!(digest_of(&cross), new.digest());

    let id = new_node_id().unwrap();
    let (_, leaf) = issue(&new, &id, Role::Manager);
    // A node that trusts only the old root: needs the cross-signed CA in the chain.
    assert!(verify(&[old.cert_der()], &leaf, &[], &id).is_err());
    verify(&[old.cert_der()], &leaf, std::slice::from_ref(&cross), &id).unwrap();
    // A node that trusts the new root, with or without the cross-signed CA in the chain.
    verify(&[new.cert_der()], &leaf, &[], &id).unwrap();
    verify(&[new.cert_der()], &leaf, std::slice::from_ref(&cross), &id).unwrap();
    // A node trusting both.
    verify(
        &[old.cert_der(), new.cert_der()],
        &leaf,
        &[cross, old.cert_der().clone()],
        &id,
    )
    .unwrap();
    // Old leaves keep verifying for nodes that already trust both roots.
    let (_, old_leaf) = issue(&old, &id, Role::Worker);
    verify(&[old.cert_der(), new.cert_der()], &old_leaf, &[], &id).unwrap();
}

#[test]
fn join_token_has_swarm_shape_and_parses_strictly() {
    let ca = RootCa::generate("cluster1").unwrap();
    let token = JoinToken::generate(&ca.digest()).unwrap();
    let text = token.to_string();
    assert!(text.starts_with("SWMTKN-1-"));
    assert_eq!(text.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
    let parsed: JoinToken = text.parse().unwrap();
    assert_eq!(parsed, token);
    assert_eq!(parsed.ca_digest, ca.digest());
    assert_eq!(parsed.secret.len(), 25);
    // Surrounding whitespace (pasted tokens) is tolerated.
    assert_eq!(format!(" {text}\n").parse::<JoinToken>().unwrap(), token);

    assert!(token.matches_secret(&parsed));
    let other = JoinToken::generate(&ca.digest()).unwrap();
    assert_ne!(other.secret, token.secret);
    assert!(!token.matches_secret(&other));

    let debug = format!("{token:?}");
    assert!(
        !debug.contains(&token.secret),
        "Debug leaks the secret: {debug}"
    );

    let digest = ca.digest();
    let secret = &token.secret;
    for bad in [
        String::new(),
        "SWMTKN".to_owned(),
        format!("SWMTKN-2-{digest}-{secret}"),
        format!("SWMTKX-1-{digest}-{secret}"),
        format!("SWMTKN-1-{}-{secret}", &digest[1..]),
        format!("SWMTKN-1-{digest}-{}", &secret[1..]),
        format!("SWMTKN-1-{}-{secret}", digest.to_uppercase()),
        format!("SWMTKN-1-{digest}-{secret}-x"),
    ] {
        let err = bad.parse::<JoinToken>().unwrap_err();
        assert!(
            matches!(err, PkiError::InvalidJoinToken { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().starts_with("invalid join token"), "{err}");
    }
}

#[test]
fn node_ids_are_25_base36_characters_and_unique() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let id = new_node_id().unwrap();
        assert_eq!(id.len(), 25);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert!(ServerName::try_from(id.clone()).is_ok());
        assert!(seen.insert(id));
    }
}

#[test]
fn pem_helpers_round_trip() {
    let ca = RootCa::generate("cluster1").unwrap();
    let pem = pki::cert_pem_of(ca.cert_der());
    assert_eq!(&cert_der_from_pem(&pem, "ca").unwrap(), ca.cert_der());
    let bundle = format!("{}{}", ca.cert_pem(), pem);
    assert_eq!(pki::certs_from_pem(&bundle, "bundle").unwrap().len(), 2);
    let chain = pki::certs_from_pem(&bundle, "bundle").unwrap();
    assert_eq!(
        pki::find_by_digest(&chain, &ca.digest()),
        Some(ca.cert_der())
    );
    assert_eq!(pki::find_by_digest(&chain, &"0".repeat(50)), None);
}
