//! What a fleet operator looks at: goosebit's web UI, in headless
//! Chromium (Debian's, driven through chromedriver), after an update
//! published with `fwpack publish` has been applied and confirmed. The
//! test logs in through the login form, reads the devices and rollouts
//! tables as rendered, and keeps screenshots in
//! `target/fwpack-test-logs/fleet_goosebit_ui/`. The UI's CDN files come
//! from npm packages served on loopback (goosebit_support::cdn_tree).

mod goosebit_support;
mod qemu_support;

use std::process::Command;

use goosebit_support::*;
use updater::Slot;

#[test]
fn fleet_goosebit_ui_shows_the_updated_device_and_the_finished_rollout() {
    let Some(venv) = venv() else {
        panic!("no goosebit venv: run `cargo xtask deps`");
    };
    let work = tempfile::tempdir().unwrap();
    let gb = Goosebit::start(&venv, work.path());
    let dev = Device::new(work.path(), "dev-ui", &gb.url(), 3);
    dev.once();
    gb.publish(
        &dev.dir.join("update.fwi"),
        &dev.dir.join("key.pem"),
        &[
            "--rollout",
            "default",
            "--rollout-name",
            "fwpack-ui-rollout",
        ],
    );
    dev.once();
    assert_eq!(dev.boot(), Slot::B);
    dev.mark_good(Slot::B);
    dev.once();

    let cdn = cdn_tree(work.path());
    let cert = work.path().join("cdn.pem");
    let key = work.path().join("cdn.key");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=cdn.jsdelivr.net"])
        .args([
            "-addext",
            "subjectAltName=DNS:cdn.jsdelivr.net,DNS:cdn.datatables.net",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The UI loads bootstrap with `crossorigin`: CORS as jsDelivr
    // answers; a browser takes a style sheet only as text/css.
    let nginx = testkit::http::Nginx::start_tls_with(
        &cdn,
        &cert,
        &key,
        "add_header Access-Control-Allow-Origin * always;\n\
         types { text/css css; text/javascript js; font/woff2 woff2; font/woff woff; }",
    )
    .unwrap();

    let logs = testkit::target_dir().join("fwpack-test-logs/fleet_goosebit_ui");
    std::fs::create_dir_all(&logs).unwrap();
    let b = Browser::start(nginx.port(), &logs.join("chromedriver.log"));
    b.go(&format!("{}/login", gb.url()));
    b.type_into("input[type=email]", USER);
    b.type_into("input[type=password]", PASSWORD);
    b.click("button[type=submit]");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while b
        .script("return document.cookie")
        .as_str()
        .unwrap_or("")
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "login: {}", b.text());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    b.go(&format!("{}/ui/devices", gb.url()));
    let row = b.row("device-table", "dev-ui");
    b.screenshot(&logs.join("devices.png"));
    let cell = |row: &[(String, String)], title: &str| {
        row.iter()
            .find(|(t, _)| t == title)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no column {title} in {row:?}"))
    };
    assert_eq!(cell(&row, "Installed Software"), "1.0.2", "{row:?}");
    assert_eq!(cell(&row, "State"), "Finished", "{row:?}");
    assert_eq!(cell(&row, "Model"), qemu_support::BOARD, "{row:?}");

    b.go(&format!("{}/ui/rollouts", gb.url()));
    let row = b.row("rollout-table", "fwpack-ui-rollout");
    b.screenshot(&logs.join("rollouts.png"));
    assert_eq!(cell(&row, "Software Version"), "1.0.2", "{row:?}");
    assert_eq!(cell(&row, "Success Count"), "1", "{row:?}");
    // goosebit shows a zero count as "-".
    assert!(
        ["0", "-"].contains(&cell(&row, "Failure Count").as_str()),
        "{row:?}"
    );
    eprintln!(
        "goosebit UI: rollout {row:?}; screenshots in {}",
        logs.display()
    );
}
