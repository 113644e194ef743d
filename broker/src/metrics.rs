//! The broker's Prometheus metrics (prometheus-client: one registry per broker, so brokers sharing a process
//! under `oxbow-local` keep theirs apart). Counters and histograms are updated where the work happens;
//! gauges that describe the cluster's state are computed when `/metrics` is scraped. Names and labels follow
//! the Kafka and Redpanda exporters (see docs/metrics.md).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabels {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

type Latency = Family<ApiLabels, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    // 50 µs to ~3.3 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

pub struct BrokerMetrics {
    registry: Registry,
    pub bytes_in: Family<TopicLabels, Counter>,
    pub records_in: Family<TopicLabels, Counter>,
    pub bytes_out: Family<TopicLabels, Counter>,
    pub requests: Family<ApiLabels, Counter>,
    pub request_seconds: Latency,
    pub connections: Gauge,
    pub partitions: Gauge,
    pub leaders: Gauge,
    pub under_replicated_partitions: Gauge,
    pub offline_partitions: Gauge,
    pub isr_shrinks: Counter,
    pub isr_expands: Counter,
    pub leader_elections: Counter,
    pub controller_active: Gauge,
    pub brokers_alive: Gauge,
    pub brokers_fenced: Gauge,
    pub group_generation: Family<GroupLabels, Gauge>,
    pub group_members: Family<GroupLabels, Gauge>,
    pub group_lag: Family<GroupPartitionLabels, Gauge>,
    pub log_size_bytes: Family<PartitionLabels, Gauge>,
    pub fsync_seconds: Histogram,
    pub replica_fetch_seconds: Histogram,
    pub replica_append_seconds: Histogram,
}

impl BrokerMetrics {
    pub fn new() -> Arc<BrokerMetrics> {
        let mut registry = Registry::with_prefix("oxbow");
        let metrics = BrokerMetrics {
            bytes_in: Family::default(),
            records_in: Family::default(),
            bytes_out: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(request_histogram as fn() -> Histogram),
            connections: Gauge::default(),
            partitions: Gauge::default(),
            leaders: Gauge::default(),
            under_replicated_partitions: Gauge::default(),
            offline_partitions: Gauge::default(),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            leader_elections: Counter::default(),
            controller_active: Gauge::default(),
            brokers_alive: Gauge::default(),
            brokers_fenced: Gauge::default(),
            group_generation: Family::default(),
            group_members: Family::default(),
            group_lag: Family::default(),
            log_size_bytes: Family::default(),
            // 100 µs to ~6.5 s.
            fsync_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            replica_fetch_seconds: request_histogram(),
            replica_append_seconds: request_histogram(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "topic_bytes_in",
            "Record batch bytes produced to this broker's partitions",
            metrics.bytes_in.clone(),
        );
        r.register("topic_records_in", "Records produced to this broker's partitions", metrics.records_in.clone());
        r.register(
            "topic_bytes_out",
            "Record batch bytes fetched by consumers and followers",
            metrics.bytes_out.clone(),
        );
        r.register("requests", "Requests answered, by API", metrics.requests.clone());
        r.register(
            "request_duration_seconds",
            "Time from reading a request to its answer",
            metrics.request_seconds.clone(),
        );
        r.register("connections", "Open client and broker connections", metrics.connections.clone());
        r.register("partitions", "Partition replicas on this broker", metrics.partitions.clone());
        r.register("leader_partitions", "Partitions this broker leads", metrics.leaders.clone());
        r.register(
            "under_replicated_partitions",
            "Partitions this broker leads whose in-sync set is smaller than their replicas",
            metrics.under_replicated_partitions.clone(),
        );
        r.register(
            "offline_partitions",
            "Partitions without a leader (reported by the active controller only)",
            metrics.offline_partitions.clone(),
        );
        r.register("isr_shrinks", "In-sync set shrinks of partitions this broker leads", metrics.isr_shrinks.clone());
        r.register(
            "isr_expands",
            "In-sync set expansions of partitions this broker leads",
            metrics.isr_expands.clone(),
        );
        r.register(
            "leader_elections",
            "Times this broker became a partition's leader",
            metrics.leader_elections.clone(),
        );
        r.register(
            "controller_active",
            "1 while this broker is the active controller",
            metrics.controller_active.clone(),
        );
        r.register(
            "brokers_alive",
            "Registered brokers not fenced, as this broker's metadata says",
            metrics.brokers_alive.clone(),
        );
        r.register("brokers_fenced", "Registered brokers fenced", metrics.brokers_fenced.clone());
        r.register(
            "group_generation",
            "A coordinated group's generation: each rebalance adds one",
            metrics.group_generation.clone(),
        );
        r.register("group_members", "Members of a coordinated group", metrics.group_members.clone());
        r.register(
            "group_lag",
            "Records between a group's committed offset and the partition's high watermark",
            metrics.group_lag.clone(),
        );
        r.register("log_size_bytes", "Bytes on disk of a partition replica", metrics.log_size_bytes.clone());
        r.register("log_fsync_duration_seconds", "Duration of partition fsyncs", metrics.fsync_seconds.clone());
        r.register(
            "replica_fetch_duration_seconds",
            "A follower's fetch from a leader, from sending it to its whole answer (a long poll waits up to 500 ms)",
            metrics.replica_fetch_seconds.clone(),
        );
        r.register(
            "replica_append_duration_seconds",
            "A follower storing one fetch answer's records, before it fetches again",
            metrics.replica_append_seconds.clone(),
        );
        Arc::new(BrokerMetrics { registry, ..metrics })
    }

    /// Counts a request that took `elapsed`.
    pub fn request_done(&self, api: &'static str, elapsed: std::time::Duration) {
        let labels = ApiLabels { api: api.to_string() };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing into a String");
        out
    }
}
