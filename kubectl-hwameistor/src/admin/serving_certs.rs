//! Serving certificates for HwameiStor's HTTPS services: a CA and a certificate for the
//! Service, stored in a TLS Secret. For admission webhooks the CA is injected as `caBundle`
//! into the webhook configurations so the API server trusts the webhook; a Service annotated
//! with [`SECRET_ANNOTATION`] (the scheduler extender) gets its Secret too, whose `ca.crt`
//! its clients mount.
//!
//! A certificate already in the cluster is kept (re-running install does not rotate a
//! working CA) until it comes within [`RENEW_BEFORE_DAYS`] of the date it expires (recorded
//! on the Secret, [`NOT_AFTER_ANNOTATION`]): then install generates a new one. The servers
//! read their files again when they change, so the new certificate needs no restart.

use super::manifests::{Bundle, ManifestObject};
use crate::errors::AdminError;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Annotation on a webhook configuration naming the Secret its server reads the
/// certificate from (without it the Secret is `<service>-tls`), or on a Service whose
/// server needs one.
pub const SECRET_ANNOTATION: &str = "hwameistor.io/serving-cert-secret";

/// Annotation on a generated Secret: the day (`YYYY-MM-DD`, UTC) its certificate expires.
pub const NOT_AFTER_ANNOTATION: &str = "hwameistor.io/serving-cert-not-after";

/// A certificate this close to its expiry is replaced by install.
pub const RENEW_BEFORE_DAYS: i64 = 90;

const WEBHOOK_KINDS: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// PEM-encoded CA certificate, serving certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The day both expire, `YYYY-MM-DD`; `None` when not known (an older Secret).
    pub not_after: Option<String>,
}

impl ServingCert {
    /// Whether it must be replaced on `today` (`YYYY-MM-DD`): expiring within
    /// [`RENEW_BEFORE_DAYS`], or of unknown expiry.
    pub fn renewal_due(&self, today: jiff::civil::Date) -> bool {
        let Some(end) = self
            .not_after
            .as_deref()
            .and_then(|d| d.parse::<jiff::civil::Date>().ok())
        else {
            return true;
        };
        match today.until(end) {
            Ok(span) => span.get_days() < RENEW_BEFORE_DAYS as i32,
            Err(_) => true,
        }
    }
}

fn cert_err(e: rcgen::Error) -> AdminError {
    AdminError::Certificate(e.to_string())
}

/// Generates a CA and a certificate for `service.namespace.svc`, valid for ten years from
/// `year` (passed in so tests are deterministic about it).
pub fn generate(service: &str, namespace: &str, year: i32) -> Result<ServingCert, AdminError> {
    let not_before = rcgen::date_time_ymd(year, 1, 1);
    let not_after = rcgen::date_time_ymd(year + 10, 1, 1);

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, format!("{service}-ca"));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(cert_err)?;
    let issuer = Issuer::new(ca, ca_key);

    let dns = vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    let mut leaf = CertificateParams::new(dns).map_err(cert_err)?;
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let key = KeyPair::generate().map_err(cert_err)?;
    let cert = leaf.signed_by(&key, &issuer).map_err(cert_err)?;
    Ok(ServingCert {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: Some(format!("{:04}-01-01", year + 10)),
    })
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// The `kubernetes.io/tls` Secret holding a serving certificate (plus `ca.crt`, so a
/// later upgrade can re-inject the same CA instead of rotating it).
pub fn tls_secret(name: &str, namespace: &str, cert: &ServingCert) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "kubectl-hwameistor"},
                     "annotations": {NOT_AFTER_ANNOTATION: cert.not_after.clone().unwrap_or_default()}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&cert.cert_pem), "tls.key": b64(&cert.key_pem), "ca.crt": b64(&cert.ca_pem)},
    })
}

/// Reads a serving certificate back from a Secret made by [`tls_secret`].
pub fn from_secret(secret: &Value) -> Option<ServingCert> {
    let field = |k: &str| -> Option<String> {
        let raw = secret.get("data")?.get(k)?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
        String::from_utf8(bytes).ok()
    };
    Some(ServingCert {
        ca_pem: field("ca.crt")?,
        cert_pem: field("tls.crt")?,
        key_pem: field("tls.key")?,
        not_after: secret
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(NOT_AFTER_ANNOTATION))
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(str::to_string),
    })
}

