//! The pieces of `oxbow-local`: running brokers and services in one process or one at a time.

use std::path::PathBuf;

use anyhow::Context as _;
use oxbow_broker::config::BrokerConfig;
use oxbow_broker::server::Broker;

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
    pub broker_listen: String,
    pub booking_listen: String,
    pub lab_listen: String,
    pub data_listen: String,
}

/// A broker and the three services in this process, until Ctrl-C.
pub fn up(addresses: Addresses) -> anyhow::Result<()> {
    let Addresses { data_dir, broker_listen, booking_listen, lab_listen, data_listen } = addresses;
    oxbow_service::telemetry::init_logs("human", "info");
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    actix_rt::System::new().block_on(async move {
        let (_trigger, mut shutdown) = oxbow_service::shutdown::on_signals();
        let mut broker_config = BrokerConfig::load(None)?;
        broker_config.data_dir = data_dir.join("broker-1");
        broker_config.listen = broker_listen;
        let broker = Broker::start(broker_config).await?;
        let bootstrap = broker.local_addr().to_string();

        let mut booking = booking_service::load_config(None)?;
        booking.common.broker.bootstrap = bootstrap.clone();
        booking.common.http.listen = booking_listen;
        let mut lab = lab_service::load_config(None)?;
        lab.common.broker.bootstrap = bootstrap.clone();
        lab.common.http.listen = lab_listen;
        lab.database.data_dir = data_dir.join("lab-service");
        let mut data = data_service::load_config(None)?;
        data.common.broker.bootstrap = bootstrap.clone();
        data.common.http.listen = data_listen;
        data.database.data_dir = data_dir.join("data-service");

        let services = tokio::try_join!(
            booking_service::run(booking, shutdown.clone(), |addr| println!("Dashboard:  http://{addr}/")),
            lab_service::run(lab, shutdown.clone(), |addr| println!("Labs:       http://{addr}/api/labs")),
            data_service::run(data, shutdown.clone(), |addr| {
                println!("Analytics:  http://{addr}/api/analytics/summary");
                println!("Metrics:    http://{addr}/metrics (each service has /metrics, /healthz, /readyz)");
                println!("CLI:        oxbow --bootstrap-server {bootstrap} topic list");
                println!("Data:       {} (delete it to start over). Ctrl-C stops everything.", data_dir.display());
            }),
            async {
                let _ = shutdown.wait_for(|stop| *stop).await;
                Ok(())
            }
        );
        broker.shutdown().await;
        services.map(|_| ())
    })
}
