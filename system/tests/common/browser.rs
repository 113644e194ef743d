//! A headless Chromium driven over the DevTools protocol, for the dashboard and console tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A headless Chromium and a DevTools connection to its page.
pub struct Browser {
    process: std::process::Child,
    socket: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Browser {
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
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
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
    pub fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        result["result"]["value"].clone()
    }

    pub fn wait_for(&mut self, expression: &str, deadline: Duration) -> serde_json::Value {
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

/// Keeps a screenshot next to the test's build output, and in `OXBOW_SCREENSHOT_DIR` when set (how the ones
/// in docs/screenshots were made).
pub fn save_screenshot(name: &str, base64_png: &str) {
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD.decode(base64_png).unwrap();
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name), &png).unwrap();
    if let Ok(dir) = std::env::var("OXBOW_SCREENSHOT_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), &png).unwrap();
    }
}