/// Sets `caBundle` on every webhook of a webhook configuration; returns how many.
pub fn inject_ca_bundle(config: &mut Value, ca_pem: &str) -> usize {
    let mut n = 0;
    if let Some(Value::Array(hooks)) = config.get_mut("webhooks") {
        for h in hooks {
            if let Some(Value::Object(cc)) = h.get_mut("clientConfig") {
                cc.insert("caBundle".into(), Value::String(b64(ca_pem)));
                n += 1;
            }
        }
    }
    n
}

/// A Secret the webhooks of the bundle need: (secret name, namespace, service name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CertTarget {
    pub secret: String,
    pub namespace: String,
    pub service: String,
}

fn target_of(o: &ManifestObject, default_ns: &str) -> Option<CertTarget> {
    let svc = o.value.pointer("/webhooks/0/clientConfig/service")?;
    let service = svc.get("name")?.as_str()?.to_string();
    let namespace = svc
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or(default_ns)
        .to_string();
    let secret = o
        .value
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SECRET_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{service}-tls"));
    Some(CertTarget {
        secret,
        namespace,
        service,
    })
}

/// The Secret an annotated Service needs.
fn service_target(o: &ManifestObject, default_ns: &str) -> Option<CertTarget> {
    let secret = o
        .value
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SECRET_ANNOTATION))
        .and_then(Value::as_str)?
        .to_string();
    Some(CertTarget {
        secret,
        namespace: o
            .value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(default_ns)
            .to_string(),
        service: o.name().to_string(),
    })
}

/// The certificate Secrets the bundle's webhook configurations and annotated Services need.
pub fn cert_targets(bundle: &Bundle, default_ns: &str) -> Vec<CertTarget> {
    let mut t: Vec<CertTarget> = WEBHOOK_KINDS
        .iter()
        .flat_map(|k| bundle.of_kind(k))
        .filter_map(|o| target_of(o, default_ns))
        .chain(
            bundle
                .of_kind("Service")
                .filter_map(|o| service_target(o, default_ns)),
        )
        .collect();
    t.sort();
    t.dedup();
    t
}

