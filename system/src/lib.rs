//! The pieces of `oxbow-local`: running brokers and services in one process or one at a time.

mod secure;
pub mod storm;

use std::path::PathBuf;

use anyhow::Context as _;
use oxbow_broker::broker::Broker;
use oxbow_broker::config::BrokerConfig;

/// Runs one service (`booking`, `lab` or `data`) until SIGTERM or SIGINT.
pub fn run_service(name: &str, file: Option<PathBuf>) -> anyhow::Result<()> {
    let file = file.as_deref();
    actix_rt::System::new().block_on(async move {
        let (_trigger, shutdown) = oxbow_service::shutdown::on_signals();
        match name {
            "booking" => {
                let config = booking_service::load_config(file)?;
                oxbow_service::telemetry::init_logs(&config.common.log.format, &config.common.log.level);
                booking_service::run(config, shutdown, |addr| println!("booking-service listening on http://{addr}"))
                    .await
            }
            "lab" => {
                let config = lab_service::load_config(file)?;
                oxbow_service::telemetry::init_logs(&config.common.log.format, &config.common.log.level);
                lab_service::run(config, shutdown, |addr| println!("lab-service listening on http://{addr}")).await
            }
            "data" => {
                let config = data_service::load_config(file)?;
                oxbow_service::telemetry::init_logs(&config.common.log.format, &config.common.log.level);
                data_service::run(config, shutdown, |addr| println!("data-service listening on http://{addr}")).await
            }
            other => anyhow::bail!("unknown service {other}"),
        }
    })
}

/// Where `up` keeps data and listens.
pub struct Addresses {
    pub data_dir: PathBuf,
    /// The first broker's address; the others take the next ports (port 0: free ports).
    pub broker_listen: String,
    /// How many brokers (3: a replicated cluster, replication factor 3, min.insync.replicas 2).
    pub brokers: usize,
    pub booking_listen: String,
    pub lab_listen: String,
    pub data_listen: String,
}

