//! `fwpack publish`: a signed image into a fleet server's software store,
//! then rolled out or assigned there, through the server's own
//! management API. goosebit's (0.2.12) is the one spoken: its store
//! takes `.fwi` files with our plugin (python/fwpack-goosebit), which
//! reads the board and version from the header as this command does.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use imagesource::{ApiClient, ApiResponse, HttpOptions, TlsOptions};
use serde_json::{json, Value};

use crate::exit::{refuse, FORMAT, POLICY, SOURCE, USAGE};

#[derive(Args)]
pub struct PublishArgs {
    /// Signed image to publish. It is verified against --key first: a
    /// device would refuse what fails here.
    image: PathBuf,
    /// Trusted public key (PEM or 32 raw bytes). Repeat to trust several.
    #[arg(long = "key", short = 'k', required = true)]
    keys: Vec<PathBuf>,
    /// The goosebit server's base URL (e.g. https://updates.example.com).
    #[arg(long, value_name = "URL")]
    server: String,
    /// API token (goosebit's `access_token`). Default: log in with
    /// --user and --password. Read from FWPACK_PUBLISH_TOKEN too.
    /// (Command lines are visible to other users: prefer the variable.)
    #[arg(long)]
    token: Option<String>,
    /// User to log in as (goosebit's e-mail address).
    #[arg(long, conflicts_with = "token")]
    user: Option<String>,
    /// Password for --user. Read from FWPACK_PUBLISH_PASSWORD too.
    #[arg(long)]
    password: Option<String>,
    /// Create a rollout of the image on this feed: every device of the
    /// board in rollout mode on the feed (goosebit's default mode and
    /// feed is `default`) gets it at its next poll.
    #[arg(long, value_name = "FEED")]
    rollout: Option<String>,
    /// Name of the rollout (default: `<board> <version>`).
    #[arg(long, requires = "rollout")]
    rollout_name: Option<String>,
    /// Assign the image to this device (goosebit's device id, the DDI
    /// controller id); repeat or comma-separate for several.
    #[arg(long = "assign", value_name = "DEVICE", value_delimiter = ',')]
    devices: Vec<String>,
    /// HTTPS: PEM bundle of the CAs to trust.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// HTTPS: accept only a server whose certificate's public key hashes
    /// to this (`sha256/<base64>`); repeat for several.
    #[arg(long = "pin", value_name = "sha256/BASE64", value_parser = imagesource::parse_pin)]
    pins: Vec<[u8; 32]>,
    /// Seconds each request may take, the upload included.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    deadline: u64,
    /// One JSON object on stdout instead of human lines.
    #[arg(long)]
    json: bool,
}

/// Longest answer taken from the server: its JSON answers are small.
const MAX_ANSWER: usize = 1 << 20;

pub fn publish(args: PublishArgs) -> Result<()> {
    let (board, version) = check_image(&args)?;
    let server = args.server.trim_end_matches('/').to_string();
    let opts = HttpOptions {
        deadline: Some(std::time::Duration::from_secs(args.deadline.max(1))),
        tls: TlsOptions {
            ca_file: args.ca.clone(),
            pins: args.pins.clone(),
        },
        ..Default::default()
    };
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let token = args.token.clone().or_else(|| {
        args.user
            .is_none()
            .then(|| from_env("FWPACK_PUBLISH_TOKEN"))
            .flatten()
    });
    let password = args
        .password
        .clone()
        .or_else(|| from_env("FWPACK_PUBLISH_PASSWORD"));
    let token = match (token, &args.user, password) {
        (Some(t), _, _) => t,
        (None, Some(u), Some(p)) => login(&opts, &server, u, &p)?,
        _ => {
            return Err(refuse(
                USAGE,
                "give --token (or FWPACK_PUBLISH_TOKEN), or --user and --password",
            ))
        }
    };
    let mut api = ApiClient::new(&opts, Some(format!("Bearer {token}")));
    api.max_body = MAX_ANSWER;

    let data =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let filename = args
        .image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image.fwi".into());
    let (content_type, body) = multipart_file("file", &filename, &data);
    let url = format!("{server}/api/v1/software");
    let resp = api.send("PUT", &url, &content_type, &body)?;
    let software = match resp.status {
        200..=299 => json_field(&resp, &url, "id")?,
        409 => {
            return Err(refuse(
                POLICY,
                format!(
                    "{server} already has version {version} for board {board}: {}",
                    detail(&resp)
                ),
            ))
        }
        422 => {
            return Err(refuse(
                FORMAT,
                format!(
                    "{server} could not read the image (is the fwpack_goosebit plugin enabled? \
                     goosebit needs a version label in the SWUpdate scheme, e.g. 1.2.3): {}",
                    detail(&resp)
                ),
            ))
        }
        _ => return Err(failed(&url, &resp)),
    };

    let mut rollout = Value::Null;
    if let Some(feed) = &args.rollout {
        let name = args
            .rollout_name
            .clone()
            .unwrap_or_else(|| format!("{board} {version}"));
        let url = format!("{server}/api/v1/rollouts");
        let body = json!({"name": name, "feed": feed, "software_id": software});
        let resp = api.put_json(&url, body.to_string().as_bytes())?;
        if !resp.is_success() {
            return Err(failed(&url, &resp));
        }
        rollout = json_field(&resp, &url, "id")?;
    }
    if !args.devices.is_empty() {
        // goosebit takes the software id as a string here ("rollout" and
        // "latest" are the other values).
        let url = format!("{server}/api/v1/devices");
        let body = json!({"devices": args.devices, "software": software.to_string()});
        let resp = api.send(
            "PATCH",
            &url,
            "application/json",
            body.to_string().as_bytes(),
        )?;
        if !resp.is_success() {
            return Err(failed(&url, &resp));
        }
    }

    if args.json {
        println!(
            "{}",
            json!({"software_id": software, "board": board, "version": version,
                   "rollout_id": rollout, "assigned": args.devices})
        );
    } else {
        println!("published software {software}: board {board}, version {version}");
        if let Some(feed) = &args.rollout {
            println!("rollout {rollout} on feed {feed}");
        }
        if !args.devices.is_empty() {
            println!("assigned to {}", args.devices.join(", "));
        }
    }
    Ok(())
}

