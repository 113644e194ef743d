//! One pipelined connection to a broker: many requests in flight, responses matched by correlation id.
//! A writer task owns the socket's write half, a reader task the read half.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::{ClientError, TlsSettings};
use crate::auth::{self, scram, Credentials};
use crate::protocol::api::authenticate::AuthenticateRequest;
use crate::protocol::api::Request;
use crate::protocol::frame::{self, ErrorBody, FrameCheck, RequestHeader, SplicedFrame};
use crate::protocol::{ApiKey, ErrorCode};

type Reply = oneshot::Sender<Result<Bytes, ClientError>>;
type Pending = Arc<Mutex<PendingState>>;

#[derive(Default)]
struct PendingState {
    replies: HashMap<u32, Reply>,
    /// Set once the connection failed; later requests fail at once.
    failure: Option<ClientError>,
}

struct Outgoing {
    frame: SplicedFrame,
}

#[derive(Clone)]
pub struct Connection {
    addr: String,
    client_id: String,
    outgoing: mpsc::Sender<Outgoing>,
    pending: Pending,
    next_correlation_id: Arc<AtomicU32>,
}

const QUEUE_DEPTH: usize = 1024;
/// The default largest response frame a client accepts: twice the broker's default request frame limit, so
/// a fetch of the consumer's default 50 MiB fits with room to spare.
pub const RESPONSE_FRAME_BYTES_MAX_DEFAULT: usize = 2 * frame::FRAME_BYTES_MAX_DEFAULT;

impl Connection {
    /// Connects with the default limit on response frames (`ClientConfig::frame_bytes_max`).
    pub async fn connect(addr: &str, client_id: &str, timeout: Duration) -> Result<Connection, ClientError> {
        Connection::connect_with_limit(addr, client_id, timeout, RESPONSE_FRAME_BYTES_MAX_DEFAULT).await
    }

    /// Connects; a response frame announcing more than `frame_bytes_max` bytes closes the connection (its
    /// requests fail) instead of growing the buffer without bound.
    pub async fn connect_with_limit(
        addr: &str,
        client_id: &str,
        timeout: Duration,
        frame_bytes_max: usize,
    ) -> Result<Connection, ClientError> {
        Connection::connect_with(addr, client_id, timeout, frame_bytes_max, None).await
    }

