//! In-process fakes of the services d1r2 talks to, speaking their real wire protocols.

pub mod d1;
pub mod faults;
pub mod github;
pub mod heartbeat;
pub mod lists;
pub mod s3;

/// Serves `app` on a free loopback port and returns its address. Sockets are TCP_NODELAY, as a
/// real API's are: without it every small answer waits out the client's delayed ACK (40 ms on
/// Linux), which would swamp what the benchmarks measure.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    serve_at(app, 0).await
}

/// [`serve`] on loopback port `port` (0: a free one), for the local cloud's fixed ports.
pub async fn serve_at(app: axum::Router, port: u16) -> std::net::SocketAddr {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("listening on 127.0.0.1:{port}: {e}"));
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
