//! Public-key pins as curl and HPKP write them: `sha256/` and the
//! standard base64 of the SHA-256 of the certificate's DER
//! SubjectPublicKeyInfo (`openssl x509 -pubkey -noout | openssl pkey
//! -pubin -outform der | openssl dgst -sha256 -binary | base64`).
//! Parsed in every build so the CLIs check their arguments the same way.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Parses `sha256/<base64>`.
pub fn parse_pin(s: &str) -> Result<[u8; 32], String> {
    let b64 = s
        .strip_prefix("sha256/")
        .ok_or_else(|| format!("pin `{s}`: expected sha256/<base64 of the SPKI's SHA-256>"))?;
    decode(b64)
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| format!("pin `{s}`: not the base64 of 32 bytes"))
}

#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) fn encode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | u32::from(x) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let pad = s.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (k, q) in s.chunks(4).enumerate() {
        let last = k + 1 == s.len() / 4;
        let mut n = 0u32;
        for (i, &c) in q.iter().enumerate() {
            let v = if c == b'=' && last && i >= 4 - pad {
                0
            } else {
                ALPHABET.iter().position(|&a| a == c)? as u32
            };
            n |= v << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = if last { 3 - pad } else { 3 };
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_pins_parse() {
        for n in 0..40u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(decode(&encode(&v)).as_deref(), Some(&v[..]), "{n}");
        }
        assert_eq!(encode(b"foob"), "Zm9vYg==");
        let p = format!("sha256/{}", encode(&[7u8; 32]));
        assert_eq!(parse_pin(&p), Ok([7u8; 32]));
        for bad in [
            "sha1/AAAA",
            "sha256/",
            "sha256/AAAA",
            "sha256/!!!!",
            "sha256/A===",
        ] {
            assert!(parse_pin(bad).is_err(), "{bad}");
        }
    }
}
