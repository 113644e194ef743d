//! The dashboard in a real browser: headless Chromium, driven over the DevTools protocol, books a test
//! through the form and sees it confirmed.

mod common;

use std::time::Duration;

use common::browser::{save_screenshot, Browser};
use common::*;

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