/// Adds a TLS Secret for each webhook service and injects its CA into the webhook
/// configurations. `existing` holds certificates already in the cluster, by secret name,
/// which are kept so that re-running install does not rotate a working CA.
pub fn secure_webhooks(
    bundle: &mut Bundle,
    default_ns: &str,
    existing: &BTreeMap<String, ServingCert>,
    year: i32,
) -> Result<Vec<CertTarget>, AdminError> {
    let targets = cert_targets(bundle, default_ns);
    let mut certs = BTreeMap::new();
    for t in &targets {
        let cert = match existing.get(&t.secret) {
            Some(c) => c.clone(),
            None => generate(&t.service, &t.namespace, year)?,
        };
        let already = bundle
            .objects
            .iter()
            .any(|o| o.kind() == "Secret" && o.name() == t.secret);
        if !already {
            bundle.objects.push(ManifestObject {
                source: format!("generated serving certificate for service {}", t.service),
                value: tls_secret(&t.secret, &t.namespace, &cert),
            });
        }
        certs.insert(t.service.clone(), cert);
    }
    for kind in WEBHOOK_KINDS {
        for o in bundle.of_kind_mut(kind) {
            let service = o
                .value
                .pointer("/webhooks/0/clientConfig/service/name")
                .and_then(Value::as_str);
            if let Some(cert) = service.and_then(|s| certs.get(s)) {
                let ca = cert.ca_pem.clone();
                inject_ca_bundle(&mut o.value, &ca);
            }
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEBHOOK: &str = "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: hwameistor-admission}
webhooks:
- name: validate.hwameistor.io
  clientConfig: {service: {name: hwameistor-admission, namespace: hwameistor, path: /validate}}
- name: validate2.hwameistor.io
  clientConfig: {service: {name: hwameistor-admission, namespace: hwameistor, path: /validate2}}
";

    #[test]
    fn generates_a_chain_for_the_service() {
        let c = generate("hwameistor-admission", "hwameistor", 2025).unwrap();
        assert!(c.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(c.ca_pem, c.cert_pem);
        // The secret round-trips, which is what lets upgrades keep the CA.
        let secret = tls_secret("s", "hwameistor", &c);
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert_eq!(from_secret(&secret), Some(c));
    }

    #[test]
    fn injects_the_ca_into_every_webhook_and_adds_the_secret() {
        let mut b = Bundle::parse([("w.yaml", WEBHOOK)]).unwrap();
        let targets = secure_webhooks(&mut b, "hwameistor", &BTreeMap::new(), 2025).unwrap();
        assert_eq!(
            targets,
            [CertTarget {
                secret: "hwameistor-admission-tls".into(),
                namespace: "hwameistor".into(),
                service: "hwameistor-admission".into()
            }]
        );
        let secret = b.of_kind("Secret").next().expect("secret added");
        let cert = from_secret(&secret.value).unwrap();
        let hook = b.of_kind("ValidatingWebhookConfiguration").next().unwrap();
        for i in 0..2 {
            let bundle = hook
                .value
                .pointer(&format!("/webhooks/{i}/clientConfig/caBundle"))
                .and_then(Value::as_str);
            assert_eq!(bundle, Some(b64(&cert.ca_pem).as_str()));
        }
    }

    #[test]
    fn keeps_an_existing_certificate() {
        let old = generate("hwameistor-admission", "hwameistor", 2024).unwrap();
        let existing = BTreeMap::from([("hwameistor-admission-tls".to_string(), old.clone())]);
        let mut b = Bundle::parse([("w.yaml", WEBHOOK)]).unwrap();
        secure_webhooks(&mut b, "hwameistor", &existing, 2025).unwrap();
        let secret = b.of_kind("Secret").next().unwrap();
        assert_eq!(from_secret(&secret.value), Some(old));
    }

    #[test]
    fn a_bundle_without_webhooks_or_annotated_services_is_untouched() {
        let mut b = Bundle::parse([(
            "w.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: plain, namespace: hwameistor}\n",
        )])
        .unwrap();
        let before = b.clone();
        assert!(
            secure_webhooks(&mut b, "hwameistor", &BTreeMap::new(), 2025)
                .unwrap()
                .is_empty()
        );
        assert_eq!(b, before);
        // The embedded manifests: the scheduler extender's Service gets its Secret.
        let mut b = Bundle::embedded().unwrap();
        let targets = secure_webhooks(&mut b, "hwameistor", &BTreeMap::new(), 2025).unwrap();
        assert_eq!(
            targets
                .iter()
                .map(|t| t.secret.as_str())
                .collect::<Vec<_>>(),
            ["hwameistor-scheduler-extender-tls"]
        );
    }

    #[test]
    fn an_annotated_service_gets_a_secret_and_certificates_are_renewed_before_expiry() {
        const SVC: &str = "
apiVersion: v1
kind: Service
metadata:
  name: hwameistor-scheduler-extender
  namespace: hwameistor
  annotations: {hwameistor.io/serving-cert-secret: extender-tls}
spec: {ports: [{port: 443}]}
";
        let mut b = Bundle::parse([("s.yaml", SVC)]).unwrap();
        let targets = secure_webhooks(&mut b, "hwameistor", &BTreeMap::new(), 2026).unwrap();
        assert_eq!(
            targets,
            [CertTarget {
                secret: "extender-tls".into(),
                namespace: "hwameistor".into(),
                service: "hwameistor-scheduler-extender".into()
            }]
        );
        let secret = b.of_kind("Secret").next().expect("secret");
        let cert = from_secret(&secret.value).expect("cert");
        assert_eq!(cert.not_after.as_deref(), Some("2036-01-01"));
        let day = |s: &str| s.parse::<jiff::civil::Date>().unwrap();
        assert!(!cert.renewal_due(day("2026-11-26")));
        assert!(!cert.renewal_due(day("2035-10-01")));
        assert!(cert.renewal_due(day("2035-10-04")), "within 90 days");
        assert!(cert.renewal_due(day("2036-02-01")), "expired");
        let unknown = ServingCert {
            not_after: None,
            ..cert
        };
        assert!(unknown.renewal_due(day("2026-11-26")));
    }
}
