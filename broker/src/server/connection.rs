//! One client connection: reads frames, authenticates, dispatches requests (many in flight), writes responses
//! as they complete, matched by correlation id. Produce requests are handed to partition actors in the order
//! they were read, so pipelined produces to one partition keep their order.
//!
//! Limits, each from the config: a frame size (small until the connection has authenticated, when the
//! broker requires it), a handshake deadline, an idle timeout, requests in flight, and response bytes held
//! for a client that does not read them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oxbow::protocol::api::authenticate::AuthenticateRequest;
use oxbow::protocol::frame::{self, FrameCheck};
use oxbow::protocol::{ApiKey, CodedError, ErrorCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use super::api::{self, error_frame, Encoded, RequestScope, Response, ServerContext};
use crate::security::{AuthOutcome, ConnectionAuth, Principal};

const READ_CHUNK_BYTES: usize = 64 * 1024;
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Runs one accepted connection: the TLS handshake first when the listener serves TLS (within the
/// handshake deadline; a verified client certificate names the principal), then `serve`.
pub async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<ServerContext>,
    shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let metrics = context.registry.metrics().clone();
    metrics.connections.inc();
    let _open = OnDrop(move || {
        metrics.connections.dec();
    });
    let Some(acceptor) = context.tls.clone() else {
        let (reader, writer) = stream.into_split();
        return serve(reader, writer, ConnectionAuth::default(), peer, context, shutdown, done).await;
    };
    let deadline = Duration::from_millis(context.config.security.handshake_timeout_ms);
    let stream = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake did not finish in time");
            return;
        }
    };
    let user = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|certificate| crate::security::tls::certificate_user(certificate));
    let auth = match user {
        Some(user) => ConnectionAuth::from_certificate(user),
        None => ConnectionAuth::default(),
    };
    let (reader, writer) = tokio::io::split(stream);
    serve(reader, writer, auth, peer, context, shutdown, done).await
}

async fn serve(
    mut reader: impl AsyncRead + Unpin,
    writer: impl AsyncWrite + Unpin + 'static,
    mut auth: ConnectionAuth,
    peer: SocketAddr,
    context: Arc<ServerContext>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let config = &context.config;
    let in_flight_max = config.connection_in_flight_max;
    let (responses_tx, responses_rx) = mpsc::channel::<Response>(in_flight_max);
    let writer_task = actix_rt::spawn(write_responses(writer, responses_rx, peer));
    let in_flight = Arc::new(Semaphore::new(in_flight_max));
    let heartbeats_from = Arc::new(std::sync::atomic::AtomicI32::new(-1));
    let scope = RequestScope {
        context: context.clone(),
        responses: responses_tx,
        shutdown: shutdown.clone(),
        _done: done,
        heartbeats_from: heartbeats_from.clone(),
        response_budget: Arc::new(Semaphore::new(config.connection_response_bytes_max)),
    };
    let required = context.authenticator.required;
    let handshake_deadline = Instant::now() + Duration::from_millis(config.security.handshake_timeout_ms);
    let idle_timeout = Duration::from_millis(config.connection_idle_timeout_ms);
    let mut last_request = Instant::now();
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    tracing::debug!(%peer, "connection opened");
    'connection: loop {
        loop {
            let frame_bytes_max = if required && !auth.is_authenticated() {
                config.security.pre_auth_frame_bytes_max
            } else {
                config.frame_bytes_max
            };
            match frame::check(&buf, frame_bytes_max) {
                FrameCheck::Incomplete => break,
                FrameCheck::TooLarge(length) => {
                    // The stream cannot be resynchronised: answer if we can, then close.
                    let correlation_id = frame::peek_correlation_id(&buf[frame::FRAME_LENGTH_BYTES..]).unwrap_or(0);
                    let message = format!("frame of {length} bytes is over the limit of {frame_bytes_max}");
                    tracing::warn!(%peer, %message, "closing connection");
                    let _ = scope
                        .responses
                        .send(Response::new(error_frame(correlation_id, ErrorCode::FRAME_TOO_LARGE, message)))
                        .await;
                    break 'connection;
                }
                FrameCheck::Complete(frame_bytes) => {
                    last_request = Instant::now();
                    let payload = buf.split_to(frame_bytes).freeze().slice(frame::FRAME_LENGTH_BYTES..);
                    let Ok(permit) = in_flight.clone().acquire_owned().await else { break 'connection };
                    if let Flow::Close = dispatch(payload, &scope, &mut auth, permit).await {
                        tracing::info!(%peer, "closing the connection after a failed authentication");
                        break 'connection;
                    }
                }
            }
        }
        // Grow the buffer by what arrives, never by what a length prefix announces.
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        let idle = in_flight.available_permits() == in_flight_max;
        let deadline = if required && !auth.is_authenticated() {
            handshake_deadline
        } else if idle {
            last_request + idle_timeout
        } else {
            Instant::now() + idle_timeout
        };
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%peer, %error, "read failed");
                    break;
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                if required && !auth.is_authenticated() {
                    tracing::info!(%peer, "closing a connection that did not authenticate in time");
                    break;
                }
                if in_flight.available_permits() == in_flight_max && last_request + idle_timeout <= Instant::now() {
                    tracing::debug!(%peer, "closing an idle connection");
                    break;
                }
            }
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

