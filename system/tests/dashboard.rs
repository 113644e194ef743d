//! The dashboard in a real browser: headless Chromium, driven over the DevTools protocol, books a test
//! through the form and sees it confirmed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A headless Chromium and a DevTools connection to its page.
struct Browser {
    process: std::process::Child,
    socket: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let process = Command::new("chromium")
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium must be installed (Debian package `chromium`; .ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        let page_url = loop {
            if let Some(url) = page_websocket_url(port) {
                break url;
            }
            assert!(Instant::now() < deadline, "chromium's DevTools never answered");
            std::thread::sleep(Duration::from_millis(100));
        };
        let path = page_url.split_once(&format!("127.0.0.1:{port}")).map(|(_, p)| p.to_string()).unwrap();
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (socket, _) =
            tungstenite::client::client(format!("ws://127.0.0.1:{port}{path}"), stream).expect("DevTools websocket");
        Browser { process, socket, next_id: 1, _profile: profile }
    }

    /// Sends a DevTools command and returns its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = serde_json::json!({"id": id, "method": method, "params": params});
        self.socket.send(tungstenite::Message::text(message.to_string())).unwrap();
        loop {
            let reply = self.socket.read().expect("DevTools reply");
            if let tungstenite::Message::Text(text) = reply {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    assert!(value.get("error").is_none(), "{method} failed: {value}");
                    return value["result"].clone();
                }
            }
        }
    }

    /// Evaluates JavaScript in the page; its value.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        result["result"]["value"].clone()
    }

    fn wait_for(&mut self, expression: &str, deadline: Duration) -> serde_json::Value {
        let until = Instant::now() + deadline;
        loop {
            let value = self.eval(expression);
            if value.as_bool() == Some(true) || (value.is_string() && !value.as_str().unwrap().is_empty()) {
                return value;
            }
            assert!(Instant::now() < until, "timed out waiting for `{expression}` (last: {value})");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The DevTools websocket URL of the first page, if Chromium is up. (Its HTTP server keeps connections
/// open, so the body is read by its Content-Length.)
fn page_websocket_url(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).ok()?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().ok())
                })
                .flatten()?;
            if body.len() >= length {
                let targets: serde_json::Value = serde_json::from_str(&body[..length]).ok()?;
                let page = targets.as_array()?.iter().find(|t| t["type"] == "page")?;
                return page["webSocketDebuggerUrl"].as_str().map(str::to_string);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_books_a_test_in_the_dashboard_and_sees_it_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let booking = service("booking", "booking", &broker.addr, "", dir.path(), &[]);
    let lab = service("lab", "lab", &broker.addr, "", dir.path(), &[]);
    wait_ready(&booking.addr).await;
    wait_ready(&lab.addr).await;
    let url = format!("http://{}/", booking.addr);
    let status = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        browser.call("Page.enable", serde_json::json!({}));
        browser.call("Page.navigate", serde_json::json!({"url": url}));
        // The catalog fills the selects.
        browser.wait_for("document.getElementById('city') !== null && document.getElementById('city').options.length === 5", Duration::from_secs(20));
        // An invalid submission marks the fields the service named.
        browser.eval("document.getElementById('patient_name').value = ''; document.getElementById('submit').click(); true");
        browser.wait_for("document.getElementById('patient_name').getAttribute('aria-invalid') === 'true'", Duration::from_secs(10));
        browser.eval(
            "(() => { const set = (id, v) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event('change')); };\
             set('patient_name', 'Meera Iyer'); set('email', 'meera@example.com'); set('city', 'Bengaluru');\
             set('test_type', 'blood-count'); document.getElementById('submit').click(); return true; })()",
        );
        let status = browser.wait_for(
            "(() => { const s = document.getElementById('booking-status').textContent; return s === 'pending' ? '' : s; })()",
            Duration::from_secs(30),
        );
        let detail = browser.eval("document.getElementById('booking-detail').textContent");
        // The log behind it: where the booking's event and the decision's are, and the time between.
        let log = browser.wait_for(
            "(() => { const t = document.getElementById('booking-log').textContent; return t.includes('Decision event: lab-assignments') ? t : ''; })()",
            Duration::from_secs(30),
        );
        let log = log.as_str().unwrap().to_string();
        assert!(log.contains("Booking event: bookings partition"), "{log}");
        assert!(log.contains("ms after the booking"), "{log}");
        assert_eq!(browser.eval("document.getElementById('patient_name').hasAttribute('aria-invalid')"), false);
        // The booking list for the patient's email shows it too.
        browser.eval("document.getElementById('lookup-form').requestSubmit(); true");
        browser.wait_for("document.querySelectorAll('#bookings-table tbody tr').length === 1", Duration::from_secs(10));
        // Nothing scrolls sideways, on a desktop or a phone; screenshots of both for review.
        for (width, height, mobile) in [(1280, 900, false), (390, 844, true)] {
            browser.call(
                "Emulation.setDeviceMetricsOverride",
                serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
            );
            browser.wait_for("window.innerWidth > 0", Duration::from_secs(5));
            let fits = browser.eval("document.documentElement.scrollWidth <= window.innerWidth");
            assert_eq!(fits, true, "the page scrolls sideways at {width} px");
            let shot = browser.call("Page.captureScreenshot", serde_json::json!({"format": "png", "captureBeyondViewport": true}));
            save_screenshot(&format!("dashboard-{width}.png"), shot["data"].as_str().unwrap());
        }
        (status, detail)
    })
    .await
    .unwrap();
    assert_eq!(status.0.as_str(), Some("confirmed"), "detail: {}", status.1);
    assert!(status.1.as_str().unwrap().contains("Bengaluru"), "the lab's address is shown: {}", status.1);
}

/// Keeps a screenshot next to the test's build output, and in `OXBOW_SCREENSHOT_DIR` when set (how the ones
/// in docs/screenshots were made).
fn save_screenshot(name: &str, base64_png: &str) {
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD.decode(base64_png).unwrap();
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name), &png).unwrap();
    if let Ok(dir) = std::env::var("OXBOW_SCREENSHOT_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), &png).unwrap();
    }
}
