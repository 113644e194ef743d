//! The async Rust client: a pipelined connection, cluster metadata, `Producer`, `Consumer` and `Admin`.

mod accumulator;
mod admin;
mod buffer;
mod cluster;
mod connection;
mod consumer;
mod error;
mod group;
mod precise;
mod producer;
mod tls;

pub use admin::Admin;
pub use cluster::{ClientConfig, Cluster};
pub use connection::{Connection, PendingResponse, RESPONSE_FRAME_BYTES_MAX_DEFAULT};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset};
pub use error::ClientError;
pub use group::{GroupConfig, RebalanceListener, TopicPartition};
pub use producer::{BatchDeliveryFuture, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use tls::{read_cert_and_key, TlsSettings};
