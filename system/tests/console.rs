//! The broker's web console in a real browser (headless Chromium) against three real brokers: the cluster,
//! a topic created through the page, records produced with the CLI showing in the throughput chart and the
//! record browser, a group's lag going up and down, and a stopped broker turning fenced with its partitions'
//! in-sync sets shrinking. Screenshots at desktop and phone widths.

mod common;

use std::time::Duration;

use common::browser::{save_screenshot, Browser};
use oxbow::client::{Admin, ClientConfig};
use oxbow_testkit::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_the_cluster_topics_records_groups_and_a_broker_going_down() {
    let _serial = oxbow_testkit::ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start_with_env(&[("OXBOW__HTTP_LISTEN", "127.0.0.1:0")]);
    cluster.wait_live_brokers(3).await;
    let console = cluster.brokers[0].http_addr();
    let admin = Admin::connect(ClientConfig::new(cluster.bootstrap())).await.unwrap();
    let url = format!("http://{console}/");
    let mut browser = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        browser.call("Page.enable", serde_json::json!({}));
        browser.call("Page.navigate", serde_json::json!({"url": url}));
        browser.wait_for(
            "document.querySelectorAll('#brokers tbody td.alive').length === 3",
            Duration::from_secs(30),
        );
        // A topic created through the page.
        browser.eval("document.querySelector('nav a[data-tab=topics]').click(); true");
        browser.wait_for("!document.querySelector('#create-topic button').disabled", Duration::from_secs(10));
        browser.eval(
            "document.getElementById('new-topic').value = 'clicks'; document.getElementById('new-replication').value = '3'; \
             document.getElementById('create-topic').requestSubmit(); true",
        );
        browser.wait_for("document.querySelector('.topic[data-topic=clicks]') !== null", Duration::from_secs(20));
        browser
    })
    .await
    .unwrap();

    // Records produced with the CLI, as JSON, to partition 0.
    let lines: String = (0..300).map(|n| format!("{{\"learner\": {n}, \"action\": \"view\"}}\n")).collect();
    let produced = cluster.brokers[0].cli(&["produce", "clicks", "--partition", "0"], Some(&lines));
    assert!(produced.status.success(), "{}", oxbow_testkit::stderr(&produced));
    browser = tokio::task::spawn_blocking(move || {
        browser.eval("document.querySelector('nav a[data-tab=cluster]').click(); true");
        browser.wait_for(
            "Number((document.querySelector('#throughput-legend [data-series=clicks]') || {dataset: {max: 0}}).dataset.max) > 0",
            Duration::from_secs(20),
        );
        browser.eval("document.querySelector('nav a[data-tab=browse]').click(); true");
        browser.wait_for("document.getElementById('browse-topic').options.length > 0", Duration::from_secs(10));
        browser.eval(
            "document.getElementById('browse-topic').value = 'clicks'; \
             document.getElementById('browse-form').requestSubmit(); true",
        );
        browser.wait_for("document.querySelectorAll('#records tbody tr').length === 50", Duration::from_secs(20));
        let first = browser.eval("document.querySelector('#records tbody tr td:nth-child(4)').textContent");
        assert!(first.as_str().unwrap().contains("\"learner\": 0"), "JSON values are shown: {first}");
        browser.eval("document.querySelector('nav a[data-tab=cluster]').click(); true");
        browser.wait_for(
            "Number((document.querySelector('#bytes-legend [data-series=clicks]') || {dataset: {max: 0}}).dataset.max) > 1000",
            Duration::from_secs(20),
        );
        browser
    })
    .await
    .unwrap();

    // A group's lag goes up, then down as it commits.
    let commit = |offset: u64| {
        let admin = &admin;
        async move {
            oxbow_testkit::poll("a commit", Duration::from_secs(20), || async {
                admin.commit_group_offsets("analytics", vec![(("clicks".to_string(), 0), offset)]).await.is_ok()
            })
            .await;
        }
    };
    commit(0).await;
    browser = tokio::task::spawn_blocking(move || {
        browser.eval("document.querySelector('nav a[data-tab=groups]').click(); true");
        browser.wait_for(
            "(document.querySelector('[data-group=analytics]') || {dataset: {}}).dataset.lag === '300'",
            Duration::from_secs(20),
        );
        browser
    })
    .await
    .unwrap();
    commit(300).await;
    browser = tokio::task::spawn_blocking(move || {
        browser.wait_for(
            "(document.querySelector('[data-group=analytics]') || {dataset: {}}).dataset.lag === '0'",
            Duration::from_secs(20),
        );
        browser.wait_for(
            "document.querySelectorAll('#lag polyline[data-series=analytics]').length === 1",
            Duration::from_secs(20),
        );
        browser
    })
    .await
    .unwrap();

    // The record browser from a time: records written after it, none before.
    tokio::time::sleep(Duration::from_millis(5)).await; // (the clock moves on: a time strictly after the first 300)
    let after = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let later: String = (0..20).map(|n| format!("{{\"learner\": {n}, \"action\": \"buy\"}}\n")).collect();
    let produced = cluster.brokers[0].cli(&["produce", "clicks", "--partition", "0"], Some(&later));
    assert!(produced.status.success(), "{}", oxbow_testkit::stderr(&produced));
    browser = tokio::task::spawn_blocking(move || {
        browser.eval("document.querySelector('nav a[data-tab=browse]').click(); true");
        browser.eval(&format!(
            "document.getElementById('browse-time').value = '{after}'; \
             document.getElementById('browse-form').requestSubmit(); true"
        ));
        browser.wait_for("document.querySelectorAll('#records tbody tr').length === 20", Duration::from_secs(20));
        let first = browser.eval("document.querySelector('#records tbody tr td:nth-child(1)').textContent");
        assert_eq!(first, "300", "the first record at or after {after}");
        let values = browser.eval("[...document.querySelectorAll('#records tbody tr td:nth-child(4)')].map(td => td.textContent).join()");
        assert!(!values.as_str().unwrap().contains("view"), "only records after the time: {values}");
        browser.eval("document.querySelector('nav a[data-tab=topics]').click(); true");
        browser.wait_for(
            "[...document.querySelectorAll('.topic[data-topic=clicks] tr[data-partition=\"0\"] td')].pop().textContent.endsWith('KiB')",
            Duration::from_secs(20),
        );
        browser
    })
    .await
    .unwrap();

    // Screenshots, and nothing scrolls sideways at either width.
    let admin_topics = admin.describe_topic("clicks").await.unwrap();
    assert_eq!(admin_topics.partitions.len(), 3);
    browser = tokio::task::spawn_blocking(move || {
        for (tab, name) in [("cluster", "cluster"), ("topics", "topics")] {
            browser.eval(&format!("document.querySelector('nav a[data-tab={tab}]').click(); true"));
            for (width, height, mobile) in [(1280, 900, false), (390, 844, true)] {
                browser.call(
                    "Emulation.setDeviceMetricsOverride",
                    serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
                );
                browser
                    .wait_for("document.querySelectorAll('#brokers tbody tr').length === 3", Duration::from_secs(10));
                let fits = browser.eval("document.documentElement.scrollWidth <= window.innerWidth");
                assert_eq!(fits, true, "the console scrolls sideways at {width} px on {tab}");
                let shot = browser.call(
                    "Page.captureScreenshot",
                    serde_json::json!({"format": "png", "captureBeyondViewport": true}),
                );
                save_screenshot(&format!("console-{name}-{width}.png"), shot["data"].as_str().unwrap());
            }
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    })
    .await
    .unwrap();

    // A stopped broker turns fenced, and its partitions' in-sync sets shrink.
    cluster.brokers[2].kill9();
    tokio::task::spawn_blocking(move || {
        browser.eval("document.querySelector('nav a[data-tab=cluster]').click(); true");
        browser.wait_for(
            "document.querySelector('#brokers tbody tr[data-broker=\"3\"] td.fenced') !== null",
            Duration::from_secs(30),
        );
        browser.eval("document.querySelector('nav a[data-tab=topics]').click(); true");
        browser.wait_for(
            "document.querySelectorAll('.topic[data-topic=clicks] td.under').length > 0",
            Duration::from_secs(30),
        );
    })
    .await
    .unwrap();
}
