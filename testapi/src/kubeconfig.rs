//! Kubeconfig text for a running server (CA data, bearer token, server URL).

use base64::Engine;

/// `https://host:port`, bracketing IPv6 literals.
pub fn server_url(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// A complete kubeconfig with one cluster, user and context.
pub fn render(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: hwameistor-testapi
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: hwameistor-testapi
  user:
    token: {token}
contexts:
- name: hwameistor-testapi
  context:
    cluster: hwameistor-testapi
    user: hwameistor-testapi
    namespace: default
current-context: hwameistor-testapi
preferences: {{}}
"
    )
}