/// Brokers and the three services in this process, until Ctrl-C.
pub fn up(addresses: Addresses) -> anyhow::Result<()> {
    let Addresses { data_dir, broker_listen, brokers: n_brokers, booking_listen, lab_listen, data_listen } = addresses;
    // Warnings and errors only (RUST_LOG overrides), so the banner printed once everything listens is what
    // a user sees.
    // openraft reports the first election's refused connections (brokers still starting) as errors: quiet here.
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=off".into());
    oxbow_service::telemetry::init_logs("human", &level);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let n_brokers = n_brokers.max(1);
    let broker_addrs = broker_addresses(&broker_listen, n_brokers)?;
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    hosts.extend(broker_addrs.iter().filter_map(|addr| addr.rsplit_once(':').map(|(host, _)| host.to_string())));
    hosts.dedup();
    let security = secure::LocalSecurity::prepare(&data_dir, &hosts)?;
    actix_rt::System::new().block_on(async move {
        let (_trigger, mut shutdown) = oxbow_service::shutdown::on_signals();
        let controllers = if n_brokers > 1 {
            broker_addrs.iter().enumerate().map(|(i, addr)| format!("{}@{addr}", i + 1)).collect::<Vec<_>>().join(",")
        } else {
            String::new()
        };
        let mut brokers = Vec::with_capacity(n_brokers);
        for (i, addr) in broker_addrs.iter().enumerate() {
            let mut config = BrokerConfig::load(None)?;
            config.node_id = i as i32 + 1;
            config.data_dir = data_dir.join(format!("broker-{}", i + 1));
            config.listen = addr.clone();
            config.cluster.controllers = controllers.clone();
            config.cluster.secret_file = Some(data_dir.join("cluster.secret"));
            config.http_listen = "127.0.0.1:0".into();
            security.apply_to_broker(&mut config);
            if n_brokers > 1 {
                config.cluster.default_replication_factor = n_brokers.min(3) as u16;
                config.log.min_insync_replicas = 2;
            }
            brokers.push(Broker::start(config).await?);
        }
        // Services create their topics with every broker's replicas: wait until all brokers registered.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while brokers[0].cluster().state().live_brokers().len() < n_brokers {
            anyhow::ensure!(std::time::Instant::now() < deadline, "the brokers did not form a cluster within 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let bootstrap = brokers.iter().map(|b| b.local_addr().to_string()).collect::<Vec<_>>().join(",");
        let replication_factor = n_brokers.min(3) as u16;
        // Users, topics and least-privilege ACLs, as the admin.
        let admin = oxbow::client::Admin::connect(security.admin_client(&bootstrap)?).await?;
        security.grant(&admin, replication_factor).await?;

        let mut booking = booking_service::load_config(None)?;
        booking.common.broker.bootstrap = bootstrap.clone();
        booking.common.broker.replication_factor = replication_factor;
        security.apply_to_service("booking-service", &mut booking.common.broker);
        booking.common.http.listen = booking_listen;
        let mut lab = lab_service::load_config(None)?;
        lab.common.broker.bootstrap = bootstrap.clone();
        lab.common.broker.replication_factor = replication_factor;
        security.apply_to_service("lab-service", &mut lab.common.broker);
        lab.common.http.listen = lab_listen;
        lab.database.data_dir = data_dir.join("lab-service");
        let mut data = data_service::load_config(None)?;
        data.common.broker.bootstrap = bootstrap.clone();
        data.common.broker.replication_factor = replication_factor;
        security.apply_to_service("data-service", &mut data.common.broker);
        data.common.http.listen = data_listen;
        data.database.data_dir = data_dir.join("data-service");

        let first_broker = brokers[0].local_addr().to_string();
        let cli_env = security.cli_env();
        let console = brokers
            .first()
            .and_then(|broker| broker.http_addr())
            .map_or(String::new(), |addr| format!("http://{addr}/"));
        let broker_metrics = brokers
            .iter()
            .filter_map(|broker| broker.http_addr())
            .map(|addr| format!("http://{addr}/metrics"))
            .collect::<Vec<_>>()
            .join(" ");
        let (booking_tx, booking_rx) = tokio::sync::oneshot::channel();
        let (lab_tx, lab_rx) = tokio::sync::oneshot::channel();
        let (data_tx, data_rx) = tokio::sync::oneshot::channel();
        let banner = async {
            // Once all three listen; a service that fails to start ends the run instead.
            if let (Ok(booking), Ok(lab), Ok(data)) = (booking_rx.await, lab_rx.await, data_rx.await) {
                println!();
                println!("Dashboard:  http://{booking}/");
                println!("Labs:       http://{lab}/api/labs");
                println!("Analytics:  http://{data}/api/analytics/summary");
                println!("Metrics:    http://{data}/metrics (each service has /metrics, /healthz, /readyz)");
                println!("Brokers:    {bootstrap} (replication factor {replication_factor})");
                println!("Console:    {console} (brokers' metrics: {broker_metrics})");
                println!("Security:   TLS, SCRAM logins and ACLs; each service has its own least-privilege user");
                println!("CLI:        export {cli_env}");
                println!("            oxbow --bootstrap-server {first_broker} topic describe bookings");
                println!("Data:       {} (delete it to start over). Ctrl-C stops everything.", data_dir.display());
            }
            Ok::<(), anyhow::Error>(())
        };
        let services = tokio::try_join!(
            booking_service::run(booking, shutdown.clone(), |addr| {
                let _ = booking_tx.send(addr);
            }),
            lab_service::run(lab, shutdown.clone(), |addr| {
                let _ = lab_tx.send(addr);
            }),
            data_service::run(data, shutdown.clone(), |addr| {
                let _ = data_tx.send(addr);
            }),
            banner,
            async {
                let _ = shutdown.wait_for(|stop| *stop).await;
                Ok(())
            }
        );
        // Together, so that the controller quorum stays up while each hands its leaderships over.
        futures_util::future::join_all(brokers.into_iter().map(Broker::shutdown)).await;
        services.map(|_| ())
    })
}

/// `n` addresses from the first: consecutive ports, or free ports when the port is 0.
fn broker_addresses(first: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let addr: std::net::SocketAddr = first.parse().with_context(|| format!("broker address '{first}'"))?;
    if addr.port() == 0 {
        // Brokers must know each other's addresses before they start: reserve free ports.
        let listeners: Vec<std::net::TcpListener> =
            (0..n).map(|_| std::net::TcpListener::bind((addr.ip(), 0))).collect::<Result<_, _>>()?;
        return listeners.iter().map(|l| Ok(l.local_addr()?.to_string())).collect();
    }
    Ok((0..n).map(|i| std::net::SocketAddr::new(addr.ip(), addr.port() + i as u16).to_string()).collect())
}
