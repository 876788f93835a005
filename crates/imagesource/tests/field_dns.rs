//! A resolver that does not answer (the slow-DNS stand-in: a hook, no
//! real network) ends within the timeout, and the deadline bounds it too;
//! both are source failures (exit 9 in the CLIs) that say why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imagesource::{HttpOptions, HttpSource, Resolver};

fn hanging() -> Resolver {
    Resolver(Arc::new(|_host: &str, _port: u16| {
        std::thread::sleep(Duration::from_secs(30));
        Err(std::io::Error::other("never reached"))
    }))
}

#[test]
fn field_slow_dns_ends_within_the_timeout() {
    let opts = HttpOptions {
        timeout: Duration::from_secs(1),
        retries: 0,
        resolver: Some(hanging()),
        ..HttpOptions::default()
    };
    let start = Instant::now();
    let e = HttpSource::open("http://updates.example.test/u.fwi", &opts, None).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(e.is_source_failure(), "{e}");
    assert!(
        e.to_string().contains("resolving updates.example.test"),
        "{e}"
    );
}

#[test]
fn field_slow_dns_ends_at_the_deadline() {
    let opts = HttpOptions {
        timeout: Duration::from_secs(30),
        retries: 5,
        deadline: Some(Duration::from_secs(1)),
        resolver: Some(hanging()),
        ..HttpOptions::default()
    };
    let start = Instant::now();
    let e = HttpSource::open("http://updates.example.test/u.fwi", &opts, None).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(e.is_source_failure(), "{e}");
    assert!(e.to_string().contains("deadline"), "{e}");
}