    /// `connect_with_limit`, over TLS when `tls` is given (the handshake counts against `timeout`).
    pub async fn connect_with(
        addr: &str,
        client_id: &str,
        timeout: Duration,
        frame_bytes_max: usize,
        tls: Option<&TlsSettings>,
    ) -> Result<Connection, ClientError> {
        let connect_error = |reason: String| ClientError::Connect { addr: addr.to_string(), reason };
        let connecting = async {
            let stream = TcpStream::connect(addr).await.map_err(|error| connect_error(error.to_string()))?;
            let _ = stream.set_nodelay(true);
            match tls {
                Some(tls) => Ok::<_, ClientError>(Stream::Tls(Box::new(tls.connect(addr, stream).await?))),
                None => Ok(Stream::Plain(stream)),
            }
        };
        let stream = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| connect_error(format!("timed out after {timeout:?}")))??;
        let (outgoing, outgoing_rx) = mpsc::channel(QUEUE_DEPTH);
        let pending: Pending = Arc::default();
        match stream {
            Stream::Plain(stream) => {
                let (reader, writer) = stream.into_split();
                tokio::spawn(write_loop(writer, outgoing_rx, pending.clone(), addr.to_string()));
                tokio::spawn(read_loop(reader, pending.clone(), addr.to_string(), frame_bytes_max));
            }
            Stream::Tls(stream) => {
                let (reader, writer) = tokio::io::split(*stream);
                tokio::spawn(write_loop(writer, outgoing_rx, pending.clone(), addr.to_string()));
                tokio::spawn(read_loop(reader, pending.clone(), addr.to_string(), frame_bytes_max));
            }
        }
        Ok(Connection {
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            outgoing,
            pending,
            next_correlation_id: Arc::new(AtomicU32::new(1)),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Runs the SCRAM-SHA-256 exchange (two `Authenticate` requests) and checks the broker's signature, so
    /// the client knows the broker holds its credential. Returns the principal the broker granted.
    pub async fn authenticate(&self, credentials: &Credentials, timeout: Duration) -> Result<String, ClientError> {
        let failed = |error: scram::ScramError| {
            ClientError::broker(ErrorCode::SASL_AUTHENTICATION_FAILED, Some(error.to_string()))
        };
        let mut client = scram::ScramClient::new(&credentials.user, credentials.password(), &auth::random_text(18))
            .map_err(failed)?;
        let step = |message: String| AuthenticateRequest {
            mechanism: scram::MECHANISM.to_string(),
            auth_bytes: message.into_bytes(),
        };
        let first = self.call(&step(client.client_first()), timeout).await?;
        let server_first = String::from_utf8(first.auth_bytes)
            .map_err(|_| ClientError::Protocol("server-first message is not UTF-8".into()))?;
        let (client_final, salted) =
            client.client_final(&server_first, credentials.cached_salted().as_ref()).map_err(failed)?;
        credentials.remember_salted(salted);
        let last = self.call(&step(client_final), timeout).await?;
        let server_final = String::from_utf8(last.auth_bytes)
            .map_err(|_| ClientError::Protocol("server-final message is not UTF-8".into()))?;
        client.verify_server_final(&server_final).map_err(failed)?;
        last.principal.ok_or_else(|| ClientError::Protocol("the broker granted no principal".into()))
    }

    pub fn is_closed(&self) -> bool {
        self.pending.lock().expect("pending lock").failure.is_some() || self.outgoing.is_closed()
    }

    /// Sends a request and returns its response body (after checking the header's error code).
    pub async fn call_raw<T: Serialize + ?Sized>(
        &self,
        api: ApiKey,
        body: &T,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        self.start(api, body).await?.wait(timeout).await
    }

    /// Queues a request for writing and returns the handle of its response. Requests started one after
    /// the other reach the broker in that order (the producer relies on it to pipeline a partition's batches).
    pub async fn start<T: Serialize + ?Sized>(&self, api: ApiKey, body: &T) -> Result<PendingResponse, ClientError> {
        self.start_spliced(api, body, &[]).await
    }

    /// `start`, with the body's byte strings of `SPLICE_BYTES_MIN` or more that lie within `buffers` (a
    /// Produce request's batches) written to the socket from those buffers instead of copied into the frame.
    pub async fn start_spliced<T: Serialize + ?Sized>(
        &self,
        api: ApiKey,
        body: &T,
        buffers: &[Bytes],
    ) -> Result<PendingResponse, ClientError> {
        let (frame, correlation_id) = self.encode(api, body, buffers);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("pending lock");
            if let Some(failure) = &pending.failure {
                return Err(failure.clone());
            }
            pending.replies.insert(correlation_id, reply_tx);
        }
        if self.outgoing.send(Outgoing { frame }).await.is_err() {
            self.pending.lock().expect("pending lock").replies.remove(&correlation_id);
            return Err(self.lost("writer stopped"));
        }
        Ok(PendingResponse { connection: self.clone(), correlation_id, reply: reply_rx })
    }

    /// Sends a request whose response body owns its data.
    pub async fn call<R>(&self, request: &R, timeout: Duration) -> Result<R::Response, ClientError>
    where
        R: Request,
        R::Response: serde::de::DeserializeOwned,
    {
        let body = self.call_raw(R::API_KEY, request, timeout).await?;
        frame::decode_body(&body).map_err(|error| ClientError::Protocol(error.to_string()))
    }

    /// Sends a request that gets no response (Produce with acks=0); returns once it is queued.
    /// (`buffers` as for `start_spliced`.)
    pub async fn send_oneway<T: Serialize + ?Sized>(
        &self,
        api: ApiKey,
        body: &T,
        buffers: &[Bytes],
    ) -> Result<(), ClientError> {
        if let Some(failure) = &self.pending.lock().expect("pending lock").failure {
            return Err(failure.clone());
        }
        let (frame, _) = self.encode(api, body, buffers);
        self.outgoing.send(Outgoing { frame }).await.map_err(|_| self.lost("writer stopped"))
    }

    fn encode<T: Serialize + ?Sized>(&self, api: ApiKey, body: &T, buffers: &[Bytes]) -> (SplicedFrame, u32) {
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader {
            api_key: api.key(),
            api_version: api.max_version(),
            correlation_id,
            client_id: self.client_id.clone(),
        };
        if buffers.is_empty() {
            let mut head = BytesMut::new();
            frame::encode_request(&header, body, &mut head);
            return (SplicedFrame { head, tail: Vec::new() }, correlation_id);
        }
        (frame::encode_request_spliced(&header, body, buffers), correlation_id)
    }

    fn lost(&self, reason: &str) -> ClientError {
        let failure = self.pending.lock().expect("pending lock").failure.clone();
        failure.unwrap_or_else(|| ClientError::ConnectionLost { addr: self.addr.clone(), reason: reason.to_string() })
    }
}

/// The response to a request `Connection::start` queued.
pub struct PendingResponse {
    connection: Connection,
    correlation_id: u32,
    reply: oneshot::Receiver<Result<Bytes, ClientError>>,
}

impl PendingResponse {
    /// Waits for the response body (after checking the header's error code).
    pub async fn wait(self, timeout: Duration) -> Result<Bytes, ClientError> {
        self.wait_unless(timeout, std::future::pending::<ClientError>()).await
    }

