//! A private certificate authority made with the host's `openssl`, for
//! tests that serve HTTPS (nginx) to a client that must trust it by `--ca`
//! and nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{io_err, Error, Result};

/// The P-256 key `openssl req` makes with these arguments.
pub const EC_P256: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
/// A 2048-bit RSA key: what most servers on the internet present.
pub const RSA_2048: &[&str] = &["-newkey", "rsa:2048"];

/// A CA in a directory: `ca.pem` (what clients are given) and `ca.key`.
pub struct PrivateCa {
    dir: PathBuf,
}

/// A server certificate the CA issued, and its key (PEM files).
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| Error::Command {
            command: format!("openssl {args:?}"),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("openssl {args:?}"),
            message: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

impl PrivateCa {
    /// Makes `ca.pem` and `ca.key` (P-256, valid two days) in `dir`.
    pub fn new(dir: &Path) -> Result<PrivateCa> {
        let mut args = vec!["req", "-x509"];
        args.extend_from_slice(EC_P256);
        args.extend_from_slice(&[
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=fwpack test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args)?;
        Ok(PrivateCa {
            dir: dir.to_path_buf(),
        })
    }

    /// The CA certificate, for the client's `--ca`.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `NAME.pem` / `NAME.key`: a server certificate for the IP addresses
    /// `ips` (the first is also its CN), with a key made by `openssl req
    /// NEWKEY…` ([`EC_P256`], [`RSA_2048`]).
    pub fn issue(&self, name: &str, ips: &[&str], newkey: &[&str]) -> Result<ServerCert> {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let cn = format!("/CN={}", ips.first().copied().unwrap_or("127.0.0.1"));
        let mut args = vec!["req", "-new"];
        args.extend_from_slice(newkey);
        args.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &csr, "-subj", &cn]);
        openssl(&self.dir, &args)?;
        let san: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        let ext_path = self.dir.join(&ext);
        std::fs::write(
            &ext_path,
            format!(
                "subjectAltName={}\n\
                 basicConstraints=critical,CA:FALSE\n\
                 extendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .map_err(io_err(&ext_path))?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        )?;
        Ok(ServerCert {
            cert: self.dir.join(pem),
            key: self.dir.join(key),
        })
    }
}
