//! The client connection against a hostile peer on a real socket: a response announcing a frame over the
//! client's limit closes the connection with a clear error, and the client reserves nothing for it.

use std::time::Duration;

use oxbow::client::{ClientError, Connection};
use oxbow::protocol::api::api_versions::ApiVersionsRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_response_frame_over_the_limit_closes_the_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 64];
        let _ = socket.read(&mut request).await.unwrap();
        // A frame that claims 1 GiB, then nothing more.
        socket.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        socket.write_all(&[0; 8]).await.unwrap();
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
    });
    let connection = Connection::connect_with_limit(&addr, "test", Duration::from_secs(2), 1 << 20).await.unwrap();
    let error = connection.call(&ApiVersionsRequest {}, Duration::from_secs(5)).await.unwrap_err();
    match &error {
        ClientError::ConnectionLost { reason, .. } => {
            assert!(reason.contains("over the client's limit of 1048576"), "{reason}")
        }
        other => panic!("expected a lost connection, got {other}"),
    }
    drop(connection);
    server.await.unwrap();
}
