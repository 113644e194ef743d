//! The database: PostgreSQL when a URL is configured, else an embedded SQLite file, both through
//! `sqlx::AnyPool`. SQL is written to run on both (TEXT dates, BIGINT milliseconds, `$n` placeholders).

use std::path::Path;

use anyhow::Context as _;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::AnyPool;

/// Which database a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Connects and runs the backend's migrations. An empty `url` means `sqlite://<data_dir>/<name>.db`.
/// On PostgreSQL the service's tables live in their own `schema` (created if missing).
pub async fn connect(
    url: &str,
    data_dir: &Path,
    name: &str,
    schema: &str,
    postgres: &Migrator,
    sqlite: &Migrator,
) -> anyhow::Result<(AnyPool, Backend)> {
    sqlx::any::install_default_drivers();
    let (url, backend) = if url.trim().is_empty() {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        (format!("sqlite://{}?mode=rwc", data_dir.join(format!("{name}.db")).display()), Backend::Sqlite)
    } else if url.starts_with("sqlite:") {
        (url.to_string(), Backend::Sqlite)
    } else {
        (url.to_string(), Backend::Postgres)
    };
    let mut options = AnyPoolOptions::new().max_connections(if backend == Backend::Sqlite { 1 } else { 8 });
    options = options.acquire_timeout(std::time::Duration::from_secs(10));
    if backend == Backend::Postgres {
        assert!(schema.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "schema names are plain identifiers");
        let setup = AnyPoolOptions::new().max_connections(1).connect(&url).await.context("connecting to PostgreSQL")?;
        // Two instances starting together would race on CREATE SCHEMA IF NOT EXISTS (a unique violation in
        // pg_namespace): the second waits for the first's transaction instead.
        let mut tx = setup.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7262010916)").execute(&mut *tx).await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&mut *tx).await?;
        tx.commit().await?;
        setup.close().await;
        let search_path = format!("SET search_path TO {schema}");
        options = options.after_connect(move |connection, _| {
            let search_path = search_path.clone();
            Box::pin(async move {
                sqlx::Executor::execute(connection, search_path.as_str()).await?;
                Ok(())
            })
        });
    }
    let pool = options.connect(&url).await.with_context(|| format!("connecting to the {backend:?} database"))?;
    if backend == Backend::Sqlite {
        // Writers wait for each other instead of failing with SQLITE_BUSY.
        sqlx::query("PRAGMA busy_timeout = 10000").execute(&pool).await?;
        sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
    }
    let migrator = match backend {
        Backend::Postgres => postgres,
        Backend::Sqlite => sqlite,
    };
    migrator.run(&pool).await.context("running database migrations")?;
    Ok((pool, backend))
}

/// `SELECT 1`, for readiness.
pub async fn ping(pool: &AnyPool) -> Result<(), String> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(|error| format!("database: {error}"))
}