enum Flow {
    Continue,
    Close,
}

/// Decodes the header, checks the connection may send it, and runs the request. Authenticate runs here,
/// in order; Produce hands off to the partition actors before returning (to keep order); every other API
/// runs in its own task.
async fn dispatch(
    payload: Bytes,
    scope: &RequestScope,
    auth: &mut ConnectionAuth,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Flow {
    let reply = |frame: BytesMut| async move {
        let _ = scope.responses.send(Response::new(frame)).await;
        Flow::Continue
    };
    let (header, body) = match frame::decode_request(&payload) {
        Ok(decoded) => decoded,
        Err(error) => {
            let correlation_id = frame::peek_correlation_id(&payload).unwrap_or(0);
            return reply(error_frame(correlation_id, ErrorCode::INVALID_REQUEST, error.to_string())).await;
        }
    };
    let correlation_id = header.correlation_id;
    let Some(api) = ApiKey::from_key(header.api_key) else {
        let message = format!("unknown API key {}", header.api_key);
        return reply(error_frame(correlation_id, ErrorCode::UNKNOWN_API, message)).await;
    };
    if header.api_version < api.min_version() || header.api_version > api.max_version() {
        let message = format!(
            "{} version {} is not supported (supported: {}..={})",
            api.name(),
            header.api_version,
            api.min_version(),
            api.max_version()
        );
        return reply(error_frame(correlation_id, ErrorCode::UNSUPPORTED_VERSION, message)).await;
    }
    if api == ApiKey::Authenticate {
        let request: AuthenticateRequest = match api::decode(&body) {
            Ok(request) => request,
            Err(error) => return reply(error_frame(correlation_id, error.code, error.message)).await,
        };
        let state = scope.context.registry.cluster().state();
        return match auth.step(&request, &scope.context.authenticator, &state) {
            AuthOutcome::Reply(response) => reply(Encoded::new(&response).into_frame(correlation_id)).await,
            AuthOutcome::Refuse(error) => {
                let _ = reply(error_frame(correlation_id, error.code, error.message)).await;
                Flow::Close
            }
        };
    }
    let principal = match auth.principal(scope.context.authenticator.required) {
        Some(principal) => principal,
        None if api == ApiKey::ApiVersions => Principal::Anonymous,
        None => {
            let message = format!("{} before authentication: authenticate (SCRAM-SHA-256) first", api.name());
            return reply(error_frame(correlation_id, ErrorCode::ILLEGAL_SASL_STATE, message)).await;
        }
    };
    let started = std::time::Instant::now();
    if api == ApiKey::Produce {
        let throttle = scope.context.quotas.produce(&principal, body.len() as u64);
        let access = api::Access::new(principal, &scope.context);
        let pending = api::produce::hand_off(&body, scope, &access).await;
        let scope = scope.clone();
        actix_rt::spawn(async move {
            if let Some(frame) = pending.complete(correlation_id, throttle).await {
                let _ = scope.responses.send(Response::new(frame)).await;
            }
            scope.context.registry.metrics().request_done(api.name(), started.elapsed());
            drop(permit);
        });
        return Flow::Continue;
    }
    let scope = scope.clone();
    actix_rt::spawn(async move {
        let response = match api::handle(api, header.client_id, &body, &scope, &principal).await {
            Ok(body) => body.into_response(correlation_id),
            Err(CodedError { code, message }) => Response::new(error_frame(correlation_id, code, message)),
        };
        scope.context.registry.metrics().request_done(api.name(), started.elapsed());
        let _ = scope.responses.send(response).await;
        drop(permit);
    });
    Flow::Continue
}

async fn write_responses(writer: impl AsyncWrite + Unpin, mut responses: mpsc::Receiver<Response>, peer: SocketAddr) {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer);
    while let Some(response) = responses.recv().await {
        if let Err(error) = write_response(&mut writer, response).await {
            tracing::debug!(%peer, %error, "write failed");
            return;
        }
        // Flush only when no other response is ready, so bursts share syscalls.
        while let Ok(response) = responses.try_recv() {
            if write_response(&mut writer, response).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Writes one response's frame and tail; its response budget is given back once they are written.
async fn write_response<W: AsyncWrite + Unpin>(writer: &mut BufWriter<W>, response: Response) -> std::io::Result<()> {
    writer.write_all(&response.frame).await?;
    for part in &response.tail {
        // A spliced record string goes to the socket from its own buffer (after what is buffered): a fetch's
        // records are copied once, by the kernel. The short parts between them go through the write buffer.
        if part.len() >= frame::SPLICE_BYTES_MIN {
            writer.flush().await?;
            writer.get_mut().write_all(part).await?;
        } else {
            writer.write_all(part).await?;
        }
    }
    Ok(())
}

/// Runs a closure when dropped (a connection's end, however it ends).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