/// Verifies the image as a device would (signature, every chunk) and
/// returns its board and the version goosebit will show: the label, or
/// the payload version when the label is empty (what the device reports).
fn check_image(args: &PublishArgs) -> Result<(String, String)> {
    let mut trusted = fwimage::TrustedKeys::new();
    for k in &args.keys {
        trusted.add(crate::cmd::keys::load_public_key(k)?);
    }
    let (head, file) = crate::cmd::image::read_head(&args.image)?;
    head.verify(&trusted, file, &mut |_| {})
        .with_context(|| format!("verifying {}", args.image.display()))?;
    let h = &head.header;
    let version = if h.version_label.is_empty() {
        h.payload_version.to_string()
    } else {
        h.version_label.clone()
    };
    Ok((h.board.clone(), version))
}

fn login(opts: &HttpOptions, server: &str, user: &str, password: &str) -> Result<String> {
    let mut api = ApiClient::new(opts, None);
    api.max_body = MAX_ANSWER;
    let url = format!("{server}/login");
    let form = format!(
        "username={}&password={}",
        form_encode(user),
        form_encode(password)
    );
    let resp = api.send(
        "POST",
        &url,
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    )?;
    if resp.status == 401 || resp.status == 403 {
        return Err(refuse(
            USAGE,
            format!("{url}: login refused for {user}: {}", detail(&resp)),
        ));
    }
    if !resp.is_success() {
        return Err(failed(&url, &resp));
    }
    match json_field(&resp, &url, "access_token")? {
        Value::String(t) => Ok(t),
        _ => Err(refuse(
            SOURCE,
            format!("{url}: the answer's access_token is not a string"),
        )),
    }
}

fn json_field(resp: &ApiResponse, url: &str, field: &str) -> Result<Value> {
    serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .and_then(|v| v.get(field).cloned())
        .filter(|v| !v.is_null())
        .ok_or_else(|| refuse(SOURCE, format!("{url}: the answer has no `{field}`")))
}

/// goosebit's (FastAPI's) error `detail`, else the start of the body.
fn detail(resp: &ApiResponse) -> String {
    let text = serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .and_then(|v| v.get("detail").map(|d| d.to_string()))
        .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).into_owned());
    let text: String = text.chars().take(300).collect();
    crate::cmd::escape_display(text.as_bytes()).to_string()
}

fn failed(url: &str, resp: &ApiResponse) -> anyhow::Error {
    refuse(
        SOURCE,
        format!("{url}: HTTP status {}: {}", resp.status, detail(resp)),
    )
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A multipart/form-data body with one file field (RFC 7578). The
/// boundary is random, so image bytes cannot contain it by design, and
/// the file name is reduced to characters that need no quoting.
fn multipart_file(field: &str, filename: &str, data: &[u8]) -> (String, Vec<u8>) {
    let mut rnd = [0u8; 16];
    // A fixed boundary would do for almost every image; a failed getrandom
    // leaves zeros, still a valid boundary.
    let _ = getrandom::getrandom(&mut rnd);
    let boundary = format!("fwpack-{}", hex::encode(rnd));
    let name: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_percent_encoded() {
        assert_eq!(form_encode("admin@x.test"), "admin%40x.test");
        assert_eq!(form_encode("a b&c=d"), "a+b%26c%3Dd");
    }

    #[test]
    fn multipart_body_frames_the_file() {
        let (ct, body) = multipart_file("file", "v 2\".fwi", b"\r\n--x");
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("filename=\"v_2_.fwi\""));
        assert!(text.ends_with(&format!("\r\n\r\n\r\n--x\r\n--{boundary}--\r\n")));
    }
}