    /// `wait`, unless `give_up` resolves first: then the response is no longer awaited (a late one is
    /// dropped) and its error is returned.
    pub async fn wait_unless(
        self,
        timeout: Duration,
        give_up: impl std::future::Future<Output = ClientError>,
    ) -> Result<Bytes, ClientError> {
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, self.reply) => outcome.map_err(|_| ClientError::Timeout(timeout)),
            error = give_up => Err(error),
        };
        let payload = match outcome {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(self.connection.lost("reader stopped")),
            Err(error) => {
                self.connection.pending.lock().expect("pending lock").replies.remove(&self.correlation_id);
                return Err(error);
            }
        };
        let (header, body) =
            frame::decode_response(&payload).map_err(|error| ClientError::Protocol(error.to_string()))?;
        if header.error_code != ErrorCode::NONE {
            let message = frame::decode_body::<ErrorBody>(&body).ok().map(|body| body.message);
            return Err(ClientError::broker(header.error_code, message));
        }
        Ok(body)
    }
}

fn fail_all(pending: &Pending, error: ClientError) {
    let mut state = pending.lock().expect("pending lock");
    if state.failure.is_none() {
        state.failure = Some(error.clone());
    }
    for (_, reply) in state.replies.drain() {
        let _ = reply.send(Err(error.clone()));
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn write_loop(
    writer: impl tokio::io::AsyncWrite + Unpin,
    mut outgoing: mpsc::Receiver<Outgoing>,
    pending: Pending,
    addr: String,
) {
    let mut writer = BufWriter::with_capacity(256 * 1024, writer);
    while let Some(message) = outgoing.recv().await {
        let mut result = write_frame(&mut writer, &message.frame).await;
        while result.is_ok() {
            match outgoing.try_recv() {
                Ok(message) => result = write_frame(&mut writer, &message.frame).await,
                Err(_) => break,
            }
        }
        if let Err(error) = result.and(writer.flush().await) {
            fail_all(&pending, ClientError::ConnectionLost { addr, reason: error.to_string() });
            return;
        }
    }
}

/// Writes a frame's head and parts in order: long parts go to the socket from their own buffers (after
/// what is buffered), short ones through the write buffer.
async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut BufWriter<W>,
    frame: &SplicedFrame,
) -> std::io::Result<()> {
    writer.write_all(&frame.head).await?;
    for part in &frame.tail {
        if part.len() >= frame::SPLICE_BYTES_MIN {
            writer.flush().await?;
            writer.get_mut().write_all(part).await?;
        } else {
            writer.write_all(part).await?;
        }
    }
    Ok(())
}

async fn read_loop(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    pending: Pending,
    addr: String,
    frame_bytes_max: usize,
) {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let reason = loop {
        match frame::check(&buf, frame_bytes_max) {
            // A TLS alert or handshake record (0x15/0x16, version 3.x) where a frame length should be.
            FrameCheck::TooLarge(_) if matches!(buf[..2], [0x15 | 0x16, 0x03]) => {
                break "the broker speaks TLS on this port: connect with TLS (--tls-ca-file)".to_string()
            }
            FrameCheck::TooLarge(length) => {
                break format!("a response frame of {length} bytes is over the client's limit of {frame_bytes_max}")
            }
            FrameCheck::Complete(frame_bytes) => {
                let payload = buf.split_to(frame_bytes).freeze().slice(frame::FRAME_LENGTH_BYTES..);
                let Some(correlation_id) = payload.get(..4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
                else {
                    break "response shorter than its header".to_string();
                };
                let reply = pending.lock().expect("pending lock").replies.remove(&correlation_id);
                // A reply nobody waits for (timed out) is dropped.
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(payload));
                }
                continue;
            }
            FrameCheck::Incomplete if buf.len() >= frame::FRAME_LENGTH_BYTES => {
                let length = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
                buf.reserve(frame::FRAME_LENGTH_BYTES + length - buf.len());
            }
            _ => {}
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(256 * 1024);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => break "closed by the broker".to_string(),
            Ok(_) => {}
            Err(error) => break error.to_string(),
        }
    };
    fail_all(&pending, ClientError::ConnectionLost { addr, reason });
}
