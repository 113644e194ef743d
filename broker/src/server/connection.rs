//! One client connection: reads frames, dispatches requests (many in flight), writes responses as they
//! complete, matched by correlation id. Produce requests are handed to partition actors in the order they
//! were read, so pipelined produces to one partition keep their order.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use oxbow::protocol::frame::{self, FrameCheck};
use oxbow::protocol::{ApiKey, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};

use super::api::{self, error_frame, RequestScope, ServerContext};

const READ_CHUNK_BYTES: usize = 64 * 1024;
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<ServerContext>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let in_flight_max = context.config.connection_in_flight_max;
    let frame_bytes_max = context.config.frame_bytes_max;
    let (responses_tx, responses_rx) = mpsc::channel::<BytesMut>(in_flight_max);
    let writer_task = actix_rt::spawn(write_responses(writer, responses_rx, peer));
    let in_flight = Arc::new(Semaphore::new(in_flight_max));
    let heartbeats_from = Arc::new(std::sync::atomic::AtomicI32::new(-1));
    let scope = RequestScope {
        context: context.clone(),
        responses: responses_tx,
        shutdown: shutdown.clone(),
        _done: done,
        heartbeats_from: heartbeats_from.clone(),
    };
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    tracing::debug!(%peer, "connection opened");
    'connection: loop {
        loop {
            match frame::check(&buf, frame_bytes_max) {
                FrameCheck::Incomplete => break,
                FrameCheck::TooLarge(length) => {
                    // The stream cannot be resynchronised: answer if we can, then close.
                    let correlation_id = frame::peek_correlation_id(&buf[frame::FRAME_LENGTH_BYTES..]).unwrap_or(0);
                    let message = format!("frame of {length} bytes is over the limit of {frame_bytes_max}");
                    tracing::warn!(%peer, %message, "closing connection");
                    let _ =
                        scope.responses.send(error_frame(correlation_id, ErrorCode::FRAME_TOO_LARGE, message)).await;
                    break 'connection;
                }
                FrameCheck::Complete(frame_bytes) => {
                    let payload = buf.split_to(frame_bytes).freeze().slice(frame::FRAME_LENGTH_BYTES..);
                    let Ok(permit) = in_flight.clone().acquire_owned().await else { break 'connection };
                    dispatch(payload, &scope, permit).await;
                }
            }
        }
        if let FrameCheck::Incomplete = frame::check(&buf, frame_bytes_max) {
            if buf.len() >= frame::FRAME_LENGTH_BYTES {
                let length = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
                buf.reserve(frame::FRAME_LENGTH_BYTES + length - buf.len());
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%peer, %error, "read failed");
                    break;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    // Request tasks hold clones of the sender; the writer ends after the last response.
    drop(scope);
    let node = heartbeats_from.load(std::sync::atomic::Ordering::Acquire);
    if node >= 0 && !*shutdown.borrow() {
        context.registry.cluster().heartbeat_connection_closed(node);
    }
    let _ = writer_task.await;
    tracing::debug!(%peer, "connection closed");
}

/// Decodes the header and runs the request. Produce hands off to the partition actors before returning
/// (to keep order); every other API runs in its own task.
async fn dispatch(payload: Bytes, scope: &RequestScope, permit: tokio::sync::OwnedSemaphorePermit) {
    let (header, body) = match frame::decode_request(&payload) {
        Ok(decoded) => decoded,
        Err(error) => {
            let correlation_id = frame::peek_correlation_id(&payload).unwrap_or(0);
            let _ =
                scope.responses.send(error_frame(correlation_id, ErrorCode::INVALID_REQUEST, error.to_string())).await;
            return;
        }
    };
    let correlation_id = header.correlation_id;
    let Some(api) = ApiKey::from_key(header.api_key) else {
        let message = format!("unknown API key {}", header.api_key);
        let _ = scope.responses.send(error_frame(correlation_id, ErrorCode::UNKNOWN_API, message)).await;
        return;
    };
    if header.api_version < api.min_version() || header.api_version > api.max_version() {
        let message = format!(
            "{} version {} is not supported (supported: {}..={})",
            api.name(),
            header.api_version,
            api.min_version(),
            api.max_version()
        );
        let _ = scope.responses.send(error_frame(correlation_id, ErrorCode::UNSUPPORTED_VERSION, message)).await;
        return;
    }
    if api == ApiKey::Produce {
        let pending = api::produce::hand_off(&body, scope).await;
        let scope = scope.clone();
        actix_rt::spawn(async move {
            if let Some(frame) = pending.complete(correlation_id).await {
                let _ = scope.responses.send(frame).await;
            }
            drop(permit);
        });
        return;
    }
    let scope = scope.clone();
    actix_rt::spawn(async move {
        let frame = match api::handle(api, header.client_id, &body, &scope).await {
            Ok(body) => body.into_frame(correlation_id),
            Err(error) => error_frame(correlation_id, error.code, error.message),
        };
        let _ = scope.responses.send(frame).await;
        drop(permit);
    });
}

async fn write_responses(writer: OwnedWriteHalf, mut responses: mpsc::Receiver<BytesMut>, peer: SocketAddr) {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer);
    while let Some(frame) = responses.recv().await {
        if let Err(error) = writer.write_all(&frame).await {
            tracing::debug!(%peer, %error, "write failed");
            return;
        }
        // Flush only when no other response is ready, so bursts share syscalls.
        while let Ok(frame) = responses.try_recv() {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
