//! HTTPS for scenarios that serve and attack real TLS endpoints: a self-signed certificate
//! from `openssl req` and `curl -k` as the client.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::output_within;

/// A self-signed certificate for 127.0.0.1, in `dir`.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    pub fn new(dir: &Path) -> Cert {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let out = output_within(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args(["-subj", "/CN=127.0.0.1", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            Duration::from_secs(60),
        )
        .expect("openssl req did not finish (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cert { cert, key }
    }
}

/// `curl -k` over one connection; the status of each URL.
pub fn curl(urls: &[String]) -> Vec<String> {
    let out = output_within(
        Command::new("curl")
            .args(["-sk", "-w", "%{http_code}\\n"])
            .args(urls.iter().flat_map(|u| ["-o", "/dev/null", u.as_str()])),
        Duration::from_secs(60),
    )
    .expect("curl did not finish (Debian package curl)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
