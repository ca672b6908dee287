//! Test PKI generated at test time: a CA, server certificates (ECDSA or RSA, several names and
//! wildcards) and client certificates with a SPIFFE URI SAN. Files are written as PEM.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};

/// A CA that issues certificates into `dir`.
pub struct Pki {
    pub dir: PathBuf,
    name: String,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA named `name`; its certificate is `dir/<name>-ca.crt`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().expect("ca key");
        let key_pem = key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(params, key).expect("ca cert");
        let pki = Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca,
        };
        std::fs::write(pki.ca_path(), pki.ca.pem()).expect("write ca");
        std::fs::write(pki.ca_key_path(), key_pem).expect("write ca key");
        pki
    }

    pub fn ca_key_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.key", self.name))
    }

    /// A DER OCSP response for certificate `crt`, signed by the CA with `openssl ocsp` acting
    /// as the responder, saying `good` or (with `revoked`) `revoked`. Written to `out`.
    pub fn ocsp_response(&self, crt: &Path, revoked: bool, out: &Path) {
        let openssl = |args: &[&str]| {
            let o = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl");
            assert!(
                o.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let s = |p: &Path| p.display().to_string();
        let serial = openssl(&["x509", "-noout", "-serial", "-in", &s(crt)]);
        let serial = serial.trim_start_matches("serial=");
        let subject = openssl(&[
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "compat",
            "-in",
            &s(crt),
        ]);
        let subject = subject.trim_start_matches("subject=");
        // The responder's database: status, expiry, revocation time, serial, file, subject.
        let (status, revoked_at) = if revoked {
            ("R", "240101000000Z")
        } else {
            ("V", "")
        };
        let index = self.dir.join("ocsp-index.txt");
        std::fs::write(
            &index,
            format!("{status}\t991231235959Z\t{revoked_at}\t{serial}\tunknown\t{subject}\n"),
        )
        .expect("index");
        let req = self.dir.join("ocsp-req.der");
        let ca = s(&self.ca_path());
        openssl(&[
            "ocsp",
            "-issuer",
            &ca,
            "-cert",
            &s(crt),
            "-no_nonce",
            "-reqout",
            &s(&req),
        ]);
        openssl(&[
            "ocsp",
            "-index",
            &s(&index),
            "-rsigner",
            &ca,
            "-rkey",
            &s(&self.ca_key_path()),
            "-CA",
            &ca,
            "-reqin",
            &s(&req),
            "-respout",
            &s(out),
            "-ndays",
            "1",
        ]);
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.crt", self.name))
    }

    /// A server certificate for `names` (DNS names, `*.x` wildcards or IPs) with CN `cn`,
    /// written to `dir/<file>.crt` and `.key`. RSA keys come from `openssl genpkey` (ring cannot
    /// generate RSA keys); ECDSA P-256 otherwise.
    pub fn server(&self, file: &str, cn: &str, names: &[&str], rsa: bool) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, params, rsa)
    }

    /// A client certificate with CN `cn`, organisation `org` and URI SAN `uri` (SPIFFE id).
    pub fn client(&self, file: &str, cn: &str, org: &str, uri: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        // Most general first, as `openssl req -subj /O=.../CN=...` writes it.
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, params, false)
    }

    fn issue(&self, file: &str, params: CertificateParams, rsa: bool) -> (PathBuf, PathBuf) {
        let key = if rsa {
            KeyPair::from_pem(&rsa_key_pem()).expect("rsa key")
        } else {
            KeyPair::generate().expect("key")
        };
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let crt = self.dir.join(format!("{file}.crt"));
        let kp = self.dir.join(format!("{file}.key"));
        std::fs::write(&crt, cert.pem()).expect("write crt");
        std::fs::write(&kp, key.serialize_pem()).expect("write key");
        (crt, kp)
    }
}

fn rsa_key_pem() -> String {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8(out.stdout).expect("pem")
}

/// Run `openssl s_client` against `port` with extra `args`, stdin closed. Returns (exit ok,
/// stdout + stderr).
pub fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
