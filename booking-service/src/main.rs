//! `booking-service`: see the crate docs. Configuration: `--config FILE` and `BOOKING__SECTION__KEY` variables.

fn main() -> anyhow::Result<()> {
    let file = std::env::args().skip_while(|a| a != "--config").nth(1).map(std::path::PathBuf::from);
    let config = booking_service::load_config(file.as_deref())?;
    oxbow_service::telemetry::init_logs(&config.common.log.format, &config.common.log.level);
    actix_rt::System::new().block_on(async move {
        let (_trigger, shutdown) = oxbow_service::shutdown::on_signals();
        booking_service::run(config, shutdown, |addr| println!("booking-service listening on http://{addr}")).await
    })
}
